"""RFC 5118 IPv6 torture messages: references, ports, received, RFC 5954's corrected ABNF."""

from __future__ import annotations

import pytest

from psp.errors import ParseError
from psp.headers import Via
from psp.parser import parse
from tests.conftest import corpus

CORPUS = corpus("rfc5118")
NAMES = sorted(path.stem for path in CORPUS.glob("*.dat"))
# 4.2: an IPv6 address without brackets; 4.10: three colons, invalid under RFC 5954's ABNF.
INVALID = {"ipv6-bad", "ipv6-bug-abnf-3-colons"}


def load(name: str) -> bytes:
    return (CORPUS / f"{name}.dat").read_bytes()


def test_corpus_present() -> None:
    assert len(NAMES) == 12


@pytest.mark.parametrize("name", NAMES)
def test_message(name: str) -> None:
    if name in INVALID:
        with pytest.raises(ParseError) as caught:
            parse(load(name))
        assert caught.value.status == 400
    else:
        message = parse(load(name))
        again = parse(message.to_bytes())
        assert str(again.uri) == str(message.uri) and again.body == message.body


def test_good_reference_and_ports() -> None:
    good = parse(load("ipv6-good"))
    assert (good.uri.host, good.uri.port, good.uri.hostport) == ("2001:db8::10", None, "[2001:db8::10]")
    assert good.top_via.host == "2001:db8::9:1" and good.contacts[0].uri.host == "2001:db8::1"
    ambiguous = parse(load("port-ambiguous")).uri
    assert (ambiguous.host, ambiguous.port) == ("2001:db8::10:5070", None)
    unambiguous = parse(load("port-unambiguous")).uri
    assert (unambiguous.host, unambiguous.port) == ("2001:db8::10", 5070)
    assert parse(load("ipv6-correct-abnf-2-colons")).uri.host == "2001:db8::192.0.2.1"


def test_received_with_and_without_brackets() -> None:
    for name in ("via-received-param-no-delim", "via-received-param-with-delim"):
        assert parse(load(name)).top_via.received == "2001:db8::9:255"


def test_several_addresses() -> None:
    vias = parse(load("mult-ip-in-header")).vias
    assert [(via.host, via.port) for via in vias] == [
        ("2001:db8::9:1", 6050), ("192.0.2.1", None), ("2001:db8::9:255", None)]
    mapped = parse(load("ipv4-mapped-ipv6"))
    assert mapped.top_via.sent_by == ("::ffff:192.0.2.10", 19823)
    assert mapped.contacts[0].uri.host == "::ffff:192.0.2.2"
    sdp = parse(load("ipv6-in-sdp"))
    assert b"IN IP6 2001:db8::20" in sdp.body


def test_ipv6_via_written_back_with_brackets() -> None:
    message = parse(load("ipv6-good"))
    message.top_via.params["received"] = "2001:db8::99"
    message.push_via(Via("UDP", "::1", 5060, {"branch": "z9hG4bKv6"}))
    out = message.to_bytes()
    assert b"Via: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKv6\r\n" in out
    assert b"Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;received=2001:db8::99\r\n" in out
    assert parse(out).vias[1].received == "2001:db8::99"
