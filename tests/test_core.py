"""Core: matching, dispatch to the TU, timers, the SipError boundary, stats and 18.2.2 routing."""

import pytest
from test_transaction_fixtures import TCP_PEER, Net, request, response

from psp.core import TU, Core, response_peer
from psp.errors import SipError
from psp.events import Peer, Resolved, ResolveJob, TransportFailed
from psp.headers import parse_via
from psp.message import make_response
from psp.timers import TimerSettings
from psp.transaction import Kind, State

UAC = Peer("udp", "192.0.2.10", 5060)
UAS = Peer("udp", "192.0.2.20", 5060)


class Recorder(TU):
    """Records every callback; ``answer`` decides what on_request does."""

    def __init__(self, answer=None):
        self.calls = []
        self.answer = answer

    def on_request(self, server_tx, request, now):
        self.calls.append(("request", server_tx, request))
        if self.answer is not None:
            self.answer(self, server_tx, request, now)

    def on_ack(self, request, peer, now):
        self.calls.append(("ack", request, peer))

    def on_cancel(self, cancel_stx, invite_stx, now):
        self.calls.append(("cancel", cancel_stx, invite_stx))
        self.core.respond(cancel_stx, make_response(cancel_stx.request, 200), now)

    def on_response(self, client_tx, response, now):
        self.calls.append(("response", client_tx, response.status))

    def on_client_timeout(self, client_tx, now):
        self.calls.append(("timeout", client_tx))

    def on_client_error(self, client_tx, now):
        self.calls.append(("error", client_tx))

    def on_stray_response(self, response, peer, now):
        self.calls.append(("stray", response.status, peer))

    def on_server_terminated(self, server_tx, now):
        self.calls.append(("terminated", server_tx))

    def names(self):
        return [call[0] for call in self.calls]


def make(answer=None, settings=TimerSettings()):
    tu = Recorder(answer)
    return Net(Core(settings, tu)), tu


def test_new_request_reaches_the_tu_once_and_retransmissions_get_the_last_response():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 100), now))
    invite = request()
    net.deliver(invite, UAC)
    net.deliver(invite, UAC)
    assert tu.names() == ["request"]
    sent = net.take()
    assert [(peer, msg.status) for peer, msg in sent] == [(UAC, 100), (UAC, 100)]
    assert net.core.stats.retransmissions == 1
    assert net.core.stats.transactions["IST"] == 1


def test_sip_error_from_the_tu_becomes_the_response():
    def refuse(tu, stx, req, now):
        raise SipError("bad", status=420, headers=[("Unsupported", "foo")])
    net, tu = make(refuse)
    net.deliver(request("OPTIONS"), UAC)
    [(peer, answer)] = net.take()
    assert (peer, answer.status, answer.header("Unsupported")) == (UAC, 420, "foo")
    assert answer.to.tag  # a final generated here carries a To tag


def test_other_exceptions_propagate_to_the_processor():
    def crash(tu, stx, req, now):
        raise KeyError("bug")
    net, _ = make(crash)
    with pytest.raises(KeyError):
        net.deliver(request("OPTIONS"), UAC)


def test_default_tu_answers_501():
    net = Net(Core(TimerSettings(), TU()))
    net.deliver(request("OPTIONS"), UAC)
    assert [msg.status for _, msg in net.take()] == [501]


def test_client_transaction_receives_its_responses_and_strays_go_to_the_tu():
    net, tu = make()
    invite = request(branch="z9hG4bK-out1")
    tx = net.core.send_request(invite, UAS, net.now)
    assert tx.kind is Kind.ICT and [m.method for _, m in net.take()] == ["INVITE"]
    net.deliver(response(invite, 180), UAS)
    net.deliver(response(request(branch="z9hG4bK-other"), 180), UAS)
    assert tu.calls[0] == ("response", tx, 180)
    assert tu.calls[1] == ("stray", 180, UAS)
    assert net.core.stats.stray_responses == 1


def test_timeouts_reach_the_tu_and_the_transaction_is_forgotten():
    net, tu = make()
    tx = net.core.send_request(request("OPTIONS"), UAS, 0.0)
    net.advance(40.0)
    assert tu.calls == [("timeout", tx)]
    assert net.core.stats.timeouts == 1 and net.core.stats.transactions["NICT"] == 0
    assert net.core.stats.retransmissions == 10
    assert net.core.next_deadline() is None
    net.deliver(response(request("OPTIONS"), 200), UAS)  # too late: a stray
    assert tu.names()[-1] == "stray"


def test_transport_failure_ends_the_transactions_to_that_peer_only():
    net, tu = make()
    to_uas = net.core.send_request(request("OPTIONS", branch="z9hG4bK-a"), TCP_PEER, 0.0)
    elsewhere = net.core.send_request(request("OPTIONS", branch="z9hG4bK-b"), UAC, 0.0)
    net.core.on_transport_failed(TransportFailed(Peer("tcp", "192.0.2.20", 5060, None), "reset", 0.0), 0.1)
    assert tu.calls == [("error", to_uas)]
    assert to_uas.state is State.TERMINATED and elsewhere.state is State.TRYING
    assert net.core.stats.transport_errors == 1


def test_unmatched_ack_goes_to_the_tu_and_ack_for_a_non_2xx_is_absorbed():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 486), now))
    net.deliver(request("ACK", branch="z9hG4bK-2xx-ack"), UAC)
    assert tu.names() == ["ack"]
    net.deliver(request(), UAC)
    net.deliver(request("ACK", cseq_method="ACK"), UAC)
    assert tu.names() == ["ack", "request"]
    [stx] = [call[1] for call in tu.calls if call[0] == "request"]
    assert stx.state is State.CONFIRMED
    net.advance(10.0)
    assert tu.calls[-1] == ("terminated", stx)


def test_ack_for_a_2xx_matching_an_accepted_ist_still_reaches_the_tu():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 200), now))
    net.deliver(request(), UAC)
    net.deliver(request("ACK"), UAC)  # same branch (RFC 2543-era UAs do this)
    assert tu.names() == ["request", "ack"]


def test_rfc2543_ack_matches_through_the_tag_of_the_final_response():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 486, to_tag="t-486"), now))
    net.deliver(request(branch=None), UAC)
    net.deliver(request("ACK", branch=None, to_tag="t-486"), UAC)
    stx = tu.calls[0][1]
    assert tu.names() == ["request"] and stx.state is State.CONFIRMED
    net.advance(10.0)
    assert net.core.stats.transactions["IST"] == 0


def test_cancel_gets_its_own_transaction_related_to_the_invite():
    net, tu = make()
    net.deliver(request(), UAC)
    net.deliver(request("CANCEL"), UAC)
    net.deliver(request("CANCEL", branch="z9hG4bK-unknown"), UAC)
    invite_stx = tu.calls[0][1]
    assert tu.calls[1][0] == "cancel" and tu.calls[1][2] is invite_stx
    assert tu.calls[1][1].kind is Kind.NIST and tu.calls[1][1] is not invite_stx
    assert tu.calls[2][0] == "cancel" and tu.calls[2][2] is None


@pytest.mark.parametrize(("ignore_to_tag", "related"), [(False, False), (True, True)])
def test_rfc2543_cancel_with_a_to_tag_matches_only_when_the_check_is_disabled(ignore_to_tag, related):
    tu = Recorder()
    net = Net(Core(TimerSettings(), tu, cancel_ignores_to_tag=ignore_to_tag))
    net.deliver(request(branch=None), UAC)
    net.deliver(request("CANCEL", branch=None, to_tag="ata-tag"), UAC)
    assert tu.calls[1][0] == "cancel"
    assert (tu.calls[1][2] is tu.calls[0][1]) is related


def test_tu_timers_and_resolution_jobs():
    net, tu = make()
    fired = []
    keep = net.core.call_at(5.0, fired.append)
    drop = net.core.call_at(3.0, fired.append)
    net.core.cancel_timer(drop)
    net.advance(6.0)
    assert fired == [5.0] and keep.cancelled
    answers = []
    job = net.core.resolve("example.com", None, "udp", lambda r, now: answers.append((r.targets, now)), 7.0)
    [item] = net.core.outbox
    assert isinstance(item, ResolveJob) and (item.job, item.host, item.transport) == (job, "example.com", "udp")
    net.core.on_resolved(Resolved(job, (UAS,), None, 7.5), 8.0)
    net.core.on_resolved(Resolved(job, (UAS,), None, 7.5), 8.0)  # a duplicate is ignored
    assert answers == [((UAS,), 8.0)]


def test_zero_wait_timers_on_tcp_never_reach_the_heap():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 200), now))
    net.deliver(request("OPTIONS", transport="TCP"), TCP_PEER)
    assert net.core.next_deadline() is None
    assert tu.names() == ["request", "terminated"]
    assert [peer for peer, _ in net.take()] == [TCP_PEER]


def test_sent_messages_are_counted_by_method_and_status_class():
    net, _ = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 404), now))
    net.deliver(request("OPTIONS"), UAC)
    net.core.send_request(request("OPTIONS", branch="z9hG4bK-x"), UAS, 0.0)
    net.core.send_stateless(request("ACK", branch="z9hG4bK-y"), UAS, 0.0)
    assert net.core.stats.sent == {"4xx": 1, "OPTIONS": 1, "ACK": 1}
    assert dict(net.core.stats.items())["transactions"]["NIST"] == 1


def test_a_response_with_no_row_is_a_counted_no_op():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 200), now))
    net.deliver(request("OPTIONS"), UAC)
    _, stx, req = tu.calls[0]  # stx.request is released once the final response went out
    net.core.respond(stx, make_response(req, 500), 0.0)
    assert net.core.stats.noop_events == 1


def test_ack_is_never_sent_on_a_client_transaction():
    net, _ = make()
    with pytest.raises(ValueError):
        net.core.send_request(request("ACK"), UAS, 0.0)


# --- abandon, pending, our own responses --------------------------------------------------


def abandon(tu, stx, req, now):
    tu.core.abandon(stx, now)


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
def test_an_abandoned_request_ends_its_server_transaction_without_an_answer(method):
    net, tu = make(abandon)
    net.deliver(request(method), UAC)
    stx = tu.calls[0][1]
    assert net.take() == [] and stx.state is State.TERMINATED
    assert tu.names() == ["request", "terminated"]
    assert net.core.stats.transactions == {"ICT": 0, "NICT": 0, "IST": 0, "NIST": 0}
    assert net.core.pending() == 0 and net.core.next_deadline() is None
    net.deliver(request(method), UAC)  # a retransmission is a new request, dropped again
    assert tu.names() == ["request", "terminated"] * 2


def test_abandon_after_a_provisional_ends_the_transaction_too():
    def trying_then_abandon(tu, stx, req, now):
        tu.core.respond(stx, make_response(req, 100), now)
        tu.core.abandon(stx, now)
    net, tu = make(trying_then_abandon)
    net.deliver(request(), UAC)
    assert [msg.status for _, msg in net.take()] == [100]
    assert net.core.stats.transactions["IST"] == 0


def test_abandon_after_the_final_response_leaves_the_transaction_to_its_timers():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 486), now))
    net.deliver(request(), UAC)
    stx = tu.calls[0][1]
    net.core.abandon(stx, 0.0)
    assert stx.state is State.COMPLETED and net.core.stats.noop_events == 1
    net.take()
    net.deliver(request(), UAC)  # still absorbs retransmissions
    assert [msg.status for _, msg in net.take()] == [486]


def test_only_server_transactions_can_be_abandoned():
    net, _ = make()
    tx = net.core.send_request(request("OPTIONS"), UAS, 0.0)
    with pytest.raises(ValueError):
        net.core.abandon(tx, 0.0)
    assert tx.state is State.TRYING


def test_pending_counts_transactions_waiting_for_a_final_response():
    net, tu = make()
    net.deliver(request(), UAC)
    stx = tu.calls[0][1]
    invite = request(branch="z9hG4bK-out1")
    net.core.send_request(invite, UAS, 0.0)
    net.core.send_request(request("OPTIONS", branch="z9hG4bK-out2"), UAS, 0.0)
    assert net.core.pending() == 3
    net.core.respond(stx, make_response(stx.request, 180), 0.0)
    net.deliver(response(invite, 180), UAS)
    assert net.core.pending() == 3  # Proceeding still waits for a final response
    net.core.respond(stx, make_response(stx.request, 200), 0.0)
    net.deliver(response(invite, 200), UAS)
    assert net.core.pending() == 1  # both in Accepted: they only absorb retransmissions
    net.advance(40.0)  # the OPTIONS times out
    assert net.core.pending() == 0
    assert net.core.stats.transactions == {"ICT": 0, "NICT": 0, "IST": 0, "NIST": 0}


def test_pending_ignores_completed_transactions_that_keep_the_deadline_alive():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 404), now))
    net.deliver(request("OPTIONS"), UAC)
    assert net.core.pending() == 0
    assert net.core.stats.transactions["NIST"] == 1 and net.core.next_deadline() == 32.0


def test_completed_counts_each_server_transaction_once_by_the_class_of_its_final_response():
    def answer(tu, stx, req, now):
        tu.core.respond(stx, make_response(req, 100), now)
        tu.core.respond(stx, make_response(req, 486 if req.method == "INVITE" else 200), now)
        tu.core.respond(stx, make_response(req, 500), now)  # refused: a final was sent already
    net, tu = make(answer)
    invite, options = request(), request("OPTIONS")
    net.deliver(invite, UAC)
    net.deliver(options, UAC)
    net.deliver(options, UAC)  # a retransmission gets the 200 again, not a second count
    assert net.core.stats.completed == {"2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0, "6xx": 0}


@pytest.mark.parametrize(("server", "expected"), [("PartySIP/0.1.0", "PartySIP/0.1.0"), (None, None)])
def test_responses_made_at_the_sip_error_boundary_carry_our_server_header(server, expected):
    def refuse(tu, stx, req, now):
        raise SipError("no", status=403)
    net, tu = make(refuse)
    tu.server = server
    net.deliver(request("OPTIONS"), UAC)
    [(_, answer)] = net.take()
    assert (answer.status, answer.header("Server")) == (403, expected)


def test_stamp_keeps_a_server_header_a_response_already_has():
    tu = Recorder()
    tu.server = "PartySIP/0.1.0"
    own = make_response(request(), 200, headers=[("Server", "other/1")])
    assert tu.stamp(own).header_values("Server") == ["other/1"]


def test_core_takes_timer_values_from_the_server_settings():
    class Conf:
        t1, t2, t4, timer_c = 0.25, 2.0, 2.5, 200.0
    core = Core(Conf(), Recorder())
    assert core.settings == TimerSettings(0.25, 2.0, 2.5, 200.0)


# --- where responses go (RFC 3261 18.2.2, RFC 3581) -------------------------------------


@pytest.mark.parametrize(("via", "expected"), [
    ("SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK1", ("192.0.2.10", 5070)),
    ("SIP/2.0/UDP pc.example.com;branch=z9hG4bK1", ("pc.example.com", 5060)),
    ("SIP/2.0/UDP pc.example.com;branch=z9hG4bK1;received=198.51.100.7", ("198.51.100.7", 5060)),
    ("SIP/2.0/UDP 10.0.0.2:5062;received=198.51.100.7;rport=40001", ("198.51.100.7", 40001)),
    ("SIP/2.0/UDP 10.0.0.2:5062;received=198.51.100.7;rport", ("198.51.100.7", 5062)),
    ("SIP/2.0/UDP 10.0.0.2:5062;maddr=239.1.1.1;received=198.51.100.7;rport=4", ("239.1.1.1", 5062)),
])
def test_response_peer_over_udp(via, expected):
    peer = response_peer(parse_via(via)[0], UAC)
    assert (peer.transport, peer.host, peer.port) == ("udp", *expected)


def test_response_peer_over_tcp_is_the_connection_it_came_on():
    via = parse_via("SIP/2.0/TCP 10.0.0.2:5062;branch=z9hG4bK1")[0]
    assert response_peer(via, TCP_PEER) is TCP_PEER
    assert response_peer(via, None) == Peer("tcp", "10.0.0.2", 5062)


def test_response_peer_answers_a_datagram_over_udp_whatever_the_via_says():
    via = parse_via("SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKx")[0]
    assert response_peer(via, UAC).transport == "udp"
    assert response_peer(via, None).transport == "tls"


def test_timers_due_in_one_batch_run_in_order_and_one_after_the_end_is_a_counted_no_op():
    net, tu = make(lambda tu, stx, req, now: tu.core.respond(stx, make_response(req, 486), now))
    net.deliver(request(), UAC)
    net.advance(31.6)  # Timer G fired at 0.5, 1.5, 3.5 ... 31.5; next at 35.5, Timer H at 32
    net.take()
    noops = net.core.stats.noop_events
    net.core.on_timers(36.0)  # one late batch: H ends the transaction, then G finds it gone
    assert net.take() == [] and tu.names() == ["request", "terminated"]
    assert net.core.stats.timeouts == 1 and net.core.stats.noop_events == noops + 1
    assert net.core.next_deadline() is None
