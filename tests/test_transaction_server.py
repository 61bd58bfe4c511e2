"""INVITE and non-INVITE server transactions (RFC 3261 figures 7 and 8, RFC 6026 7.1) on a fake clock."""

import pytest
from test_transaction_fixtures import TCP_PEER, Driver, request

from psp.message import make_response
from psp.transaction import Event, Kind, State


def answer(req, status):
    """A response as the TU hands it to a server transaction."""
    return make_response(req, status, to_tag="uas-1")


def sent_statuses(d):
    return [int(data.split(b" ", 2)[1]) for _, data, _ in d.sent]


# --- IST ---------------------------------------------------------------------------------


def test_ist_passes_the_invite_up_and_answers_retransmissions_with_the_last_provisional():
    req = request()
    d = Driver.start(Kind.IST, req)
    assert d.tx.state is State.PROCEEDING and d.up == [req]
    d.feed(Event.RECV_REQUEST, req)  # before any response: nothing to resend, nothing passed up
    assert d.sent == [] and d.up == [req]
    d.feed(Event.SEND_1XX, answer(req, 100))
    d.feed(Event.SEND_1XX, answer(req, 180))
    d.feed(Event.RECV_REQUEST, req)
    assert sent_statuses(d) == [100, 180, 180] and d.sent[-1][2] is True
    assert d.up == [req]


def test_ist_non_2xx_retransmits_with_timer_g_capped_at_t2_until_timer_h():
    req = request()
    d = Driver.start(Kind.IST, req)
    d.feed(Event.SEND_3456XX, answer(req, 486))
    assert d.tx.state is State.COMPLETED
    d.advance(31.9)
    assert d.send_times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert set(sent_statuses(d)) == {486}
    d.advance(32.0)
    assert d.notes == ["TimedOut", "Terminated"] and d.tx.error == "timeout"


def test_ist_ack_confirms_stops_g_and_timer_i_ends_it():
    req = request()
    d = Driver.start(Kind.IST, req)
    d.feed(Event.SEND_3456XX, answer(req, 404))
    d.advance(0.6)
    d.feed(Event.RECV_REQUEST, req)  # INVITE retransmission in Completed: the final again
    assert sent_statuses(d) == [404, 404, 404]
    d.feed(Event.RECV_ACK, request("ACK", cseq_method="ACK"))
    assert d.tx.state is State.CONFIRMED
    d.feed(Event.RECV_ACK, request("ACK"))
    d.feed(Event.RECV_REQUEST, req)
    assert d.noops == 2
    d.advance(5.5)  # I = T4 = 5 s after the ACK; G stopped
    assert len(d.sent) == 3 and d.tx.state is State.CONFIRMED
    d.advance(5.6)
    assert d.notes == ["Terminated"]


def test_ist_on_tcp_no_timer_g_and_ack_terminates_at_once():
    req = request(transport="TCP")
    d = Driver.start(Kind.IST, req, TCP_PEER)
    d.feed(Event.SEND_3456XX, answer(req, 480))
    d.advance(20.0)
    assert d.send_times() == [0]
    d.feed(Event.RECV_ACK, request("ACK", transport="TCP"))
    assert d.notes == ["Terminated"]


def test_ist_2xx_enters_accepted_where_2xx_are_sent_and_acks_go_up_until_timer_l():
    req = request()
    d = Driver.start(Kind.IST, req)
    d.feed(Event.SEND_2XX, answer(req, 200))
    assert d.tx.state is State.ACCEPTED
    d.feed(Event.RECV_REQUEST, req)  # RFC 6026: INVITE retransmissions absorbed, not answered
    assert d.noops == 1 and len(d.sent) == 1
    d.advance(4.0)
    d.feed(Event.SEND_2XX, answer(req, 200))  # the TU's (relayed) 2xx retransmission
    assert sent_statuses(d) == [200, 200]
    ack = request("ACK", branch="z9hG4bK-ack-of-2xx")
    d.feed(Event.RECV_ACK, ack)
    assert d.up == [req, ack] and d.tx.state is State.ACCEPTED
    d.feed(Event.SEND_3456XX, answer(req, 500))
    d.feed(Event.TRANSPORT_ERROR)
    assert d.noops == 3 and len(d.sent) == 2
    d.advance(31.9)
    assert d.tx.state is State.ACCEPTED
    d.advance(32.0)  # Timer L = 64*T1 from the first 2xx
    assert d.notes == ["Terminated"]


@pytest.mark.parametrize("final", [None, 486])
def test_ist_transport_error_terminates_with_error(final):
    req = request()
    d = Driver.start(Kind.IST, req)
    if final:
        d.feed(Event.SEND_3456XX, answer(req, final))
    d.feed(Event.TRANSPORT_ERROR)
    assert d.notes == ["TransportError", "Terminated"]


def test_ist_second_final_from_the_tu_is_ignored():
    req = request()
    d = Driver.start(Kind.IST, req)
    d.feed(Event.SEND_3456XX, answer(req, 486))
    d.feed(Event.SEND_2XX, answer(req, 200))
    assert d.noops == 1 and sent_statuses(d) == [486]


# --- NIST --------------------------------------------------------------------------------


def test_nist_trying_absorbs_retransmissions_proceeding_resends_the_provisional():
    req = request("BYE")
    d = Driver.start(Kind.NIST, req)
    assert d.tx.state is State.TRYING and d.up == [req]
    d.feed(Event.RECV_REQUEST, req)
    assert d.noops == 1 and d.sent == []
    d.feed(Event.SEND_1XX, answer(req, 100))
    assert d.tx.state is State.PROCEEDING
    d.feed(Event.RECV_REQUEST, req)
    assert sent_statuses(d) == [100, 100] and d.up == [req]


@pytest.mark.parametrize("provisional", [False, True])
def test_nist_final_then_retransmissions_answered_until_timer_j(provisional):
    req = request("OPTIONS")
    d = Driver.start(Kind.NIST, req)
    if provisional:
        d.feed(Event.SEND_1XX, answer(req, 100))
    d.feed(Event.SEND_2XX, answer(req, 200))
    assert d.tx.state is State.COMPLETED
    d.advance(10.0)
    d.feed(Event.RECV_REQUEST, req)
    d.feed(Event.SEND_3456XX, answer(req, 500))  # a second final is dropped
    assert sent_statuses(d)[-2:] == [200, 200] and d.noops == 1
    d.advance(31.9)
    assert d.tx.state is State.COMPLETED
    d.advance(32.0)  # J = 64*T1 on UDP
    assert d.notes == ["Terminated"]


def test_nist_on_tcp_terminates_on_the_final():
    req = request("OPTIONS", transport="TCP")
    d = Driver.start(Kind.NIST, req, TCP_PEER)
    d.feed(Event.SEND_3456XX, answer(req, 404))
    assert d.notes == ["Terminated"] and sent_statuses(d) == [404]


@pytest.mark.parametrize("status", [100, 404])
def test_nist_transport_error_after_sending(status):
    req = request("OPTIONS")
    d = Driver.start(Kind.NIST, req)
    d.feed(Event.SEND_1XX if status < 200 else Event.SEND_3456XX, answer(req, status))
    d.feed(Event.TRANSPORT_ERROR)
    assert d.notes == ["TransportError", "Terminated"]


# --- abandoned by the TU (a STOPped request) ---------------------------------------------


@pytest.mark.parametrize(("kind", "method", "provisional"), [
    (Kind.IST, "INVITE", True), (Kind.NIST, "MESSAGE", False), (Kind.NIST, "MESSAGE", True),
])
def test_an_unanswered_server_transaction_abandoned_by_the_tu_ends_silently(kind, method, provisional):
    req = request(method)
    d = Driver.start(kind, req)
    if provisional:
        d.feed(Event.SEND_1XX, answer(req, 100))
    d.feed(Event.ABANDON)
    assert d.tx.state is State.TERMINATED and d.notes == ["Terminated"]
    assert len(d.sent) == int(provisional) and d.heap.next_deadline() is None


@pytest.mark.parametrize("kind", [Kind.IST, Kind.NIST])
def test_abandon_after_a_final_response_changes_nothing(kind):
    req = request("INVITE" if kind is Kind.IST else "OPTIONS")
    d = Driver.start(kind, req)
    d.feed(Event.SEND_3456XX, answer(req, 486))
    d.feed(Event.ABANDON)
    assert d.noops == 1 and d.tx.state is State.COMPLETED
