"""The syntax and auth plugins, and the loop-detecting branch of psp/branch.py."""

from __future__ import annotations

import re

import pytest

from conftest import corpus
from test_plugins_support import SECRET, context, make_request, make_services

from psp.branch import is_loop, key_of, loop_key, make_branch, request_key
from psp.digest import digest_response, ha1_of
from psp.message import Request
from psp.parser import parse
from psp.plugins.base import Decision, Mode, State
from psp.plugins.chain import Chain
from psp.plugins.syntax import Syntax
from psp.uri import parse_uri

CORPUS = corpus("rfc4475")
SYNTAX = make_services("plugins = syntax ls_sfull\n[syntax]\nallowed_schemes = sip, sips, tel\n")
AUTH_CONF = ("plugins = syntax auth rgstrar ls_localdb ls_sfull\nauthentication = on\n"
             "[userinfo]\n[[alice]]\naor = sip:alice@example.com\npassword = secret\n")


def torture(name: str) -> Request:
    request = parse((CORPUS / f"{name}.dat").read_bytes())
    assert isinstance(request, Request)
    return request


def run(request: Request, services=SYNTAX, routed: bool = False):  # noqa: ANN001, ANN201
    return Chain.from_settings(services.settings, services).run_request(context(request, services, routed))


def test_unknown_scheme_gets_416() -> None:
    decision = run(torture("unkscm"), make_services("plugins = syntax ls_sfull"))
    assert (decision.mode, decision.state, decision.status) == (Mode.UAS, State.MANDATE, 416)


def test_allowed_schemes_lets_a_scheme_through() -> None:
    decision = Decision()
    syntax = Syntax(SYNTAX.settings.sections["syntax"], SYNTAX)
    syntax.on_request(context(make_request("tel:+1555"), SYNTAX), decision)
    assert decision.mode is None
    assert run(make_request("tel:+1555")).status == 403  # allowed, but nobody routes it: not ours


def test_proxy_require_gets_420_listing_every_option() -> None:
    decision = run(torture("bext01"))
    assert decision.status == 420
    assert decision.headers == (("Unsupported", "noProxiesSupportThis, norDoAnyProxiesSupportThis"),)


def test_cancel_is_not_refused_for_proxy_require() -> None:
    cancel = make_request("sip:bob@elsewhere.net", "CANCEL", "Proxy-Require: foo\r\n")
    assert run(cancel).mode is Mode.FORK


def test_max_forwards_is_the_proxys_to_check_not_the_plugins() -> None:
    # The proxy answers 483 before the chain (tests/test_proxy_routing.py): one check.
    decision = Decision()
    Syntax(SYNTAX.settings.sections["syntax"], SYNTAX).on_request(context(torture("zeromf"), SYNTAX), decision)
    assert decision.mode is None


def forwarded(request: Request, secret: bytes = SECRET) -> Request:
    """``request`` as we would forward it, then as the next hop would send it back."""
    copy = request.copy()
    copy.push_via(f"SIP/2.0/UDP proxy.example.com;branch={make_branch(request_key(request, secret), 0)}")
    copy.push_via("SIP/2.0/UDP next.example.org;branch=z9hG4bKnext1")
    return copy


def test_a_request_back_unchanged_is_a_loop() -> None:
    looped = forwarded(make_request("sip:bob@elsewhere.net"))
    assert is_loop(looped, SECRET)
    assert run(looped).status == 482


def test_a_request_back_with_a_new_r_uri_is_a_spiral() -> None:
    spiral = forwarded(make_request("sip:bob@elsewhere.net"))
    spiral.uri = parse_uri("sip:bob@third.example.org")
    assert not is_loop(spiral, SECRET)
    assert run(spiral).mode is Mode.FORK


def test_another_proxys_via_is_not_ours() -> None:
    assert not is_loop(forwarded(make_request(), secret=b"another proxy"), SECRET)


def test_the_key_follows_every_routing_input() -> None:
    base = make_request()
    via = base.top_via
    key = loop_key(base, via, SECRET)
    assert key == loop_key(make_request(), via, SECRET)  # deterministic: retransmissions match
    for extra in ("Route: <sip:p.example.org;lr>\r\n", "Proxy-Require: x\r\n",
                  "Proxy-Authorization: Digest username=\"a\"\r\n"):
        assert loop_key(make_request(extra=extra), via, SECRET) != key
    other_branch = make_request(via="SIP/2.0/UDP client.example.net:5060;branch=z9hG4bKc2")
    assert request_key(other_branch, SECRET) != key


def test_branch_round_trip() -> None:
    key = request_key(make_request(), SECRET)
    assert key_of(make_branch(key, 3)) == key
    assert key_of("z9hG4bKc1") is None and key_of(None) is None and key_of(make_branch("xyz", 0)) is None


# ---------------------------------------------------------------- auth

def challenge(decision) -> str:  # noqa: ANN001
    """The nonce of the MD5 challenge in a 401/407 decision."""
    values = [value for _, value in decision.headers if "algorithm=MD5" in value]
    match = re.search(r'nonce="([^"]+)"', values[0])
    assert match is not None
    return match.group(1)


def credentials(nonce: str, method: str, uri: str, realm: str = "example.com") -> str:
    ha1 = ha1_of("MD5", "alice", realm, "secret")
    response = digest_response("MD5", ha1, method, uri, nonce, "00000001", "c0ffee", "auth")
    return (f'Digest username="alice", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"')


def with_force(force: str) -> str:
    return AUTH_CONF.replace("[userinfo]", f"[auth]\nforce_use_of_407 = {force}\n[userinfo]")


def test_invite_without_credentials_gets_407() -> None:
    decision = run(make_request("sip:bob@elsewhere.net"), make_services(AUTH_CONF))
    assert decision.status == 407
    assert {name for name, _ in decision.headers} == {"Proxy-Authenticate"}


@pytest.mark.parametrize(("force", "uri", "status"), [
    ("off", "sip:example.com", 401), ("on", "sip:example.com", 407), ("off", "sip:elsewhere.net", 407)])
def test_register_challenge_kind(force: str, uri: str, status: int) -> None:
    services = make_services(with_force(force))
    register = make_request(uri, "REGISTER", "Contact: <sip:alice@192.0.2.7>\r\n")
    assert run(register, services).status == status


def test_detect_uses_407_for_a_ua_that_answers_with_proxy_authorization() -> None:
    services = make_services(with_force("detect"))
    plain = make_request("sip:example.com", "REGISTER")
    buggy = make_request("sip:example.com", "REGISTER", 'Proxy-Authorization: Digest username="alice"\r\n')
    assert (run(plain, services).status, run(buggy, services).status) == (401, 407)


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_ack_and_cancel_are_never_challenged(method: str) -> None:
    assert run(make_request("sip:bob@elsewhere.net", method), make_services(AUTH_CONF)).mode is Mode.FORK


def test_good_credentials_pass_and_ours_are_stripped_on_forward() -> None:
    services = make_services(AUTH_CONF)
    chain = Chain.from_settings(services.settings, services)
    uri = "sip:bob@elsewhere.net"
    nonce = challenge(chain.run_request(context(make_request(uri), services)))
    other = 'Digest username="a", realm="other.org", nonce="n", uri="sip:x", response="r"'
    extra = f"Proxy-Authorization: {credentials(nonce, 'INVITE', uri)}\r\nProxy-Authorization: {other}\r\n"
    ctx = context(make_request(uri, extra=extra), services)
    decision = chain.run_request(ctx)
    assert decision.mode is Mode.FORK and ctx.notes["auth"].user.login == "alice"
    branch = ctx.request.copy()
    assert chain.run_forward(ctx, branch)
    assert branch.header_values("Proxy-Authorization") == [other]


def test_authentication_off_makes_auth_a_no_op() -> None:
    services = make_services(AUTH_CONF.replace("authentication = on", "authentication = off"))
    assert run(make_request("sip:bob@elsewhere.net"), services).mode is Mode.FORK
