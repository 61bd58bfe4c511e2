"""Wire tests: Digest authentication of REGISTER (RFC 3261 22.4, RFC 7616, RFC 8760).

The registering UA is SIPp (tests/sipp/services/register_*.xml).  SIPp 3.6.1 computes
MD5 digests only, and answers the first challenge of a 401: the test that lets SIPp
authenticate therefore configures ``[auth] algorithms = MD5, SHA-256``, and checks in
SIPp's own message log that it answered with algorithm=MD5, qop=auth, nc=00000001 and
then nc=00000002 on the same nonce.  The default order (SHA-256 first) is checked on the
401, and its SHA-256 challenge answered from Python.  Replays are sent from a raw socket.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from conftest import LOOPBACK, needs_sipp
from sipp_helpers import DOMAIN, Peer, UdpClient, listed, proxy_config, register, status_of, uac

pytestmark = needs_sipp

USERS = {"alice": {"aor": f"sip:alice@{DOMAIN}", "password": "secret"}}
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def auth_server(partysip, algorithms: str | None = None):
    sections = {"auth": {"algorithms": algorithms}} if algorithms else {}
    return partysip(**proxy_config("statefull", users=USERS, sections=sections, authentication=True))


def digest_params(value: str) -> dict[str, str]:
    """The parameters of a Digest challenge or credentials, unquoted."""
    return {k.lower(): v.strip('"') for k, v in re.findall(r'([A-Za-z-]+)=("[^"]*"|[^,\s]+)', value)}


def response_for(algorithm: str, nonce: str, nc: str, cnonce: str, password: str = "secret") -> str:
    """RFC 7616 3.4.1 with qop=auth for alice@DOMAIN, REGISTER sip:DOMAIN (the test's own oracle)."""
    def h(text: str) -> str:
        return HASHES[algorithm](text.encode()).hexdigest()
    ha1, ha2 = h(f"alice:{DOMAIN}:{password}"), h(f"REGISTER:sip:{DOMAIN}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def credentials(algorithm: str, nonce: str, nc: str, cnonce: str, password: str = "secret") -> str:
    return (f'Digest username="alice", realm="{DOMAIN}", nonce="{nonce}", uri="sip:{DOMAIN}", '
            f'response="{response_for(algorithm, nonce, nc, cnonce, password)}", algorithm={algorithm}, '
            f'qop=auth, nc={nc}, cnonce="{cnonce}"')


def resend(text: str, client: UdpClient, cseq: int, authorization: str | None = None) -> bytes:
    """A REGISTER that SIPp sent, as a new transaction from ``client``: our Via (new
    branch), CSeq ``cseq``; the Authorization kept, or replaced by ``authorization``."""
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    lines = [head[0]]
    for line in head[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name == "via":
            line = f"Via: SIP/2.0/UDP {LOOPBACK}:{client.port};branch=z9hG4bK{secrets.token_hex(8)};rport"
        elif name == "cseq":
            line = f"CSeq: {cseq} REGISTER"
        elif name == "authorization" and authorization:
            continue
        lines.append(line)
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sent_registers(peer: Peer) -> list:
    return [m for m in peer.messages if m.sent and m.method == "REGISTER"]


def test_register_without_credentials_is_challenged_with_sha256_then_md5(partysip, sipp):
    server = auth_server(partysip)  # [auth] algorithms default: SHA-256, MD5
    reg = register(sipp, server, "alice", f"{LOOPBACK}:40021", scenario="register_challenge.xml")
    assert reg.ok, reg.describe()
    offered = [digest_params(v) for v in reg.received(401)[-1].headers("WWW-Authenticate")]
    assert [c.get("algorithm") for c in offered] == ["SHA-256", "MD5"], offered
    for challenge in offered:
        assert challenge["realm"] == DOMAIN and "auth" in challenge["qop"].split(",") and challenge["nonce"]
    # The SHA-256 challenge is a real one: a correct SHA-256 answer registers.
    sha = offered[0]
    with UdpClient() as client:
        request = resend(sent_registers(reg)[0].text, client, 2, credentials("SHA-256", sha["nonce"], "00000001", "a1b2"))
        client.send(request, server.udp_port)
        answer = client.final()
    assert status_of(answer) == 200, (answer or b"no answer").decode(errors="replace") + server.log()[-2000:]


def test_sipp_md5_digest_registers_and_a_replayed_nonce_count_is_refused(partysip, sipp):
    server = auth_server(partysip, "MD5, SHA-256")
    reg = uac(sipp, "register_auth.xml", server, "-s", "alice", "-key", "domain", DOMAIN,
              "-key", "contact", f"{LOOPBACK}:40022", "-au", "alice", "-ap", "secret", "-auth_uri", DOMAIN)
    assert reg.ok, reg.describe() + "\n" + server.log()[-3000:]
    assert listed(reg)  # the last 200 lists the binding
    sent = sent_registers(reg)
    creds = [digest_params(m.header("Authorization") or "") for m in sent[1:]]
    # What SIPp computed: MD5 with qop=auth, nonce-counts 1 then 2 on one nonce.
    assert [(c["algorithm"], c["qop"], c["nc"]) for c in creds] == [("MD5", "auth", "00000001"),
                                                                     ("MD5", "auth", "00000002")], creds
    assert creds[0]["nonce"] == creds[1]["nonce"]
    nonce = creds[0]["nonce"]
    with UdpClient() as client:
        # The nc=00000001 Authorization again, in a new transaction: a replay.
        client.send(resend(sent[1].text, client, 10), server.udp_port)
        replayed = client.final()
        # Control: the same request with a fresh nonce-count and a correct response passes.
        client.send(resend(sent[1].text, client, 11, credentials("MD5", nonce, "00000003", "c0ffee")), server.udp_port)
        fresh = client.final()
    assert status_of(replayed) in (401, 403), (replayed or b"no answer").decode(errors="replace")
    assert status_of(fresh) == 200, (fresh or b"no answer").decode(errors="replace")


def test_wrong_password_is_refused(partysip, sipp):
    server = auth_server(partysip, "MD5, SHA-256")
    reg = uac(sipp, "register_badpw.xml", server, "-s", "alice", "-key", "domain", DOMAIN,
              "-key", "contact", f"{LOOPBACK}:40023", "-au", "alice", "-ap", "not-the-password", "-auth_uri", DOMAIN)
    assert reg.ok, reg.describe()  # 401 then 401 or 403
    creds = digest_params(sent_registers(reg)[1].header("Authorization") or "")
    assert creds.get("username") == "alice" and creds.get("algorithm") == "MD5", creds
    assert not reg.received(200)
