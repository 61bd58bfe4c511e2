"""Wire tests: forking, sequential search, CANCEL, redirect and the proxy's own rejections.

Real partysip on loopback (ls_localdb in each of its modes), real SIPp UACs and UASes
(tests/sipp/services).  Every UAS scenario checks that what it receives carries the
proxy's Via on top; see each scenario's header comment for its flow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import LOOPBACK, needs_sipp
from sipp_helpers import (
    DOMAIN, Peer, Traced, UdpClient, bindings, contact_uri, finish, hostport, listed, proxy_config, raw_request,
    register, status_of, uac, uas,
)

pytestmark = needs_sipp


def invite_finals(peer: Peer) -> list[Traced]:
    """The final responses to INVITE a SIPp peer received."""
    return [m for m in peer.received() if m.status and m.status >= 200 and "INVITE" in (m.header("CSeq") or "")]


def both_ok(server, *peers: Peer) -> None:
    assert all(peer.ok for peer in peers), "\n".join(p.describe() for p in peers) + "\n" + server.log()[-3000:]


def test_parallel_fork_one_answers_the_other_is_cancelled(partysip, sipp):
    server = partysip(**proxy_config("sf_forking"))
    answering = uas(sipp, "uas_call.xml", server)
    ringing = uas(sipp, "uas_cancelled.xml", server, "-set", "ring", "1")
    listed(register(sipp, server, "frank", f"{LOOPBACK}:{answering.port}"))
    found = listed(register(sipp, server, "frank", f"{LOOPBACK}:{ringing.port}"))
    assert set(found) == {contact_uri("frank", answering.port), contact_uri("frank", ringing.port)}
    caller = uac(sipp, "uac_call.xml", server, "-s", "frank", "-key", "domain", DOMAIN)
    finish(sipp, answering, ringing)
    both_ok(server, caller, answering, ringing)
    # Both contacts got the INVITE at once; the ringing one was cancelled after the 200.
    assert ringing.received(method="CANCEL"), ringing.describe()
    assert [m.status for m in invite_finals(caller)] and {m.status for m in invite_finals(caller)} == {200}


def test_sequential_tries_the_higher_q_first_then_the_next(partysip, sipp):
    server = partysip(**proxy_config("sf_sequential"))
    busy = uas(sipp, "uas_busy.xml", server)
    answering = uas(sipp, "uas_call.xml", server)
    # Registered in this order, the q=0.5 binding is the most recent: only q decides.
    listed(register(sipp, server, "gina", f"{LOOPBACK}:{busy.port}", cparams=";q=1.0"))
    found = listed(register(sipp, server, "gina", f"{LOOPBACK}:{answering.port}", cparams=";q=0.5"))
    assert set(found) == {contact_uri("gina", busy.port), contact_uri("gina", answering.port)}
    caller = uac(sipp, "uac_call.xml", server, "-s", "gina", "-key", "domain", DOMAIN)
    finish(sipp, busy, answering)
    both_ok(server, caller, busy, answering)
    busy_sent = [m for m in busy.messages if m.sent and m.status == 486]
    second_invite = answering.received(method="INVITE")
    assert busy_sent and second_invite
    assert second_invite[0].at >= busy_sent[0].at, "the q=0.5 contact was tried before the q=1.0 one answered"
    assert [m.status for m in invite_finals(caller)] == [200] * len(invite_finals(caller))


@pytest.mark.parametrize(("ring", "wait"), [(0, 100), (1, 180)], ids=["before-180", "after-180"])
def test_cancel_from_the_caller(partysip, sipp, ring, wait):
    server = partysip(**proxy_config("statefull"))
    callee = uas(sipp, "uas_cancelled.xml", server, "-set", "ring", str(ring))
    listed(register(sipp, server, "hank", f"{LOOPBACK}:{callee.port}"))
    caller = uac(sipp, "uac_cancel.xml", server, "-s", "hank", "-key", "domain", DOMAIN, "-set", "wait", str(wait))
    finish(sipp, callee)
    both_ok(server, caller, callee)
    answered = caller.received(200)
    assert answered and all("CANCEL" in m.header("CSeq") for m in answered), caller.describe()
    assert [m.status for m in invite_finals(caller)] == [487], caller.describe()
    if not ring:
        assert not caller.received(180)


# ---------------------------------------------------------------- final answers, no UAS

def final_for_rows(sipp, server, tmp_path: Path, rows: list[tuple[str, str, int, str]]) -> tuple[Peer, dict]:
    """Send one INVITE per row (name, Request-URI, Max-Forwards, extra header) with
    uac_final.xml; returns the run and each row's final response (None if none came)."""
    inject = tmp_path / f"rows-{rows[0][0]}.csv"
    inject.write_text("SEQUENTIAL\n" + "".join(f"{n};{uri};{mf};{header}\n" for n, uri, mf, header in rows))
    caller = uac(sipp, "uac_final.xml", server, "-inf", str(inject), "-r", "50", calls=len(rows))
    finals: dict[str, Traced | None] = {}
    for name, *_ in rows:
        mine = [m for m in invite_finals(caller) if f"<sip:{name}@" in (m.header("From") or "")]
        finals[name] = mine[0] if mine else None
    return caller, finals


def test_redirect_mode_answers_302_with_every_contact(partysip, sipp, tmp_path):
    server = partysip(**proxy_config("redirect"))
    listed(register(sipp, server, "ivan", f"{LOOPBACK}:40011", cparams=";q=0.7"))
    listed(register(sipp, server, "ivan", f"{LOOPBACK}:40012", cparams=";q=0.3"))
    caller, finals = final_for_rows(sipp, server, tmp_path, [("ivan", f"sip:ivan@{DOMAIN}", 70, "Subject: redirect")])
    answer = finals["ivan"]
    assert answer is not None and answer.status == 302, caller.describe()
    assert set(bindings(answer)) == {contact_uri("ivan", 40011), contact_uri("ivan", 40012)}, answer.text
    assert caller.ok, caller.describe()


# name (the From user), Request-URI, Max-Forwards, one more header, expected status: why
REJECTIONS = [
    ("nobody", f"sip:nobody@{DOMAIN}", 70, "Subject: unknown user", 404),        # no such AOR
    ("carol", f"sip:carol@{DOMAIN}", 70, "Subject: known, unregistered", 480),  # [userinfo] user, no binding
    ("hops", f"sip:nobody@{DOMAIN}", 0, "Subject: no hops left", 483),           # 16.3 item 3
    ("loopy", f"sip:loopy@{LOOPBACK}", 70, "Subject: routes back here", 482),    # 16.3 item 4
    ("scheme", "xyz:somebody-somewhere", 70, "Subject: unknown scheme", 416),    # 16.3 item 2
    ("require", f"sip:nobody@{DOMAIN}", 70, "Proxy-Require: com.example.nosuch", 420),  # 16.3 item 5
]


def test_proxy_rejections(partysip, sipp, tmp_path):
    users = {"carol": {"aor": f"sip:carol@{DOMAIN}", "password": "unused"}}
    server = partysip(**proxy_config("statefull", users=users, servername=f"{DOMAIN}, {LOOPBACK}"))
    # loopy@127.0.0.1 is bound to the proxy's own address: the INVITE comes back to it with
    # the same Request-URI and routing fields, a loop (not a spiral).
    listed(register(sipp, server, "loopy", hostport(server), domain=LOOPBACK))
    rows = [row[:4] for row in REJECTIONS]
    caller, finals = final_for_rows(sipp, server, tmp_path, rows)
    got = {name: (answer.status if answer else None) for name, answer in finals.items()}
    assert got == {name: status for name, *_, status in REJECTIONS}, caller.describe() + "\n" + server.log()[-3000:]
    assert finals["require"].header("Unsupported") == "com.example.nosuch"
    assert caller.ok, caller.describe()


def test_the_shipped_chain_is_no_open_relay(partysip):
    # No ls_sfull: a Route to us without our Record-Route tag, or a To tag, is no dialog of
    # ours, so a foreign Request-URI is refused rather than relayed (the reviewer's two cases).
    server = partysip(**proxy_config("statefull"))
    attempts = [("sip:+4412345@pstn.example.com", None, f"Route: <sip:{hostport(server)};lr>\r\n"),
                ("sip:bob@192.0.2.99", "<sip:bob@192.0.2.99>;tag=forged", "")]
    with UdpClient() as client:
        for target, to, headers in attempts:
            client.send(raw_request(client, "INVITE", target, to=to, headers=headers), server.udp_port)
            answer = client.final()
            assert status_of(answer) == 403, (answer or b"no answer").decode(errors="replace") + server.log()[-2000:]
            assert b" 403 Relaying Denied\r\n" in answer
