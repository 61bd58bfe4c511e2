"""Message model: header access and edits, typed write-back, serialisation, responses."""

from __future__ import annotations

import pytest

from psp.errors import ParseError
from psp.headers import Via
from psp.message import REASONS, Request, Response, make_response
from psp.parser import parse

INVITE = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKfirst, SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKsecond\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.com>\r\n"
    b"f: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"X-Odd:   spaced , value  \r\n"
    b"Contact: <sip:alice@pc33.atlanta.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 5\r\n"
    b"\r\n"
    b"v=0\r\n"
)


@pytest.fixture
def invite() -> Request:
    message = parse(INVITE)
    assert isinstance(message, Request)
    return message


def test_untouched_message_is_byte_identical(invite: Request) -> None:
    assert invite.to_bytes() == INVITE


def test_header_lookup(invite: Request) -> None:
    assert invite.header("via") == "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds"
    assert len(invite.header_values("Via")) == 3
    assert invite.header("From") == invite.header("f") == "Alice <sip:alice@atlanta.com>;tag=1928301774"
    assert invite.header_values("x-odd") == ["spaced , value"]  # not a list header: one value
    assert invite.header("Subject") is None and invite.header_values("Subject") == []
    assert invite.has("CONTENT-LENGTH") and not invite.has("Expires")
    assert [name for name, _ in invite.items()][:2] == ["v", "Via"]


def test_typed_accessors(invite: Request) -> None:
    assert [via.branch for via in invite.vias] == ["z9hG4bK776asdhds", "z9hG4bKfirst", "z9hG4bKsecond"]
    assert invite.top_via is invite.vias[0]
    assert (invite.cseq.number, invite.cseq.method, invite.call_id) == (314159, "INVITE", "a84b4c76e66710@pc33.atlanta.com")
    assert (invite.from_.tag, invite.to.tag, invite.max_forwards) == ("1928301774", None, 70)
    assert [route.uri.host for route in invite.routes] == ["p1.example.com", "p2.example.com"]
    assert invite.record_routes == [] and invite.contacts[0].uri.user == "alice"
    assert invite.content_type.mime == "application/sdp" and invite.expires is None


def test_set_add_remove(invite: Request) -> None:
    invite.set_header("Max-Forwards", "69")
    invite.add_header("Record-Route", "<sip:rr1.example.com;lr>")
    invite.add_header("Record-Route", "<sip:rr0.example.com;lr>", first=True)
    invite.remove_header("X-Odd")
    invite.set_header("Subject", "hi")
    out = invite.to_bytes()
    assert b"\r\nMax-Forwards: 69\r\nRoute:" in out
    assert out.index(b"rr0.example.com") < out.index(b"rr1.example.com")
    assert b"X-Odd" not in out and out.endswith(b"Subject: hi\r\nl: 5\r\n\r\nv=0\r\n")
    again = parse(out)
    assert again.max_forwards == 69 and [rr.uri.host for rr in again.record_routes] == ["rr0.example.com", "rr1.example.com"]


def test_set_header_invalidates_typed_cache(invite: Request) -> None:
    assert invite.max_forwards == 70
    invite.set_header("Max-Forwards", "12")
    assert invite.max_forwards == 12
    invite.set_header("Route", "<sip:only.example.com;lr>")
    assert [route.uri.host for route in invite.routes] == ["only.example.com"]


def test_push_and_pop_via(invite: Request) -> None:
    invite.push_via(Via("UDP", "proxy.example.com", 5060, {"branch": "z9hG4bKproxy"}))
    assert invite.top_via.branch == "z9hG4bKproxy" and len(invite.vias) == 4
    out = invite.to_bytes()
    assert out.split(b"\r\n")[1] == b"Via: SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bKproxy"
    popped = invite.pop_via()
    assert popped.branch == "z9hG4bKproxy" and invite.to_bytes() == INVITE
    invite.pop_via()
    invite.pop_via()  # first value of a two-value line: the line is rewritten
    assert [via.branch for via in parse(invite.to_bytes()).vias] == ["z9hG4bKsecond"]
    invite.pop_via()
    with pytest.raises(ParseError):
        invite.pop_via()


def test_in_place_edits_are_written_back(invite: Request) -> None:
    invite.top_via.params["received"] = "192.0.2.9"
    invite.routes.pop(0)
    invite.to.params["tag"] = "xyz"
    out = invite.to_bytes()
    again = parse(out)
    assert again.top_via.received == "192.0.2.9"
    assert [route.uri.host for route in again.routes] == ["p2.example.com"]
    assert again.to.tag == "xyz"
    # an edited header goes out one value per line, the values nobody edited as written
    assert b"\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKfirst\r\nVia: SIP/2.0/TCP 10.0.0.2;" in out
    assert b"\r\nX-Odd:   spaced , value  \r\n" in out
    assert invite.header("To") == '"Bob" <sip:bob@biloxi.com>;tag=xyz'


def test_content_length_follows_body(invite: Request) -> None:
    invite.body = b"v=0\r\no=x\r\n"
    out = invite.to_bytes()
    assert b"\r\nl: 10\r\n\r\n" in out and parse(out).body == invite.body
    built = Request("OPTIONS", "sip:a@b", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")])
    assert built.to_bytes().endswith(b"Content-Length: 0\r\n\r\n")


def test_copy_is_independent(invite: Request) -> None:
    clone = invite.copy()
    clone.uri.params["x"] = "1"
    clone.push_via("SIP/2.0/UDP clone.example.com;branch=z9hG4bKc")
    clone.top_via.params["rport"] = None
    assert invite.to_bytes() == INVITE
    assert parse(clone.to_bytes()).uri.params == {"x": "1"}


def test_a_copy_takes_the_parsed_values_along_without_sharing_the_editable_ones(invite: Request) -> None:
    routes, vias, to = invite.routes, invite.vias, invite.to  # parsed before the copy
    clone = invite.copy()
    assert clone.cseq is invite.cseq and clone.call_id == invite.call_id  # never edited: shared
    assert clone.vias is not vias and clone.routes is not routes and clone.to is not to
    assert clone.to_bytes() == INVITE  # the copies still print as written
    clone.vias[1].params["received"] = "192.0.2.9"
    clone.routes[0].uri.params["x"] = "1"
    clone.routes.pop()
    clone.to.params["tag"] = "t2"
    assert invite.to_bytes() == INVITE and to.tag is None and len(routes) == 2
    again = parse(clone.to_bytes())
    assert again.vias[1].received == "192.0.2.9" and again.to.tag == "t2"
    assert [str(route) for route in again.routes] == ["<sip:p1.example.com;lr;x=1>"]


def test_make_response_copies_and_tags(invite: Request) -> None:
    response = make_response(invite, 486, to_tag="t1", headers=[("Retry-After", "30")])
    assert (response.status, response.reason) == (486, "Busy Here")
    out = response.to_bytes()
    assert out.startswith(b"SIP/2.0 486 Busy Here\r\nv: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n")
    again = parse(out)
    assert [via.branch for via in again.vias] == [via.branch for via in invite.vias]
    assert (again.to.tag, again.from_.tag, again.call_id, again.cseq) == ("t1", "1928301774", invite.call_id, invite.cseq)
    assert again.header("Retry-After") == "30" and again.body == b"" and not again.has("Route")
    trying = make_response(invite, 100)
    assert trying.to.tag is None and trying.reason == "Trying"
    random_tags = {make_response(invite, 200).to.tag for _ in range(3)}
    assert len(random_tags) == 3 and None not in random_tags


def test_make_response_keeps_existing_tag_and_received() -> None:
    request = parse(INVITE.replace(b"To: Bob <sip:bob@biloxi.com>", b"To: <sip:bob@biloxi.com>;tag=old"))
    request.top_via.params["received"] = "192.0.2.1"
    response = make_response(request, 200, "Fine", to_tag="new")
    assert response.to.tag == "old" and response.reason == "Fine"
    assert response.top_via.received == "192.0.2.1"


def test_a_100_copies_the_timestamp_and_other_responses_do_not() -> None:
    # RFC 3261 8.2.6.1: the Timestamp lets the client measure the round trip to us.
    request = parse(INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nTimestamp: 54.7 0.3\r\n"))
    trying = parse(make_response(request, 100).to_bytes())
    assert trying.header_values("Timestamp") == ["54.7 0.3"]
    assert [via.branch for via in trying.vias] == [via.branch for via in request.vias]
    for status in (180, 200, 486):
        assert not parse(make_response(request, status).to_bytes()).has("Timestamp")


def test_reasons_and_built_messages() -> None:
    assert REASONS[200] == "OK" and REASONS[482] == "Loop Detected" and REASONS[505] == "Version Not Supported"
    assert Response(299).reason == "OK" and Response(499).reason == "Request Failed"
    request = Request("REGISTER", "sip:registrar.example.com", [
        ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("From", "<sip:a@b>;tag=1"), ("To", "<sip:a@b>"),
        ("Call-ID", "c1"), ("CSeq", "1 REGISTER"), ("Contact", "*"), ("Expires", "0")])
    again = parse(request.to_bytes())
    assert again.contacts == "*" and again.expires == 0 and again.method == "REGISTER"


def test_update_top_via_rewrites_only_its_own_line() -> None:
    data = (b"BYE sip:b@h SIP/2.0\r\nv: SIP/2.0/UDP a.example;branch=z9hG4bK1;rport\r\n"
            b"Via: SIP/2.0/UDP b.example;branch=z9hG4bK2\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\n"
            b"Call-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    request = parse(data)
    request.update_top_via({"received": "192.0.2.1", "rport": "5062"})
    out = request.to_bytes()
    assert b"Via: SIP/2.0/UDP a.example;branch=z9hG4bK1;rport=5062;received=192.0.2.1\r\n" in out
    assert out.replace(b"Via: SIP/2.0/UDP a.example;branch=z9hG4bK1;rport=5062;received=192.0.2.1",
                       b"v: SIP/2.0/UDP a.example;branch=z9hG4bK1;rport") == data
    assert request.top_via.received == "192.0.2.1" and request.top_via.rport == 5062


def test_update_top_via_splits_a_shared_line() -> None:
    data = (b"BYE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/UDP b.example;branch=z9hG4bK2\r\n"
            b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    request = parse(data)
    request.update_top_via({"received": "192.0.2.1"})
    reparsed = parse(request.to_bytes())
    assert [str(via) for via in reparsed.vias] == [
        "SIP/2.0/UDP a.example;branch=z9hG4bK1;received=192.0.2.1", "SIP/2.0/UDP b.example;branch=z9hG4bK2"]
