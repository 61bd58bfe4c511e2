"""The server's wiring of the proxy (psp.server.build_core): store, journal, secret, users, auth."""

from __future__ import annotations

import time
from pathlib import Path

from test_proxy_support import UAC
from test_transaction_fixtures import Net, request

from psp.config import load_text
from psp.events import Peer
from psp.server import Wiring, build_core

CONF = """serverip = 192.0.2.1
servername = example.com
plugins = syntax auth rgstrar ls_localdb
recovery_file = {path}
{extra}
[userinfo]
[[carol]]
aor = sip:carol@example.com
password = secret
contact = sip:carol@192.0.2.33
"""


def wired(tmp_path: Path, extra: str = "") -> tuple[Wiring, Net]:
    settings = load_text(CONF.format(path=tmp_path / "location.sqlite", extra=extra))
    wiring = build_core(settings)
    net = Net(wiring.core)
    # build_core loads the journal on the processor's clock (time.monotonic): the fake clock
    # starts there, or a binding's expiry would depend on how long the machine has been up.
    net.now = time.monotonic()
    return wiring, net


def test_a_registration_survives_a_restart_and_the_record_route_tag_too(tmp_path: Path) -> None:
    wiring, net = wired(tmp_path)
    register = request("REGISTER", uri="sip:example.com", headers="Contact: <sip:bob@192.0.2.21>\r\n")
    net.deliver(register, UAC)
    assert [m.status for _, m in net.take()] == [200]
    assert wiring.before_send is not None and wiring.close is not None
    wiring.before_send()  # what the processor does before sending that 200
    tag = wiring.core.tu.local.tag
    wiring.close()

    again, net = wired(tmp_path)
    assert again.core.tu.local.tag == tag  # the secret file kept the tag
    net.deliver(request("MESSAGE", uri="sip:bob@example.com", branch="z9hG4bK-m"), UAC)
    assert [peer for peer, _ in net.take()] == [Peer("udp", "192.0.2.21", 5060)]
    assert again.stats()["registrations_active"] == 2  # bob, and carol's static contact
    again.close()


def test_a_register_at_our_address_is_taken_by_the_registrar(tmp_path: Path) -> None:
    # routing.Local counts serverip as ours: so must the registrar (never a 484 from ls_localdb).
    wiring, net = wired(tmp_path)
    wiring.reload(load_text(CONF.format(path=tmp_path / "location.sqlite", extra="")))  # rebuilt alike
    register = request("REGISTER", uri="sip:192.0.2.1:5060", headers="Contact: <sip:dan@192.0.2.40>\r\n")
    register.set_header("To", "<sip:dan@192.0.2.1>")
    net.deliver(register, UAC)
    assert [m.status for _, m in net.take()] == [200]
    net.deliver(request("MESSAGE", uri="sip:dan@192.0.2.1", branch="z9hG4bK-m"), UAC)
    assert [peer for peer, _ in net.take()] == [Peer("udp", "192.0.2.40", 5060)]
    wiring.close()


def test_static_contacts_are_reachable(tmp_path: Path) -> None:
    wiring, net = wired(tmp_path)
    net.deliver(request("MESSAGE", uri="sip:carol@example.com"), UAC)
    assert [peer for peer, _ in net.take()] == [Peer("udp", "192.0.2.33", 5060)]
    wiring.close()


def test_authentication_on_challenges_with_the_configured_realm(tmp_path: Path) -> None:
    wiring, net = wired(tmp_path, "authentication = on\nserverrealm = example.com\n")
    net.deliver(request("MESSAGE", uri="sip:carol@example.com"), UAC)
    [(_, challenge)] = net.take()
    assert challenge.status == 407
    assert 'realm="example.com"' in (challenge.header("Proxy-Authenticate") or "")
    wiring.close()


def test_magicstring_is_the_secret(tmp_path: Path) -> None:
    first, _ = wired(tmp_path, "magicstring = one")
    second, _ = wired(tmp_path / "other", "magicstring = one")
    assert first.core.tu.local.tag == second.core.tu.local.tag
    assert not (tmp_path / "location.sqlite.secret").exists()
    first.close()
    second.close()
