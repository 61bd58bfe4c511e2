"""Responses: best-response choice (RFC 3261 16.7), stray responses, failover (RFC 3263 4.3)."""

from __future__ import annotations

import pytest
from test_proxy_support import BOB1, BOB2, UAC, bob_store, by_peer, make_proxy, only
from test_transaction_fixtures import request, response

from psp import __version__
from psp.events import Peer, Resolved, ResolveJob, TransportFailed
from psp.plugins.base import Plugin, State
from psp.rfc3263 import Blocklist

FORK = "[localdb]\nmode = sf_forking\n"
TWO = (("sip:bob@192.0.2.21", 1.0), ("sip:bob@192.0.2.22", 0.5))
WWW = ("WWW-Authenticate", 'Digest realm="b1.example", nonce="n1", qop="auth"')
PROXY_AUTH = ("Proxy-Authenticate", 'Digest realm="b2.example", nonce="n2", qop="auth"')


def forked(conf: str = FORK, **kwargs):
    net, proxy = make_proxy(conf, store=bob_store(*TWO), **kwargs)
    net.deliver(request(uri="sip:bob@example.com"), UAC)
    sent = net.take()
    return net, {peer: message for peer, message in sent if peer != UAC}


def upstream(net) -> list:
    return [message for peer, message in net.take() if peer == UAC]


def answer(net, out, first: tuple, second: tuple) -> list:
    """BOB1 answers ``first`` = (status, headers), then BOB2 ``second``; what reached the UAC."""
    net.deliver(response(out[BOB1], first[0], to_tag="b1", headers=first[1]), BOB1)
    assert upstream(net) == []  # a non-2xx waits for the other branch
    net.deliver(response(out[BOB2], second[0], to_tag="b2", headers=second[1]), BOB2)
    return upstream(net)


@pytest.mark.parametrize(("first", "second", "chosen"), [
    (486, 302, 302),   # lowest class wins
    (404, 486, 404),   # same class: the lowest code
    (484, 404, 484),   # 484 tells the UAC how to retry: preferred in 4xx
    (500, 486, 486),
    (503, 503, 500),   # a 503 is never relayed: we answer 500
    (503, 502, 502),
])
def test_best_response_once_every_branch_ended(first: int, second: int, chosen: int) -> None:
    net, out = forked()
    [final] = answer(net, out, (first, ()), (second, ()))
    assert final.status == chosen
    assert final.has("Server") is (chosen == 500)  # our own 500; the others are relayed as received


def test_a_6xx_cancels_the_pending_branches_and_wins() -> None:
    net, out = forked()
    net.deliver(response(out[BOB2], 180, to_tag="b2"), BOB2)
    net.take()
    net.deliver(response(out[BOB1], 603, to_tag="b1"), BOB1)
    sent = by_peer(net.take())
    assert UAC not in sent and [m.method for m in sent[BOB2]] == ["CANCEL"]
    net.deliver(response(out[BOB2], 487, to_tag="b2"), BOB2)
    [final] = upstream(net)
    assert (final.status, final.to.tag) == (603, "b1")


def test_401_and_407_challenges_are_aggregated() -> None:
    net, out = forked()
    [final] = answer(net, out, (401, (WWW,)), (407, (PROXY_AUTH,)))
    assert final.status == 401
    assert final.header_values("WWW-Authenticate") == [WWW[1]]
    assert final.header_values("Proxy-Authenticate") == [PROXY_AUTH[1]]


def test_408_when_no_branch_answered() -> None:
    net, out = forked()
    net.advance(32.1)
    finals = [(m.status, m.header("Server")) for m in upstream(net) if m.status >= 200]
    assert finals == [(408, f"PartySIP/{__version__}")]


def test_provisionals_are_relayed_but_100_is_absorbed() -> None:
    net, out = forked()
    net.deliver(response(out[BOB1], 100), BOB1)
    assert upstream(net) == []
    net.deliver(response(out[BOB1], 183, to_tag="b1"), BOB1)
    [early] = upstream(net)
    assert early.status == 183 and len(early.vias) == 1  # our Via popped


def test_response_hooks_can_drop_a_response() -> None:
    class Drop180(Plugin):
        name = "drop180"

        def on_response(self, ctx, response):
            return State.STOP if response.status == 180 else None

    net, proxy = make_proxy(FORK, store=bob_store(*TWO), extra=(Drop180,))
    net.deliver(request(uri="sip:bob@example.com"), UAC)
    out = {peer: message for peer, message in net.take() if peer != UAC}
    net.deliver(response(out[BOB1], 180, to_tag="b1"), BOB1)
    net.deliver(response(out[BOB1], 183, to_tag="b1"), BOB1)
    assert [m.status for m in upstream(net)] == [183]


def test_stray_response_with_our_via_is_relayed_statelessly() -> None:
    net, out = forked()
    net.deliver(response(out[BOB1], 200, to_tag="b1"), BOB1)
    net.take()
    net.advance(40.0)  # every transaction is gone
    net.take()
    net.deliver(response(out[BOB1], 200, to_tag="b1"), BOB1)
    peer, late = only(net.take())
    assert (peer, late.status, len(late.vias)) == (UAC, 200, 1)


def test_stray_response_without_our_via_is_dropped_and_counted() -> None:
    net, proxy = make_proxy()
    net.deliver(response(request(), 200), BOB1)
    assert net.take() == [] and proxy.stats["stray_dropped"] == 1


def test_a_name_is_resolved_and_a_503_moves_to_the_next_target() -> None:
    blocklist = Blocklist(30.0)
    net, proxy = make_proxy(blocklist=blocklist)
    net.deliver(request("MESSAGE", uri="sip:bob@elsewhere.example"), UAC)
    [job] = [item for item in net.core.outbox if isinstance(item, ResolveJob)]
    net.core.outbox.clear()
    assert (job.host, job.port, job.transport) == ("elsewhere.example", None, None)
    net.core.on_resolved(Resolved(job.job, (BOB1, BOB2), None, 0.0), 0.0)
    peer, first = only(net.take())
    assert peer == BOB1
    net.deliver(response(first, 503), BOB1)
    peer, second = only(net.take())
    assert (peer, second.method) == (BOB2, "MESSAGE") and second.top_via.branch != first.top_via.branch
    assert blocklist.is_blocked(BOB1, 1.0)
    net.core.on_transport_failed(TransportFailed(BOB2, "refused", 0.0), 0.0)
    [final] = upstream(net)
    assert final.status == 500  # 503 and a transport error (16.9: a 503): we answer 500


def test_unresolvable_name_is_answered() -> None:
    net, _ = make_proxy()
    net.deliver(request("OPTIONS", uri="sip:bob@nowhere.example"), UAC)
    [job] = net.core.outbox
    net.core.outbox.clear()
    net.core.on_resolved(Resolved(job.job, (), "NXDOMAIN", 0.0), 0.0)
    assert only(net.take())[1].status == 500


def test_tcp_target_gets_a_tcp_via() -> None:
    net, _ = make_proxy()
    net.deliver(request("OPTIONS", uri="sip:bob@192.0.2.21;transport=tcp"), UAC)
    peer, options = only(net.take())
    assert peer == Peer("tcp", "192.0.2.21", 5060) and options.top_via.transport == "TCP"
