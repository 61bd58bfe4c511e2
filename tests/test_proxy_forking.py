"""Forking (RFC 3261 16.6, 16.7), sequential search, CANCEL (16.10, 9.1) and Timer C (16.8)."""

from __future__ import annotations

import pytest
from test_proxy_support import BOB1, BOB2, UAC, bob_store, by_peer, labels, make_proxy, only
from test_transaction_fixtures import request, response

from psp.branch import key_of
from psp.timers import TimerSettings

FORK = "[localdb]\nmode = sf_forking\n"
SEQ = "[localdb]\nmode = sf_sequential\n"
TWO = (("sip:bob@192.0.2.21", 1.0), ("sip:bob@192.0.2.22", 0.5))


def invite_bob(mode: str = FORK, timers: TimerSettings = TimerSettings()):
    """The UAC invites bob, who has two bindings; returns (net, invite, {peer: forwarded INVITE})."""
    net, _ = make_proxy(mode, store=bob_store(*TWO), timers=timers)
    invite = request(uri="sip:bob@example.com")
    net.deliver(invite, UAC)
    sent = net.take()
    assert sent[0][0] == UAC and sent[0][1].status == 100  # 100 Trying at once
    return net, invite, {peer: message for peer, message in sent[1:]}


def test_fork_sends_to_every_binding_with_one_key_and_distinct_branches() -> None:
    net, invite, out = invite_bob()
    assert set(out) == {BOB1, BOB2}
    assert str(out[BOB1].uri) == "sip:bob@192.0.2.21" and str(out[BOB2].uri) == "sip:bob@192.0.2.22"
    branches = {out[BOB1].top_via.branch, out[BOB2].top_via.branch}
    assert len(branches) == 2 and len({key_of(b) for b in branches}) == 1
    assert all(m.max_forwards == 69 and len(m.vias) == 2 for m in out.values())


def test_fork_one_answers_and_the_other_is_cancelled() -> None:
    net, invite, out = invite_bob()
    net.deliver(response(out[BOB1], 180, to_tag="b1"), BOB1)
    net.deliver(response(out[BOB2], 180, to_tag="b2"), BOB2)
    assert labels(net.take()) == [(UAC, 180), (UAC, 180)]
    net.deliver(response(out[BOB1], 200, to_tag="b1"), BOB1)
    sent = by_peer(net.take())
    assert [m.status for m in sent[UAC]] == [200] and sent[UAC][0].to.tag == "b1"
    [cancel] = sent[BOB2]
    assert cancel.method == "CANCEL" and cancel.top_via.branch == out[BOB2].top_via.branch
    net.deliver(response(cancel, 200, to_tag="b2"), BOB2)
    net.deliver(response(out[BOB2], 487, to_tag="b2"), BOB2)
    assert labels(net.take()) == [(BOB2, "ACK")]  # the 487 stays here: a 2xx went up already


def test_every_2xx_of_a_fork_is_forwarded() -> None:
    net, invite, out = invite_bob()
    net.deliver(response(out[BOB1], 200, to_tag="b1"), BOB1)
    net.deliver(response(out[BOB2], 200, to_tag="b2"), BOB2)
    ups = [m for peer, m in net.take() if peer == UAC]
    assert [(m.status, m.to.tag) for m in ups] == [(200, "b1"), (200, "b2")]


def test_a_branch_without_provisional_is_cancelled_when_its_first_one_arrives() -> None:
    net, invite, out = invite_bob()
    net.deliver(response(out[BOB1], 200, to_tag="b1"), BOB1)
    assert labels(net.take()) == [(UAC, 200)]  # 9.1: no CANCEL before a provisional
    net.deliver(response(out[BOB2], 180, to_tag="b2"), BOB2)
    peer, cancel = only(net.take())  # and the late 180 is not relayed
    assert (peer, cancel.method) == (BOB2, "CANCEL")


def test_sequential_486_then_200() -> None:
    net, invite, out = invite_bob(SEQ)
    assert set(out) == {BOB1}  # the best q first, alone
    net.deliver(response(out[BOB1], 486, to_tag="b1"), BOB1)
    sent = by_peer(net.take())
    assert UAC not in sent and [m.method for m in sent[BOB1]] == ["ACK"]
    [second] = sent[BOB2]
    assert second.method == "INVITE" and key_of(second.top_via.branch) == key_of(out[BOB1].top_via.branch)
    assert second.top_via.branch != out[BOB1].top_via.branch
    net.deliver(response(second, 200, to_tag="b2"), BOB2)
    assert labels(net.take()) == [(UAC, 200)]


def test_sequential_moves_on_when_a_target_never_answers() -> None:
    net, invite, out = invite_bob(SEQ)
    net.advance(32.1)  # Timer B of the first branch
    second = [m for peer, m in net.take() if peer == BOB2]
    assert [m.method for m in second] == ["INVITE"]
    net.deliver(response(second[0], 486, to_tag="b2"), BOB2)
    ups = [m.status for peer, m in net.take() if peer == UAC]
    assert ups == [486]  # a 4xx answer beats the 408 stood in for the silent one


def test_cancel_before_any_provisional_is_answered_at_once() -> None:
    net, invite, out = invite_bob()
    net.deliver(request("CANCEL", uri="sip:bob@example.com"), UAC)
    peer, ok = only(net.take())
    assert (peer, ok.status, ok.cseq.method) == (UAC, 200, "CANCEL")  # not 481 as the original
    net.deliver(response(out[BOB1], 180, to_tag="b1"), BOB1)
    peer, cancel = only(net.take())
    assert (peer, cancel.method) == (BOB1, "CANCEL")
    net.deliver(response(out[BOB1], 487, to_tag="b1"), BOB1)
    net.deliver(response(out[BOB2], 100), BOB2)
    sent = by_peer(net.take())
    assert [m.method for m in sent[BOB1]] == ["ACK"] and [m.method for m in sent[BOB2]] == ["CANCEL"]
    net.deliver(response(out[BOB2], 487, to_tag="b2"), BOB2)
    sent = by_peer(net.take())
    assert [m.status for m in sent[UAC]] == [487]


def test_cancel_after_a_provisional_cancels_downstream_and_relays_the_487() -> None:
    net, invite, out = invite_bob(SEQ)
    net.deliver(response(out[BOB1], 180, to_tag="b1"), BOB1)
    net.take()
    net.deliver(request("CANCEL", uri="sip:bob@example.com"), UAC)
    sent = by_peer(net.take())
    assert [m.status for m in sent[UAC]] == [200] and [m.method for m in sent[BOB1]] == ["CANCEL"]
    net.deliver(response(out[BOB1], 487, to_tag="b1"), BOB1)
    sent = by_peer(net.take())
    assert [m.status for m in sent[UAC]] == [487] and BOB2 not in sent  # no next target after CANCEL


def test_cancel_for_nothing_gets_481() -> None:
    net, _ = make_proxy()
    net.deliver(request("CANCEL", branch="z9hG4bK-none"), UAC)
    assert only(net.take())[1].status == 481


def test_a_cancelled_branch_that_never_answers_is_given_up() -> None:
    net, invite, out = invite_bob(SEQ)
    net.deliver(response(out[BOB1], 180, to_tag="b1"), BOB1)
    net.deliver(request("CANCEL", uri="sip:bob@example.com"), UAC)
    net.take()
    net.advance(31.9)
    assert [m.status for peer, m in net.take() if peer == UAC] == []
    net.advance(32.1)  # 64*T1 after our CANCEL, still no 487: we end the branch
    assert [m.status for peer, m in net.take() if peer == UAC] == [487]


@pytest.mark.parametrize("provisional", [True, False])
def test_timer_c(provisional: bool) -> None:
    net, invite, out = invite_bob(SEQ, TimerSettings(timer_c=20.0))
    if provisional:
        net.advance(5.0)
        net.deliver(response(out[BOB1], 180, to_tag="b1"), BOB1)
        net.take()
        net.advance(24.9)  # restarted at t=5 by the 180
        assert [m.method for _, m in net.take()] == []
        net.advance(25.1)
        assert labels(net.take()) == [(BOB1, "CANCEL")]
    else:
        net.advance(20.1)  # no provisional: as if the branch answered 408, the next one starts
        assert [label for _, label in labels(net.take()) if label != "INVITE"] == []
        assert net.core.stats.transactions["ICT"] == 2
