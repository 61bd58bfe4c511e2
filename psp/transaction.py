"""The four RFC 3261 transaction state machines, as tables, with no I/O.

RFC 3261 section 17 (figures 5 to 8: INVITE client, non-INVITE client, INVITE server and
non-INVITE server transactions), amended by RFC 6026 section 7 and 8 (the Accepted state
of the INVITE transactions, Timers L and M: 2xx responses and the ACK for a 2xx pass
through to the transaction user instead of ending or being swallowed).  One event is
ours: ``ABANDON``, a server transaction whose TU drops the request without any final
response (a plugin's STOP) ends at once instead of waiting forever.

Rules of this file (in the spirit of h11's ``_state.py``):

1. Everything that moves a transaction from one state to another is a row of
   :data:`TABLES`: ``(state, event) -> (handler, next state)``, one table per kind.
2. A handler does no I/O.  It returns *effects* (:class:`Send`, :class:`StartTimer`,
   :class:`StopTimer`, :class:`PassToTU`, :class:`TimedOut`, :class:`TransportError`,
   :class:`Terminated`) that the core carries out.
3. A pair with no row is a no-op that the caller counts: retransmissions and late timers
   are normal in SIP.  :data:`IGNORED` lists those pairs explicitly so that a test can
   check every (state, event) pair is decided.
4. A timer of zero duration (D, I, J, K on a reliable transport) fires at once, inside
   :meth:`Transaction.handle`, so no zero deadline ever reaches the timer heap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from psp.message import Request
from psp.timers import IdEnum, Timer, TimerSettings

if TYPE_CHECKING:
    from psp.events import Peer
    from psp.message import Message, Response

RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "sctp"})
# One string per method for every transaction, not the request's own copy, which a
# completed transaction would otherwise keep alive for the 32 s of Timer J.
_METHODS = {method: method for method in (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO",
    "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH",
)}


class Kind(IdEnum):
    """The four transaction kinds of RFC 3261 17.1.1, 17.1.2, 17.2.1 and 17.2.2."""

    ICT = "ICT"
    NICT = "NICT"
    IST = "IST"
    NIST = "NIST"


CLIENT_KINDS = frozenset({Kind.ICT, Kind.NICT})


class State(IdEnum):
    """States as named in RFC 3261 figures 5-8 and RFC 6026; INITIAL is the figures' entry arrow."""

    INITIAL = "Initial"
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Event(IdEnum):
    """What can happen to a transaction; a timer event's value is its :class:`Timer`."""

    SEND_REQUEST = "send request"  # the TU starts a client transaction
    RECV_REQUEST = "request received"  # the request, or a retransmission of it
    RECV_ACK = "ACK received"
    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_3456XX = "3xx-6xx received"
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_3456XX = "3xx-6xx from TU"
    TRANSPORT_ERROR = "transport error"
    ABANDON = "abandoned by TU"  # the TU drops the request without answering (a plugin STOP)
    TIMER_A = Timer.A
    TIMER_B = Timer.B
    TIMER_D = Timer.D
    TIMER_E = Timer.E
    TIMER_F = Timer.F
    TIMER_G = Timer.G
    TIMER_H = Timer.H
    TIMER_I = Timer.I
    TIMER_J = Timer.J
    TIMER_K = Timer.K
    TIMER_L = Timer.L
    TIMER_M = Timer.M


# States in which a transaction still waits: a client for its final response, a server for
# the TU to give one.  What a draining server lets finish (Core.pending).
WAITING = frozenset({State.INITIAL, State.CALLING, State.TRYING, State.PROCEEDING})


def recv_event(status: int) -> Event:
    """The event a response with ``status`` causes at a client transaction."""
    if status < 200:
        return Event.RECV_1XX
    return Event.RECV_2XX if status < 300 else Event.RECV_3456XX


def send_event(status: int) -> Event:
    """The event the TU causes at a server transaction by sending a response with ``status``."""
    if status < 200:
        return Event.SEND_1XX
    return Event.SEND_2XX if status < 300 else Event.SEND_3456XX


def status_label(status: int) -> str:
    """The status class of ``status`` as counted in statistics: '1xx' ... '6xx'."""
    return f"{status // 100}xx"


# --- effects: what a handler asks the core to do --------------------------------------
# The four made for every message are named tuples (built in C: a frozen dataclass sets
# each field through object.__setattr__); the three field-less ones are made once, as
# dataclasses, so that no two of them compare equal the way empty tuples would.


class Send(NamedTuple):
    """Pass ``data`` to the transport for the transaction's peer; ``label`` is a method or status class."""

    data: bytes
    label: str
    retransmission: bool = False


class StartTimer(NamedTuple):
    """(Re)start ``timer`` to fire ``delay`` seconds from now."""

    timer: Timer
    delay: float


class StopTimer(NamedTuple):
    """Stop ``timer`` if it runs."""

    timer: Timer


class PassToTU(NamedTuple):
    """Hand ``message`` to the transaction user (a new request, a response, an ACK for a 2xx)."""

    message: Message


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B, F or H fired: the TU must be told (RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1)."""


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport failed to deliver for this transaction (RFC 3261 17.1.4, 17.2.4)."""


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction reached Terminated: forget it."""


Effect = Send | StartTimer | StopTimer | PassToTU | TimedOut | TransportError | Terminated
TIMED_OUT = TimedOut()
TRANSPORT_ERROR = TransportError()
TERMINATED = Terminated()


class Transaction:
    """One client or server transaction: its request, peer, state and retransmission data.

    ``context`` belongs to the TU (the proxy keeps its per-request state there);
    ``handles``, ``key`` and ``aliases`` belong to the core: its timer handles (None, one,
    or a tuple of them), the key it files the transaction under, and the further keys of an
    RFC 2543 INVITE server transaction (one per To tag of its finals).
    ``status`` is that of the last response sent (server) or received (client), 0 before
    any.  Once the final response is out (or in), :meth:`release` lets go of the parsed
    request: what the states that follow need is kept as bytes (``last_data``,
    ``ack_data``), keys and ``status``.
    """

    __slots__ = (
        "kind", "is_client", "state", "request", "peer", "reliable", "settings", "method", "data",
        "interval", "status", "last_data", "ack_data", "error", "context",
        "handles", "key", "aliases",
    )

    def __init__(self, kind: Kind, request: Request, peer: Peer, settings: TimerSettings) -> None:
        self.kind = kind
        self.is_client = kind in CLIENT_KINDS
        self.state = State.INITIAL
        self.request: Request | None = request
        self.peer = peer
        self.reliable = peer.transport in RELIABLE_TRANSPORTS
        self.settings = settings
        self.method: str = _METHODS.get(request.method, request.method)
        # a client transaction serialises its request once; retransmissions reuse the bytes
        self.data: bytes = request.to_bytes() if self.is_client else b""
        self.interval = 0.0
        self.status = 0
        self.last_data: bytes | None = None
        self.ack_data: bytes | None = None
        self.error: str | None = None
        self.context: Any = None
        # neither a dict nor a list: most transactions hold one handle and one key for 32 s
        self.handles: Any = None
        self.key: Any = None
        self.aliases: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return f"<{self.kind.value} {self.method} {self.state.value} {self.peer}>"

    def handle(self, event: Event, message: Message | None = None) -> list[Effect] | None:
        """Run ``event`` through this kind's table; None means the pair has no row (a no-op)."""
        row = TABLES[self.kind].get((self.state, event))
        if row is None:
            return None
        handler, next_state = row
        effects = handler(self, message)
        self.state = next_state
        if next_state is State.TERMINATED:
            effects.append(TERMINATED)
            return effects
        return self._fire_zero_timers(effects)

    def release(self, keep_request: bool = False) -> None:
        """Drop what only the request phase needed, once the final response went out or came in.

        Completed, Confirmed and Accepted only absorb retransmissions (``last_data``,
        ``ack_data``) and wait for timers that last 32 s over UDP: at 1,500 REGISTERs/s,
        48,000 NISTs holding their parsed requests were most of the proxy's memory
        (bench/tx_memory.py).  A client's serialised request goes too: nothing retransmits
        it any more.  ``keep_request``: the TU or the core still reads it (Core._run).
        """
        if not keep_request:
            self.request = None
        self.data = b""

    def _fire_zero_timers(self, effects: list[Effect]) -> list[Effect]:
        """Replace a zero-duration StartTimer by the effects of that timer firing now."""
        for index, effect in enumerate(effects):
            if isinstance(effect, StartTimer) and effect.delay == 0:
                rest = self.handle(Event(effect.timer)) or []
                return effects[:index] + effects[index + 1:] + rest
        return effects


Handler = Callable[[Transaction, Any], list[Effect]]


# --- handlers shared by several rows ----------------------------------------------------


def _wait(tx: Transaction, timer: Timer) -> StartTimer:
    """Start a timer that always runs (B, D, F, H, I, J, K, L, M; zero on TCP for D, I, J, K)."""
    return StartTimer(timer, tx.settings.duration(timer, tx.reliable) or 0.0)


def _nothing(tx: Transaction, message: Message | None) -> list[Effect]:
    return []


def _pass_up(tx: Transaction, message: Message) -> list[Effect]:
    if tx.is_client:
        tx.status = message.status  # type: ignore[attr-defined]
    return [PassToTU(message)]


def _timed_out(tx: Transaction, message: None) -> list[Effect]:
    tx.error = "timeout"
    return [TIMED_OUT]


def _transport_error(tx: Transaction, message: None) -> list[Effect]:
    tx.error = "transport error"
    return [TRANSPORT_ERROR]


def _retransmit_then_timeout(tx: Transaction, retransmit: Timer, timeout: Timer) -> list[Effect]:
    """Start the retransmission timer (unreliable transports only) and the timeout timer."""
    effects: list[Effect] = []
    first = tx.settings.duration(retransmit, tx.reliable)
    if first is not None:
        tx.interval = first
        effects.append(StartTimer(retransmit, first))
    effects.append(_wait(tx, timeout))
    return effects


def _start_request(tx: Transaction, retransmit: Timer, timeout: Timer) -> list[Effect]:
    return [Send(tx.data, tx.method), *_retransmit_then_timeout(tx, retransmit, timeout)]


def _retransmit_request(tx: Transaction, timer: Timer, interval: float) -> list[Effect]:
    tx.interval = interval
    return [Send(tx.data, tx.method, retransmission=True), StartTimer(timer, interval)]


def _final_received(tx: Transaction, response: Message, stop: tuple[Timer, ...], wait: Timer) -> list[Effect]:
    """A final response ends the request phase: stop its timers, pass it up, start ``wait``."""
    effects: list[Effect] = [StopTimer(timer) for timer in stop]
    effects += _pass_up(tx, response)
    effects.append(_wait(tx, wait))
    return effects


def _send_response(tx: Transaction, response: Response) -> list[Effect]:
    """Send a response from the TU, serialised once and kept for retransmissions.

    In IST Accepted these are 2xx retransmissions and other forks' 2xx (RFC 6026 7.1).
    """
    tx.status = response.status
    tx.last_data = response.to_bytes()
    return [Send(tx.last_data, status_label(response.status))]


def _resend_response(tx: Transaction, message: Message | None) -> list[Effect]:
    """Answer a request retransmission (or Timer G) with the last response, if any."""
    if tx.last_data is None:
        return []
    return [Send(tx.last_data, status_label(tx.status), retransmission=True)]


# --- INVITE client transaction (RFC 3261 17.1.1, figure 5; RFC 6026 7.2) -----------------


def _ict_send(tx: Transaction, message: None) -> list[Effect]:
    return _start_request(tx, Timer.A, Timer.B)


def _ict_timer_a(tx: Transaction, message: None) -> list[Effect]:
    # 17.1.1.2: A doubles on every firing, without cap, until Timer B ends it
    return _retransmit_request(tx, Timer.A, tx.settings.backoff(Timer.A, tx.interval))


def _ict_1xx_first(tx: Transaction, response: Message) -> list[Effect]:
    return [StopTimer(Timer.A), StopTimer(Timer.B), *_pass_up(tx, response)]


def _ict_2xx(tx: Transaction, response: Message) -> list[Effect]:
    # RFC 6026 7.2: the 2xx goes up, and the transaction lingers in Accepted for Timer M
    return _final_received(tx, response, (Timer.A, Timer.B), Timer.M)


def _ict_failure(tx: Transaction, response: Response) -> list[Effect]:
    # 17.1.1.3: the transaction itself acknowledges a non-2xx final, with the same branch
    assert tx.request is not None  # released only after this final
    tx.ack_data = derived_request(tx.request, "ACK", response.header("To")).to_bytes()
    effects: list[Effect] = [Send(tx.ack_data, "ACK")]
    return effects + _final_received(tx, response, (Timer.A, Timer.B), Timer.D)


def _ict_resend_ack(tx: Transaction, response: Message) -> list[Effect]:
    return [Send(tx.ack_data or b"", "ACK", retransmission=True)]


def derived_request(request: Request, method: str, to: str | None = None) -> Request:
    """An ACK for a non-2xx (17.1.1.3) or a CANCEL (9.1) of ``request``.

    Both keep the Request-URI, Call-ID, From, CSeq number, Route set and a single Via equal
    to the request's top Via (so the same branch); the ACK takes the To of the response.
    """
    headers = [
        ("Via", str(request.top_via)), ("Max-Forwards", "70"),
        ("From", request.header("From") or ""), ("To", to or request.header("To") or ""),
        ("Call-ID", request.call_id), ("CSeq", f"{request.cseq.number} {method}"),
    ]
    headers += [("Route", route) for route in request.header_values("Route")]
    return Request(method, request.uri, headers)


# --- non-INVITE client transaction (RFC 3261 17.1.2, figure 6) --------------------------


def _nict_send(tx: Transaction, message: None) -> list[Effect]:
    return _start_request(tx, Timer.E, Timer.F)


def _nict_timer_e_trying(tx: Transaction, message: None) -> list[Effect]:
    return _retransmit_request(tx, Timer.E, tx.settings.backoff(Timer.E, tx.interval))


def _nict_timer_e_proceeding(tx: Transaction, message: None) -> list[Effect]:
    # 17.1.2.2: once a provisional arrived, retransmit every T2
    return _retransmit_request(tx, Timer.E, tx.settings.t2)


def _nict_final(tx: Transaction, response: Message) -> list[Effect]:
    return _final_received(tx, response, (Timer.E, Timer.F), Timer.K)


# --- INVITE server transaction (RFC 3261 17.2.1, figure 7; RFC 6026 7.1) ----------------


def _ist_2xx(tx: Transaction, response: Response) -> list[Effect]:
    # RFC 6026 7.1: stay in Accepted for Timer L so INVITE retransmissions are absorbed
    return [*_send_response(tx, response), _wait(tx, Timer.L)]


def _ist_failure(tx: Transaction, response: Response) -> list[Effect]:
    return _send_response(tx, response) + _retransmit_then_timeout(tx, Timer.G, Timer.H)


def _ist_timer_g(tx: Transaction, message: None) -> list[Effect]:
    tx.interval = tx.settings.backoff(Timer.G, tx.interval)
    return [*_resend_response(tx, None), StartTimer(Timer.G, tx.interval)]


def _ist_ack(tx: Transaction, ack: Message) -> list[Effect]:
    return [StopTimer(Timer.G), StopTimer(Timer.H), _wait(tx, Timer.I)]


# --- non-INVITE server transaction (RFC 3261 17.2.2, figure 8) --------------------------


def _nist_final(tx: Transaction, response: Response) -> list[Effect]:
    return [*_send_response(tx, response), _wait(tx, Timer.J)]


S, E = State, Event  # short names keep the table rows on one line each
Table = dict[tuple[State, Event], tuple[Handler, State]]

ICT_TABLE: Table = {
    (S.INITIAL, E.SEND_REQUEST): (_ict_send, S.CALLING),
    (S.CALLING, E.TIMER_A): (_ict_timer_a, S.CALLING),
    (S.CALLING, E.TIMER_B): (_timed_out, S.TERMINATED),
    (S.CALLING, E.TRANSPORT_ERROR): (_transport_error, S.TERMINATED),
    (S.CALLING, E.RECV_1XX): (_ict_1xx_first, S.PROCEEDING),
    (S.CALLING, E.RECV_2XX): (_ict_2xx, S.ACCEPTED),
    (S.CALLING, E.RECV_3456XX): (_ict_failure, S.COMPLETED),
    (S.PROCEEDING, E.RECV_1XX): (_pass_up, S.PROCEEDING),
    (S.PROCEEDING, E.RECV_2XX): (_ict_2xx, S.ACCEPTED),
    (S.PROCEEDING, E.RECV_3456XX): (_ict_failure, S.COMPLETED),
    (S.COMPLETED, E.RECV_3456XX): (_ict_resend_ack, S.COMPLETED),
    (S.COMPLETED, E.RECV_2XX): (_pass_up, S.COMPLETED),
    (S.COMPLETED, E.TRANSPORT_ERROR): (_transport_error, S.TERMINATED),
    (S.COMPLETED, E.TIMER_D): (_nothing, S.TERMINATED),
    (S.ACCEPTED, E.RECV_2XX): (_pass_up, S.ACCEPTED),
    (S.ACCEPTED, E.TIMER_M): (_nothing, S.TERMINATED),
}

NICT_TABLE: Table = {
    (S.INITIAL, E.SEND_REQUEST): (_nict_send, S.TRYING),
    (S.TRYING, E.TIMER_E): (_nict_timer_e_trying, S.TRYING),
    (S.TRYING, E.TIMER_F): (_timed_out, S.TERMINATED),
    (S.TRYING, E.TRANSPORT_ERROR): (_transport_error, S.TERMINATED),
    (S.TRYING, E.RECV_1XX): (_pass_up, S.PROCEEDING),
    (S.TRYING, E.RECV_2XX): (_nict_final, S.COMPLETED),
    (S.TRYING, E.RECV_3456XX): (_nict_final, S.COMPLETED),
    (S.PROCEEDING, E.TIMER_E): (_nict_timer_e_proceeding, S.PROCEEDING),
    (S.PROCEEDING, E.TIMER_F): (_timed_out, S.TERMINATED),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (_transport_error, S.TERMINATED),
    (S.PROCEEDING, E.RECV_1XX): (_pass_up, S.PROCEEDING),
    (S.PROCEEDING, E.RECV_2XX): (_nict_final, S.COMPLETED),
    (S.PROCEEDING, E.RECV_3456XX): (_nict_final, S.COMPLETED),
    (S.COMPLETED, E.TIMER_K): (_nothing, S.TERMINATED),
}

IST_TABLE: Table = {
    (S.INITIAL, E.RECV_REQUEST): (_pass_up, S.PROCEEDING),
    (S.PROCEEDING, E.RECV_REQUEST): (_resend_response, S.PROCEEDING),
    (S.PROCEEDING, E.SEND_1XX): (_send_response, S.PROCEEDING),
    (S.PROCEEDING, E.SEND_2XX): (_ist_2xx, S.ACCEPTED),
    (S.PROCEEDING, E.SEND_3456XX): (_ist_failure, S.COMPLETED),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (_transport_error, S.TERMINATED),
    (S.PROCEEDING, E.ABANDON): (_nothing, S.TERMINATED),
    (S.COMPLETED, E.RECV_REQUEST): (_resend_response, S.COMPLETED),
    (S.COMPLETED, E.TIMER_G): (_ist_timer_g, S.COMPLETED),
    (S.COMPLETED, E.TIMER_H): (_timed_out, S.TERMINATED),
    (S.COMPLETED, E.RECV_ACK): (_ist_ack, S.CONFIRMED),
    (S.COMPLETED, E.TRANSPORT_ERROR): (_transport_error, S.TERMINATED),
    (S.CONFIRMED, E.TIMER_I): (_nothing, S.TERMINATED),
    (S.ACCEPTED, E.SEND_2XX): (_send_response, S.ACCEPTED),
    (S.ACCEPTED, E.RECV_ACK): (_pass_up, S.ACCEPTED),  # RFC 6026 7.1: the ACK for a 2xx is the TU's
    (S.ACCEPTED, E.TIMER_L): (_nothing, S.TERMINATED),
}

NIST_TABLE: Table = {
    (S.INITIAL, E.RECV_REQUEST): (_pass_up, S.TRYING),
    (S.TRYING, E.ABANDON): (_nothing, S.TERMINATED),
    (S.TRYING, E.SEND_1XX): (_send_response, S.PROCEEDING),
    (S.TRYING, E.SEND_2XX): (_nist_final, S.COMPLETED),
    (S.TRYING, E.SEND_3456XX): (_nist_final, S.COMPLETED),
    (S.PROCEEDING, E.SEND_1XX): (_send_response, S.PROCEEDING),
    (S.PROCEEDING, E.SEND_2XX): (_nist_final, S.COMPLETED),
    (S.PROCEEDING, E.SEND_3456XX): (_nist_final, S.COMPLETED),
    (S.PROCEEDING, E.RECV_REQUEST): (_resend_response, S.PROCEEDING),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (_transport_error, S.TERMINATED),
    (S.PROCEEDING, E.ABANDON): (_nothing, S.TERMINATED),
    (S.COMPLETED, E.RECV_REQUEST): (_resend_response, S.COMPLETED),
    (S.COMPLETED, E.TRANSPORT_ERROR): (_transport_error, S.TERMINATED),
    (S.COMPLETED, E.TIMER_J): (_nothing, S.TERMINATED),
}

TABLES: dict[Kind, Table] = {
    Kind.ICT: ICT_TABLE, Kind.NICT: NICT_TABLE, Kind.IST: IST_TABLE, Kind.NIST: NIST_TABLE,
}

# --- every pair without a row, decided on purpose ---------------------------------------

EVENTS: dict[Kind, frozenset[Event]] = {
    Kind.ICT: frozenset({
        E.SEND_REQUEST, E.RECV_1XX, E.RECV_2XX, E.RECV_3456XX, E.TRANSPORT_ERROR,
        E.TIMER_A, E.TIMER_B, E.TIMER_D, E.TIMER_M,
    }),
    Kind.NICT: frozenset({
        E.SEND_REQUEST, E.RECV_1XX, E.RECV_2XX, E.RECV_3456XX, E.TRANSPORT_ERROR,
        E.TIMER_E, E.TIMER_F, E.TIMER_K,
    }),
    Kind.IST: frozenset({
        E.RECV_REQUEST, E.RECV_ACK, E.SEND_1XX, E.SEND_2XX, E.SEND_3456XX, E.TRANSPORT_ERROR,
        E.ABANDON, E.TIMER_G, E.TIMER_H, E.TIMER_I, E.TIMER_L,
    }),
    Kind.NIST: frozenset({
        E.RECV_REQUEST, E.SEND_1XX, E.SEND_2XX, E.SEND_3456XX, E.TRANSPORT_ERROR, E.ABANDON,
        E.TIMER_J,
    }),
}

# Why each pair is a no-op: a transaction starts with exactly one event; stopped timers
# may still pop (cancellation is lazy); retransmitted requests and responses are absorbed;
# a TU answering twice is ignored; transport errors only count where something was sent;
# a TU can only abandon a request it has not answered (after that, the timers end it).
IGNORED: dict[Kind, dict[State, frozenset[Event]]] = {
    Kind.ICT: {
        S.INITIAL: frozenset({
            E.RECV_1XX, E.RECV_2XX, E.RECV_3456XX, E.TRANSPORT_ERROR,
            E.TIMER_A, E.TIMER_B, E.TIMER_D, E.TIMER_M,
        }),
        S.CALLING: frozenset({E.SEND_REQUEST, E.TIMER_D, E.TIMER_M}),
        S.PROCEEDING: frozenset({
            E.SEND_REQUEST, E.TRANSPORT_ERROR, E.TIMER_A, E.TIMER_B, E.TIMER_D, E.TIMER_M,
        }),
        S.COMPLETED: frozenset({E.SEND_REQUEST, E.RECV_1XX, E.TIMER_A, E.TIMER_B, E.TIMER_M}),
        # RFC 6026 7.2: only 2xx responses matter once a 2xx arrived
        S.ACCEPTED: frozenset({
            E.SEND_REQUEST, E.RECV_1XX, E.RECV_3456XX, E.TRANSPORT_ERROR,
            E.TIMER_A, E.TIMER_B, E.TIMER_D,
        }),
        S.TERMINATED: EVENTS[Kind.ICT],
    },
    Kind.NICT: {
        S.INITIAL: frozenset({
            E.RECV_1XX, E.RECV_2XX, E.RECV_3456XX, E.TRANSPORT_ERROR,
            E.TIMER_E, E.TIMER_F, E.TIMER_K,
        }),
        S.TRYING: frozenset({E.SEND_REQUEST, E.TIMER_K}),
        S.PROCEEDING: frozenset({E.SEND_REQUEST, E.TIMER_K}),
        S.COMPLETED: frozenset({
            E.SEND_REQUEST, E.RECV_1XX, E.RECV_2XX, E.RECV_3456XX, E.TRANSPORT_ERROR,
            E.TIMER_E, E.TIMER_F,
        }),
        S.TERMINATED: EVENTS[Kind.NICT],
    },
    Kind.IST: {
        S.INITIAL: frozenset({
            E.RECV_ACK, E.SEND_1XX, E.SEND_2XX, E.SEND_3456XX, E.TRANSPORT_ERROR, E.ABANDON,
            E.TIMER_G, E.TIMER_H, E.TIMER_I, E.TIMER_L,
        }),
        S.PROCEEDING: frozenset({E.RECV_ACK, E.TIMER_G, E.TIMER_H, E.TIMER_I, E.TIMER_L}),
        S.COMPLETED: frozenset({
            E.SEND_1XX, E.SEND_2XX, E.SEND_3456XX, E.ABANDON, E.TIMER_I, E.TIMER_L,
        }),
        S.CONFIRMED: frozenset({
            E.RECV_REQUEST, E.RECV_ACK, E.SEND_1XX, E.SEND_2XX, E.SEND_3456XX,
            E.TRANSPORT_ERROR, E.ABANDON, E.TIMER_G, E.TIMER_H, E.TIMER_L,
        }),
        # RFC 6026 7.1: INVITE retransmissions are absorbed; the TU owns 2xx delivery, so a
        # failed send of one does not end the transaction
        S.ACCEPTED: frozenset({
            E.RECV_REQUEST, E.SEND_1XX, E.SEND_3456XX, E.TRANSPORT_ERROR, E.ABANDON,
            E.TIMER_G, E.TIMER_H, E.TIMER_I,
        }),
        S.TERMINATED: EVENTS[Kind.IST],
    },
    Kind.NIST: {
        S.INITIAL: frozenset({
            E.SEND_1XX, E.SEND_2XX, E.SEND_3456XX, E.TRANSPORT_ERROR, E.ABANDON, E.TIMER_J,
        }),
        S.TRYING: frozenset({E.RECV_REQUEST, E.TRANSPORT_ERROR, E.TIMER_J}),
        S.PROCEEDING: frozenset({E.TIMER_J}),
        S.COMPLETED: frozenset({E.SEND_1XX, E.SEND_2XX, E.SEND_3456XX, E.ABANDON}),
        S.TERMINATED: EVENTS[Kind.NIST],
    },
}
