"""Property tests: whatever the bytes, parse and the framer return or raise ParseError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psp.errors import ParseError
from psp.message import Request, Response
from psp.parser import KEEPALIVE, StreamFramer, error_response, parse
from tests.conftest import corpus

SAMPLES = [path.read_bytes() for name in ("rfc4475", "rfc5118") for path in sorted(corpus(name).glob("*.dat"))]
# Bytes that matter to the grammar, so that mutations hit interesting places.
SPECIAL = st.sampled_from([b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\",
                           b"@", b"[", b"]", b"%", b"%0", b"=", b"?", b"\x00", b"\xff", b"9" * 12, b"-1", b""])
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(data)))
        end = min(len(data), start + draw(st.integers(0, 8)))
        data[start:end] = draw(SPECIAL | st.binary(max_size=4))
    return bytes(data)


def check_parse(data: bytes) -> None:
    try:
        message = parse(data)
    except ParseError as error:
        assert 400 <= error.status <= 599
        answer = error_response(data, error)
        assert answer is None or answer.status == error.status
        return
    assert isinstance(message, (Request, Response))
    again = parse(message.to_bytes())  # what we would forward must itself be valid
    assert type(again) is type(message) and again.body == message.body


@FUZZ
@given(mutated())
def test_mutated_corpus_messages(data: bytes) -> None:
    check_parse(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check_parse(data)


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=3), st.lists(st.integers(1, 200), min_size=1, max_size=20))
def test_framer_on_mutated_streams(messages: list[bytes], cuts: list[int]) -> None:
    stream, framer, position = b"\r\n\r\n".join(messages), StreamFramer(max_size=4000), 0
    try:
        for cut in cuts + [len(stream)]:
            for item in framer.feed(stream[position:position + cut]):
                assert item is KEEPALIVE or isinstance(item, bytes)
            position += cut
    except ParseError as error:
        assert error.status == 400
