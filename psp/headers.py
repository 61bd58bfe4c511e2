"""Header names and typed header values.

Implements RFC 3261 7.3 (header field format, 7.3.1 comma-separated lists, 7.3.3
compact forms) and the grammar of section 20 / 25.1 for the headers a proxy or a
registrar reads: Via (20.42, with RFC 3581 rport), From/To/Contact/Route/Record-Route
(20.10, 20.20, 20.30, 20.34, 20.39; Path RFC 3327), CSeq (20.16), Max-Forwards (20.22),
Expires/Min-Expires/Content-Length (20.19, 20.23, 20.14), Content-Type (20.15), option
tags (20.29, 20.32, 20.37, 20.40), and the digest credentials and challenges of 20.7,
20.27, 20.28, 20.44 (RFC 2617 syntax).  Every parser raises ParseError (400).

Typed values remember the text they were parsed from, so a value nobody changed is
forwarded exactly as received (``modified()`` tells whether it was changed).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from psp.errors import ParseError
from psp.uri import AbsoluteURI, URI, bracket, check_uri, format_params, parse_uri, split_params

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
TOKEN_RE = re.compile(_TOKEN + r"\Z")
# generic-param value: token / host (IPv6 too, with or without brackets, RFC 5118 4.5) / quoted-string
_PVALUE = rf"{_QUOTED}|[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
_PARAM_RE = re.compile(rf"\s*;\s*({_TOKEN})(?:\s*=\s*({_PVALUE}))?", re.S)
# Parameters as nearly every message writes them: no spaces, no quoted values.
_PLAIN_PARAMS = rf"(?:;{_TOKEN}(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*"
_PLAIN_PARAMS_RE = re.compile(_PLAIN_PARAMS + r"\Z")

# RFC 3261 7.3.3 plus the compact forms registered since (RFC 3515, 3892, 3265, 4028, 4474, 3841).
COMPACT_FORMS = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "u": "allow-events", "r": "refer-to", "b": "referred-by",
    "x": "session-expires", "y": "identity", "n": "identity-info", "a": "accept-contact",
    "j": "reject-contact", "d": "request-disposition",
}
_KNOWN = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE",
    "Organization", "P-Asserted-Identity", "Path", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition", "Require",
    "Retry-After", "Route", "RSeq", "Server", "Service-Route", "Session-Expires", "SIP-ETag",
    "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)
CANONICAL_NAMES = {name.lower(): name for name in _KNOWN}

LIST_HEADERS: frozenset[str] = frozenset((
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
    "Error-Info", "In-Reply-To", "P-Asserted-Identity", "Path", "Proxy-Require", "Reason",
    "Record-Route", "Reject-Contact", "Request-Disposition", "Require", "Route",
    "Service-Route", "Supported", "Unsupported", "Via", "Warning",
))
LIST_KEYS: frozenset[str] = frozenset(name.lower() for name in LIST_HEADERS)
# Methods of RFC 3261 and its extensions (3262, 3265, 3311, 3428, 3515, 3903, 6086).
METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
))


def header_key(name: str) -> str:
    """The lookup key of a header name: lowercase full name ('v' -> 'via')."""
    lower = name.lower()
    return COMPACT_FORMS.get(lower, lower)


def canonical_name(name: str) -> str:
    """'v' -> 'Via', 'call-id' -> 'Call-ID'; an unknown name is returned as written."""
    return CANONICAL_NAMES.get(header_key(name), name)


def split_list(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and <...> (RFC 3261 7.3.1)."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [item.strip() for item in value.split(",")]
    items, start, quoted, angle, i = [], 0, False, False, 0
    while i < len(value):
        char = value[i]
        if quoted:
            if char == "\\":
                i += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            angle = True
        elif char == ">":
            angle = False
        elif char == "," and not angle:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return items


def parse_params(text: str) -> dict[str, str | None]:
    """';a=b ; c' -> {'a': 'b', 'c': None}; names lowercased, values as written (quotes kept)."""
    if _PLAIN_PARAMS_RE.match(text):  # the common case: no spaces, no quoted values
        return split_params(text)
    params: dict[str, str | None] = {}
    pos, end = 0, len(text)
    while pos < end:
        match = _PARAM_RE.match(text, pos)
        if match is None:
            raise ParseError(f"malformed parameters {text!r}")
        params[match[1].lower()] = match[2]
        pos = match.end()
    return params


def parse_int(value: str, limit: int) -> int:
    """A decimal integer 0..limit (leading zeros allowed); ParseError otherwise."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise ParseError(f"not a number: {value!r}")
    if len(text) > 20:  # also keeps int() away from CPython's 4300-digit conversion limit
        text = text.lstrip("0") or "0"
        if len(text) > 20:
            raise ParseError(f"number too large: {value[:30]!r}...")
    number = int(text)
    if number > limit:
        raise ParseError(f"{number} exceeds {limit}")
    return number


class Via:
    """One via-parm (RFC 3261 20.42): transport, sent-by host/port and parameters."""

    __slots__ = ("transport", "host", "port", "params", "protocol", "_raw", "_snap", "_psnap")

    def __init__(self, transport: str, host: str, port: int | None = None,
                 params: dict[str, str | None] | None = None, protocol: str = "SIP/2.0") -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = {} if params is None else params
        self.protocol = protocol
        self._raw: str | None = None  # the text as received, with a snapshot of what it said
        self._snap: tuple | None = None
        self._psnap: dict[str, str | None] | None = None

    def modified(self) -> bool:
        return (self._raw is None or self.params != self._psnap
                or self._snap != (self.transport, self.host, self.port, self.protocol))

    def settle(self) -> None:
        """Take the current value as the new 'as written' form (after it was sent out)."""
        self._raw = str(self)
        self._snap = (self.transport, self.host, self.port, self.protocol)
        self._psnap = dict(self.params)

    def copy(self) -> Via:
        """An independent Via that still prints as written (the snapshots are never mutated)."""
        via = Via.__new__(Via)
        via.transport, via.host, via.port, via.protocol = self.transport, self.host, self.port, self.protocol
        via.params = dict(self.params)
        via._raw, via._snap, via._psnap = self._raw, self._snap, self._psnap
        return via

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        value = self.params.get("received")
        return value[1:-1] if value and value[0] == "[" else value

    @property
    def rport(self) -> int | None:
        """The rport value (RFC 3581); None when absent or empty ('rport' in params = asked for)."""
        value = self.params.get("rport")
        return parse_int(value, 65535) if value else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return parse_int(value, 255) if value is not None else None

    def __str__(self) -> str:
        if not self.modified():
            return self._raw  # type: ignore[return-value]
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {bracket(self.host)}{port}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


_VIA_RE = re.compile(
    rf"({_TOKEN})\s*/\s*({_TOKEN})\s*/\s*({_TOKEN})\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-_.]*)"
    r"(?:\s*:\s*([0-9]{1,5}))?\s*(.*)\Z", re.S)
# The form nearly every Via has: single spaces, plain parameters.
_VIA_PLAIN_RE = re.compile(
    rf"SIP/2\.0/({_TOKEN}) (\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-_.]*)(?::([0-9]{{1,5}}))?"
    rf"({_PLAIN_PARAMS})\Z")


def parse_via(value: str) -> list[Via]:
    """All via-parms of one Via header value; empty elements and bad params are errors."""
    return [_parse_via_parm(item) for item in split_list(value)]


def _parse_via_parm(text: str) -> Via:
    match = _VIA_PLAIN_RE.match(text)
    if match is not None:
        transport, host, port, rest = match.groups()
        params = split_params(rest)
    else:
        match = _VIA_RE.match(text)
        if match is None:
            raise ParseError(f"malformed Via {text!r}")
        name, version, transport, host, port, rest = match.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise ParseError(f"unsupported protocol in Via {text!r}")
        params = parse_params(rest)
    if host[0] == "[":
        host = _ipv6(host[1:-1])
    if port is not None:
        port = int(port)  # at most 5 digits, by the patterns
        if port > 65535:
            raise ParseError(f"port out of range in Via {text!r}")
    via = Via(transport.upper(), host, port, params)
    via._raw = text
    via._snap = (via.transport, host, port, "SIP/2.0")
    via._psnap = dict(params)
    return via


def _ipv6(host: str) -> str:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ParseError(f"bad IPv6 reference {host!r}") from None
    return host


class NameAddr:
    """name-addr or addr-spec with header parameters (From, To, Contact, Route, ...)."""

    __slots__ = ("display", "params", "_uri", "_utext", "_uorig", "_raw", "_snap", "_psnap")

    def __init__(self, uri: URI | AbsoluteURI | None, display: str | None = None,
                 params: dict[str, str | None] | None = None) -> None:
        self.display = display
        self.params: dict[str, str | None] = {} if params is None else params
        self._uri = uri
        self._utext: str | None = None  # the URI as received (validated), parsed on first use
        self._uorig: URI | AbsoluteURI | None = None
        self._raw: str | None = None  # the text as received, with a snapshot of what it said
        self._snap: str | None = None
        self._psnap: dict[str, str | None] | None = None

    @property
    def uri(self) -> URI | AbsoluteURI:
        if self._uri is None:
            self._uri = self._uorig = parse_uri(self._utext)  # type: ignore[arg-type]
        return self._uri

    @uri.setter
    def uri(self, value: URI | AbsoluteURI) -> None:
        self._uri = value

    def modified(self) -> bool:
        if self._raw is None or self.params != self._psnap or self.display != self._snap:
            return True
        uri = self._uri
        return uri is not None and (uri is not self._uorig or uri.modified())

    def settle(self) -> None:
        """Take the current value as the new 'as written' form (after it was sent out)."""
        text = str(self)
        if self._uri is not None:
            self._uri.settle()
            self._uorig = self._uri
        self._raw = text
        self._snap = self.display
        self._psnap = dict(self.params)

    def copy(self) -> NameAddr:
        """An independent copy; an unchanged one still prints as written."""
        addr = NameAddr.__new__(NameAddr)
        addr.display, addr.params = self.display, dict(self.params)
        uri = self._uri
        addr._uri = None if uri is None else uri.copy()
        # the URI as parsed stays "as parsed" in the copy; a replaced one stays replaced
        addr._uorig = addr._uri if uri is not None and uri is self._uorig else self._uorig
        addr._utext, addr._raw, addr._snap, addr._psnap = self._utext, self._raw, self._snap, self._psnap
        return addr

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def q(self) -> float | None:
        """Contact q-value 0..1 (RFC 3261 20.10); ParseError if malformed."""
        value = self.params.get("q")
        if value is None:
            return None
        try:
            q = float(value)
        except ValueError:
            raise ParseError(f"bad q-value {value!r}") from None
        if not 0.0 <= q <= 1.0:
            raise ParseError(f"q-value out of range {value!r}")
        return q

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        return None if value is None else parse_int(value, 2**32 - 1)

    def __str__(self) -> str:
        if not self.modified():
            return self._raw  # type: ignore[return-value]
        display = ""
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        uri = self._utext if self._uri is None else self._uri
        return f"{display}<{uri}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"


_NAME_ADDR_RE = re.compile(
    rf'(?:"((?:[^"\\]|\\.)*)"|((?:{_TOKEN}(?:\s+{_TOKEN})*)?))\s*<([^<>\s]+)>(.*)\Z', re.S)
_ADDR_SPEC_RE = re.compile(r'([^\s;<>",?]+)(.*)\Z', re.S)
# The forms nearly every From/To/Contact/Route has: optional "quoted" or token display
# name, <uri>, plain parameters without spaces.
_NAME_ADDR_PLAIN_RE = re.compile(
    rf'(?:"([^"\\]*)" *|([A-Za-z0-9\-.!%*_+`\'~ ]*))<([^<>\s]+)>({_PLAIN_PARAMS})\Z')
_UNQUOTE_RE = re.compile(r"\\(.)", re.S)


def parse_name_addr(value: str) -> NameAddr:
    """(name-addr / addr-spec) *(SEMI param); in the addr-spec form params belong to the header.

    The URI is checked now and built when first read (a proxy reads few of them)."""
    match = _NAME_ADDR_PLAIN_RE.match(value)
    if match is not None:
        quoted, tokens, uri, rest = match.groups()
        display = quoted if quoted is not None else (tokens.strip() or None)
        params = split_params(rest)
    else:
        display, uri, params = _name_addr_parts(value.strip())
    check_uri(uri)
    addr = NameAddr(None, display, params)
    addr._utext = uri
    addr._raw = value
    addr._snap = display
    addr._psnap = dict(params)
    return addr


def check_name_addr(value: str) -> None:
    """Raise ParseError unless parse_name_addr(value) would succeed, building nothing."""
    match = _NAME_ADDR_PLAIN_RE.match(value)
    check_uri(_name_addr_parts(value.strip())[1] if match is None else match[3])


def _name_addr_parts(text: str) -> tuple[str | None, str, dict[str, str | None]]:
    """(display, URI text, params) of the general forms: LWS, escapes, quoted values."""
    match = _NAME_ADDR_RE.match(text)
    if match is not None:
        quoted, tokens, uri, rest = match.groups()
        display = _UNQUOTE_RE.sub(r"\1", quoted) if quoted is not None else (tokens.strip() or None)
    else:
        match = _ADDR_SPEC_RE.match(text)
        if match is None:
            raise ParseError(f"malformed address {text!r}")
        display, (uri, rest) = None, match.groups()
    return display, uri, parse_params(rest.strip())


def parse_contacts(value: str) -> list[NameAddr] | Literal["*"]:
    """Contact values: '*' alone (RFC 3261 10.2.2) or a list of name-addr/addr-spec."""
    if value.strip() == "*":
        return "*"
    return [parse_name_addr(item) for item in split_list(value)]


class CSeq:
    """CSeq number and method (RFC 3261 20.16)."""

    __slots__ = ("number", "method")

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.number}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CSeq) and (self.number, self.method) == (other.number, other.method)

    def __hash__(self) -> int:
        return hash((self.number, self.method))


_CSEQ_RE = re.compile(rf"\s*([0-9]{{1,10}})\s+({_TOKEN})\s*\Z")


def parse_cseq(value: str) -> CSeq:
    """'4711 INVITE'; the number must be below 2**31 (RFC 3261 8.1.1.5)."""
    digits, space, method = value.partition(" ")
    if not (space and method in METHODS and digits.isdigit() and digits.isascii() and len(digits) <= 10):
        match = _CSEQ_RE.match(value)  # the general form: LWS, extension methods
        if match is None:
            raise ParseError(f"malformed CSeq {value!r}")
        digits, method = match.groups()
    number = int(digits)
    if number > 2**31 - 1:
        raise ParseError(f"CSeq number out of range {value!r}")
    return CSeq(number, method)


def parse_tokens(value: str) -> list[str]:
    """Option tags or methods: 'a, b' -> ['a', 'b'] (Require, Supported, Allow, ...)."""
    tokens = [item.strip() for item in value.split(",")]
    tokens = [token for token in tokens if token]
    for token in tokens:
        if not TOKEN_RE.match(token):
            raise ParseError(f"bad token {token!r}")
    return tokens


class ContentType:
    """m-type '/' m-subtype *(SEMI m-parameter) (RFC 3261 20.15); type/subtype lowercased."""

    __slots__ = ("type", "subtype", "params")

    def __init__(self, type: str, subtype: str, params: dict[str, str | None] | None = None) -> None:
        self.type = type
        self.subtype = subtype
        self.params: dict[str, str | None] = {} if params is None else params

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{format_params(self.params)}"


_CONTENT_TYPE_RE = re.compile(rf"\s*({_TOKEN})\s*/\s*({_TOKEN})(.*)\Z", re.S)


def parse_content_type(value: str) -> ContentType:
    match = _CONTENT_TYPE_RE.match(value)
    if match is None:
        raise ParseError(f"malformed Content-Type {value!r}")
    return ContentType(match[1].lower(), match[2].lower(), parse_params(match[3].strip()))


class Credentials:
    """Authorization / Proxy-Authorization: scheme and params (values unquoted)."""

    __slots__ = ("scheme", "params")
    _BARE = frozenset(("algorithm", "nc", "qop"))  # sent unquoted (RFC 2617 3.2.2)

    def __init__(self, scheme: str, params: dict[str, str]) -> None:
        self.scheme = scheme
        self.params = params

    def __str__(self) -> str:
        return _format_auth(self.scheme, self.params, self._BARE)


class Challenge(Credentials):
    """WWW-Authenticate / Proxy-Authenticate: scheme and params (values unquoted)."""

    __slots__ = ()
    _BARE = frozenset(("algorithm", "stale"))  # qop-options is quoted here (RFC 2617 3.2.1)


def _format_auth(scheme: str, params: dict[str, str], bare: frozenset[str]) -> str:
    items = []
    for name, value in params.items():
        if name in bare:
            items.append(f"{name}={value}")
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'{name}="{escaped}"')
    return f"{scheme} {', '.join(items)}"


_AUTH_RE = re.compile(rf"\s*({_TOKEN})\s+(.*)\Z", re.S)
_AUTH_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*(?:,|\Z)', re.S)


def _parse_auth(value: str) -> tuple[str, dict[str, str]]:
    match = _AUTH_RE.match(value)
    if match is None:
        raise ParseError(f"malformed authentication header {value!r}")
    text, params, pos = match[2].rstrip(), {}, 0
    while pos < len(text):
        param = _AUTH_PARAM_RE.match(text, pos)
        if param is None:
            raise ParseError(f"malformed authentication parameters {value!r}")
        quoted = param[2]
        params[param[1].lower()] = _UNQUOTE_RE.sub(r"\1", quoted) if quoted is not None else param[3]
        pos = param.end()
    return match[1], params


def parse_credentials(value: str) -> Credentials:
    return Credentials(*_parse_auth(value))


def parse_challenge(value: str) -> Challenge:
    return Challenge(*_parse_auth(value))
