"""Digest authentication of requests: the logic behind PartySIP's ``auth`` plugin.

Implements RFC 3261 section 22 (401 WWW-Authenticate for REGISTER at a registrar, 407
Proxy-Authenticate for requests through the proxy) with RFC 7616 / RFC 8760 digests:
SHA-256 and MD5 challenges offered together, most preferred first, ``qop="auth"``.

Where PartySIP's nonces were never checked, ours carry their issue time, a random salt and
an HMAC over both keyed with the ``magicstring`` secret: verifying one needs no state, a
tampered or foreign nonce is refused, and an expired one (older than ``lifetime``) earns
``stale=true`` when the digest itself was right (RFC 7616 3.3) so the UA retries without
asking its user.  Replays are refused by a bounded table of the highest nonce-count seen
per nonce (RFC 7616 3.4).  Responses without ``qop`` (RFC 2069 style, which RFC 3261 22.4
keeps for old UAs) are accepted for MD5 only; they cannot be protected by nonce-count.

Decisions (see docs/registrar.md): ACK and CANCEL are never challenged (RFC 3261 22.1:
they cannot be resubmitted); an unknown user or a wrong password is re-challenged rather
than answered 403, so the answer does not reveal which logins exist; an authenticated user
who REGISTERs an AOR other than their own gets 403 (RFC 3261 10.3 step 4).  Every refusal
is an :class:`AuthError` that says whether credentials failed, and why (for the metrics).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psp.errors import ParseError, SipError
from psp.headers import Credentials, parse_credentials
from psp.registrar import aor_of
from psp.uri import URI, parse_uri

if TYPE_CHECKING:  # annotations only
    from psp.message import Request

HASHES: dict[str, Callable[[bytes], Any]] = {
    "SHA-256": hashlib.sha256,
    "MD5": hashlib.md5,
}
DEFAULT_ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")
_UNCHALLENGED = frozenset({"ACK", "CANCEL"})
_NONCE_BYTES = 8 + 8 + 16  # issue time (ms), salt, truncated HMAC-SHA-256


def hash_hex(algorithm: str, text: str) -> str:
    """H(text) as lowercase hex for a digest algorithm name ("MD5", "SHA-256")."""
    return HASHES[algorithm](text.encode("utf-8")).hexdigest()


def ha1_of(algorithm: str, login: str, realm: str, password: str) -> str:
    """HA1 = H(username:realm:password) (RFC 7616 3.4.2), what a user record may store."""
    return hash_hex(algorithm, f"{login}:{realm}:{password}")


def digest_response(
    algorithm: str,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str | None = None,
    cnonce: str | None = None,
    qop: str | None = None,
) -> str:
    """The expected ``response`` value (RFC 7616 3.4.1; RFC 2069 form when ``qop`` is None)."""
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    if qop is None:
        return hash_hex(algorithm, f"{ha1}:{nonce}:{ha2}")
    return hash_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user who may authenticate: canonical AOR, login and HA1 per algorithm."""

    aor: str
    login: str
    ha1: Mapping[str, str]


def make_user(
    aor: str,
    login: str,
    realm: str,
    *,
    password: str | None = None,
    ha1: str | Mapping[str, str] | None = None,
    algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
) -> UserRecord:
    """A user record from configuration values.

    A ``password`` gives an HA1 for every algorithm; a bare ``ha1`` string is MD5 (the
    form htdigest-like tools produce); a mapping gives the HA1 per algorithm name.
    """
    if password is not None:
        hashes = {alg: ha1_of(alg, login, realm, password) for alg in algorithms}
    elif isinstance(ha1, str):
        hashes = {"MD5": ha1.lower()}
    elif ha1 is not None:
        hashes = {alg.upper(): value.lower() for alg, value in ha1.items()}
    else:
        raise ValueError(f"user {login!r} has neither password nor ha1")
    unknown = set(hashes) - set(HASHES)
    if unknown:
        raise ValueError(f"user {login!r}: unknown digest algorithm {sorted(unknown)}")
    return UserRecord(aor=aor_of(parse_uri(aor)), login=login, ha1=hashes)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of a successful check: the user (None when the method is never challenged)."""

    user: UserRecord | None
    algorithm: str | None = None


class AuthError(SipError):
    """What :meth:`Authenticator.check` raises: a challenge (401/407), 400 or 403.

    ``failure`` is None for the challenge of a request without credentials for our realm
    (the normal first step of every authenticated request), else why the credentials it
    carried were refused: ``bad`` (unknown user, wrong digest, an algorithm or qop we do
    not take, malformed: challenged again or 400), ``stale`` (a right digest on an expired
    or replayed nonce: challenged with stale=true), ``forbidden`` (403: a REGISTER for
    somebody else's AOR).  The ``auth`` plugin counts the failures.
    """

    def __init__(self, error: SipError, failure: str | None) -> None:
        super().__init__(str(error), error.status, error.reason, error.headers)
        self.failure = failure


class NonceCounts:
    """The highest nonce-count seen per nonce, bounded in size (RFC 7616 3.4 replay check).

    When the table is full the oldest entries go, and ``horizon`` remembers the newest
    issue time evicted: an unseen nonce issued at or before it may have been used already,
    so it is refused (and the UA gets a fresh nonce through stale=true).
    """

    __slots__ = ("_seen", "_limit", "horizon")

    def __init__(self, limit: int = 65536) -> None:
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._limit = limit
        self.horizon = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def accept(self, nonce: str, nc: int, issued: float, oldest_valid: float) -> bool:
        """Record ``nc`` for ``nonce``; False when it is not higher than one already seen."""
        seen = self._seen.get(nonce)
        if seen is None:
            if issued <= self.horizon:
                return False
            self._seen[nonce] = (nc, issued)
            self._trim(oldest_valid)
            return True
        if nc <= seen[0]:
            return False
        self._seen[nonce] = (nc, issued)
        return True

    def _trim(self, oldest_valid: float) -> None:
        seen = self._seen
        # Expired nonces are refused by their time anyway: drop them without moving horizon.
        while seen and next(iter(seen.values()))[1] < oldest_valid:
            seen.popitem(last=False)
        while len(seen) > self._limit:
            _, (_, issued) = seen.popitem(last=False)
            self.horizon = max(self.horizon, issued)


class Authenticator:
    """Checks Digest credentials and builds challenges for one realm."""

    def __init__(
        self,
        realm: str,
        secret: str,
        users: Iterable[UserRecord],
        lifetime: float = 300.0,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        force_407: bool = False,
        max_nonces: int = 65536,
    ) -> None:
        self.realm = realm
        self.lifetime = lifetime
        self.algorithms = tuple(a.upper() for a in algorithms)
        if not self.algorithms or set(self.algorithms) - set(HASHES):
            raise ValueError(f"digest algorithms must be among {list(HASHES)}")
        self.force_407 = force_407
        self.users = {user.login: user for user in users}
        self._key = secret.encode("utf-8")
        self.counts = NonceCounts(max_nonces)

    def kind(self, method: str) -> tuple[int, str, str]:
        """(status, challenge header, credentials header) used for ``method``."""
        if method == "REGISTER" and not self.force_407:
            return 401, "WWW-Authenticate", "Authorization"
        return 407, "Proxy-Authenticate", "Proxy-Authorization"

    def check(self, request: Request, now: float) -> AuthResult:
        """Authenticate ``request``; raises AuthError: 401/407 (challenge), 400 or 403."""
        if request.method in _UNCHALLENGED:
            return AuthResult(None)
        creds = self._credentials(request, self.kind(request.method)[2])
        if creds is None:
            raise AuthError(self.challenge(request.method, now), None)
        try:
            return self._authenticate(request, creds.params, now)
        except AuthError:
            raise
        except SipError as error:  # every other refusal of given credentials
            raise AuthError(error, "bad") from None

    def _authenticate(self, request: Request, params: Mapping[str, str], now: float) -> AuthResult:
        """Check credentials for our realm; raises SipError, or AuthError for stale and 403."""
        algorithm = params.get("algorithm", "MD5").upper()
        user = self.users.get(_required(params, "username"))
        issued = self.nonce_time(_required(params, "nonce"))
        if user is None or issued is None or algorithm not in self.algorithms:
            raise self.challenge(request.method, now)
        ha1 = user.ha1.get(algorithm)
        if ha1 is None:
            # Only some HA1s stored (an MD5-only htdigest line): offer what can succeed.
            raise self.challenge(request.method, now, [a for a in self.algorithms if a in user.ha1])
        nc = self._verify(request, params, algorithm, ha1, now)
        fresh = issued <= now < issued + self.lifetime
        replayed = nc is not None and not self.counts.accept(params["nonce"], nc, issued, now - self.lifetime)
        if not fresh or replayed:
            raise AuthError(self.challenge(request.method, now, stale=True), "stale")
        if request.method == "REGISTER" and aor_of(request.to.uri) != user.aor:
            raise AuthError(SipError(f"{user.login} may not register {request.to.uri}", status=403),
                            "forbidden")
        return AuthResult(user, algorithm)

    def challenge(
        self, method: str, now: float, algorithms: Iterable[str] | None = None, stale: bool = False
    ) -> SipError:
        """A 401/407 error carrying one challenge per algorithm, most preferred first."""
        status, name, _ = self.kind(method)
        nonce = self.make_nonce(now)
        extra = ", stale=true" if stale else ""
        headers = [
            (name, f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={alg}, qop="auth"{extra}')
            for alg in (self.algorithms if algorithms is None else algorithms)
        ]
        return SipError("authentication required", status=status, headers=headers)

    def make_nonce(self, now: float) -> str:
        """A nonce carrying its issue time, a salt and an HMAC over both."""
        body = struct.pack(">Q", max(0, int(now * 1000))) + os.urandom(8)
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + mac).decode("ascii").rstrip("=")

    def nonce_time(self, nonce: str) -> float | None:
        """The issue time of one of our nonces, or None when it is not ours or was altered."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        mac = hmac.new(self._key, raw[:16], hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, raw[16:]):
            return None
        return struct.unpack(">Q", raw[:8])[0] / 1000.0

    def strip(self, request: Request) -> int:
        """Remove this realm's credentials before forwarding (RFC 3261 22.3); returns how many."""
        return strip_credentials(request, self.realm, self.kind(request.method)[2])

    def _credentials(self, request: Request, header: str) -> Credentials | None:
        for value in request.header_values(header):
            creds = _digest_for(value, self.realm)
            if creds is not None:
                return creds
        return None

    def _verify(
        self, request: Request, params: Mapping[str, str], algorithm: str, ha1: str, now: float
    ) -> int | None:
        """Check uri, qop and response; returns the nonce-count (None without qop)."""
        uri = _required(params, "uri")
        if not _same_uri(uri, request.uri):
            raise SipError("digest uri does not match the Request-URI", status=400)
        qop = params.get("qop")
        nc = None if qop is None else _parse_nc(_required(params, "nc"))
        cnonce = None if qop is None else _required(params, "cnonce")
        if (qop is not None and qop.lower() != "auth") or (qop is None and algorithm != "MD5"):
            raise self.challenge(request.method, now)
        expected = digest_response(
            algorithm, ha1, request.method, uri, params["nonce"], params.get("nc"), cnonce, qop
        )
        given = _required(params, "response").lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected.encode("ascii"), given):
            raise self.challenge(request.method, now)
        return nc


def strip_credentials(request: Request, realm: str, header: str = "Proxy-Authorization") -> int:
    """Remove the ``header`` values whose realm is ``realm``, keeping the others in order."""
    values = request.header_values(header)
    keep = [v for v in values if _digest_for(v, realm) is None]
    if len(keep) == len(values):
        return 0
    request.remove_header(header)
    for value in keep:
        request.add_header(header, value)
    return len(values) - len(keep)


def _digest_for(value: str, realm: str) -> Credentials | None:
    """The Digest credentials in ``value`` when they are for ``realm``, else None."""
    try:
        creds = parse_credentials(value)
    except ParseError:
        # Other schemes' syntax (RFC 4475 regaut01) or foreign garbage: not ours to judge.
        return None
    if creds.scheme.lower() == "digest" and creds.params.get("realm") == realm:
        return creds
    return None


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise SipError(f"digest credentials lack {name}", status=400)
    return value


def _parse_nc(text: str) -> int:
    if len(text) != 8:
        raise SipError(f"bad nonce-count {text!r}", status=400)
    try:
        return int(text, 16)
    except ValueError:
        raise SipError(f"bad nonce-count {text!r}", status=400) from None


def _same_uri(text: str, request_uri: object) -> bool:
    try:
        uri = parse_uri(text)
    except ParseError:
        return False
    if isinstance(uri, URI) and isinstance(request_uri, URI):
        return uri.equivalent(request_uri)
    return str(uri) == str(request_uri)
