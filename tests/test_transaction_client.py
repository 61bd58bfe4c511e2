"""INVITE and non-INVITE client transactions (RFC 3261 figures 5 and 6, RFC 6026 7.2) on a fake clock."""

import pytest
from test_transaction_fixtures import TCP_PEER, Driver, request, response

from psp.parser import parse
from psp.transaction import Event, Kind, State


# --- ICT ---------------------------------------------------------------------------------


def test_ict_retransmits_with_timer_a_doubling_without_cap_until_timer_b():
    d = Driver.start(Kind.ICT, request())
    assert d.tx.state is State.CALLING
    d.advance(31.9)
    # A: 0.5, 1, 2, 4, 8, 16 (past T2 = 4: no cap); B at 64*T1 = 32 s
    assert d.send_times() == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert d.retransmissions() == 6
    assert d.notes == []
    d.advance(32.0)
    assert d.notes == ["TimedOut", "Terminated"]
    assert d.tx.state is State.TERMINATED and d.tx.error == "timeout"
    assert all(data == d.sent[0][1] for _, data, _ in d.sent)  # bytes serialised once, reused


def test_ict_on_tcp_never_retransmits_and_times_out_with_b():
    d = Driver.start(Kind.ICT, request(transport="TCP"), TCP_PEER)
    d.advance(31.9)
    assert d.send_times() == [0]
    d.advance(32.0)
    assert d.notes == ["TimedOut", "Terminated"]


def test_ict_provisional_stops_retransmissions_and_timer_b():
    req = request()
    d = Driver.start(Kind.ICT, req)
    d.advance(0.7)
    ringing = response(req, 180)
    d.feed(Event.RECV_1XX, ringing)
    assert d.tx.state is State.PROCEEDING and d.up == [ringing]
    d.advance(100.0)
    assert d.send_times() == [0, 0.5]
    assert d.tx.state is State.PROCEEDING and d.notes == []
    d.feed(Event.RECV_1XX, response(req, 183))
    assert len(d.up) == 2


@pytest.mark.parametrize("provisional_first", [False, True])
def test_ict_2xx_goes_up_and_accepted_passes_retransmissions_until_timer_m(provisional_first):
    req = request()
    d = Driver.start(Kind.ICT, req)
    if provisional_first:
        d.feed(Event.RECV_1XX, response(req, 180))
    d.advance(1.0)
    ok = response(req, 200)
    d.feed(Event.RECV_2XX, ok)
    assert d.tx.state is State.ACCEPTED and d.up[-1] is ok
    sends = len(d.sent)
    d.advance(20.0)
    again = response(req, 200)
    d.feed(Event.RECV_2XX, again)
    assert d.up[-1] is again  # RFC 6026: 2xx retransmissions reach the TU
    d.feed(Event.RECV_1XX, response(req, 180))
    d.feed(Event.RECV_3456XX, response(req, 500))
    assert d.noops == 2 and d.up[-1] is again
    assert len(d.sent) == sends  # the ACK for a 2xx is the TU's business
    d.advance(32.9)
    assert d.tx.state is State.ACCEPTED
    d.advance(33.0)  # Timer M = 64*T1 after the first 2xx
    assert d.notes == ["Terminated"]


def test_ict_non_2xx_is_acknowledged_by_the_transaction_itself():
    req = request(headers="Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2.example.com;lr>\r\n")
    d = Driver.start(Kind.ICT, req)
    busy = response(req, 486)
    d.advance(0.2)
    d.feed(Event.RECV_3456XX, busy)
    assert d.tx.state is State.COMPLETED and d.up == [busy]
    ack = parse(d.sent[-1][1])
    assert ack.method == "ACK" and str(ack.uri) == str(req.uri)
    assert [str(v) for v in ack.vias] == [str(req.top_via)]  # one Via, same branch (17.1.1.3)
    assert ack.to.tag == "to-9" and ack.from_.tag == "from-1"
    assert ack.call_id == req.call_id and (ack.cseq.number, ack.cseq.method) == (1, "ACK")
    assert ack.header_values("Route") == req.header_values("Route")
    # a retransmitted final is answered with the same ACK and not passed up again
    d.advance(5.0)
    d.feed(Event.RECV_3456XX, response(req, 486))
    assert d.sent[-1][1] == d.sent[-2][1] and d.sent[-1][2] is True
    assert d.up == [busy]
    d.advance(32.1)  # no request retransmission in Completed; Timer D = 32 s from the first final
    assert d.tx.state is State.COMPLETED
    assert d.send_times() == [0, 0.2, 5.0]
    d.advance(32.2)
    assert d.notes == ["Terminated"]


def test_ict_non_2xx_on_tcp_terminates_at_once():
    req = request(transport="TCP")
    d = Driver.start(Kind.ICT, req, TCP_PEER)
    d.feed(Event.RECV_3456XX, response(req, 404))
    assert d.notes == ["Terminated"] and d.tx.state is State.TERMINATED
    assert parse(d.sent[-1][1]).method == "ACK"


@pytest.mark.parametrize("before", ["calling", "completed"])
def test_ict_transport_error_terminates_with_error(before):
    req = request()
    d = Driver.start(Kind.ICT, req)
    if before == "completed":
        d.feed(Event.RECV_3456XX, response(req, 503))
    d.feed(Event.TRANSPORT_ERROR)
    assert d.notes == ["TransportError", "Terminated"]
    assert d.tx.error == "transport error"


def test_ict_transport_error_while_proceeding_is_ignored():
    req = request()
    d = Driver.start(Kind.ICT, req)
    d.feed(Event.RECV_1XX, response(req, 100))
    d.feed(Event.TRANSPORT_ERROR)
    assert d.noops == 1 and d.tx.state is State.PROCEEDING


# --- NICT --------------------------------------------------------------------------------


def test_nict_timer_e_doubles_up_to_t2_until_timer_f():
    d = Driver.start(Kind.NICT, request("OPTIONS"))
    assert d.tx.state is State.TRYING
    d.advance(31.9)
    # E: 0.5, 1, 2, 4, then 4 (T2) each time
    assert d.send_times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    d.advance(32.0)
    assert d.notes == ["TimedOut", "Terminated"]


def test_nict_timer_e_is_t2_once_proceeding():
    req = request("BYE")
    d = Driver.start(Kind.NICT, req)
    d.advance(0.7)
    d.feed(Event.RECV_1XX, response(req, 100))
    assert d.tx.state is State.PROCEEDING
    d.advance(14.0)
    # the pending E (due at 1.5) fires, then every T2
    assert d.send_times() == [0, 0.5, 1.5, 5.5, 9.5, 13.5]
    d.advance(32.0)  # F still runs in Proceeding
    assert d.notes == ["TimedOut", "Terminated"]


@pytest.mark.parametrize("status", [200, 404])
def test_nict_final_goes_up_then_timer_k_absorbs_retransmissions(status):
    req = request("REGISTER")
    d = Driver.start(Kind.NICT, req)
    final = response(req, status)
    d.advance(1.0)
    d.feed(Event.RECV_2XX if status == 200 else Event.RECV_3456XX, final)
    assert d.tx.state is State.COMPLETED and d.up == [final]
    d.feed(Event.RECV_2XX if status == 200 else Event.RECV_3456XX, response(req, status))
    d.feed(Event.RECV_1XX, response(req, 100))
    assert d.noops == 2 and d.up == [final]
    d.advance(5.9)  # K = T4 = 5 s; no retransmission after the final
    assert d.send_times() == [0, 0.5] and d.tx.state is State.COMPLETED
    d.advance(6.0)
    assert d.notes == ["Terminated"]


def test_nict_on_tcp_terminates_on_the_final():
    req = request("OPTIONS", transport="TCP")
    d = Driver.start(Kind.NICT, req, TCP_PEER)
    d.advance(10)
    assert d.send_times() == [0]
    d.feed(Event.RECV_2XX, response(req, 200))
    assert d.notes == ["Terminated"] and len(d.up) == 1


@pytest.mark.parametrize("proceeding", [False, True])
def test_nict_transport_error(proceeding):
    req = request("OPTIONS")
    d = Driver.start(Kind.NICT, req)
    if proceeding:
        d.feed(Event.RECV_1XX, response(req, 100))
    d.feed(Event.TRANSPORT_ERROR)
    assert d.notes == ["TransportError", "Terminated"]


def test_a_start_event_twice_is_a_no_op():
    d = Driver.start(Kind.NICT, request("OPTIONS"))
    d.feed(Event.SEND_REQUEST)
    assert d.noops == 1 and d.send_times() == [0]
