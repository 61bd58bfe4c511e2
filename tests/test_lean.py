"""What keeps the garbage collector off the hot path (docs/performance.md).

A call must be freed by reference counting as soon as its last transaction ends: no
reference cycle may survive it (the core and the proxy context break theirs), and no
cancelled timer may hold it (Timer C runs for over 3 minutes).  The server then tunes the
collector for frequent small collections (psp.server.tune_gc).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from test_proxy_support import BOB1, UAC, bob_store, make_proxy, only
from test_transaction_fixtures import request, response

from psp.context import ProxyContext
from psp.message import Request
from psp.server import GC_THRESHOLDS, tune_gc


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
