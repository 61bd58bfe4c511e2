"""SIP requests and responses: ordered headers, typed accessors, serialisation.

Implements the message model of RFC 3261 section 7 (7.1 requests, 7.2 responses, 7.3
header order and multiple values, 7.4.1 Content-Length), the reason phrases of section
21, and response construction per 8.2.6 (UAS) and 16.7 / 16.8 (proxy-generated answers),
with the ``Server`` value (20.35) every response we generate carries (``server_header``).

Headers are kept as received, in order, as two parallel lists: the lines exactly as
received (folded ones with their CRLFs) and their keys, the lowercase full names ('v' ->
'via').  A line set by code is written 'Name: value'.  Values are read from the lines
when asked for; typed accessors parse lazily and cache.  Typed values can be edited in place
(``msg.top_via.params['received'] = ip``, ``msg.routes.pop(0)``): ``to_bytes()`` writes
back only the headers whose typed values changed, everything else goes out byte for byte.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Literal

from psp import __version__
from psp.errors import ParseError
from psp.headers import (
    CSeq, ContentType, LIST_KEYS, NameAddr, Via, canonical_name, header_key, parse_contacts,
    parse_content_type, parse_cseq, parse_int, parse_name_addr, parse_via, split_list,
)
from psp.uri import AbsoluteURI, URI, parse_uri

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 433: "Anonymity Disallowed", 436: "Bad Identity-Info",
    437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded", 469: "Bad Info Package",
    470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
    607: "Unwanted", 608: "Rejected",
}
_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirected", 4: "Request Failed", 5: "Server Error",
                  6: "Global Failure"}


def reason_for(status: int) -> str:
    """The standard phrase for ``status``, or a generic one for its class."""
    return REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def _one(values: list[str], key: str) -> str:
    if len(values) != 1:
        raise ParseError(f"{'missing' if not values else 'repeated'} {canonical_name(key)} header")
    return values[0]


def _addresses(values: list[str]) -> list[NameAddr]:
    return [parse_name_addr(item) for value in values for item in split_list(value) if item]


def _contacts(values: list[str]) -> list[NameAddr] | Literal["*"]:
    return parse_contacts(", ".join(values)) if values else []


# key -> parser of all the values of that header; lists and '*' are what the accessors return.
_PARSERS: dict[str, Callable[[list[str]], object]] = {
    "via": lambda values: [via for value in values for via in parse_via(value)],
    "from": lambda values: parse_name_addr(_one(values, "from")),
    "to": lambda values: parse_name_addr(_one(values, "to")),
    "call-id": lambda values: _one(values, "call-id"),
    "cseq": lambda values: parse_cseq(_one(values, "cseq")),
    "max-forwards": lambda values: parse_int(_one(values, "max-forwards"), 255) if values else None,
    "expires": lambda values: parse_int(_one(values, "expires"), 2**32 - 1) if values else None,
    "content-type": lambda values: parse_content_type(_one(values, "content-type")) if values else None,
    "contact": _contacts,
    "route": _addresses,
    "record-route": _addresses,
    "path": _addresses,
}
# Typed values that callers may edit in place: written back by to_bytes().
_EDITABLE = frozenset(("via", "from", "to", "contact", "route", "record-route", "path"))


def _changed(value: object, count: int) -> bool:
    if isinstance(value, list):
        if len(value) != count:
            return True
        for item in value:
            if item.modified():
                return True
        return False
    return isinstance(value, NameAddr) and value.modified()


def _clone(value: object) -> object:
    """A copy of an editable typed value: a Via, address or a list of them (or '*')."""
    if isinstance(value, list):
        return [item.copy() for item in value]
    return value.copy() if isinstance(value, NameAddr) else value


_MISSING = object()
_CRLF = "\r\n"


def unfold(value: str) -> str:
    """A value without its line breaks (RFC 3261 7.3.1: CRLF + whitespace is LWS)."""
    if "\r\n" in value:
        value = " ".join(part.strip() for part in value.split("\r\n"))
    return value.strip()


def header_value(line: str) -> str:
    """The value of a header line, unfolded."""
    return unfold(line.partition(":")[2])


def header_name(line: str) -> str:
    """The name of a header line as written."""
    return line.partition(":")[0].rstrip()


class Message:
    """Common part of requests and responses: ordered headers and a body."""

    __slots__ = ("_h", "_k", "_c", "_n", "body")

    def __init__(self, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        self._h: list[str] = []  # header lines, as received or 'Name: value'
        self._k: list[str] = []  # their keys
        for name, value in headers:
            self._h.append(f"{name}: {value}")
            self._k.append(header_key(name))
        self._c: dict[str, object] = {}  # key -> parsed value
        self._n: dict[str, int] = {}     # editable key handed out -> number of values then
        self.body = body

    def start_line(self) -> str:
        raise NotImplementedError

    # --- raw access -------------------------------------------------------------------
    def header(self, name: str) -> str | None:
        """The first value of a header (the first element for list headers), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, in order; list headers split on commas (RFC 3261 7.3.1)."""
        key = header_key(name)
        if key in self._n:
            self._sync(key)
        values = self._values(key)
        if key in LIST_KEYS:
            return [item for value in values for item in split_list(value) if item]
        return values

    def _values(self, key: str) -> list[str]:
        count = self._k.count(key)
        if count < 2:  # the usual case, found without a Python loop
            return [header_value(self._h[self._k.index(key)])] if count else []
        return [header_value(line) for line_key, line in zip(self._k, self._h) if line_key == key]

    def items(self) -> list[tuple[str, str]]:
        """(name as written, value) for every header line, in order."""
        self._sync_all()
        return [(header_name(line), header_value(line)) for line in self._h]

    def has(self, name: str) -> bool:
        return header_key(name) in self._k

    def _index(self, key: str) -> int | None:
        try:
            return self._k.index(key)
        except ValueError:
            return None

    def _end(self) -> int:
        """Where a new header goes: last, but before a final Content-Length (readability)."""
        last = len(self._k)
        return last - 1 if last and self._k[-1] == "content-length" else last

    def _drop(self, key: str) -> int | None:
        """Remove every line of ``key``; where the first one was."""
        index = self._index(key)
        if index is not None:
            kept = [(line_key, line) for line_key, line in zip(self._k, self._h) if line_key != key]
            self._k = [line_key for line_key, _ in kept]
            self._h = [line for _, line in kept]
        return index

    def _insert(self, index: int, key: str, line: str) -> None:
        self._k.insert(index, key)
        self._h.insert(index, line)

    def set_header(self, name: str, value: str) -> None:
        """Replace every occurrence by one line, where the first one was (else at the end)."""
        key = header_key(name)
        line = f"{canonical_name(name)}: {value}"
        if self._k.count(key) == 1:
            self._h[self._k.index(key)] = line
        else:
            index = self._drop(key)
            self._insert(self._end() if index is None else index, key, line)
        self._forget(key)

    def add_header(self, name: str, value: str, first: bool = False) -> None:
        """Add a line before the first (``first``) or after the last line of that header."""
        key = header_key(name)
        if key == "content-length":  # there is only ever one: to_bytes() computes it
            self.set_header(name, value)
            return
        self._sync(key)
        self._forget(key)
        if key not in self._k:
            position = 0 if first and key == "via" else self._end()
        elif first:
            position = self._k.index(key)
        else:
            position = len(self._k) - self._k[::-1].index(key)
        self._insert(position, key, f"{canonical_name(name)}: {value}")

    def remove_header(self, name: str) -> None:
        key = header_key(name)
        self._drop(key)
        self._forget(key)

    def _forget(self, key: str) -> None:
        self._c.pop(key, None)
        self._n.pop(key, None)

    # --- typed access -----------------------------------------------------------------
    def _typed(self, key: str):  # noqa: ANN202 - the type depends on the key (see _PARSERS)
        value = self._c.get(key, _MISSING)
        if value is _MISSING:
            value = self._c[key] = _PARSERS[key](self._values(key))
        if key in _EDITABLE and key not in self._n:
            self._n[key] = len(value) if isinstance(value, list) else 1
        return value

    def _sync(self, key: str) -> None:
        """Write a typed value that was handed out and edited in place back into its lines."""
        if key in self._n and _changed(self._c[key], self._n[key]):
            self._write_back(key)

    def _sync_all(self) -> None:
        for key, count in list(self._n.items()):
            if _changed(self._c[key], count):
                self._write_back(key)

    def _write_back(self, key: str) -> None:
        value = self._c[key]
        items = value if isinstance(value, list) else [value]
        index = self._drop(key)
        position = self._end() if index is None else index
        name = canonical_name(key)
        self._h[position:position] = [f"{name}: {item}" for item in items]
        self._k[position:position] = [key] * len(items)
        for item in items:
            item.settle()
        self._n[key] = len(items)

    # The accessors below read the cache directly when they can: a proxy calls them a lot.
    @property
    def vias(self) -> list[Via]:
        return self._c["via"] if "via" in self._n else self._typed("via")

    @property
    def top_via(self) -> Via | None:
        vias = self._c["via"] if "via" in self._n else self._typed("via")
        return vias[0] if vias else None

    def push_via(self, via: Via | str) -> None:
        """Add a Via on top, as a line of its own (RFC 3261 16.6 step 8)."""
        if isinstance(via, str):
            via = parse_via(via)[0]
        vias = self._c["via"] if "via" in self._n else self._typed("via")
        via.settle()
        index = self._index("via")
        self._insert(0 if index is None else index, "via", f"Via: {via._raw}")
        vias.insert(0, via)
        self._n["via"] += 1

    def update_top_via(self, params: dict[str, str]) -> None:
        """Set parameters of the top Via (received, rport: RFC 3261 18.2.1, RFC 3581 4).

        When the top Via has a line of its own (the usual case) only that line is
        rewritten; else it is popped and pushed back as a line of its own.
        """
        vias = self._c["via"] if "via" in self._n else self._typed("via")
        top = vias[0]
        index = self._index("via")
        alone = (index is not None and self._n["via"] == len(vias) and not top.modified()
                 and header_value(self._h[index]) == top._raw)
        if not alone:
            top = self.pop_via()
            top.params.update(params)
            self.push_via(top)
            return
        top.params.update(params)
        top.settle()
        self._h[index] = f"Via: {top._raw}"

    def pop_via(self) -> Via:
        """Remove and return the top Via (RFC 3261 16.7 step 3)."""
        vias = self._typed("via")
        if not vias:
            raise ParseError("no Via to remove")
        top = vias.pop(0)
        index = self._index("via")
        in_sync = self._n["via"] == len(vias) + 1 and not top.modified()
        if in_sync and index is not None and header_value(self._h[index]) == str(top):
            del self._h[index], self._k[index]  # the usual case: the top Via had its own line
            self._n["via"] -= 1
        return top

    @property
    def call_id(self) -> str:
        try:
            return self._c["call-id"]  # type: ignore[return-value]
        except KeyError:
            return self._typed("call-id")

    @property
    def cseq(self) -> CSeq:
        try:
            return self._c["cseq"]  # type: ignore[return-value]
        except KeyError:
            return self._typed("cseq")

    @property
    def from_(self) -> NameAddr:
        return self._c["from"] if "from" in self._n else self._typed("from")

    @property
    def to(self) -> NameAddr:
        return self._c["to"] if "to" in self._n else self._typed("to")

    @property
    def max_forwards(self) -> int | None:
        try:
            return self._c["max-forwards"]  # type: ignore[return-value]
        except KeyError:
            return self._typed("max-forwards")

    @property
    def expires(self) -> int | None:
        return self._typed("expires")

    @property
    def content_type(self) -> ContentType | None:
        return self._typed("content-type")

    @property
    def contacts(self) -> list[NameAddr] | Literal["*"]:
        return self._typed("contact")

    @property
    def routes(self) -> list[NameAddr]:
        return self._typed("route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._typed("record-route")

    @property
    def paths(self) -> list[NameAddr]:
        return self._typed("path")

    # --- output -----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The wire form; untouched lines byte for byte, Content-Length from the body."""
        if self._n:
            self._sync_all()
        length = str(len(self.body))
        lines = self._h
        if not (lines and self._k[-1] == "content-length" and lines[-1].partition(":")[2].strip() == length):
            lines = self._fixed_length(length)  # usually the last line and right already
        text = f"{self.start_line()}\r\n{_CRLF.join(lines)}\r\n\r\n"
        return text.encode("utf-8", "surrogateescape") + self.body

    def _fixed_length(self, length: str) -> list[str]:
        """The lines with exactly one Content-Length, the body's (RFC 3261 20.14, 18.3)."""
        fixed, done = [], False
        for key, line in zip(self._k, self._h):
            if key != "content-length":
                fixed.append(line)
            elif not done:
                fixed.append(line if header_value(line) == length else f"{header_name(line)}: {length}")
                done = True
        if not done:
            fixed.append(f"Content-Length: {length}")
        return fixed

    def copy(self):  # noqa: ANN201 - returns the same subclass
        """An independent copy (RFC 3261 16.6 step 1).

        Typed values already parsed come along instead of being parsed again (a proxy
        copies each request two or three times): the editable ones as copies, the others
        (Call-ID, CSeq, Max-Forwards, ...) shared, as nothing edits them in place.
        """
        self._sync_all()
        clone = object.__new__(type(self))
        cache = {key: _clone(value) if key in _EDITABLE else value for key, value in self._c.items()}
        clone._h, clone._k, clone._c, clone._n, clone.body = self._h[:], self._k[:], cache, {}, self.body
        self._copy_start(clone)
        return clone

    def _copy_start(self, clone: Message) -> None:
        raise NotImplementedError


class Request(Message):
    """A SIP request (RFC 3261 7.1)."""

    __slots__ = ("method", "uri", "version")

    def __init__(self, method: str, uri: URI | AbsoluteURI | str,
                 headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.version = "SIP/2.0"

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def _copy_start(self, clone: Message) -> None:
        assert isinstance(clone, Request)
        clone.method, clone.version = self.method, self.version
        clone.uri = self.uri.copy()

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response (RFC 3261 7.2)."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str | None = None,
                 headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason_for(status) if reason is None else reason

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def _copy_start(self, clone: Message) -> None:
        assert isinstance(clone, Response)
        clone.status, clone.reason = self.status, self.reason

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def parsed_message(start: tuple[str, URI | AbsoluteURI] | tuple[int, str], lines: list[str],
                   keys: list[str], cache: dict[str, object], body: bytes) -> Request | Response:
    """A message from the parser's pieces (psp.parser only): no re-validation, no copies."""
    message: Request | Response
    if isinstance(start[0], str):
        message = object.__new__(Request)
        message.method, message.uri = start  # type: ignore[assignment]
        message.version = "SIP/2.0"
    else:
        message = object.__new__(Response)
        message.status, message.reason = start  # type: ignore[assignment]
    message._h, message._k, message._c, message._n, message.body = lines, keys, cache, {}, body
    return message


_COPIED = frozenset(("via", "from", "to", "call-id", "cseq"))
# RFC 3261 8.2.6.1: a 100 (Trying) copies the request's Timestamp, so that the client can
# measure the round trip.  The delay it lets us add is optional and left out: how long the
# request waited in our queues is not known here.
_COPIED_IN_100 = _COPIED | {"timestamp"}


def make_response(request: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A response to ``request`` per RFC 3261 8.2.6.2 / 16.7: Via (all), From, To, Call-ID
    and CSeq copied as received (and Timestamp in a 100, 8.2.6.1); a To-tag added above 100
    when the To has none."""
    request._sync_all()
    response = Response(status, reason, body=b"")
    tag = None if status == 100 or request.to.tag is not None else to_tag or secrets.token_hex(8)
    copied = _COPIED_IN_100 if status == 100 else _COPIED
    for key, line in zip(request._k, request._h):
        if key in copied:
            response._k.append(key)
            response._h.append(f"{line};tag={tag}" if key == "to" and tag else line)
    response._k.append("content-length")
    response._h.append("Content-Length: 0")
    for name, value in headers:
        response._insert(response._end(), header_key(name), f"{name}: {value}")
    return response


def server_header(banner: str) -> str | None:
    """The Server value for the ``banner`` key: ``<banner>/<version>``; an empty banner: None.

    Here, below both, so that the proxy (pure) and the transport (rim) stamp the same value.
    """
    return f"{banner}/{__version__}" if banner else None
