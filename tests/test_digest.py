"""Digest authentication: RFC 2617 / 7616 vectors, challenges, nonces, replay, stripping."""

from __future__ import annotations

import pytest

from psp.digest import (
    AuthError,
    Authenticator,
    NonceCounts,
    UserRecord,
    digest_response,
    ha1_of,
    make_user,
    strip_credentials,
)
from psp.errors import SipError
from psp.headers import parse_challenge
from psp.message import Request
from psp.parser import parse

REALM = "example.com"
ALICE = make_user("sip:alice@example.com", "alice", REALM, password="secret")


def test_rfc2617_md5_vector() -> None:
    ha1 = ha1_of("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = digest_response("MD5", ha1, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                               "00000001", "0a4f113b", "auth")
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
     ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    ha1 = ha1_of(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = digest_response(
        algorithm, ha1, "GET", "/dir/index.html", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "auth",
    )
    assert response == expected


def request(method: str = "REGISTER", *extra: str, to: str = "sip:alice@example.com",
            ruri: str = "sip:example.com") -> Request:
    lines = [
        f"{method} {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        f"To: <{to}>",
        "From: <sip:alice@example.com>;tag=1",
        "Call-ID: c1@ua",
        f"CSeq: 1 {method}",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return parse("\r\n".join(lines).encode())


def challenge_of(auth: Authenticator, method: str = "REGISTER", now: float = 0.0) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.check(request(method), now)
    return info.value


def answer(err: SipError, method: str = "REGISTER", *, password: str = "secret", login: str = "alice",
           algorithm: str | None = None, nc: int = 1, qop: bool = True, ruri: str = "sip:example.com",
           nonce: str | None = None, to: str = "sip:alice@example.com") -> Request:
    """A UA's retry: credentials computed from the first (or the ``algorithm``) challenge."""
    challenges = [parse_challenge(value) for _, value in err.headers]
    chosen = next(c for c in challenges if algorithm in (None, c.params["algorithm"]))
    alg = chosen.params["algorithm"]
    nonce = nonce or chosen.params["nonce"]
    ha1 = ha1_of(alg, login, REALM, password)
    header = "Authorization" if err.status == 401 else "Proxy-Authorization"
    if qop:
        resp = digest_response(alg, ha1, method, ruri, nonce, f"{nc:08x}", "abc", "auth")
        tail = f', qop=auth, nc={nc:08x}, cnonce="abc"'
    else:
        resp = digest_response(alg, ha1, method, ruri, nonce)
        tail = ""
    value = (f'Digest username="{login}", realm="{REALM}", nonce="{nonce}", uri="{ruri}", '
             f'response="{resp}", algorithm={alg}{tail}')
    return request(method, f"{header}: {value}", to=to, ruri=ruri)


@pytest.fixture
def auth() -> Authenticator:
    bob_md5_only = make_user("sip:bob@example.com", "bob", REALM, ha1=ha1_of("MD5", "bob", REALM, "pw"))
    return Authenticator(REALM, "magic", [ALICE, bob_md5_only], lifetime=300.0)


def test_challenge_offers_sha256_then_md5_with_qop(auth: Authenticator) -> None:
    err = challenge_of(auth)
    assert err.status == 401 and [name for name, _ in err.headers] == ["WWW-Authenticate"] * 2
    first, second = (parse_challenge(v) for _, v in err.headers)
    assert [first.params["algorithm"], second.params["algorithm"]] == ["SHA-256", "MD5"]
    assert first.params["qop"] == "auth" and first.params["realm"] == REALM
    assert "stale" not in first.params
    assert err.failure is None  # no credentials: the first step, not a failure


def test_407_for_other_methods_and_when_forced(auth: Authenticator) -> None:
    err = challenge_of(auth, "INVITE")
    assert err.status == 407 and err.headers[0][0] == "Proxy-Authenticate"
    forced = Authenticator(REALM, "magic", [ALICE], force_407=True)
    assert challenge_of(forced, "REGISTER").status == 407


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
@pytest.mark.parametrize("method", ["REGISTER", "INVITE"])
def test_valid_credentials_authenticate(auth: Authenticator, algorithm: str, method: str) -> None:
    retry = answer(challenge_of(auth, method), method, algorithm=algorithm)
    result = auth.check(retry, 1.0)
    assert result.user == ALICE and result.algorithm == algorithm


def test_md5_without_qop_is_accepted_but_not_sha256(auth: Authenticator) -> None:
    assert auth.check(answer(challenge_of(auth), algorithm="MD5", qop=False), 1.0).user == ALICE
    with pytest.raises(SipError) as info:
        auth.check(answer(challenge_of(auth), algorithm="SHA-256", qop=False), 1.0)
    assert info.value.status == 401


@pytest.mark.parametrize(
    "kwargs", [{"password": "wrong"}, {"login": "mallory"}], ids=["wrong password", "unknown user"]
)
def test_bad_credentials_are_rechallenged_without_stale(auth: Authenticator, kwargs: dict) -> None:
    with pytest.raises(SipError) as info:
        auth.check(answer(challenge_of(auth), **kwargs), 1.0)
    assert (info.value.status, info.value.failure) == (401, "bad")
    assert all("stale" not in parse_challenge(v).params for _, v in info.value.headers)


def test_tampered_nonce_is_refused(auth: Authenticator) -> None:
    err = challenge_of(auth)
    nonce = parse_challenge(err.headers[0][1]).params["nonce"]
    flipped = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    foreign = Authenticator(REALM, "other secret", [ALICE]).make_nonce(0.0)
    for bad in (flipped, foreign, "not-base64!", "c2hvcnQ"):
        with pytest.raises(SipError) as info:
            auth.check(answer(err, nonce=bad), 1.0)
        assert info.value.status == 401
        assert "stale" not in parse_challenge(info.value.headers[0][1]).params


def test_expired_nonce_with_right_digest_is_stale(auth: Authenticator) -> None:
    retry = answer(challenge_of(auth, now=0.0))
    with pytest.raises(SipError) as info:
        auth.check(retry, 300.5)
    assert (info.value.status, info.value.failure) == (401, "stale")
    assert parse_challenge(info.value.headers[0][1]).params.get("stale") == "true"
    fresh_nonce = parse_challenge(info.value.headers[0][1]).params["nonce"]
    assert auth.nonce_time(fresh_nonce) == 300.5
    wrong = answer(challenge_of(auth, now=0.0), password="wrong")
    with pytest.raises(SipError) as info:
        auth.check(wrong, 300.5)
    assert "stale" not in parse_challenge(info.value.headers[0][1]).params


def test_replayed_or_lower_nonce_count_is_refused(auth: Authenticator) -> None:
    err = challenge_of(auth)
    assert auth.check(answer(err, nc=2), 1.0).user == ALICE
    for nc in (2, 1):
        with pytest.raises(SipError) as info:
            auth.check(answer(err, nc=nc), 2.0)
        assert (info.value.status, info.value.failure) == (401, "stale")
    assert auth.check(answer(err, nc=3), 3.0).user == ALICE


def test_ha1_only_user_is_offered_md5(auth: Authenticator) -> None:
    err = challenge_of(auth, "INVITE")
    with pytest.raises(SipError) as info:
        auth.check(answer(err, "INVITE", login="bob", password="pw", algorithm="SHA-256"), 1.0)
    assert [parse_challenge(v).params["algorithm"] for _, v in info.value.headers] == ["MD5"]
    retry = answer(info.value, "INVITE", login="bob", password="pw")
    assert auth.check(retry, 1.0).algorithm == "MD5"


def test_algorithm_not_offered_is_rechallenged() -> None:
    sha_only = Authenticator(REALM, "magic", [ALICE], algorithms=["SHA-256"])
    err = challenge_of(sha_only)
    assert [parse_challenge(v).params["algorithm"] for _, v in err.headers] == ["SHA-256"]
    md5 = answer(Authenticator(REALM, "magic", [ALICE]).challenge("REGISTER", 0.0), algorithm="MD5")
    with pytest.raises(SipError) as info:
        sha_only.check(md5, 1.0)
    assert info.value.status == 401


def test_registering_someone_elses_aor_is_403(auth: Authenticator) -> None:
    err = challenge_of(auth)
    with pytest.raises(SipError) as info:
        auth.check(answer(err, to="sip:bob@example.com"), 1.0)
    assert (info.value.status, info.value.failure) == (403, "forbidden")
    assert auth.check(answer(err, nc=2, to="sip:alice@EXAMPLE.com"), 1.0).user == ALICE


def test_digest_uri_must_match_request_uri(auth: Authenticator) -> None:
    retry = answer(challenge_of(auth), ruri="sip:example.com")
    moved = parse(retry.to_bytes().replace(b"REGISTER sip:example.com SIP/2.0", b"REGISTER sip:elsewhere.com SIP/2.0"))
    with pytest.raises(SipError) as info:
        auth.check(moved, 1.0)
    assert (info.value.status, info.value.failure) == (400, "bad")


def test_ack_and_cancel_are_never_challenged(auth: Authenticator) -> None:
    assert auth.check(request("ACK"), 0.0).user is None
    assert auth.check(request("CANCEL"), 0.0).user is None


def test_other_schemes_and_realms_are_ignored(auth: Authenticator) -> None:
    foreign = request("REGISTER", "Authorization: NoOneKnowsThisScheme opaque-data=here",
                      'Authorization: Digest username="alice", realm="other", nonce="x", uri="sip:example.com", response="0"')
    with pytest.raises(SipError) as info:
        auth.check(foreign, 0.0)
    assert info.value.status == 401


def test_strip_removes_only_our_realm(auth: Authenticator) -> None:
    ours = 'Digest username="alice", realm="example.com", nonce="n", uri="sip:b@x", response="r"'
    theirs = 'Digest username="alice", realm="upstream.net", nonce="m", uri="sip:b@x", response="s"'
    invite = request("INVITE", f"Proxy-Authorization: {theirs}", f"Proxy-Authorization: {ours}",
                     "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0")
    assert auth.strip(invite) == 1
    assert parse(invite.to_bytes()).header_values("Proxy-Authorization") == [theirs, "Basic YWxpY2U6c2VjcmV0"]
    assert strip_credentials(invite, REALM) == 0


def test_nonce_counts_are_bounded_and_refuse_evicted_nonces() -> None:
    counts = NonceCounts(limit=2)
    assert counts.accept("a", 1, issued=1.0, oldest_valid=0.0)
    assert counts.accept("b", 1, issued=2.0, oldest_valid=0.0)
    assert counts.accept("c", 1, issued=3.0, oldest_valid=0.0)
    assert len(counts) == 2 and counts.horizon == 1.0
    assert not counts.accept("a", 5, issued=1.0, oldest_valid=0.0)
    assert counts.accept("d", 1, issued=10.0, oldest_valid=5.0)
    assert len(counts) == 1 and counts.horizon == 1.0


def test_make_user_variants() -> None:
    assert set(ALICE.ha1) == {"SHA-256", "MD5"} and ALICE.aor == "sip:alice@example.com"
    assert ALICE.ha1["MD5"] == ha1_of("MD5", "alice", REALM, "secret")
    per_alg = make_user("sip:c@example.com", "c", REALM, ha1={"sha-256": "AB" * 32})
    assert per_alg == UserRecord("sip:c@example.com", "c", {"SHA-256": "ab" * 32})
    with pytest.raises(ValueError):
        make_user("sip:d@example.com", "d", REALM)
    with pytest.raises(ValueError):
        make_user("sip:d@example.com", "d", REALM, ha1={"SHA-512-256": "00"})
