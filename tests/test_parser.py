"""Datagram parsing rules (RFC 3261 7, 8.1.1, 18.3, 20) and stateless error answers."""

from __future__ import annotations

import pytest

from psp.errors import ParseError
from psp.message import Request, Response
from psp.parser import error_response, parse

HEADERS = [
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc",
    "From: <sip:alice@example.com>;tag=1",
    "To: <sip:bob@example.com>",
    "Call-ID: c1@192.0.2.1",
    "CSeq: 7 OPTIONS",
    "Max-Forwards: 70",
]


def request(*, start: str = "OPTIONS sip:bob@example.com SIP/2.0", headers: list[str] | None = None,
            body: bytes = b"", length: int | None = 0) -> bytes:
    lines = [start, *(HEADERS if headers is None else headers)]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def replaced(name: str, line: str | None) -> list[str]:
    """HEADERS with the line of ``name`` replaced (or dropped when line is None)."""
    out = [header for header in HEADERS if not header.startswith(name + ":")]
    return out if line is None else out + [line]


def status_of(data: bytes) -> int:
    with pytest.raises(ParseError) as caught:
        parse(data)
    return caught.value.status


def test_minimal_request() -> None:
    message = parse(request())
    assert isinstance(message, Request)
    assert (message.method, str(message.uri), message.version) == ("OPTIONS", "sip:bob@example.com", "SIP/2.0")


def test_leading_crlf_case_and_compact_names() -> None:
    data = b"\r\n\r\n" + request(headers=[
        "v: SIP/2.0/UDP h;branch=z9hG4bK1", "f: <sip:a@b>;tag=1", "T: <sip:c@d>", "I: x@y",
        "cSeQ: 1 OPTIONS", "max-FORWARDS: 3"])
    message = parse(data)
    assert (message.call_id, message.max_forwards, message.to.uri.user) == ("x@y", 3, "c")


def test_folding_and_lws() -> None:
    data = request(headers=["Via: SIP/2.0/UDP h\r\n\t;branch=z9hG4bK1", "From:\r\n <sip:a@b>\r\n ;tag=1",
                            "To  :   <sip:c@d>   ", "Call-ID: x@y", "CSeq: 1\r\n  OPTIONS", "Subject: a\r\n  b"])
    message = parse(data)
    assert (message.top_via.branch, message.from_.tag, message.cseq.method) == ("z9hG4bK1", "1", "OPTIONS")
    assert message.header("subject") == "a b"
    assert message.to_bytes() == data  # folded lines go out as received


def test_body_framing_on_datagrams() -> None:
    assert parse(request(body=b"hello", length=5)).body == b"hello"
    assert parse(request(body=b"hello and noise", length=5)).body == b"hello"  # RFC 3261 18.3
    assert parse(request(body=b"the rest", length=None)).body == b"the rest"
    assert status_of(request(body=b"hi", length=3)) == 400
    assert status_of(request(body=b"", length=-1)) == 400
    assert status_of(request(body=b"", length=2**32)) == 400
    assert status_of(request(headers=HEADERS + ["l: 0"], length=0)) == 400  # two Content-Lengths


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_mandatory_headers(name: str) -> None:
    assert status_of(request(headers=replaced(name, None))) == 400


@pytest.mark.parametrize("line", ["From: <sip:x@y>;tag=2", "To: <sip:x@y>", "Call-ID: other",
                                  "CSeq: 8 OPTIONS", "Max-Forwards: 10"])
def test_single_valued_headers_may_not_repeat(line: str) -> None:
    assert status_of(request(headers=HEADERS + [line])) == 400


def test_cseq_method_must_match() -> None:
    assert status_of(request(headers=replaced("CSeq", "CSeq: 7 INVITE"))) == 400
    assert status_of(request(start="FOO sip:bob@example.com SIP/2.0", headers=replaced("CSeq", "CSeq: 7 INVITE"))) == 501
    assert parse(request(start="FOO sip:b@e.com SIP/2.0", headers=replaced("CSeq", "CSeq: 7 FOO"))).method == "FOO"


def test_ranges() -> None:
    assert parse(request(headers=replaced("CSeq", f"CSeq: {2**31 - 1} OPTIONS"))).cseq.number == 2**31 - 1
    assert status_of(request(headers=replaced("CSeq", f"CSeq: {2**31} OPTIONS"))) == 400
    assert parse(request(headers=replaced("Max-Forwards", "Max-Forwards: 255"))).max_forwards == 255
    assert status_of(request(headers=replaced("Max-Forwards", "Max-Forwards: 256"))) == 400
    assert status_of(request(headers=replaced("Max-Forwards", "Max-Forwards: seventy"))) == 400


@pytest.mark.parametrize("start, status", [
    ("OPTIONS sip:bob@example.com SIP/2.1", 505), ("OPTIONS sip:bob@example.com SIP/3.0", 505),
    ("OPTIONS sip:bob@example.com HTTP/1.1", 400), ("OPTIONS sip:bob@example.com", 400),
    ("OPTIONS <sip:bob@example.com> SIP/2.0", 400), ("OPTI ONS sip:bob@example.com SIP/2.0", 400),
    ("OPTIONS sip:bob@example.com?Route=x SIP/2.0", 400), ("OPT\x01 sip:b@e.com SIP/2.0", 400),
])
def test_bad_request_lines(start: str, status: int) -> None:
    assert status_of(request(start=start)) == status


def test_version_is_case_insensitive() -> None:
    assert parse(request(start="OPTIONS sip:bob@example.com sip/2.0")).to_bytes().startswith(
        b"OPTIONS sip:bob@example.com SIP/2.0\r\n")


@pytest.mark.parametrize("code, ok", [("100", True), ("699", True), ("099", False), ("700", False),
                                      ("1000", False), ("20", False), ("abc", False)])
def test_status_codes(code: str, ok: bool) -> None:
    data = request(start=f"SIP/2.0 {code} Whatever")
    if ok:
        response = parse(data)
        assert isinstance(response, Response) and response.status == int(code)
    else:
        assert status_of(data) == 400


def test_response_needs_the_same_headers() -> None:
    assert parse(request(start="SIP/2.0 200 OK")).reason == "OK"
    assert status_of(request(start="SIP/2.0 200 OK", headers=replaced("Via", None))) == 400


@pytest.mark.parametrize("data", [
    b"", b"\r\n\r\n", b"OPTIONS sip:a@b SIP/2.0\r\n", b"OPTIONS sip:a@b SIP/2.0\nVia: x\n\n",
    request().replace(b"Call-ID: c1", b"Call-ID: c\n1"), request().replace(b"Call-ID: c1", b"Call-ID: c\r1"),
    request().replace(b"Call-ID:", b"Call ID:"), request().replace(b"Call-ID:", b"Call-ID"),
    request().replace(b"Call-ID: c1@192.0.2.1", b"Call-ID: c1 c2"), request().replace(b"Call-ID: c1@192.0.2.1", b"Call-ID:"),
    request().replace(b"\r\nVia", b"\r\n Via"),
    request().replace(b"OPTIONS sip", b"OPTIONS \xff\xfe:sip"),
])
def test_malformed_bytes(data: bytes) -> None:
    assert status_of(data) == 400


def test_unknown_headers_kept_in_order_as_written() -> None:
    data = request(headers=["X-B: 2", *HEADERS, "x-a:1", "X-B: 3, 4"])
    message = parse(data)
    assert message.header_values("x-b") == ["2", "3, 4"]
    assert [name for name, _ in message.items()][-3:] == ["x-a", "X-B", "Content-Length"]
    assert message.to_bytes() == data


def test_register_contacts_checked_eagerly() -> None:
    register = request(start="REGISTER sip:example.com SIP/2.0",
                       headers=replaced("CSeq", "CSeq: 1 REGISTER") + ["Contact: sip:a@b?x=y"])
    assert status_of(register) == 400


def test_error_response() -> None:
    bad = request(headers=replaced("Max-Forwards", "Max-Forwards: 999"))
    with pytest.raises(ParseError) as caught:
        parse(bad)
    answer = error_response(bad, caught.value)
    assert answer is not None and answer.status == 400 and answer.reason == "Bad Request"
    assert answer.top_via.branch == "z9hG4bKabc" and answer.call_id == "c1@192.0.2.1"
    assert answer.to.tag and error_response(bad, caught.value).to.tag == answer.to.tag
    assert parse(answer.to_bytes()).cseq.number == 7
    custom = ParseError("x", status=420, reason="Bad Extension", headers=[("Unsupported", "foo")])
    assert error_response(bad, custom).header("Unsupported") == "foo"


def test_error_response_routes_by_a_malformed_via_and_copies_every_via() -> None:
    bad = request(headers=["Via: SIP/2.0/UDP 192.0.2.9:5070;;branch=z9hG4bKa;rport",
                           "Via: SIP/2.0/TCP second.example.com;branch=z9hG4bKb", *HEADERS[1:]])
    with pytest.raises(ParseError) as caught:
        parse(bad)
    answer = error_response(bad, caught.value)
    assert answer.top_via.sent_by == ("192.0.2.9", 5070) and answer.top_via.branch == "z9hG4bKa"
    wire = answer.to_bytes()
    assert b"Via: SIP/2.0/UDP 192.0.2.9:5070;;branch=z9hG4bKa;rport\r\nVia: SIP/2.0/TCP second" in wire
    no_sent_by = request(headers=["Via: garbage", *HEADERS[1:]])
    assert error_response(no_sent_by, ParseError("x")) is None


def test_no_error_response_for_ack_or_responses() -> None:
    ack = request(start="ACK sip:bob@example.com SIP/2.5", headers=replaced("CSeq", "CSeq: 7 ACK"))
    assert error_response(ack, ParseError("x", status=505)) is None
    assert error_response(request(start="SIP/2.0 999 No"), ParseError("x")) is None
    assert error_response(b"\x00garbage", ParseError("x")) is None
