"""SIP and SIPS URIs, and other absolute URIs kept opaque.

Implements RFC 3261 section 19.1 (SIP-URI / SIPS-URI syntax, 19.1.1 components, 19.1.4
equivalence, 25.1 grammar), the corrected IPv6 reference grammar of RFC 5954 and the
IPv6 cases of RFC 5118.  Any other scheme (tel:, im:, http:, unknown ones) becomes an
:class:`AbsoluteURI` whose body is kept as written: deciding whether the scheme is
supported (416, RFC 3261 8.2.2.1 / 16.3) is a later layer's job.

Components are kept as written, %HEX escapes included, so that a URI that nobody
changes serialises back byte for byte; escapes are only decoded where the grammar
allows them (user, password, parameters, headers) and only to compare (19.1.4).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import unquote

from psp.errors import ParseError

# RFC 3261 25.1 character classes; '%' stands for escaped = "%" HEXDIG HEXDIG, checked once
# over the whole URI by _BAD_ESCAPE (runs of one class are far faster than alternations).
_USER = r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+"         # unreserved / escaped / user-unreserved
_PASSWORD = r"[A-Za-z0-9\-_.!~*'()&=+$,%]*"
_PCHAR = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+"       # paramchar
_HCHAR = r"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]"        # hnv-unreserved / unreserved / escaped
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-_.]*"
_TAIL = (rf"({_HOST})(?::([0-9]{{1,5}}))?((?:;{_PCHAR}(?:={_PCHAR})?)*)"
         rf"(?:\?({_HCHAR}+={_HCHAR}*(?:&{_HCHAR}+={_HCHAR}*)*))?\Z")
_SIP_USER_RE = re.compile(rf"({_USER})(?::({_PASSWORD}))?@" + _TAIL)
_SIP_HOST_RE = re.compile(_TAIL)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 3261 25.1 absoluteURI: scheme ":" (hier-part / opaque-part), uric characters only.
_ABS_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):([A-Za-z0-9\-_.!~*'();/?:@&=+$,%\[\]#]+)\Z")
# 19.1.4: these parameters must match when present in either URI.
_MUST_MATCH = ("user", "ttl", "method", "maddr", "transport")


def _unescape(text: str) -> str:
    """Decode %HEX escapes byte-wise (latin-1), for comparison only."""
    return unquote(text, encoding="latin-1") if "%" in text else text


def split_params(text: str) -> dict[str, str | None]:
    """';a=b;c' (already validated: no spaces, no quotes) -> {'a': 'b', 'c': None}, names
    lowercased, values as written."""
    params: dict[str, str | None] = {}
    if text:
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """{'a': 'b', 'c': None} -> ';a=b;c'."""
    text = ""
    for name, value in params.items():
        text += f";{name}" if value is None else f";{name}={value}"
    return text


def bracket(host: str) -> str:
    """A host as it appears in a URI or Via: IPv6 addresses get their brackets back."""
    return f"[{host}]" if ":" in host else host


def parse_uri(text: str) -> URI | AbsoluteURI:
    """Parse a Request-URI or the URI of a name-addr; raise ParseError (400) if malformed."""
    parts = _sip_parts(text)
    if parts is None:
        match = _ABS_RE.match(text)
        if match is None:
            raise ParseError(f"malformed URI {text!r}")
        return AbsoluteURI(match[1], match[2])
    return URI._parsed(text, parts)


def check_uri(text: str) -> None:
    """Raise ParseError unless ``text`` is a valid URI (parse_uri without building it)."""
    if _sip_parts(text) is None and _ABS_RE.match(text) is None:
        raise ParseError(f"malformed URI {text!r}")


# The same URIs come back in message after message (a UA's AOR in From and To, its
# Contact, the R-URI of a dialog, our own Record-Route), and validating one is most of
# the cost of reading it: the validated parts are remembered (an immutable tuple, shared;
# malformed URIs raise every time, so they are never remembered).
@functools.lru_cache(maxsize=8192)
def _sip_parts(text: str) -> tuple | None:
    """Validated (scheme, user, password, host, port, params, headers) of a sip/sips URI,
    None for another scheme."""
    if text.startswith("sip:"):
        scheme, rest = "sip", text[4:]
    else:
        head = text[:5].lower()
        if head.startswith("sip:"):
            scheme, rest = "sip", text[4:]
        elif head == "sips:":
            scheme, rest = "sips", text[5:]
        else:
            return None
    if "@" in rest:  # two patterns, so that the user part never backtracks
        match = _SIP_USER_RE.match(rest)
        parts = None if match is None else match.groups()
    else:
        match = _SIP_HOST_RE.match(rest)
        parts = None if match is None else (None, None, *match.groups())
    if parts is None or ("%" in rest and _BAD_ESCAPE.search(rest)):
        raise ParseError(f"malformed SIP URI {text!r}")
    user, password, host, port, params, headers = parts
    if host[0] == "[":
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ParseError(f"bad IPv6 reference in {text!r}") from None
    if port is not None:
        port = int(port)
        if port > 65535:
            raise ParseError(f"port out of range in {text!r}")
    return scheme, user, password, host, port, params, headers


class URI:
    """A sip: or sips: URI (RFC 3261 19.1.1).  Host is unbracketed; components as written."""

    __slots__ = ("scheme", "user", "password", "host", "port", "headers",
                 "_params", "_ptext", "_psnap", "_raw", "_snap")

    def __init__(
        self,
        host: str,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.headers = headers
        self._params: dict[str, str | None] | None = {} if params is None else params
        self._ptext: str | None = None   # parameters as written, split on first use
        self._psnap: dict[str, str | None] | None = None
        self._raw: str | None = None
        self._snap: tuple | None = None

    @classmethod
    def _parsed(cls, text: str, parts: tuple) -> URI:
        """A URI from validated _sip_parts(); parameters are only split when first read."""
        uri = cls.__new__(cls)
        uri.scheme, uri.user, uri.password, uri.host, uri.port, uri._ptext, uri.headers = parts
        uri._params = uri._psnap = None
        uri._raw = text
        uri._snap = parts[:5] + parts[6:]
        return uri

    @property
    def params(self) -> dict[str, str | None]:
        """Parameters, names lowercased, values as written, in order."""
        if self._params is None:
            self._params = split_params(self._ptext)
            self._psnap = dict(self._params)
        return self._params

    @params.setter
    def params(self, value: dict[str, str | None]) -> None:
        self._params = value

    def modified(self) -> bool:
        """True once any component differs from what was parsed (or if never parsed)."""
        if self._raw is None or self._snap != (self.scheme, self.user, self.password, self.host,
                                               self.port, self.headers):
            return True
        return self._params is not None and self._params != self._psnap

    def settle(self) -> None:
        """Take the current components as the new 'as written' form."""
        self._raw = str(self)
        self._snap = (self.scheme, self.user, self.password, self.host, self.port, self.headers)
        self._psnap = dict(self.params)

    def __str__(self) -> str:
        if not self.modified():
            return self._raw  # type: ignore[return-value]
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            parts.append("@")
        parts += (self.hostport, format_params(self.params))
        if self.headers:
            parts += ("?", self.headers)
        return "".join(parts)

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    @property
    def hostport(self) -> str:
        """'host[:port]', with brackets around an IPv6 address."""
        host = bracket(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def user_param(self) -> str | None:
        return self.params.get("user")

    def copy(self, **changes: object) -> URI:
        """A new URI with the given components replaced (params dict copied); what is not
        changed still prints as written."""
        uri = URI.__new__(URI)  # slot by slot, spelled out: a proxy copies URIs on every request
        uri.scheme, uri.user, uri.password = self.scheme, self.user, self.password
        uri.host, uri.port, uri.headers = self.host, self.port, self.headers
        uri._ptext, uri._psnap, uri._raw, uri._snap = self._ptext, self._psnap, self._raw, self._snap
        uri._params = None if self._params is None else dict(self._params)
        for name, value in changes.items():
            setattr(uri, name, value)
        return uri

    def equivalent(self, other: object) -> bool:
        """RFC 3261 19.1.4 comparison (escapes decoded, host and params case-insensitive)."""
        if not isinstance(other, URI) or self.scheme != other.scheme or self.port != other.port:
            return False
        if _unescape(self.user or "") != _unescape(other.user or ""):
            return False
        if _unescape(self.password or "") != _unescape(other.password or ""):
            return False
        if _host_key(self.host) != _host_key(other.host):
            return False
        mine, theirs = _param_key(self.params), _param_key(other.params)
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                return False
        if any((name in mine) != (name in theirs) for name in _MUST_MATCH):
            return False
        return _headers_key(self.headers) == _headers_key(other.headers)


def _host_key(host: str) -> str:
    """Hosts compare case-insensitively; IPv6 addresses compare by value (RFC 5954 4.1)."""
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            pass
    return host.lower()


def _param_key(params: dict[str, str | None]) -> dict[str, str | None]:
    return {_unescape(name).lower(): None if value is None else _unescape(value).lower()
            for name, value in params.items()}


def _headers_key(headers: str | None) -> dict[str, str]:
    if not headers:
        return {}
    pairs = (item.partition("=") for item in headers.split("&"))
    return {_unescape(name).lower(): _unescape(value) for name, _, value in pairs}


class AbsoluteURI:
    """A URI of another scheme (tel:, im:, unknown): kept as written (RFC 3261 19.1, 8.2.2.1)."""

    __slots__ = ("scheme", "opaque", "_written")

    def __init__(self, scheme: str, opaque: str) -> None:
        self.scheme = scheme.lower()  # schemes are case-insensitive (RFC 3986 3.1)
        self.opaque = opaque
        self._written = scheme  # forwarded as written

    def __str__(self) -> str:
        return f"{self._written}:{self.opaque}"

    def __repr__(self) -> str:
        return f"AbsoluteURI({str(self)!r})"

    def modified(self) -> bool:
        """Opaque URIs are only ever replaced, never edited: always as parsed."""
        return False

    def settle(self) -> None:
        """Nothing to do: an opaque URI is always printed as written."""

    def copy(self) -> AbsoluteURI:
        return self

    def equivalent(self, other: object) -> bool:
        """Scheme case-insensitive, the rest compared exactly (no scheme-specific rules)."""
        return isinstance(other, AbsoluteURI) and (self.scheme, self.opaque) == (other.scheme, other.opaque)
