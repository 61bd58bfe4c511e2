"""TCP stream framing (RFC 3261 18.3) and CRLF keep-alives (RFC 5626 3.5.1)."""

from __future__ import annotations

import pytest

from psp.errors import ParseError
from psp.parser import KEEPALIVE, StreamFramer, parse
from tests.conftest import corpus

CORPUS = corpus("rfc4475")


def message(body: bytes = b"", length_line: str | None = None, call_id: str = "c1") -> bytes:
    length = f"Content-Length: {len(body)}" if length_line is None else length_line
    return (f"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
            f"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            f"{length}\r\n\r\n").encode() + body


STREAM_ITEMS = [message(b"first body", call_id="one"), KEEPALIVE,
                message(call_id="two"), message(b"x" * 300, "l:\r\n 300", "three"), KEEPALIVE]
STREAM = b"".join(b"\r\n\r\n" if item is KEEPALIVE else item for item in STREAM_ITEMS)


def test_whole_stream_in_one_chunk() -> None:
    assert StreamFramer().feed(STREAM) == STREAM_ITEMS


def test_byte_by_byte_gives_the_same_items() -> None:
    framer = StreamFramer()
    items = [item for byte in range(len(STREAM)) for item in framer.feed(STREAM[byte:byte + 1])]
    assert items == STREAM_ITEMS
    assert [parse(item).call_id for item in items if item is not KEEPALIVE] == ["one", "two", "three"]


@pytest.mark.parametrize("size", [2, 3, 7, 64, 333])
def test_any_chunking_gives_the_same_items(size: int) -> None:
    framer = StreamFramer()
    items = [item for start in range(0, len(STREAM), size) for item in framer.feed(STREAM[start:start + size])]
    assert items == STREAM_ITEMS


def test_lone_crlf_between_messages_is_skipped() -> None:
    framer = StreamFramer()
    assert framer.feed(message(call_id="a") + b"\r\n") == [message(call_id="a")]
    assert framer.feed(b"OPT") == []
    assert framer.feed(message(call_id="b")[3:]) == [message(call_id="b")]


def test_waits_for_the_whole_body() -> None:
    framer = StreamFramer()
    data = message(b"0123456789")
    assert framer.feed(data[:-4]) == []
    assert framer.feed(data[-4:]) == [data]


def test_corpus_message_with_binary_body() -> None:
    data = (CORPUS / "mpart01.dat").read_bytes()
    assert StreamFramer().feed(data + data) == [data, data]


@pytest.mark.parametrize("length_line", [None, "Content-Length: -5", "Content-Length: ten",
                                         "Content-Length: 5\r\nl: 6", "Content-Length: 70000"])
def test_unframeable(length_line: str | None) -> None:
    data = message().replace(b"Content-Length: 0\r\n", b"" if length_line is None else (length_line + "\r\n").encode())
    with pytest.raises(ParseError) as caught:
        StreamFramer().feed(data)
    assert caught.value.status == 400


def test_header_block_too_large() -> None:
    framer = StreamFramer(max_size=1000)
    assert framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 100) == []
    with pytest.raises(ParseError):
        framer.feed(b"X: y\r\n" * 100)


def test_body_larger_than_max_size() -> None:
    with pytest.raises(ParseError):
        StreamFramer(max_size=500).feed(message(b"z" * 600)[:200])
