"""Header names, list splitting and the typed header parsers."""

from __future__ import annotations

import pytest

from psp.errors import ParseError
from psp.headers import (
    LIST_HEADERS, Via, canonical_name, parse_challenge, parse_contacts, parse_content_type,
    parse_credentials, parse_cseq, parse_int, parse_name_addr, parse_tokens, parse_via, split_list,
)
from psp.uri import AbsoluteURI, URI


@pytest.mark.parametrize("name, canonical", [
    ("v", "Via"), ("i", "Call-ID"), ("M", "Contact"), ("e", "Content-Encoding"), ("l", "Content-Length"),
    ("c", "Content-Type"), ("f", "From"), ("s", "Subject"), ("k", "Supported"), ("t", "To"),
    ("o", "Event"), ("u", "Allow-Events"), ("r", "Refer-To"), ("b", "Referred-By"),
    ("x", "Session-Expires"), ("y", "Identity"), ("call-id", "Call-ID"), ("CSEQ", "CSeq"),
    ("www-authenticate", "WWW-Authenticate"), ("X-Custom-Thing", "X-Custom-Thing"),
])
def test_canonical_names(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_list_headers() -> None:
    assert {"Via", "Contact", "Route", "Record-Route", "Path", "Require", "Supported"} <= LIST_HEADERS
    assert not {"From", "To", "Call-ID", "CSeq", "WWW-Authenticate", "Authorization", "Subject"} & LIST_HEADERS


def test_split_list_respects_quotes_and_brackets() -> None:
    value = '"Doe, John" <sip:j@a.com;x="1,2">;q=0.5, <sip:b@b.com?h=a,b>, sip:c@c.com'
    assert split_list(value) == ['"Doe, John" <sip:j@a.com;x="1,2">;q=0.5', "<sip:b@b.com?h=a,b>", "sip:c@c.com"]
    assert split_list('"a \\" , b" <sip:x@y>, z') == ['"a \\" , b" <sip:x@y>', "z"]
    assert split_list("a , b,c") == ["a", "b", "c"]


def test_via() -> None:
    first, second = parse_via("SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776;rport;received=192.0.2.1;"
                              "maddr=224.2.0.1;ttl=16, SIP / 2.0 / tcp [2001:db8::1] ; branch = z9hG4bKx")
    assert (first.transport, first.host, first.port, first.sent_by) == (
        "UDP", "pc33.atlanta.com", 5066, ("pc33.atlanta.com", 5066))
    assert (first.branch, first.rport, first.received, first.maddr, first.ttl) == (
        "z9hG4bK776", None, "192.0.2.1", "224.2.0.1", 16)
    assert "rport" in first.params
    assert (second.transport, second.host, second.port, second.branch) == ("TCP", "2001:db8::1", None, "z9hG4bKx")
    assert str(second) == "SIP / 2.0 / tcp [2001:db8::1] ; branch = z9hG4bKx"  # untouched: as written
    second.params["rport"] = "5060"
    assert str(second) == "SIP/2.0/TCP [2001:db8::1];branch=z9hG4bKx;rport=5060"
    assert parse_via("SIP/2.0/UDP h;rport=5062")[0].rport == 5062


@pytest.mark.parametrize("value", [
    "SIP/2.0/UDP 192.0.2.15;;", "SIP/2.0/UDP h, ", "SIP/2.0/UDP", "SIP/2.0 h", "HTTP/1.1/TCP h",
    "SIP/3.0/UDP h", "SIP/2.0/UDP h:99999", "SIP/2.0/UDP h;branch=", "SIP/2.0/UDP [::1;branch=x",
])
def test_bad_via(value: str) -> None:
    with pytest.raises(ParseError):
        parse_via(value)


def test_name_addr_forms() -> None:
    quoted = parse_name_addr('"Alice \\"A\\" Smith" <sip:alice@atlanta.com>;tag=88sja8x;x="a;b"')
    assert (quoted.display, quoted.tag, quoted.params["x"]) == ('Alice "A" Smith', "88sja8x", '"a;b"')
    assert isinstance(quoted.uri, URI) and quoted.uri.user == "alice"
    tokens = parse_name_addr("Bob  Smith<sip:bob@b.com;transport=tcp>;tag=1")
    assert (tokens.display, tokens.uri.transport, tokens.tag) == ("Bob  Smith", "tcp", "1")
    bare = parse_name_addr("sip:carol@c.com;tag=7")
    assert (bare.display, bare.tag, bare.uri.params) == (None, "7", {})
    other = parse_name_addr("<tel:+1555>")
    assert isinstance(other.uri, AbsoluteURI)


def test_name_addr_edit_and_print() -> None:
    addr = parse_name_addr("Bob <sip:bob@b.com>")
    assert not addr.modified() and str(addr) == "Bob <sip:bob@b.com>"
    addr.params["tag"] = "abc"
    assert str(addr) == '"Bob" <sip:bob@b.com>;tag=abc'
    addr2 = parse_name_addr("<sip:bob@b.com>")
    addr2.uri.params["lr"] = None
    assert addr2.modified() and str(addr2) == "<sip:bob@b.com;lr>"


@pytest.mark.parametrize("value", [
    '"unterminated <sip:a@b>', "Bell, Alexander <sip:a@b>", "< sip:a@b >", "sip:a@b?x=y",
    "<sip:a@b>;;", "<sip:a@b", "", "<>",
])
def test_bad_name_addr(value: str) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(value)


def test_contacts() -> None:
    assert parse_contacts(" * ") == "*"
    contacts = parse_contacts('<sip:a@h1>;q=0.7;expires=3600, "B" <sip:b@h2>;q=1')
    assert [(contact.uri.host, contact.q, contact.expires) for contact in contacts] == [
        ("h1", 0.7, 3600), ("h2", 1.0, None)]
    with pytest.raises(ParseError):
        parse_contacts("<sip:a@h1>;q=2")[0].q
    with pytest.raises(ParseError):
        parse_contacts("<sip:a@h1>;expires=99999999999")[0].expires
    with pytest.raises(ParseError):
        parse_contacts("<sip:a@h1>, ")


def test_cseq_and_numbers() -> None:
    cseq = parse_cseq(" 0009   INVITE ")
    assert (cseq.number, cseq.method, str(cseq)) == (9, "INVITE", "9 INVITE")
    assert parse_cseq("2147483647 ACK").number == 2**31 - 1
    for bad in ("2147483648 ACK", "-1 ACK", "1", "INVITE", "1 IN VITE"):
        with pytest.raises(ParseError):
            parse_cseq(bad)
    assert parse_int(" 0068 ", 255) == 68
    for bad in ("256", "-1", "", "1.5", "\u0661", "9" * 5000):
        with pytest.raises(ParseError):
            parse_int(bad, 255)


def test_tokens_and_content_type() -> None:
    assert parse_tokens("100rel, timer ,path") == ["100rel", "timer", "path"]
    assert parse_tokens("") == []
    with pytest.raises(ParseError):
        parse_tokens("a b")
    content = parse_content_type("Application/SDP ; charset=utf-8")
    assert (content.mime, content.params) == ("application/sdp", {"charset": "utf-8"})
    with pytest.raises(ParseError):
        parse_content_type("text")


def test_digest_credentials_and_challenge() -> None:
    creds = parse_credentials('Digest username="bob", realm="biloxi.com", nonce="dcd98b", '
                              'uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f", '
                              'response="6629fae4", algorithm=MD5, opaque="5ccc"')
    assert creds.scheme == "Digest"
    assert creds.params["username"] == "bob" and creds.params["nc"] == "00000001"
    assert parse_credentials(str(creds)).params == creds.params
    challenge = parse_challenge('Digest realm="atlanta.com", qop="auth,auth-int", nonce="84a4", stale=FALSE')
    assert challenge.params["qop"] == "auth,auth-int" and challenge.params["stale"] == "FALSE"
    assert 'qop="auth,auth-int"' in str(challenge) and "stale=FALSE" in str(challenge)
    escaped = parse_credentials('Digest username="a\\"b"')
    assert escaped.params["username"] == 'a"b' and parse_credentials(str(escaped)).params == escaped.params
    for bad in ("Digest", 'Digest realm="x', "Digest realm"):
        with pytest.raises(ParseError):
            parse_credentials(bad)


def test_built_via_prints_canonically() -> None:
    via = Via("UDP", "198.51.100.1", 5060, {"branch": "z9hG4bK1", "rport": None})
    assert str(via) == "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK1;rport"
    assert via.modified()
