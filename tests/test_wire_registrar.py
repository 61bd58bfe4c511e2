"""Wire tests: registrar and location service through a real partysip, with SIPp UAs.

A SIPp UAS registers its own address (a uac-style REGISTER run, tests/sipp/services/
register.xml, whose Contact is the UAS's host:port), then listens; a SIPp UAC calls the
AOR through the proxy.  The UAS scenario checks that INVITE, ACK and BYE arrive with the
proxy's Via on top; the UAC scenario checks the Record-Route of the 200 and sends ACK and
BYE along it (RFC 3261 10, 16.6 item 4, 16.12).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import LOOPBACK, ServerProcess, free_port, needs_sipp
from sipp_helpers import (
    DOMAIN, Peer, UdpClient, bindings, contact_uri, finish, listed, proxy_config, raw_request, register, status_of,
    uac, uas,
)

pytestmark = needs_sipp


def call_through(sipp: Any, server: ServerProcess, user: str, callee: Peer) -> None:
    """One call from a SIPp UAC to user@DOMAIN, answered by the SIPp UAS ``callee``."""
    caller = uac(sipp, "uac_call.xml", server, "-s", user, "-key", "domain", DOMAIN)
    finish(sipp, callee)
    assert caller.ok and callee.ok, caller.describe() + "\n" + callee.describe() + "\n" + server.log()[-3000:]
    # What the scenarios checked, stated once more on the wire record:
    ack, bye = callee.received(method="ACK"), callee.received(method="BYE")
    assert len(ack) >= 1 and len(bye) >= 1, callee.describe()
    for request in (*ack, *bye):
        assert request.header("Via").startswith(f"SIP/2.0/UDP {LOOPBACK}:{server.udp_port};"), request.text
    answer = caller.received(200)[0]
    assert answer.header("Record-Route") and f"{LOOPBACK}:{server.udp_port}" in answer.header("Record-Route")


def test_registered_uas_receives_the_call_and_record_route_is_honoured(partysip, sipp):
    server = partysip(**proxy_config("statefull"))
    callee = uas(sipp, "uas_call.xml", server)
    reg = register(sipp, server, "bob", f"{LOOPBACK}:{callee.port}", expires=600)
    found = listed(reg)
    assert set(found) == {contact_uri("bob", callee.port)}, found
    assert 0 < found[contact_uri("bob", callee.port)] <= 600
    call_through(sipp, server, "bob", callee)


def test_refresh_unregister_and_wildcard_remove_bindings(partysip, sipp):
    server = partysip(**proxy_config("statefull"))
    first, second = contact_uri("carol", 40001), contact_uri("carol", 40002)
    # A refresh (RFC 3261 10.2.4): same Call-ID, higher CSeq, new expiry.
    same_call = ("-cid_str", "refresh-%u@services.test")
    found = listed(register(sipp, server, "carol", f"{LOOPBACK}:40001", *same_call, expires=300))
    assert set(found) == {first} and 0 < found[first] <= 300, found
    found = listed(register(sipp, server, "carol", f"{LOOPBACK}:40001", *same_call, "-base_cseq", "2",
                            expires=1800))
    assert set(found) == {first} and 300 < found[first] <= 1800, found
    # A second contact is added next to the first.
    found = listed(register(sipp, server, "carol", f"{LOOPBACK}:40002", expires=900))
    assert set(found) == {first, second}, found
    # Expires 0 removes that one contact only (10.2.2).
    found = listed(register(sipp, server, "carol", f"{LOOPBACK}:40001", expires=0))
    assert set(found) == {second}, found
    # "Contact: *" with Expires 0 removes them all; the scenario checks the 200 lists none.
    wipe = uac(sipp, "unregister_all.xml", server, "-s", "carol", "-key", "domain", DOMAIN)
    assert wipe.ok, wipe.describe()
    assert bindings(wipe.received(200)[-1]) == {}


def test_too_brief_expiry_gets_423_with_min_expires(partysip, sipp):
    server = partysip(**proxy_config("statefull", sections={"rgstrar": {"min_expires": 120}}))
    brief = register(sipp, server, "dave", f"{LOOPBACK}:40003", expires=30, scenario="register_brief.xml")
    assert brief.ok, brief.describe()
    assert brief.received(423)[-1].header("Min-Expires") == "120"
    # At the minimum the same REGISTER is accepted.
    found = listed(register(sipp, server, "dave", f"{LOOPBACK}:40003", expires=120))
    assert 0 < found[contact_uri("dave", 40003)] <= 120, found


def test_registration_survives_a_restart(partysip, sipp, tmp_path: Path):
    store = tmp_path / "location.sqlite"
    config = proxy_config("statefull", recovery_file=store)
    first = partysip(**config)
    port = free_port()
    listed(register(sipp, first, "erin", f"{LOOPBACK}:{port}", expires=600))
    assert first.stop() == 0, first.log()
    second = partysip(**config)
    callee = uas(sipp, "uas_call.xml", second, port=port)
    call_through(sipp, second, "erin", callee)


def test_a_register_at_the_proxys_address_is_taken(partysip):
    # serverip is a domain of ours (RFC 3261 10.1: a UA without DNS registers at our address).
    server = partysip(**proxy_config("statefull"))
    with UdpClient() as client:
        request = raw_request(client, "REGISTER", f"sip:{LOOPBACK}:{server.udp_port}", to=f"<sip:dan@{LOOPBACK}>",
                              headers=f"Contact: <sip:dan@{LOOPBACK}:{client.port}>\r\n")
        client.send(request, server.udp_port)
        answer = client.final()
    assert status_of(answer) == 200, (answer or b"no answer").decode(errors="replace") + server.log()[-2000:]
