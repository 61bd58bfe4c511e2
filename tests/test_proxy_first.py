"""Whole exchanges through the proxy and Core on a fake clock: a UAC peer, a UAS peer, and us.

The chain is ``syntax ls_sfull``: every request names its UAS in the Request-URI.
"""

import pytest
from test_proxy_support import make_proxy
from test_transaction_fixtures import request, response

from psp.events import Peer, Resolved, ResolveJob, TransportFailed

UAC = Peer("udp", "192.0.2.10", 5060)
UAS = Peer("udp", "192.0.2.20", 5060)


@pytest.fixture
def net():
    return make_proxy(plugins="syntax ls_sfull")[0]


def forwarded_invite(net, **kwargs):
    """The UAC sends an INVITE; returns (its request, what reached the UAS)."""
    invite = request(**kwargs)
    net.deliver(invite, UAC)
    sent = net.take()
    assert [(peer, label(msg)) for peer, msg in sent] == [(UAC, 100), (UAS, "INVITE")]
    return invite, sent[1][1]


def label(message):
    return message.status if hasattr(message, "status") else message.method


def only(sent):
    [(peer, message)] = sent
    return peer, message


def test_whole_call_invite_180_200_ack_bye_200(net):
    invite, out = forwarded_invite(net)
    ours = out.top_via
    assert ours.host == "192.0.2.1" and ours.branch.startswith("z9hG4bK") and "rport" in ours.params
    assert ours.branch != invite.top_via.branch and len(out.vias) == 2
    assert out.max_forwards == 69 and str(out.uri) == str(invite.uri)

    net.deliver(response(out, 180), UAS)
    peer, ringing = only(net.take())
    assert (peer, ringing.status) == (UAC, 180)
    assert [str(v) for v in ringing.vias] == [str(invite.top_via)]

    net.deliver(response(out, 200), UAS)
    peer, ok = only(net.take())
    assert (peer, ok.status, ok.to.tag) == (UAC, 200, "to-9")
    net.advance(2.0)
    net.deliver(response(out, 200), UAS)  # the UAS retransmits its 2xx: still relayed (RFC 6026)
    assert only(net.take())[1].status == 200

    net.deliver(request("ACK", branch="z9hG4bK-ack1", to_tag="to-9"), UAC)
    peer, ack = only(net.take())
    assert (peer, ack.method, ack.max_forwards) == (UAS, "ACK", 69)
    assert ack.top_via.host == "192.0.2.1" and len(ack.vias) == 2

    net.deliver(request("BYE", branch="z9hG4bK-bye1", cseq=2, to_tag="to-9"), UAC)
    peer, bye = only(net.take())
    assert (peer, bye.method) == (UAS, "BYE")  # no 100 for a non-INVITE
    net.deliver(response(bye, 200), UAS)
    peer, bye_ok = only(net.take())
    assert (peer, bye_ok.status, bye_ok.cseq.method) == (UAC, 200, "BYE")

    net.advance(100.0)
    assert net.core.next_deadline() is None  # every transaction and Timer C are gone
    assert net.core.stats.transactions == {"ICT": 0, "NICT": 0, "IST": 0, "NIST": 0}
    assert net.take() == []


def test_a_call_is_pending_until_its_final_response_whatever_the_timers(net):
    invite, out = forwarded_invite(net)
    assert net.core.pending() == 2  # our IST and ICT wait for a final response
    net.deliver(response(out, 180), UAS)
    assert net.core.pending() == 2
    net.deliver(response(out, 200), UAS)
    assert net.core.pending() == 0  # a drain may stop now: Accepted only absorbs retransmissions
    assert net.core.next_deadline() is not None


def test_invite_retransmission_gets_the_100_again_and_is_not_forwarded_twice(net):
    invite, _ = forwarded_invite(net)
    net.advance(0.4)
    net.deliver(invite, UAC)
    peer, trying = only(net.take())
    assert (peer, trying.status) == (UAC, 100)


def test_non_2xx_is_acknowledged_hop_by_hop_and_relayed(net):
    invite, out = forwarded_invite(net)
    net.deliver(response(out, 486), UAS)
    sent = net.take()
    by_peer = {peer: msg for peer, msg in sent}
    ack = by_peer[UAS]
    assert ack.method == "ACK" and ack.top_via.branch == out.top_via.branch and len(ack.vias) == 1
    assert by_peer[UAC].status == 486
    net.deliver(request("ACK", to_tag="to-9"), UAC)  # the UAC's ACK stays with our IST
    assert net.take() == []
    net.advance(40.0)
    assert net.core.next_deadline() is None


def test_cancel_after_a_provisional(net):
    invite, out = forwarded_invite(net)
    net.deliver(response(out, 180), UAS)
    net.take()
    net.deliver(request("CANCEL"), UAC)
    sent = {peer: msg for peer, msg in net.take()}
    assert (sent[UAC].status, sent[UAC].cseq.method) == (200, "CANCEL")
    cancel = sent[UAS]
    assert cancel.method == "CANCEL" and cancel.top_via.branch == out.top_via.branch
    net.deliver(response(cancel, 200), UAS)  # the UAS's 200 to our CANCEL stays here
    assert net.take() == []
    net.deliver(response(out, 487), UAS)
    sent = {peer: msg for peer, msg in net.take()}
    assert sent[UAC].status == 487 and sent[UAS].method == "ACK"


def test_cancel_before_any_provisional_waits_for_one(net):
    invite, out = forwarded_invite(net)
    net.deliver(request("CANCEL"), UAC)
    assert [msg.status for _, msg in net.take()] == [200]  # nothing downstream yet (9.1)
    net.deliver(response(out, 100), UAS)
    peer, cancel = only(net.take())
    assert (peer, cancel.method) == (UAS, "CANCEL")


def test_cancel_without_its_invite_gets_481(net):
    net.deliver(request("CANCEL", branch="z9hG4bK-nothing"), UAC)
    assert only(net.take())[1].status == 481


def test_timer_b_gives_408_upstream(net):
    invite, out = forwarded_invite(net)
    net.advance(31.9)
    assert {msg.method for _, msg in net.take()} == {"INVITE"}  # retransmissions only
    net.advance(32.1)
    peer, timeout = only(net.take())
    assert (peer, timeout.status) == (UAC, 408)


def test_timer_f_gives_408_upstream(net):
    net.deliver(request("OPTIONS", uri="sip:carol@192.0.2.20"), UAC)
    net.advance(32.5)
    answers = [(peer, msg.status) for peer, msg in net.take() if peer == UAC]
    assert answers == [(UAC, 408)]


def test_transport_error_gives_500(net):
    invite, out = forwarded_invite(net)
    net.core.on_transport_failed(TransportFailed(UAS, "unreachable", 0.1), 0.1)
    peer, failure = only(net.take())
    assert (peer, failure.status) == (UAC, 500)  # 16.9: as a 503, which 16.7 turns into 500


def test_names_are_resolved_before_forwarding(net):
    net.deliver(request("OPTIONS", uri="sip:bob@uas.example.com;transport=tcp"), UAC)
    [job] = net.core.outbox
    assert isinstance(job, ResolveJob) and (job.host, job.transport) == ("uas.example.com", "tcp")
    net.core.outbox.clear()
    target = Peer("tcp", "192.0.2.20", 5060)
    net.core.on_resolved(Resolved(job.job, (target,), None, 0.1), 0.1)
    peer, options = only(net.take())
    assert peer == target and options.top_via.transport == "TCP"


def test_stray_2xx_is_relayed_statelessly_by_the_next_via(net):
    invite, out = forwarded_invite(net)
    net.deliver(response(out, 200), UAS)
    net.take()
    net.advance(40.0)  # Timer M and L are over: no transaction left
    net.deliver(response(out, 200), UAS)
    peer, late = only(net.take())
    assert (peer, late.status, len(late.vias)) == (UAC, 200, 1)
    net.deliver(response(invite, 200), UAS)  # top Via is not ours: dropped
    assert net.take() == []


def test_cancel_of_an_invite_answered_here_gets_200_and_changes_nothing(net):
    net.deliver(request(uri="sip:nobody@example.com"), UAC)
    assert [msg.status for _, msg in net.take()] == [100, 404]
    net.deliver(request("CANCEL", uri="sip:nobody@example.com"), UAC)
    peer, ok = only(net.take())
    assert (peer, ok.status, ok.cseq.method) == (UAC, 200, "CANCEL")


def test_cancel_while_the_target_is_still_resolving_answers_487_and_never_forwards(net):
    net.deliver(request(uri="sip:bob@uas.example.com"), UAC)
    [job] = [item for item in net.core.outbox if isinstance(item, ResolveJob)]
    assert [msg.status for _, msg in net.take()] == [100]
    net.deliver(request("CANCEL", uri="sip:bob@uas.example.com"), UAC)
    assert sorted((msg.status, msg.cseq.method) for _, msg in net.take()) == [(200, "CANCEL"), (487, "INVITE")]
    net.core.on_resolved(Resolved(job.job, (UAS,), None, 0.2), 0.2)
    assert net.take() == []
