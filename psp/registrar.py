"""The registrar: REGISTER processing (the logic behind PartySIP's ``rgstrar`` plugin).

Implements RFC 3261 10.3 over the location store of psp/location.py, with RFC 3327 (Path)
and the RFC 5626 +sip.instance / reg-id contact parameters.  Where PartySIP matched AORs by
user name alone, ignored ports and parameters when comparing contacts and had no minimum
expiry, this registrar follows the RFC:

* AORs are keyed by user and domain (``aor_of``); a REGISTER whose To domain is not one of
  ours is not taken (``handle`` returns None and the proxy forwards it, step 1), unless its
  Request-URI names our domain: then 404 (step 5).  To must be a SIP/SIPS URI (400).
* ``Contact: *`` only alone and with ``Expires: 0`` (400 otherwise, step 6).
* Expiry: the contact's ``expires`` parameter, else the Expires header, else the default;
  clamped to ``max_expires``; 0 < expiry < ``min_expires`` (and under an hour) gives 423
  Interval Too Brief with Min-Expires (step 7).
* Call-ID/CSeq: a binding with the same Call-ID and a CSeq not lower than the request's is
  not touched and the request fails; as the RFC gives no other status for a failed update,
  this is 500 (step 7).  All checks precede all changes, so a failed request changes nothing.
* Path values are stored with each binding and echoed in the 200; a Path the UA did not
  declare support for (``Supported: path``) is refused with 420 (RFC 3327 5.3).
* The 200 lists every live binding of the AOR with its remaining ``expires`` (step 8).

The Date header step 8 recommends is left to the caller (this module never reads a clock).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from urllib.parse import quote, unquote

from psp.errors import SipError
from psp.headers import NameAddr, parse_int, parse_tokens
from psp.location import Binding, LocationStore
from psp.message import Request, Response, make_response
from psp.rfc3263 import ip_literal
from psp.uri import URI, AbsoluteURI, bracket, parse_uri

# Option tags this registrar implements (RFC 3261 8.2.2.3: others in Require get 420).
SUPPORTED = frozenset({"path"})
# RFC 3261 10.3 step 7 allows 423 only for requests shorter than an hour.
_ONE_HOUR = 3600
# Characters a canonical AOR user part keeps unescaped (RFC 3261 25.1 unreserved and
# user-unreserved); everything else is %XX-escaped, so equal users give equal keys.
_USER_SAFE = "-_.!~*'()&=+$,;?/"


def host_key(host: str) -> str:
    """A host as compared with ours: an IP address normalised, a name lowercased without a
    final dot.  The proxy's ``routing.Local`` uses it too, so that a REGISTER the proxy
    counts as ours is one the registrar takes.
    """
    return ip_literal(host) or host.lower().rstrip(".")


def aor_of(uri: URI | AbsoluteURI) -> str:
    """The canonical AOR key of a SIP URI: ``sip:user@host``.

    Scheme sip (a sips AOR is the same AOR), host lowercased, user unescaped then escaped
    again in one canonical way (so %61 and a compare equal and %00 is kept, not truncated),
    port, parameters and headers dropped.  Used by the registrar and the proxy's lookup.
    """
    if not isinstance(uri, URI):
        raise SipError(f"an address-of-record must be a SIP or SIPS URI, not {uri}", status=400)
    host = bracket(uri.host.lower().rstrip("."))
    if not uri.user:
        return f"sip:{host}"
    user = quote(unquote(uri.user, encoding="latin-1"), safe=_USER_SAFE, encoding="latin-1")
    return f"sip:{user}@{host}"


class Registrar:
    """REGISTER handling for a set of local domains: ``servername``, and our addresses
    (``serverip``, ``serverip6``), as a UA without DNS registers at ``sip:<our IP>``.
    """

    def __init__(
        self,
        domains: Iterable[str],
        default_expires: int = 3600,
        min_expires: int = 60,
        max_expires: int = 86400,
    ) -> None:
        self.domains = frozenset(host_key(domain) for domain in domains)
        self.default_expires = default_expires
        self.min_expires = min_expires
        self.max_expires = max_expires

    def is_local(self, host: str) -> bool:
        """True when ``host`` is one of our domains (:func:`host_key` compares them)."""
        return host_key(host) in self.domains

    def handle(
        self, request: Request, store: LocationStore, now: float, source: str | None = None
    ) -> Response | None:
        """Process a REGISTER: the 200 to send, None when it is not ours, or SipError.

        ``source`` is where the request came from ("transport:host:port"), kept with the
        bindings it creates.
        """
        aor = self.target_aor(request)
        if aor is None:
            return None
        path = _path_of(request)
        _check_extensions(request, path)
        contacts = request.contacts
        if contacts == "*":
            self._remove_all(request, store, aor)
        elif contacts:
            self._update(request, contacts, store, aor, now, path, source)
        return self._ok(request, store.lookup(aor, now), now, path)

    def target_aor(self, request: Request) -> str | None:
        """The AOR a REGISTER is for, None when it is not ours (RFC 3261 10.3 steps 1, 5)."""
        ours = isinstance(request.uri, URI) and self.is_local(request.uri.host)
        to_uri = request.to.uri
        if not isinstance(to_uri, URI) or not self.is_local(to_uri.host):
            if not ours:
                return None
            if not isinstance(to_uri, URI):
                raise SipError("the To URI must be a SIP or SIPS URI", status=400)
            raise SipError(f"{to_uri} is not an address of this domain", status=404)
        if not to_uri.user:
            raise SipError(f"{to_uri} has no user part", status=404)
        return aor_of(to_uri)

    def add_static(self, store: LocationStore, aor: str, contact: str) -> Binding:
        """Add a permanent binding from configuration ([userinfo]); it is not journaled,
        because the configuration, not the recovery file, is its source.
        """
        binding = Binding(aor=aor_of(parse_uri(aor)), contact=str(parse_uri(contact)), expires_at=math.inf)
        store.load([binding])
        return binding

    def expiry(self, contact: NameAddr, default: int) -> int:
        """The expiry granted to one contact (RFC 3261 10.3 step 7); 423 when too brief."""
        requested = contact.expires
        if requested is None:
            requested = default
        if 0 < requested < self.min_expires and requested < _ONE_HOUR:
            raise SipError(
                f"expiry {requested} below {self.min_expires}",
                status=423,
                headers=[("Min-Expires", str(self.min_expires))],
            )
        return min(requested, self.max_expires)

    def _remove_all(self, request: Request, store: LocationStore, aor: str) -> None:
        # The message layer accepts '*' only as the whole Contact value (otherwise 400).
        if request.expires != 0:
            raise SipError("Contact: * needs Expires: 0", status=400)
        call_id, cseq = request.call_id, request.cseq.number
        for binding in store.bindings(aor):
            _check_order(binding, call_id, cseq)
        store.remove_all(aor)

    def _update(
        self, request: Request, contacts: list[NameAddr], store: LocationStore, aor: str,
        now: float, path: tuple[str, ...], source: str | None,
    ) -> None:
        default = request.expires
        if default is None:
            default = self.default_expires
        known = store.bindings(aor)
        if known:  # a refresh: share the stored AOR string rather than keep an equal one
            aor = known[0].aor
        call_id, cseq = request.call_id, request.cseq.number
        changes: list[tuple[NameAddr, Binding | None, Binding | None]] = []
        for contact in contacts:
            expires = self.expiry(contact, default)
            instance, reg_id = _instance_of(contact)
            existing = store.find(aor, contact.uri, instance, reg_id)
            if existing is not None:
                _check_order(existing, call_id, cseq)
            new = None
            if expires > 0:
                q = contact.q
                new = Binding(
                    aor=aor, contact=str(contact.uri), expires_at=now + expires,
                    q=1.0 if q is None else q, call_id=call_id, cseq=cseq, path=path,
                    instance=instance, reg_id=reg_id, received_from=source, updated_at=now,
                )
            changes.append((contact, existing, new))
        # Every check passed: only now apply, so that the update is all or nothing.
        for contact, existing, new in changes:
            if new is not None:
                store.add(new, contact.uri)
            elif existing is not None:
                store.remove(aor, existing.contact)

    def _ok(self, request: Request, bindings: list[Binding], now: float, path: tuple[str, ...]) -> Response:
        headers = [("Contact", self._contact_value(b, now)) for b in bindings]
        if path:
            headers.append(("Path", ", ".join(path)))
        return make_response(request, 200, headers=headers)

    def _contact_value(self, binding: Binding, now: float) -> str:
        # A permanent (configured) binding is reported with the longest expiry we grant.
        left = self.max_expires if binding.expires_at == math.inf else max(1, round(binding.expires_at - now))
        value = f"<{binding.contact}>;expires={left}"
        if binding.q != 1.0:
            value += ";q=" + f"{binding.q:.3f}".rstrip("0").rstrip(".")
        if binding.instance is not None:
            value += f';+sip.instance="{binding.instance}"'
        if binding.reg_id is not None:
            value += f";reg-id={binding.reg_id}"
        return value


def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
    """RFC 3261 10.3 step 7: same Call-ID needs a higher CSeq, else the request fails."""
    if binding.call_id == call_id and cseq <= binding.cseq:
        raise SipError(
            f"CSeq {cseq} not above {binding.cseq} for {binding.contact}",
            status=500,
            reason="Out Of Order CSeq",
        )


def _path_of(request: Request) -> tuple[str, ...]:
    return tuple(str(value) for value in request.paths)


def _check_extensions(request: Request, path: tuple[str, ...]) -> None:
    """420 for Require tags we lack (RFC 3261 8.2.2.3) and for an undeclared Path (RFC 3327)."""
    required = [t for v in request.header_values("Require") for t in parse_tokens(v)]
    unsupported = [t for t in required if t.lower() not in SUPPORTED]
    if path and not _declares_path(request):
        unsupported.append("path")
    if unsupported:
        raise SipError(
            "unsupported extension", status=420, headers=[("Unsupported", t) for t in unsupported]
        )


def _declares_path(request: Request) -> bool:
    # A UA that requires path obviously supports it, even without a Supported tag.
    values = request.header_values("Supported") + request.header_values("Require")
    return any(t.lower() == "path" for v in values for t in parse_tokens(v))


def _instance_of(contact: NameAddr) -> tuple[str | None, int | None]:
    """+sip.instance (quotes removed) and reg-id (RFC 5626 4.2); 400 when reg-id is not a number."""
    instance = contact.params.get("+sip.instance")
    if instance is not None:
        instance = instance.strip('"')
    reg_id = contact.params.get("reg-id")
    return instance, None if reg_id is None else parse_int(reg_id, 2**31 - 1)
