"""Bytes to messages: datagram parsing, stateless error answers, TCP stream framing.

Implements RFC 3261 7 (message syntax: 7.1/7.2 start lines, 7.3 header fields and
folding, 7.4 bodies, 7.5 framing and leading CRLFs), 8.1.1 / 8.2.2 checks a proxy relies
on (mandatory headers, CSeq method and range 8.1.1.5, Max-Forwards range 20.22), 18.3
(datagram and stream framing with Content-Length), the 505 / 501 answers of 21.5.6 and
21.5.2, the parser expectations of RFC 4475 and RFC 5118, and the CRLF keep-alive of
RFC 5626 3.5.1.

Everything this module raises is a ParseError whose ``status`` is the answer a server
should give: 400 by default, 505 for another SIP version, 501 when an unknown method
comes with a mismatched CSeq (RFC 4475 3.1.2.18).  ``error_response`` turns that into
the stateless answer when the request's own headers make one possible.
"""

from __future__ import annotations

import enum
import re

from psp.errors import ParseError
from psp.headers import (
    CANONICAL_NAMES, COMPACT_FORMS, METHODS, TOKEN_RE, check_name_addr, header_key, parse_cseq,
    Via, parse_int, parse_name_addr, parse_via,
)
from psp.message import Request, Response, header_value, parsed_message, reason_for, unfold
from psp.uri import AbsoluteURI, URI, parse_uri

_SINGLE, _VIA = "single", "via"
# What the parser looks at while reading lines: single-valued headers, and Via.
_KIND = {**dict.fromkeys(("call-id", "from", "to", "cseq", "max-forwards", "content-length"), _SINGLE),
         "via": _VIA}
_MANDATORY = ("from", "to", "call-id", "cseq", "via")
_PING = b"\r\n\r\n"  # the end of a header block; alone between messages: a keep-alive
_KEYS = {**{key: key for key in CANONICAL_NAMES}, **COMPACT_FORMS}  # lowercase name -> key
# Names as usually written -> (key, kind): most lines are looked up without lowercasing.
_EXACT = {name: (key, _KIND.get(key)) for name, key in {
    **_KEYS, **{CANONICAL_NAMES[key]: key for key in CANONICAL_NAMES},
    **{name.upper(): key for name, key in COMPACT_FORMS.items()}}.items()}
_UNKNOWN = (None, None)
_WSP = (" ", "\t")
# sent-by of a Via whatever its version or parameters, for answering a malformed request.
_SENT_BY_RE = re.compile(
    r"\s*[A-Za-z0-9\-.!%*_+`'~]+\s*/\s*[0-9.]+\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-_.]*)(?:\s*:\s*([0-9]{1,5})\b)?")
_LOOSE_PARAM_RE = re.compile(r";\s*([A-Za-z0-9\-.!%*_+`'~]+)(?:\s*=\s*([A-Za-z0-9\-.!%*_+`'~:\[\]]+))?")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.I)
_MAX_LENGTH = 2**32 - 1


def _check_version(version: str) -> None:
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if _VERSION_RE.match(version):
            raise ParseError(f"unsupported version {version}", status=505)
        raise ParseError(f"bad SIP version {version!r}")


def _split_head(data: bytes) -> tuple[list[str], int]:
    """The header block as lines (start line first) and the offset of the body."""
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 3261 7.5: ignore CRLFs before the start line
        start += 2
    end = data.find(_PING, start)
    if end < 0:
        raise ParseError("no empty line after the headers")
    head = data[start:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    breaks = len(lines) - 1
    if head.count("\n") != breaks or head.count("\r") != breaks:
        raise ParseError("bare CR or LF in the header block")
    return lines, end + 4


def _read_headers(lines: list[str]) -> tuple[list[str], list[str], dict[str, str], list[str]]:
    """Start line + header lines -> header lines (folded ones joined), their keys,
    single-valued header values by key, Via values."""
    headers = lines[1:]
    keys: list[str] = []
    single: dict[str, str] = {}
    vias: list[str] = []
    for line in headers:
        name, colon, value = line.partition(":")
        key, kind = _EXACT.get(name, _UNKNOWN) if colon else _UNKNOWN
        if key is None:
            if line[:1] in _WSP:
                return _read_folded(lines)
            key = _other_key(name, colon, line)
            kind = _KIND.get(key)
        keys.append(key)
        if kind is _SINGLE:
            if key in single:
                raise ParseError(f"repeated {CANONICAL_NAMES[key]} header")
            single[key] = value.strip()
        elif kind is _VIA:
            vias.append(value.strip())
    return headers, keys, single, vias


def _read_folded(lines: list[str]) -> tuple[list[str], list[str], dict[str, str], list[str]]:
    """_read_headers for a block with continuation lines (RFC 3261 7.3.1), kept as received."""
    joined = lines[:1]
    for line in lines[1:]:
        if line[:1] not in _WSP:
            joined.append(line)
        elif len(joined) > 1:
            joined[-1] = f"{joined[-1]}\r\n{line}"
        else:
            raise ParseError("continuation line before any header")
    headers, keys, single, vias = _read_headers(joined)
    single = {key: unfold(value) for key, value in single.items()}
    return headers, keys, single, [unfold(via) for via in vias]


def _other_key(name: str, colon: str, line: str) -> str:
    """Key of a line whose name is not written the usual way ('TO :', 'X-Foo')."""
    if not colon:
        raise ParseError(f"header line without a colon {line[:40]!r}")
    name = name.rstrip()
    lower = name.lower()
    key = _KEYS.get(lower)
    if key is None:
        if not TOKEN_RE.match(name):
            raise ParseError(f"bad header name {name[:40]!r}")
        key = lower
    return key


def _start(line: str) -> tuple[str, URI | AbsoluteURI] | tuple[int, str]:
    """Start line -> (method, Request-URI) or (status, reason)."""
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        _check_version(version)
        code, _, reason = rest.lstrip(" ").partition(" ")
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or not 100 <= int(code) <= 699:
            raise ParseError(f"bad status code {code[:12]!r}")
        return int(code), reason
    parts = line.split()  # several SP between elements are accepted, and not sent on
    if len(parts) != 3:
        raise ParseError(f"malformed request line {line[:60]!r}")
    method, uri, version = parts
    if method not in METHODS and not TOKEN_RE.match(method):
        raise ParseError(f"bad method {method[:20]!r}")
    _check_version(version)
    request_uri = parse_uri(uri)
    if isinstance(request_uri, URI) and request_uri.headers is not None:
        # RFC 3261 19.1.1 table 1: headers are not allowed in a Request-URI (RFC 4475 3.1.2.11)
        raise ParseError("escaped headers in the Request-URI")
    return method, request_uri


def parse(data: bytes) -> Request | Response:
    """Parse one datagram (RFC 3261 18.3: octets after Content-Length are ignored)."""
    lines, body_at = _split_head(data)
    start = _start(lines[0])
    headers, keys, single, via_values = _read_headers(lines)
    method = start[0] if isinstance(start[0], str) else None
    if "from" not in single or "to" not in single or "call-id" not in single \
            or "cseq" not in single or not via_values:
        missing = [key for key in _MANDATORY if key not in single] or ["via"]
        raise ParseError(f"missing {CANONICAL_NAMES[missing[0]]} header")
    cseq = parse_cseq(single["cseq"])
    if method is not None and cseq.method != method:
        status = 400 if method in METHODS else 501
        raise ParseError(f"CSeq method {cseq.method} differs from {method}", status=status)
    check_name_addr(single["from"])  # a proxy rarely reads From: checked now, built when asked
    mf = single.get("max-forwards")
    cache = {
        "via": [via for value in via_values for via in parse_via(value)],
        "to": parse_name_addr(single["to"]),
        "call-id": _call_id(single["call-id"]), "cseq": cseq,
        "max-forwards": None if mf is None else parse_int(mf, 255),
    }
    body = _body(data, body_at, single.get("content-length"))
    message = parsed_message(start, headers, keys, cache, body)
    if method == "REGISTER":
        message.contacts  # a registrar reads them all: malformed ones are a 400 now (RFC 4475 3.1.2.13)
    return message


def _call_id(value: str) -> str:
    if not value or " " in value or "\t" in value:
        raise ParseError(f"malformed Call-ID {value!r}")
    return value


def _body(data: bytes, start: int, length: str | None) -> bytes:
    if length is None:  # RFC 3261 18.3: on a datagram the body is the rest of it
        return data[start:]
    size = parse_int(length, _MAX_LENGTH)
    if start + size > len(data):
        raise ParseError(f"Content-Length {size} is larger than the body")
    return data[start:start + size]


def error_response(data: bytes, error: ParseError) -> Response | None:
    """The stateless answer to a request that failed to parse (RFC 3261 8.2 / 16.3).

    None when no answer can be sent: a response, an ACK, or no usable Via, From, To,
    Call-ID and CSeq to copy.
    """
    try:
        lines, _ = _split_head(data if _PING in data else data + _PING)
        found = _first_lines(lines)
    except ParseError:
        return None
    method = lines[0].split(" ", 1)[0]
    if method[:4].upper() == "SIP/" or len(found) < len(_ANSWER_KEYS):
        return None
    # Copied as received even when malformed (a CSeq out of range, a bad Via parameter):
    # the client matches the answer by them.
    cseq = header_value(found["cseq"][0])
    cseq_method = cseq.rsplit(None, 1)[-1] if cseq else ""
    if "ACK" in (method, cseq_method):  # RFC 3261 17.2.1 / 16.3: never answer an ACK
        return None
    cache = _routing_vias(header_value(found["via"][0]))
    if cache is None:
        return None
    to = found["to"][0]
    if ";tag=" not in header_value(to).replace(" ", "").lower():
        found["to"] = [f"{to};tag={_error_tag(data)}"]
    extra = [(header_key(name), f"{name}: {value}") for name, value in error.headers]
    lines = [line for key in _ANSWER_KEYS for line in found[key]]
    keys = [key for key in _ANSWER_KEYS for _ in found[key]]
    lines += [line for _, line in extra] + ["Content-Length: 0"]
    keys += [key for key, _ in extra] + ["content-length"]
    status_line = (error.status, error.reason or reason_for(error.status))
    return parsed_message(status_line, lines, keys, cache, b"")  # type: ignore[return-value]


def _routing_vias(value: str) -> dict[str, object] | None:
    """Typed-value cache for an answer whose top Via is ``value``: empty when the Via parses
    (read lazily as usual); else a Via with its sent-by and its well-formed parameters, for
    routing the answer (RFC 3261 18.2.2); None when not even a sent-by can be found."""
    try:
        parse_via(value)
        return {}
    except ParseError:
        pass
    match = _SENT_BY_RE.match(value)
    if match is None:
        return None
    transport, host, port = match.groups()
    first = value[match.end():].split(",")[0]
    params = {name.lower(): param or None for name, param in _LOOSE_PARAM_RE.findall(first)}
    via = Via(transport.upper(), host.strip("[]"), None if port is None else int(port), params)
    via.settle()
    via._raw = value  # printed as received: the answer carries the request's Via
    return {"via": [via]}


_ANSWER_KEYS = ("via", "from", "to", "call-id", "cseq")


def _first_lines(lines: list[str]) -> dict[str, list[str]]:
    """The lines a stateless answer copies, by key: every Via, the first of the others."""
    logical: list[str] = []
    for line in lines[1:]:
        if line[:1] in _WSP and logical:
            logical[-1] += "\r\n" + line
        else:
            logical.append(line)
    found: dict[str, list[str]] = {}
    for line in logical:
        name, colon, _ = line.partition(":")
        key = _KEYS.get(name.strip().lower())
        if colon and key in _ANSWER_KEYS and (key == "via" or key not in found):
            found.setdefault(key, []).append(line)
    return found


def _error_tag(data: bytes) -> str:
    """A To-tag that is the same for retransmissions of the same bad request."""
    return format(hash(data) & 0xFFFFFFFF, "08x")


class _Keepalive(enum.Enum):
    KEEPALIVE = "keepalive"


KEEPALIVE = _Keepalive.KEEPALIVE
_CONTENT_LENGTH_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:((?:[^\r\n]|\r\n[ \t])*)", re.I)


class StreamFramer:
    """Cuts a TCP byte stream into messages (RFC 3261 18.3) and keep-alives (RFC 5626 3.5.1).

    ``feed`` returns whole messages (bytes, to give to ``parse``) and KEEPALIVE for each
    CRLFCRLF ping between messages (answer it with one CRLF).  A lone CRLF between
    messages is skipped.  ParseError means framing is lost: close the connection.
    """

    def __init__(self, max_size: int = 65535) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._scanned = 0  # where to resume looking for the end of the headers

    def feed(self, chunk: bytes) -> list[bytes | _Keepalive]:
        self._buffer += chunk
        out: list[bytes | _Keepalive] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> bytes | _Keepalive | None:
        buffer = self._buffer
        while buffer[:2] == b"\r\n":
            if buffer[:4] == _PING:
                del buffer[:4]
                return KEEPALIVE
            if _PING.startswith(buffer[:4]):
                return None  # could still become a ping
            del buffer[:2]
        end = buffer.find(_PING, self._scanned)
        if end < 0:
            if len(buffer) > self._max_size:
                raise ParseError("header block too large")
            self._scanned = max(0, len(buffer) - 3)
            return None
        total = end + 4 + self._content_length(bytes(buffer[:end + 2]))
        if total > self._max_size:
            raise ParseError(f"message of {total} bytes is too large")
        if len(buffer) < total:
            self._scanned = end
            return None
        message = bytes(buffer[:total])
        del buffer[:total]
        self._scanned = 0
        return message

    def _content_length(self, head: bytes) -> int:
        values = {value.strip() for value in _CONTENT_LENGTH_RE.findall(head)}
        if len(values) != 1:
            raise ParseError("missing or conflicting Content-Length on a stream")
        text = values.pop().replace(b"\r\n", b"").decode("latin-1")
        return parse_int(text, self._max_size)
