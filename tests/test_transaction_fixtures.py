"""Shared builders for the transaction, core and proxy tests (no tests of its own).

Messages are built as text and parsed with psp.parser.parse, as the transport does, so
the tests exercise the same objects the server handles.  :class:`Driver` runs one
transaction on a fake clock with the real timer heap, recording what it sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psp.events import Peer
from psp.message import Request, Response, make_response
from psp.parser import parse
from psp.timers import TimerHeap, TimerSettings
from psp.transaction import (
    Event, Kind, PassToTU, Send, StartTimer, StopTimer, Terminated, TimedOut, Transaction,
    TransportError,
)

UDP_PEER = Peer("udp", "192.0.2.20", 5060)
TCP_PEER = Peer("tcp", "192.0.2.20", 5060, conn=7)


def request(method: str = "INVITE", *, branch: str | None = "z9hG4bK-t1", uri: str = "sip:bob@192.0.2.20",
            via: str = "192.0.2.10:5060", transport: str = "UDP", cseq: int = 1, cseq_method: str | None = None,
            to_tag: str | None = None, call_id: str = "call-1@192.0.2.10", headers: str = "") -> Request:
    """A parsed request; ``branch=None`` leaves the Via without one (RFC 2543 style)."""
    branch_param = f";branch={branch}" if branch is not None else ""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via}{branch_param}\r\n"
        "Max-Forwards: 70\r\n"
        "From: \"Alice\" <sip:alice@example.com>;tag=from-1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"{headers}"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse(text.encode())
    assert isinstance(message, Request)
    return message


def response(req: Request, status: int, to_tag: str = "to-9", headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """The parsed wire form of a response to ``req`` (a UAS's answer)."""
    message = parse(make_response(req, status, to_tag=to_tag, headers=headers).to_bytes())
    assert isinstance(message, Response)
    return message


@dataclass
class Driver:
    """Runs one transaction's effects on a fake clock; records sends, TU notes and no-ops."""

    tx: Transaction
    now: float = 0.0
    heap: TimerHeap = field(default_factory=TimerHeap)
    handles: dict = field(default_factory=dict)
    sent: list[tuple[float, bytes, bool]] = field(default_factory=list)
    up: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    noops: int = 0

    @classmethod
    def start(cls, kind: Kind, req: Request, peer: Peer = UDP_PEER,
              settings: TimerSettings = TimerSettings()) -> Driver:
        driver = cls(Transaction(kind, req, peer, settings))
        driver.feed(Event.SEND_REQUEST if kind in (Kind.ICT, Kind.NICT) else Event.RECV_REQUEST, None
                    if kind in (Kind.ICT, Kind.NICT) else req)
        return driver

    def feed(self, event: Event, message: object = None) -> None:
        effects = self.tx.handle(event, message)  # type: ignore[arg-type]
        if effects is None:
            self.noops += 1
            return
        for effect in effects:
            self._apply(effect)

    def _apply(self, effect: object) -> None:
        if isinstance(effect, Send):
            self.sent.append((self.now, effect.data, effect.retransmission))
        elif isinstance(effect, StartTimer):
            self.heap.cancel(self.handles.get(effect.timer))
            self.handles[effect.timer] = self.heap.schedule(self.now + effect.delay, effect.timer)
        elif isinstance(effect, StopTimer):
            self.heap.cancel(self.handles.pop(effect.timer, None))
        elif isinstance(effect, PassToTU):
            self.up.append(effect.message)
        elif isinstance(effect, (TimedOut, TransportError, Terminated)):
            self.notes.append(type(effect).__name__)

    def advance(self, until: float) -> None:
        """Move the clock to ``until``, firing every timer due on the way at its own time."""
        while (deadline := self.heap.next_deadline()) is not None and deadline <= until:
            self.now = deadline
            for timer in self.heap.pop_due(deadline):
                self.handles.pop(timer, None)
                self.feed(Event(timer))
        self.now = until

    def send_times(self) -> list[float]:
        return [t for t, _, _ in self.sent]

    def retransmissions(self) -> int:
        return sum(1 for _, _, again in self.sent if again)


class Net:
    """A Core on a fake clock: deliver parsed messages, advance time, take what it sent."""

    def __init__(self, core) -> None:  # noqa: ANN001 - psp.core.Core, imported by the caller
        self.core = core
        self.now = 0.0

    def deliver(self, message, peer: Peer) -> None:  # noqa: ANN001
        """Receive ``message`` (or its bytes after a round trip through the wire form)."""
        self.core.on_received(parse(message.to_bytes()), peer, self.now)

    def advance(self, until: float) -> None:
        """Fire every core timer due before ``until`` at its own deadline."""
        while (deadline := self.core.next_deadline()) is not None and deadline <= until:
            self.now = deadline
            self.core.on_timers(deadline)
        self.now = until

    def take(self) -> list:
        """(peer, parsed message) for every Outgoing in the outbox, which is emptied."""
        out = [(item.peer, parse(item.data)) for item in self.core.outbox if hasattr(item, "data")]
        self.core.outbox[:] = [item for item in self.core.outbox if not hasattr(item, "data")]
        return out
