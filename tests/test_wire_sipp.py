"""SIPp as the real peers: a SIPp UAC calls a SIPp UAS through the proxy over UDP and TCP.

The UAC sends every request to the proxy (-rsa) while its Request-URI names the UAS at
127.0.0.1:port, so that the proxy forwards on the Request-URI (RFC 3261 16.5, 16.6).
Skipped only when ``sipp`` is not installed.
"""

from __future__ import annotations

import random
import re
import socket

import pytest

from tests.conftest import LOOPBACK, SippRun, free_port, needs_sipp

pytestmark = needs_sipp
GARBAGE = 200  # datagrams of random bytes in the burst
INVITE_START = (f"INVITE sip:bob@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/TCP {LOOPBACK}:5060;branch=z9hG4bK-half\r\n"
                "From: <sip:alice@example.org>;tag=h\r\nCall-ID: half@example.org\r\n").encode()


def through_proxy(sipp, server, uac: str, uas: str, transport: str, *uas_args: str) -> tuple[SippRun, SippRun]:
    """Run one exchange: the UAS in the background, then the UAC through the proxy."""
    uas_port = free_port()
    proxy_port = server.udp_port if transport == "u1" else server.tcp_port
    callee = sipp.start(uas, *uas_args, transport=transport, port=uas_port)
    caller = sipp.run(uac, f"{LOOPBACK}:{uas_port}", "-rsa", f"{LOOPBACK}:{proxy_port}",
                      "-s", "callee", transport=transport)
    return caller, sipp.wait(callee)


def assert_success(run: SippRun) -> None:
    assert run.returncode == 0, run.describe()
    assert (run.counter("SuccessfulCall"), run.counter("FailedCall")) == (1, 0), run.describe()
    assert run.errors == "", run.describe()


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_invite_ack_bye_call_through_the_proxy(partysip, sipp, transport: str) -> None:
    server = partysip()
    caller, callee = through_proxy(sipp, server, "uac_call.xml", "uas_call.xml", transport)
    assert_success(caller)
    assert_success(callee)
    kind = "udp" if transport == "u1" else "tcp"
    page = server.scrape()
    for method in ("INVITE", "ACK", "BYE"):
        assert re.search(rf'psp_messages_received_total{{method="{method}",status_class="none",'
                         rf'transport="{kind}"}} [1-9]', page), method


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_options_through_the_proxy(partysip, sipp, transport: str) -> None:
    server = partysip()
    caller, callee = through_proxy(sipp, server, "uac_options.xml", "uas_options.xml", transport)
    assert_success(caller)
    assert_success(callee)
    kind = "udp" if transport == "u1" else "tcp"
    assert server.metrics()[f'psp_messages_received_total{{method="OPTIONS",status_class="none",'
                            f'transport="{kind}"}}'] == 1


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_a_call_succeeds_behind_a_half_open_connection_and_a_garbage_burst(partysip, sipp,
                                                                          transport: str) -> None:
    server = partysip()
    noise = random.Random(4475)
    garbage = [noise.randbytes(20 + n % 200) for n in range(GARBAGE)]
    with socket.create_connection((LOOPBACK, server.tcp_port), timeout=5) as stalled, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        stalled.sendall(INVITE_START)  # half a message, then silence for the whole call
        for datagram in garbage:
            junk.sendto(datagram, (LOOPBACK, server.udp_port))
        caller, callee = through_proxy(sipp, server, "uac_call.xml", "uas_call.xml", transport)
        assert_success(caller)
        assert_success(callee)
        for sock in (stalled, junk):  # neither answered nor closed: nothing to read
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    # every datagram of the burst was read (before the call's INVITE) and dropped
    assert server.metrics()['psp_parse_errors_total{transport="udp"}'] == GARBAGE


def test_timer_a_retransmits_the_invite_to_a_silent_callee(partysip, sipp) -> None:
    # T1 = 0.1 s: the proxy retransmits at 0.1 and 0.3 s; the callee only answers at 0.45 s.
    server = partysip(t1=0.1)
    caller, callee = through_proxy(sipp, server, "uac_call.xml", "uas_call.xml", "u1", "-d", "450")
    assert_success(caller)
    assert_success(callee)
    page = server.scrape()
    retransmissions = float(re.search(r"^psp_retransmissions_total (\S+)$", page, re.M).group(1))
    assert retransmissions >= 2
    # SIPp's screen: "----------> INVITE  <messages>  <retrans> ..." on the callee's side.
    seen = re.search(r"-> INVITE\s+1\s+(\d+)", callee.output)
    assert seen and int(seen.group(1)) >= 2, callee.describe()
    # The UAC itself retransmitted nothing: the proxy's 100 Trying stopped its Timer A.
    assert caller.counter("Retransmissions") == 0
