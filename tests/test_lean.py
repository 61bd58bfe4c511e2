"""What keeps the garbage collector off the hot path and the memory down (docs/performance.md).

A call must be freed by reference counting as soon as its last transaction ends: no
reference cycle may survive it (the core and the proxy context break theirs), and no
cancelled timer may hold it (Timer C runs for over 3 minutes).  The server then tunes the
collector for frequent small collections (psp.server.tune_gc).

A transaction that has sent (server) or received (client) its final response lives on
for 32 s over UDP (Timers D, J, K, L, M) with what those states need: bytes, keys and a
status, never a parsed message (at 1,500 REGISTERs/s that is 48,000 transactions at once).
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from types import BuiltinFunctionType, FunctionType, ModuleType

import pytest
from test_proxy_support import BOB1, BOB2, UAC, bob_store, make_proxy, only
from test_transaction_fixtures import request, response

from psp.context import ProxyContext
from psp.core import TU, Core
from psp.events import Peer
from psp.message import Message, Request, make_response
from psp.server import GC_THRESHOLDS, tune_gc
from psp.timers import TimerSettings
from psp.transaction import Kind, State, Transaction


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off: only reference counting may free anything."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def in_dialog(method: str, ok: Request, cseq: int) -> Request:
    """The caller's ACK or BYE for the 200 ``ok``, along its Record-Route (none here)."""
    return request(method, uri="sip:bob@192.0.2.21", branch=f"z9hG4bK-{method}", cseq=cseq,
                   to_tag=ok.to.tag)


def test_a_finished_call_is_freed_by_reference_counting(no_collector: None) -> None:
    net, proxy = make_proxy(store=bob_store(("sip:bob@192.0.2.21", 1.0)))
    net.deliver(request(uri="sip:bob@example.com"), UAC)
    forwarded = next(message for peer, message in net.take() if peer == BOB1)
    [server_tx] = [tx for tx in net.core._servers.values() if tx.method == "INVITE"]
    context = server_tx.context
    assert isinstance(context, ProxyContext)
    watched = [weakref.ref(context), *(weakref.ref(branch) for branch in context.branches)]
    del server_tx, context
    net.deliver(response(forwarded, 180, to_tag="b1"), BOB1)
    net.deliver(response(forwarded, 200, to_tag="b1"), BOB1)
    _, ok = only([sent for sent in net.take() if sent[0] == UAC and sent[1].status == 200])
    net.deliver(in_dialog("ACK", ok, 1), UAC)
    assert [message.method for peer, message in net.take() if peer == BOB1] == ["ACK"]
    net.deliver(in_dialog("BYE", ok, 2), UAC)
    bye = next(message for peer, message in net.take() if peer == BOB1)
    net.deliver(response(bye, 200, to_tag="b1"), BOB1)
    net.take()
    net.advance(40.0)  # Timers J, L and M (32 s) are over; the cancelled Timer C (over 3 min) is not
    assert not net.core._servers and not net.core._clients
    assert [ref() for ref in watched] == [None] * len(watched)


def test_tune_gc_freezes_start_up_and_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# --- completed transactions keep bytes, not messages --------------------------------------


def messages_in(root: object) -> list[Message]:
    """Every parsed message reachable from ``root`` (classes, modules, functions not followed)."""
    seen, todo, found = {id(root)}, [root], []
    while todo:
        obj = todo.pop()
        if isinstance(obj, Message):
            found.append(obj)
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(
                    ref, (type, ModuleType, FunctionType, BuiltinFunctionType)):
                seen.add(id(ref))
                todo.append(ref)
    return found


class Answering(TU):
    """Answers every request with ``status`` and keeps its server transactions."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.servers: list[Transaction] = []
        self.acks: list[Request] = []

    def on_request(self, server_tx: Transaction, request: Request, now: float) -> None:
        self.servers.append(server_tx)
        self.core.respond(server_tx, make_response(request, self.status, to_tag="uas-1"), now)

    def on_ack(self, request: Request, peer: Peer, now: float) -> None:
        self.acks.append(request)


def answered(method: str, status: int, **fields: object) -> tuple[Core, Answering, Transaction, bytes]:
    """A Core whose TU answered one ``method`` with ``status``: its server transaction and the bytes."""
    tu = Answering(status)
    core = Core(TimerSettings(), tu)
    core.on_received(request(method, **fields), UAC, 0.0)  # type: ignore[arg-type]
    [server_tx] = tu.servers
    [sent] = core.outbox
    core.outbox.clear()
    return core, tu, server_tx, sent.data


@pytest.mark.parametrize(("method", "status", "state"), [
    ("REGISTER", 200, State.COMPLETED), ("OPTIONS", 404, State.COMPLETED),
    ("INVITE", 486, State.COMPLETED), ("INVITE", 200, State.ACCEPTED),
])
def test_an_answered_server_transaction_keeps_bytes_not_messages(method: str, status: int,
                                                                 state: State) -> None:
    core, _, server_tx, data = answered(method, status)
    assert server_tx.state is state and server_tx.status == status
    assert server_tx.request is None and messages_in(server_tx) == []
    core.on_received(request(method), UAC, 1.0)  # a retransmission of the request
    again = [out.data for out in core.outbox]
    assert again == ([data] if state is State.COMPLETED else [])  # Accepted absorbs it (RFC 6026)


def test_a_released_invite_server_transaction_still_matches_its_acks() -> None:
    core, tu, server_tx, data = answered("INVITE", 486)
    core.on_timers(0.5)  # Timer G: the same bytes again
    assert [out.data for out in core.outbox] == [data]
    core.on_received(request("ACK", cseq_method="ACK", to_tag="uas-1"), UAC, 1.0)
    assert server_tx.state is State.CONFIRMED and tu.acks == []  # absorbed
    core, tu, server_tx, _ = answered("INVITE", 200)
    core.on_received(request("ACK", branch="z9hG4bK-ack", cseq_method="ACK", to_tag="uas-1"), UAC, 1.0)
    assert server_tx.state is State.ACCEPTED and len(tu.acks) == 1  # the ACK for the 2xx: the TU's


def test_an_rfc2543_invite_server_transaction_keeps_its_request_for_its_ack_keys() -> None:
    core, tu, server_tx, _ = answered("INVITE", 486, branch=None)
    assert server_tx.request is not None  # respond() files it under the To tag of each final
    core.on_received(request("ACK", branch=None, cseq_method="ACK", to_tag="uas-1"), UAC, 1.0)
    assert server_tx.state is State.CONFIRMED


@pytest.mark.parametrize(("method", "status", "state"), [
    ("OPTIONS", 200, State.COMPLETED), ("INVITE", 486, State.COMPLETED), ("INVITE", 200, State.ACCEPTED),
])
def test_a_client_transaction_with_its_final_keeps_bytes_not_messages(method: str, status: int,
                                                                     state: State) -> None:
    core = Core(TimerSettings(), TU())
    sent = request(method, branch="z9hG4bK-out")
    client_tx = core.send_request(sent, BOB1, 0.0)
    final = response(sent, status)
    core.on_received(final, BOB1, 0.1)
    assert client_tx.state is state and client_tx.status == status
    assert client_tx.request is None and client_tx.data == b"" and messages_in(client_tx) == []
    core.outbox.clear()
    core.on_received(final, BOB1, 0.2)  # a retransmitted final: the ICT acknowledges it again
    if client_tx.kind is Kind.ICT and status >= 300:
        assert [out.data for out in core.outbox] == [client_tx.ack_data]


def test_a_registration_leaves_no_message_behind_in_its_transaction() -> None:
    net, proxy = make_proxy()
    register = request("REGISTER", uri="sip:example.com", headers="Contact: <sip:bob@192.0.2.21>\r\n")
    net.deliver(register, UAC)
    [(_, ok)] = net.take()
    assert ok.status == 200
    [server_tx] = net.core._servers.values()
    assert server_tx.state is State.COMPLETED and messages_in(server_tx) == []


def test_a_proxied_request_keeps_its_request_while_its_context_may_answer_for_a_branch() -> None:
    # The 200 of one branch completes the server transaction; the other branch then times
    # out, and the context builds its stand-in 408 from the server transaction's request.
    net, _ = make_proxy("[localdb]\nmode = sf_forking\n",
                        store=bob_store(("sip:bob@192.0.2.21", 1.0), ("sip:bob@192.0.2.22", 1.0)))
    net.deliver(request("MESSAGE", uri="sip:bob@example.com"), UAC)
    out = {peer: message for peer, message in net.take()}
    net.deliver(response(out[BOB1], 200, to_tag="b1"), BOB1)
    assert [message.status for peer, message in net.take() if peer == UAC] == [200]
    [server_tx] = net.core._servers.values()
    assert server_tx.state is State.COMPLETED
    net.advance(33.0)  # Timer F of BOB2's branch, then Timer J
    assert BOB2 in {peer for peer, _ in net.take()}  # its retransmissions; nothing went upstream
    assert not net.core._servers and not net.core._clients


def test_transactions_from_one_address_share_its_peer_and_the_tables_shrink_after_a_peak() -> None:
    tu = Answering(200)
    core = Core(TimerSettings(), tu)
    for n in range(3000):  # equal peers, distinct objects, as the transport makes them
        core.on_received(request("REGISTER", branch=f"z9hG4bK-{n}"), Peer("udp", "192.0.2.10", 5060), 0.0)
    assert len({id(tx.peer) for tx in tu.servers}) == 1
    peak = sys.getsizeof(core._servers)
    core.on_timers(40.0)  # Timer J
    assert not core._servers and not core._peers
    assert sys.getsizeof(core._servers) < peak / 10
