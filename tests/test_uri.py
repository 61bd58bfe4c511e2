"""SIP/SIPS URI parsing, serialisation and RFC 3261 19.1.4 equivalence."""

from __future__ import annotations

import pytest

from psp.errors import ParseError
from psp.uri import URI, AbsoluteURI, parse_uri


def test_components() -> None:
    uri = parse_uri("sips:alice:secret@[2001:db8::1]:5061;transport=TCP;lr;maddr=239.255.255.1?subject=x&h=1")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "alice", "secret", "2001:db8::1", 5061)
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"}
    assert (uri.transport, uri.lr, uri.maddr, uri.headers) == ("tcp", True, "239.255.255.1", "subject=x&h=1")
    assert uri.hostport == "[2001:db8::1]:5061"


def test_scheme_is_case_insensitive_and_lowercased() -> None:
    uri = parse_uri("SIP:Bob@Example.COM;User=phone")
    assert (uri.scheme, uri.host, uri.user_param) == ("sip", "Example.COM", "phone")
    assert str(uri) == "SIP:Bob@Example.COM;User=phone"  # unchanged: as written


def test_edited_uri_is_rebuilt() -> None:
    uri = parse_uri("sip:bob@example.com;transport=udp")
    uri.params["lr"] = None
    uri.port = 5070
    assert str(uri) == "sip:bob@example.com:5070;transport=udp;lr"
    assert uri.modified()
    assert str(URI("::1", user="a", port=5060)) == "sip:a@[::1]:5060"


def test_copy_keeps_written_form_until_changed() -> None:
    uri = parse_uri("sip:Bob@EXAMPLE.com;x=1")
    assert str(uri.copy()) == "sip:Bob@EXAMPLE.com;x=1"
    changed = uri.copy(host="other.example.com", params={})
    assert str(changed) == "sip:Bob@other.example.com" and str(uri) == "sip:Bob@EXAMPLE.com;x=1"


@pytest.mark.parametrize("text", [
    "sip:", "sip:@example.com", "sip:a b@example.com", "sip:example.com:99999", "sip:example.com:port",
    "sip:user@[::1", "sip:user@[2001:db8:::1:2:3:4:5:6]", "sip:a@b;;c", "sip:a@b;=x", "sip:a%4@b",
    "sip:a@b?x", "<sip:a@b>", "sip:2001:db8::10", "no-colon", "1abc:x", "tel:", "x:a b",
])
def test_malformed(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_uri(text)
    assert caught.value.status == 400


def test_other_schemes_are_opaque() -> None:
    tel = parse_uri("TEL:+1-201-555-0123;phone-context=example.com")
    assert isinstance(tel, AbsoluteURI)
    assert (tel.scheme, tel.opaque) == ("tel", "+1-201-555-0123;phone-context=example.com")
    assert str(tel) == "TEL:+1-201-555-0123;phone-context=example.com"
    assert tel.equivalent(parse_uri("tel:+1-201-555-0123;phone-context=example.com"))


# RFC 3261 19.1.4 examples.
@pytest.mark.parametrize("first, second", [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ("sip:a@[2001:db8::1]", "sip:a@[2001:DB8:0::1]"),
])
def test_equivalent(first: str, second: str) -> None:
    assert parse_uri(first).equivalent(parse_uri(second))
    assert parse_uri(second).equivalent(parse_uri(first))


@pytest.mark.parametrize("first, second", [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:a@b", "sips:a@b"),
    ("sip:a@b", "tel:a"),
])
def test_not_equivalent(first: str, second: str) -> None:
    assert not parse_uri(first).equivalent(parse_uri(second))
    assert not parse_uri(second).equivalent(parse_uri(first))
