"""The sfp logic: transactions, their timers and the transaction user, with no I/O.

:class:`Core` is everything the processor thread (``psp/processor.py``) drives.  It owns
the transaction tables (RFC 3261 17.1.3 / 17.2.3 matching, see ``psp/matching.py``), the
deadline heap (``psp/timers.py``), the outbox of :class:`~psp.events.Outgoing` and
:class:`~psp.events.ResolveJob` items the processor drains after every call, and the
transaction user (TU, RFC 3261 section 5): the proxy.

Inputs (from the processor): ``on_received``, ``on_resolved``, ``on_transport_failed``,
``on_timers``; it reads ``next_deadline`` (when to call ``on_timers``) and ``pending``
(transactions a drain waits for).  ``now`` is always an argument.

The TU interface (also in docs/transactions.md).  The core calls the TU:

* ``on_request(server_tx, request, now)``: a new request (never a retransmission);
* ``on_ack(request, peer, now)``: an ACK no INVITE server transaction absorbs (ACK for a
  2xx, RFC 6026 7.1), whether it matched an IST in Accepted or nothing;
* ``on_cancel(cancel_stx, invite_stx_or_None, now)``: a CANCEL on its own NIST, with the
  INVITE server transaction it cancels (RFC 3261 9.2) or None;
* ``on_response(client_tx, response, now)``: provisionals, finals, and 2xx retransmissions
  received in Accepted (RFC 6026 7.2);
* ``on_client_timeout(client_tx, now)`` (Timer B or F), ``on_client_error(client_tx, now)``
  (transport error, RFC 3261 17.1.4);
* ``on_stray_response(response, peer, now)``: a response that matches no client transaction;
* ``on_server_terminated(server_tx, now)``: a server transaction ended (``.error`` says why
  when Timer H or a transport error ended it).

The TU calls the core: ``send_request`` (stateful, on a new client transaction),
``respond`` (through a server transaction), ``abandon`` (end a server transaction
without answering), ``send_stateless``, ``call_at`` /
``cancel_timer`` (Timer C and other TU timers), ``resolve`` (RFC 3263, answered by a
callback) and reads ``stats``.  :func:`response_peer` is RFC 3261 18.2.2 + RFC 3581.

A transaction that has sent or received its final response keeps bytes, keys and a
status for the 32 s its last state may last, not the parsed messages
(:meth:`~psp.transaction.Transaction.release`; docs/transactions.md, "A settled
transaction keeps bytes, not messages").

A :class:`~psp.errors.SipError` raised by the TU while handling a request becomes the
response to that request's server transaction here, at exactly one place
(:meth:`Core._answer_error`); any other exception propagates to the processor.  Every
response generated here or by the TU (rather than relayed) is built by
:meth:`TU.local_response`, which adds our ``Server`` header.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, ItemsView, Iterable
from dataclasses import dataclass, field
from typing import Any

from psp.errors import SipError
from psp.events import Outgoing, Peer, ResolveJob, Resolved, TransportFailed
from psp.headers import Via
from psp.matching import Key, client_key, has_cookie, response_key, server_key
from psp.message import Message, Request, Response, make_response
from psp.timers import Timer, TimerHandle, TimerHeap, TimerSettings
from psp.transaction import (
    WAITING, Effect, Event, Kind, PassToTU, Send, StartTimer, State, StopTimer, Terminated,
    TimedOut, Transaction, TransportError, recv_event, send_event, status_label,
)

ResolveCallback = Callable[[Resolved, float], None]
TimerCallback = Callable[[float], None]
# What the core's timer heap holds: a TU's callback, or the transaction whose _TxTimer is due
TimerPayload = TimerCallback | Transaction
DEFAULT_PORT = 5060
# Bytes per entry beyond which a transaction table is copied to its right size (a dict
# holds 40 to 110 bytes per entry when it is full; four times that after shrinking).
_SPARSE = 400


def response_peer(via: Via, source: Peer | None) -> Peer:
    """Where responses to a request with top Via ``via`` go (RFC 3261 18.2.2, RFC 3581).

    Over a reliable transport: back on the connection the request came in on
    (``source``).  Otherwise: the Via's maddr if present (with the sent-by port), else
    ``received`` (the transport filled it in) with the rport value when there is one, else
    the sent-by host; the port defaults to 5060.  ``source`` is None when no connection is
    known (a response relayed statelessly).
    """
    if source is not None and source.transport != "udp":
        return source
    # A request that came over UDP is answered over UDP, whatever its Via claims (RFC 4475
    # bext01 names TLS in a datagram's Via); only a relayed response follows the Via.
    transport = "udp" if source is not None else via.transport.lower()
    maddr = via.maddr
    if maddr:
        return Peer(transport, maddr, via.port or DEFAULT_PORT)
    host = via.received or via.host
    port = via.rport or via.port or DEFAULT_PORT
    if source is not None and source.port == port and source.host == host:
        # the common case (received and rport name the source): the transaction keeps the
        # source's Peer rather than an equal one of its own, for its 32 s in Completed
        return source
    return Peer(transport, host, port)


def message_label(message: Message) -> str:
    """A request's method or a response's status class, as counted in ``stats.sent``."""
    if isinstance(message, Response):
        return status_label(message.status)
    return message.method  # type: ignore[attr-defined,no-any-return]


@dataclass
class Stats:
    """Counters the metrics module samples at scrape time (plain ints, never per-message cost)."""

    transactions: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in Kind})
    # Server transactions by the class of the final response they sent ("2xx" .. "6xx").
    completed: dict[str, int] = field(default_factory=lambda: {f"{n}xx": 0 for n in range(2, 7)})
    retransmissions: int = 0
    timeouts: int = 0
    transport_errors: int = 0
    noop_events: int = 0
    stray_responses: int = 0
    sent: dict[str, int] = field(default_factory=dict)

    def items(self) -> ItemsView[str, Any]:
        """The counters by name, as the metrics scrape reads a mapping (it copies the dicts)."""
        return vars(self).items()


class TU:
    """The transaction user.  Subclasses override what they handle; ``core`` is set by Core."""

    core: Core
    server: str | None = None  # our Server header (RFC 3261 20.35), e.g. "PartySIP/0.1.0"

    def attach(self, core: Core) -> None:
        self.core = core

    def local_response(self, request: Request, status: int, reason: str | None = None,
                       headers: Iterable[tuple[str, str]] = ()) -> Response:
        """A response of our own to ``request`` (never a relayed one), with our Server header."""
        return self.stamp(make_response(request, status, reason, headers=headers))

    def stamp(self, response: Response) -> Response:
        """Add our Server header to a response we generated, unless it already names one."""
        if self.server and not response.has("Server"):
            response.add_header("Server", self.server)
        return response

    def on_request(self, server_tx: Transaction, request: Request, now: float) -> None:
        raise SipError("no transaction user for requests", status=501)

    def on_ack(self, request: Request, peer: Peer, now: float) -> None:
        """An ACK for a 2xx; dropped unless overridden."""

    def on_cancel(self, cancel_stx: Transaction, invite_stx: Transaction | None, now: float) -> None:
        raise SipError("nothing to cancel", status=481)

    def on_response(self, client_tx: Transaction, response: Response, now: float) -> None:
        """A response for a client transaction."""

    def on_client_timeout(self, client_tx: Transaction, now: float) -> None:
        """Timer B or F fired."""

    def on_client_error(self, client_tx: Transaction, now: float) -> None:
        """The transport could not deliver the request."""

    def on_stray_response(self, response: Response, peer: Peer, now: float) -> None:
        """A response that matches no client transaction; dropped unless overridden."""

    def on_server_terminated(self, server_tx: Transaction, now: float) -> None:
        """A server transaction ended."""


class Core:
    """Transactions, timers and TU dispatch for the sfp thread (see the module docstring)."""

    def __init__(self, settings: TimerSettings | Any, tu: TU, *, cancel_ignores_to_tag: bool = False) -> None:
        if not isinstance(settings, TimerSettings):
            # the server passes the whole configuration; only its timer values matter here
            settings = TimerSettings(settings.t1, settings.t2, settings.t4, settings.timer_c)
        self.settings = settings
        self.tu = tu
        # disable_check_for_osip_to_tag_in_cancel: see _invite_for
        self.cancel_ignores_to_tag = cancel_ignores_to_tag
        self.outbox: list[Outgoing | ResolveJob] = []
        self.stats = Stats()
        self._heap: TimerHeap[TimerPayload] = TimerHeap()
        self._clients: dict[Key, Transaction] = {}
        self._servers: dict[Key, Transaction] = {}
        self._by_peer: dict[tuple[str, str, int], set[Transaction]] = {}
        # the Peer the transactions of one _by_peer entry share (see _track)
        self._peers: dict[tuple[str, str, int], Peer] = {}
        self._jobs: dict[int, ResolveCallback] = {}
        self._waiting = 0  # transactions in a WAITING state, kept up to date by _track and _run
        self._job_ids = itertools.count(1)
        self._source: Peer | None = None  # where the message being handled came from
        self._internal: dict[type, Callable[[Transaction, Any, float], None]] = {
            Send: self._send, StartTimer: self._start_timer, StopTimer: self._stop_timer,
            Terminated: self._forget,
        }
        self._tell: dict[type, Callable[[Transaction, Any, float], None]] = {
            PassToTU: self._pass_to_tu, TimedOut: self._timed_out,
            TransportError: self._transport_error, Terminated: self._terminated,
        }
        tu.attach(self)

    # ------------------------------------------------------------------ inputs

    def on_received(self, message: Message, peer: Peer, now: float) -> None:
        """A parsed message from ``peer``: match it to a transaction or hand it to the TU."""
        self._source = peer
        if isinstance(message, Request):
            self._request_in(message, peer, now)
        else:
            self._response_in(message, peer, now)  # type: ignore[arg-type]

    def on_resolved(self, resolved: Resolved, now: float) -> None:
        """The answer to a :meth:`resolve` job: run its callback (a late duplicate is ignored)."""
        callback = self._jobs.pop(resolved.job, None)
        if callback is not None:
            callback(resolved, now)

    def on_transport_failed(self, failed: TransportFailed, now: float) -> None:
        """Every transaction sending to that peer ends with a transport error (17.1.4, 17.2.4)."""
        for tx in list(self._by_peer.get(_peer_key(failed.peer), ())):
            self._run(tx, Event.TRANSPORT_ERROR, None, now)

    def on_timers(self, now: float) -> None:
        """Fire every timer due at ``now`` (including ones a callback schedules for ``now``)."""
        while due := self._heap.pop_due(now):
            for payload in due:
                if type(payload) is Transaction:
                    self._fire(payload, now)
                else:
                    payload(now)  # type: ignore[operator]

    def next_deadline(self) -> float | None:
        return self._heap.next_deadline()

    def pending(self) -> int:
        """Transactions still waiting: clients for a final response, servers for the TU's one.

        Those a drain lets finish.  The others (Completed, Confirmed, Accepted) only absorb
        retransmissions until their timers end them, and TU timers such as the bindings'
        expiry never end while registrations exist: neither is worth waiting for.
        """
        return self._waiting

    # ------------------------------------------------------------------ services to the TU

    def send_request(self, request: Request, peer: Peer, now: float, context: Any = None) -> Transaction:
        """Send ``request`` to ``peer`` on a new client transaction (ICT for INVITE, else NICT)."""
        if request.method == "ACK":
            raise ValueError("an ACK has no client transaction: use send_stateless")
        kind = Kind.ICT if request.method == "INVITE" else Kind.NICT
        tx = Transaction(kind, request, peer, self.settings)
        tx.context = context
        self._track(tx, self._clients, client_key(request))
        self._run(tx, Event.SEND_REQUEST, None, now)
        return tx

    def respond(self, server_tx: Transaction, response: Response, now: float) -> None:
        """Send ``response`` through ``server_tx``; a response its state refuses is a counted no-op."""
        waiting = server_tx.state in WAITING
        self._run(server_tx, send_event(response.status), response, now)
        if waiting and server_tx.state not in WAITING:  # this was its final response
            completed = self.stats.completed
            label = status_label(response.status)
            completed[label] = completed.get(label, 0) + 1
        request = server_tx.request  # None once released: never for an RFC 2543 IST (_keeps_request)
        if (server_tx.kind is Kind.IST and server_tx.state in (State.COMPLETED, State.ACCEPTED)
                and request is not None and not has_cookie(request)):
            # RFC 2543 peers: their ACK carries the To tag of the final response (17.2.3)
            key = server_key(request, to_tag=response.to.tag)
            if key != server_tx.key and key not in server_tx.aliases:
                self._servers[key] = server_tx
                server_tx.aliases += (key,)

    def abandon(self, server_tx: Transaction, now: float) -> None:
        """End ``server_tx`` without sending anything (a request the TU drops unanswered).

        A transaction that already sent its final response is left to its timers (a
        counted no-op): it must go on absorbing retransmissions.
        """
        if server_tx.is_client:
            raise ValueError("only a server transaction can be abandoned")
        self._run(server_tx, Event.ABANDON, None, now)

    def send_stateless(self, message: Message, peer: Peer, now: float) -> None:
        """Send ``message`` to ``peer`` once, outside any transaction (ACK for 2xx, stray responses)."""
        self._emit(message.to_bytes(), peer, message_label(message), now)

    def call_at(self, deadline: float, callback: TimerCallback) -> TimerHandle[TimerPayload]:
        """Run ``callback(now)`` at ``deadline``; keep the handle to :meth:`cancel_timer` it."""
        return self._heap.schedule(deadline, callback)

    def cancel_timer(self, handle: TimerHandle[TimerPayload] | None) -> None:
        self._heap.cancel(handle)

    def resolve(self, host: str, port: int | None, transport: str | None,
                callback: ResolveCallback, now: float) -> int:
        """Ask the resolver thread for ``host`` (RFC 3263); ``callback(resolved, now)`` gets the answer."""
        job = next(self._job_ids)
        self._jobs[job] = callback
        self.outbox.append(ResolveJob(job, host, port, transport, now))
        return job

    # ------------------------------------------------------------------ matching

    def _response_in(self, response: Response, peer: Peer, now: float) -> None:
        key = response_key(response)
        tx = self._clients.get(key) if key is not None else None
        if tx is None:
            self.stats.stray_responses += 1
            self.tu.on_stray_response(response, peer, now)
            return
        self._run(tx, recv_event(response.status), response, now)

    def _request_in(self, request: Request, peer: Peer, now: float) -> None:
        key = server_key(request)
        tx = self._servers.get(key)
        if tx is not None:
            event = Event.RECV_ACK if request.method == "ACK" else Event.RECV_REQUEST
            self._run(tx, event, request, now)
        elif request.method == "ACK":
            self.tu.on_ack(request, peer, now)
        else:
            kind = Kind.IST if request.method == "INVITE" else Kind.NIST
            via = request.top_via
            assert via is not None  # server_key() refused a request without one
            tx = Transaction(kind, request, response_peer(via, peer), self.settings)
            self._track(tx, self._servers, key)
            self._run(tx, Event.RECV_REQUEST, request, now)

    def _invite_for(self, cancel: Request) -> Transaction | None:
        tx = self._servers.get(server_key(cancel, method="INVITE"))
        if tx is None and self.cancel_ignores_to_tag and not has_cookie(cancel):
            # RFC 2543 matching compares To tags; some old UAs (the original names the
            # Cisco ATA 2.15) tag the CANCEL of an INVITE that had none.
            tx = self._servers.get(server_key(cancel, method="INVITE", tagless=True))
        return tx if tx is not None and tx.kind is Kind.IST else None

    def _track(self, tx: Transaction, table: dict[Key, Transaction], key: Key) -> None:
        table[key] = tx
        tx.key = key
        peer_key = _peer_key(tx.peer)
        peers = self._by_peer.get(peer_key)
        if peers is None:
            self._by_peer[peer_key] = {tx}
            self._peers[peer_key] = tx.peer
        else:
            peers.add(tx)
            # UAs behind one address (a NAT, an edge proxy) share one Peer, with its host
            # string, rather than keep 150 equal bytes each for the 32 s of Timer J
            shared = self._peers[peer_key]
            if shared.conn == tx.peer.conn:
                tx.peer = shared
        self.stats.transactions[tx.kind.value] += 1
        self._waiting += 1  # a new transaction is Initial

    # ------------------------------------------------------------------ effects

    def _run(self, tx: Transaction, event: Event, message: Message | None, now: float) -> None:
        """Feed ``event`` to ``tx``; do its effects, then tell the TU (so TU errors cannot leak state)."""
        was_waiting = tx.state in WAITING
        effects = tx.handle(event, message)
        if effects is None:
            self.stats.noop_events += 1
            return
        # settled: the final response went out or came in, or the transaction ended without
        settled = was_waiting and tx.state not in WAITING
        if settled:
            self._waiting -= 1
        keep = settled and self._keeps_request(tx)  # asked before _terminated empties its context
        internal, tell = self._internal, self._tell
        for effect in effects:
            action = internal.get(type(effect))
            if action is not None:
                action(tx, effect, now)
        for effect in effects:
            action = tell.get(type(effect))
            if action is not None:
                action(tx, effect, now)
        if settled:  # after the TU was told: it may read the request while it hears of the final
            tx.release(keep)

    def _keeps_request(self, tx: Transaction) -> bool:
        """Whether ``tx``, which just settled, keeps its request (Transaction.release).

        A client never does.  A server transaction does when the TU's context may still
        build responses to it (the proxy's stand-ins for branches that end after the final
        response went out: psp/context.py, which holds copies of the request anyway), or
        when it is an RFC 2543 IST: it files itself under one more key for each final it
        sends (respond).  A REGISTER answered at once is neither.
        """
        if tx.is_client:
            return False
        return tx.context is not None or (
            tx.kind is Kind.IST and tx.request is not None and not has_cookie(tx.request))

    def _emit(self, data: bytes, peer: Peer, label: str, now: float) -> None:
        self.outbox.append(Outgoing(data, peer, now))
        sent = self.stats.sent
        sent[label] = sent.get(label, 0) + 1

    def _send(self, tx: Transaction, effect: Send, now: float) -> None:
        self._emit(effect.data, tx.peer, effect.label, now)
        if effect.retransmission:
            self.stats.retransmissions += 1

    def _start_timer(self, tx: Transaction, effect: StartTimer, now: float) -> None:
        self._cancel(tx, effect.timer)
        # a transaction timer's delay is one of a few fixed values: its lane (psp/timers.py)
        handle = self._heap.add(_TxTimer(now + effect.delay, tx, effect.timer), lane=effect.delay)
        _set_handles(tx, (*_handles(tx), handle))

    def _stop_timer(self, tx: Transaction, effect: StopTimer, now: float) -> None:
        self._cancel(tx, effect.timer)

    def _cancel(self, tx: Transaction, timer: Timer) -> None:
        handles = _handles(tx)
        for handle in handles:
            # a fired handle not yet run (several due in one batch) is no longer live
            if handle.timer is timer and not handle.cancelled:
                self._heap.cancel(handle)
                _set_handles(tx, tuple(other for other in handles if other is not handle))
                return

    def _fire(self, tx: Transaction, now: float) -> None:
        """One of ``tx``'s timers is due: the earliest of its fired handles (a fired handle
        counts as cancelled, and a cancelled one leaves ``tx.handles`` at once)."""
        handles = _handles(tx)
        fired = [handle for handle in handles if handle.cancelled]
        if not fired:  # it ended earlier in this batch: a late timer, a counted no-op
            self.stats.noop_events += 1
            return
        handle = min(fired, key=lambda fired_handle: fired_handle.deadline)
        _set_handles(tx, tuple(other for other in handles if other is not handle))
        self._run(tx, Event(handle.timer), None, now)

    def _forget(self, tx: Transaction, effect: Effect, now: float) -> None:
        for handle in _handles(tx):
            self._heap.cancel(handle)
        tx.handles = None
        table = self._clients if tx.is_client else self._servers
        for key in (tx.key, *tx.aliases):
            if table.get(key) is tx:
                del table[key]
        if sys.getsizeof(table) > _SPARSE * (len(table) + 64):
            # a dict keeps the size of its peak (48,000 REGISTERs in Completed: 5 MB); a copy
            # has the size of what it holds.  Amortised O(1): only after most entries went.
            if tx.is_client:
                self._clients = dict(table)
            else:
                self._servers = dict(table)
        peer_key = _peer_key(tx.peer)
        peers = self._by_peer.get(peer_key)
        if peers is not None:
            peers.discard(tx)
            if not peers:
                del self._by_peer[peer_key]
                del self._peers[peer_key]
        self.stats.transactions[tx.kind.value] -= 1

    # ------------------------------------------------------------------ telling the TU

    def _pass_to_tu(self, tx: Transaction, effect: PassToTU, now: float) -> None:
        message = effect.message
        if tx.is_client:
            self.tu.on_response(tx, message, now)  # type: ignore[arg-type]
        elif message.method == "ACK":  # type: ignore[attr-defined]
            self.tu.on_ack(message, self._source or tx.peer, now)  # type: ignore[arg-type]
        elif message.method == "CANCEL":  # type: ignore[attr-defined]
            self._answer_error(tx, message, now, self.tu.on_cancel, tx, self._invite_for(message), now)
        else:
            self._answer_error(tx, message, now, self.tu.on_request, tx, message, now)

    def _answer_error(self, tx: Transaction, request: Request, now: float, call: Callable[..., None],
                      *args: Any) -> None:
        """The one place where a SipError from the TU becomes the response to its request.

        ``request`` is passed, not read from ``tx``: a TU that answered before raising has
        released it, and the response is then a counted no-op.
        """
        try:
            call(*args)
        except SipError as error:
            response = self.tu.local_response(request, error.status, error.reason, error.headers)
            self.respond(tx, response, now)

    def _timed_out(self, tx: Transaction, effect: TimedOut, now: float) -> None:
        self.stats.timeouts += 1
        if tx.is_client:
            self.tu.on_client_timeout(tx, now)

    def _transport_error(self, tx: Transaction, effect: TransportError, now: float) -> None:
        self.stats.transport_errors += 1
        if tx.is_client:
            self.tu.on_client_error(tx, now)

    def _terminated(self, tx: Transaction, effect: Terminated, now: float) -> None:
        if not tx.is_client:
            self.tu.on_server_terminated(tx, now)
        # The TU's record usually points back at the transaction: a cycle that only the
        # garbage collector's full scans would free (docs/performance.md).  Let go of it.
        tx.context = None


class _TxTimer(TimerHandle[TimerPayload]):
    """A transaction's timer: its payload is the transaction, and it names the timer.

    One object where a handle and a (transaction, timer) payload took two: 64 bytes instead
    of 112, for each of the tens of thousands of transactions waiting on Timer J.
    """

    __slots__ = ("timer",)

    def __init__(self, deadline: float, tx: Transaction, timer: Timer) -> None:
        super().__init__(deadline, tx)
        self.timer = timer


def _handles(tx: Transaction) -> tuple[_TxTimer, ...]:
    handles = tx.handles
    if handles is None:
        return ()
    return handles if type(handles) is tuple else (handles,)


def _set_handles(tx: Transaction, handles: tuple[_TxTimer, ...]) -> None:
    # a lone handle, the common case (Timer J), is kept as itself: a 1-tuple costs 48 bytes
    tx.handles = None if not handles else handles[0] if len(handles) == 1 else handles


def _peer_key(peer: Peer) -> tuple[str, str, int]:
    # the connection id is left out: a failure reported for a TCP peer before or after the
    # transport assigned the connection must reach the same transactions
    return (peer.transport, peer.host, peer.port)
