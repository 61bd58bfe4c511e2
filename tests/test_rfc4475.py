"""Every RFC 4475 torture message, judged against the corpus's EXPECT.tsv."""

from __future__ import annotations

import csv

import pytest

from psp.errors import ParseError
from psp.message import Request, Response
from psp.parser import error_response, parse
from psp.uri import URI, AbsoluteURI
from tests.conftest import corpus

CORPUS = corpus("rfc4475")
ROWS = {row["name"]: row for row in csv.DictReader((CORPUS / "EXPECT.tsv").read_text().splitlines(),
                                                   delimiter="\t")}

# Rows whose action names an exact status the parser itself must produce.
EXACT_STATUS = {"reject 400": 400, "reject 505": 505, "reject 501 (400 ok)": 501}
# Rows that allow either answer; accepted ones are checked for normalisation below.
EITHER = {"reject 400 or accept+normalize", "reject 400 or strip", "accept or reject",
          "reject 400 (stateless) or fall back"}


def load(name: str) -> bytes:
    return (CORPUS / f"{name}.dat").read_bytes()


def assert_same_meaning(first: Request | Response, second: Request | Response) -> None:
    assert type(first) is type(second)
    if isinstance(first, Request):
        assert (first.method, str(first.uri)) == (second.method, str(second.uri))
    else:
        assert (first.status, first.reason) == (second.status, second.reason)
    def headers(message: Request | Response) -> list[tuple[str, str]]:
        # to_bytes() always states the Content-Length (RFC 3261 20.14 SHOULD on datagrams)
        return [(name, value) for name, value in message.items() if name.lower() not in ("l", "content-length")]

    assert headers(first) == headers(second)
    assert first.body == second.body


def test_the_corpus_is_complete() -> None:
    assert len(ROWS) == 50
    assert all((CORPUS / f"{name}.dat").exists() for name in ROWS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_message(name: str) -> None:
    row, data = ROWS[name], load(name)
    action = row["proxy_action"]
    if row["valid"] in ("valid", "valid-syntax"):
        message = parse(data)
        assert_same_meaning(message, parse(message.to_bytes()))
    elif action in EXACT_STATUS:
        with pytest.raises(ParseError) as caught:
            parse(data)
        assert caught.value.status == EXACT_STATUS[action]
    elif action in ("reject (error)", "discard", "drop"):
        with pytest.raises(ParseError):
            parse(data)
    elif action in EITHER:
        try:
            message = parse(data)
        except ParseError as error:
            assert error.status == 400
        else:
            assert_same_meaning(message, parse(message.to_bytes()))
    else:
        assert row["valid"] == "extra", f"no rule for {action!r}"
        with pytest.raises(ParseError):
            parse(data)  # 'test': no SIP version on the request line


def test_wsinv_folding_whitespace_and_unknown_header_kept() -> None:
    message = parse(load("wsinv"))
    assert [via.branch for via in message.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert [via.transport for via in message.vias] == ["UDP", "TCP", "UDP"]
    assert message.to.tag == "1918181833n" and message.from_.tag == "98asjd8"
    assert message.from_.display == 'J Rosenberg \\"'
    assert (message.max_forwards, message.cseq.number, message.cseq.method) == (68, 9, "INVITE")
    contact = message.contacts[0]
    assert contact.q == 0.33 and contact.params["newparam"] == "newvalue"
    assert message.routes[0].uri.lr
    assert message.header("NewFangledHeader") == "newfangled value continued newfangled value"
    out = message.to_bytes()
    assert b"\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n" in out
    assert out == load("wsinv")  # nothing touched: byte for byte


def test_wsinv_forwarded_after_touching_keeps_unknown_headers() -> None:
    message = parse(load("wsinv"))
    message.set_header("Max-Forwards", str(message.max_forwards - 1))
    message.push_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKproxy1")
    again = parse(message.to_bytes())
    assert again.max_forwards == 67 and len(again.vias) == 4
    assert again.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert again.body == message.body


def test_intmeth_unusual_tokens() -> None:
    message = parse(load("intmeth"))
    assert message.method == message.cseq.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert message.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert message.header("extensionheader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_escapes_kept_as_written_and_compared_unescaped() -> None:
    message = parse(load("esc01"))
    assert message.uri.user == "sips%3Auser%40example.com"
    assert message.to.uri.equivalent(URI("example.com", user="user"))
    assert message.contacts[0].uri.params["n%61me"] == "v%61lue%25%34%31"
    nulls = parse(load("escnull")).contacts
    assert [contact.uri.user for contact in nulls] == ["%00", "%00%00"]
    assert not nulls[0].uri.equivalent(nulls[1].uri)


def test_esc02_method_and_header_names_are_not_unescaped() -> None:
    message = parse(load("esc02"))
    assert message.method == "RE%47IST%45R"
    assert len(message.contacts) == 2
    assert message.header("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_dblreq_trailing_octets_ignored() -> None:
    message = parse(load("dblreq"))
    assert message.method == "REGISTER" and message.body == b""
    assert b"INVITE" not in message.to_bytes()


def test_semiuri_user_with_semicolon() -> None:
    uri = parse(load("semiuri")).uri
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", {})


def test_transports_and_multipart_body() -> None:
    vias = parse(load("transports")).vias
    assert [via.transport for via in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    message = parse(load("mpart01"))
    assert len(message.body) == int(message.header("Content-Length")) and b"\x00" in message.body
    assert message.content_type.mime == "multipart/mixed"


def test_reason_phrases() -> None:
    unreason = parse(load("unreason"))
    assert unreason.reason.startswith("= 2**3 * 5**2 \u043d\u043e")
    assert unreason.to_bytes().split(b"\r\n")[0] == load("unreason").split(b"\r\n")[0]
    assert parse(load("noreason")).reason == ""


def test_contact_params_versus_uri_params() -> None:
    bare = parse(load("cparam01")).contacts[0]
    assert "unknownparam" in bare.params and "unknownparam" not in bare.uri.params
    bracketed = parse(load("cparam02")).contacts[0]
    assert "unknownparam" in bracketed.uri.params and "unknownparam" not in bracketed.params
    assert parse(load("regescrt")).contacts[0].uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_other_schemes_are_opaque() -> None:
    message = parse(load("unksm2"))
    assert isinstance(message.to.uri, AbsoluteURI) and message.to.uri.scheme == "isbn"
    assert message.from_.uri.scheme == "http" and message.contacts[0].uri.scheme == "name"
    assert isinstance(parse(load("unkscm")).uri, AbsoluteURI)
    assert str(parse(load("novelsc")).uri) == "soap.beep://192.0.2.103:3002"


def test_later_layers_get_what_they_need() -> None:
    assert parse(load("zeromf")).max_forwards == 0
    bext = parse(load("bext01"))
    assert bext.header_values("Proxy-Require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    assert parse(load("regaut01")).header("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert parse(load("badbranch")).top_via.branch == "z9hG4bK"
    assert parse(load("bcast")).vias[1].host == "255.255.255.255"
    assert parse(load("lwsdisp")).from_.display == "caller"


def test_rfc2543_request_without_content_length() -> None:
    message = parse(load("inv2543"))
    assert message.top_via.branch is None and message.max_forwards is None
    assert message.body == load("inv2543").split(b"\r\n\r\n", 1)[1]


def test_start_line_normalised_when_accepted() -> None:
    assert parse(load("lwsstart")).to_bytes().startswith(b"INVITE sip:user@example.com SIP/2.0\r\n")
    assert parse(load("trws")).to_bytes().startswith(b"OPTIONS sip:remote-target@example.com SIP/2.0\r\n")


@pytest.mark.parametrize("name", ["badaspec", "baddn", "clerr", "mcl01", "mismatch01", "mismatch02",
                                  "multi01", "ncl", "quotbal", "regbadct", "badinv01", "badvers",
                                  "ltgtruri", "lwsruri", "escruri"])
def test_stateless_error_answer(name: str) -> None:
    data = load(name)
    with pytest.raises(ParseError) as caught:
        parse(data)
    answer = error_response(data, caught.value)
    assert answer is not None and answer.status == caught.value.status
    request_lines = {line.split(b":")[0].lower() for line in data.split(b"\r\n")}
    wire = answer.to_bytes()
    assert wire.startswith(b"SIP/2.0 %d " % caught.value.status)
    assert b"Call-ID:" in wire or b"i:" in wire or b"call-id" not in request_lines
    assert b";tag=" in wire.split(b"\r\n\r\n")[0]
    request_vias = [line for line in data.split(b"\r\n") if line.lower().startswith((b"via", b"v:"))]
    assert [line for line in wire.split(b"\r\n") if line.lower().startswith((b"via", b"v:"))] == request_vias
    assert answer.top_via.host  # where to send it, even from a malformed Via (badinv01, badvers)


@pytest.mark.parametrize("name", ["insuf", "scalarlg", "bigcode"])
def test_no_stateless_answer_possible(name: str) -> None:
    data = load(name)
    with pytest.raises(ParseError) as caught:
        parse(data)
    assert error_response(data, caught.value) is None
