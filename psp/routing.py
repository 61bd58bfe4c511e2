"""Who this proxy is, and where a request goes next.

* :class:`Local`: our names, addresses and ports, built from partysip.conf.  It answers
  "is this URI us?" (the rule of docs/proxy.md: host in ``servername``, ``serverip`` or
  ``serverip6``, and port equal to one of ours, 5060 when absent), "is this Request-URI
  ours?" (what the plugins call ``is_local``: the same, or our host without a port), and
  "is this Via ours?"; it writes our Via
  (RFC 3261 16.6 item 8, RFC 3581 rport) and our Record-Route / Path URI
  (16.6 item 4, RFC 3327) with the ``psp=`` tag that marks URIs we placed.
* :func:`preprocess`: RFC 3261 16.4, Route information preprocessing (the strict-router
  fix of 16.4 first paragraph and the removal of our own top Route), which also tells
  whether the request is *routed*: in a dialog we are on the path of, so that it follows
  its route set and the location plugins leave it alone.
* :func:`next_hop`: RFC 3261 16.6 items 6 and 7, the URI the request is sent to.
* :class:`Locator`: that URI as ordered transport targets (RFC 3263 through the core's
  resolver; an IP address directly; TCP when the URI names no transport and UDP is off),
  recently failed targets last (RFC 3263 4.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psp.errors import SipError
from psp.events import Peer, Resolved
from psp.headers import Via
from psp.message import Request
from psp.registrar import host_key
from psp.rfc3263 import Blocklist, ip_literal, job_target
from psp.uri import URI, AbsoluteURI, bracket

if TYPE_CHECKING:
    from psp.core import Core

Found = Callable[[tuple[Peer, ...], float], None]
Failed = Callable[[float], None]

DEFAULT_PORT = 5060
TAG_PARAM = "psp"


def psp_tag(secret: bytes, host: str, port: int) -> str:
    """The ``psp=`` value of our Record-Route: stable across restarts (the secret is kept)."""
    data = f"{host}:{port}".encode()
    return hashlib.blake2s(data, key=hashlib.blake2s(secret).digest(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Local:
    """This proxy's identity: names, addresses, ports per transport, and the host it writes."""

    names: frozenset[str]       # servername entries (our domains), lowercase
    addresses: frozenset[str]   # serverip and serverip6, normalised
    ports: Mapping[str, int]    # transport ('udp', 'tcp') -> our port
    host: str                   # what our Via and Record-Route carry
    tag: str                    # the psp= parameter of our Record-Route

    @classmethod
    def from_settings(cls, settings: Any, secret: bytes) -> Local:
        """From serverip, serverip6, servername and serverport_* (udp first: it is the default)."""
        ips = tuple(settings.serverip) + tuple(settings.serverip6)
        names = tuple(settings.servername)
        ports = {"udp": settings.serverport_udp}
        if settings.serverport_tcp:
            ports["tcp"] = settings.serverport_tcp
        host = (ips or names)[0]
        return cls(frozenset(host_key(name) for name in names),
                   frozenset(host_key(ip) for ip in ips), ports, host,
                   psp_tag(secret, host, settings.serverport_udp))

    def port(self, transport: str) -> int:
        """Our port for ``transport`` (the UDP one when we have no listener of that kind)."""
        return self.ports.get(transport.lower(), self.ports["udp"])

    @property
    def udp(self) -> bool:
        """False when ``serverport_udp = 0``: nothing may be sent over UDP, nor say UDP in our Via."""
        return self.ports["udp"] != 0

    def _our_host(self, host: str) -> bool:
        key = host_key(host)
        return key in self.addresses or key in self.names

    def is_us(self, uri: URI | AbsoluteURI) -> bool:
        """True when ``uri`` addresses this proxy: our host and our port (5060 by default)."""
        if not isinstance(uri, URI) or not self._our_host(uri.host):
            return False
        return (uri.port or DEFAULT_PORT) in self.ports.values()

    def is_local(self, uri: URI | AbsoluteURI) -> bool:
        """True when ``uri`` is ours as a Request-URI: our host without a port, or us.

        A domain is served wherever its DNS points, so ``sip:bob@example.com`` is ours on
        any port; likewise our own address without a port (the original's R-URI rule).
        With a port, the port must be ours.
        """
        if not isinstance(uri, URI):
            return False
        if uri.port is None and self._our_host(uri.host):
            return True
        return self.is_us(uri)

    def is_our_via(self, via: Via) -> bool:
        """True when ``via`` was written by this proxy (sent-by is us)."""
        return self._our_host(via.host) and (via.port or DEFAULT_PORT) in self.ports.values()

    def via(self, transport: str, branch: str) -> Via:
        """Our Via for a request sent over ``transport``: its branch, and rport asked for (RFC 3581)."""
        return Via(transport.upper(), self.host, self.port(transport),
                   {"branch": branch, "rport": None})

    def route_uri(self, transport: str) -> str:
        """Our Record-Route / Path URI for requests that reached us over ``transport``."""
        transport = transport.lower()
        return (f"<sip:{bracket(self.host)}:{self.port(transport)};transport={transport};lr;"
                f"{TAG_PARAM}={self.tag}>")

    def placed(self, uri: URI | AbsoluteURI) -> bool:
        """True when ``uri`` is one we put into a Record-Route (16.4: a strict router's R-URI)."""
        return isinstance(uri, URI) and uri.params.get(TAG_PARAM) == self.tag and self.is_us(uri)


def preprocess_edits(request: Request) -> bool:
    """Whether :func:`preprocess` may change ``request``: it has a Route or a maddr.

    Most requests have neither (a REGISTER, an initial INVITE): the proxy then needs no
    copy of the request its server transaction keeps.
    """
    uri = request.uri
    return bool(request.routes) or (isinstance(uri, URI) and uri.maddr is not None)


def preprocess(request: Request, local: Local) -> bool:
    """RFC 3261 16.4 on ``request``, in place; True when the request is routed.

    A strict router upstream put our Record-Route URI into the Request-URI: the last Route
    is the real Request-URI (the original PartySIP's ``fix_strict_router_issue``).  A
    ``maddr`` that names us is dropped with the port and transport (the original's TODO).
    Then our own top Route, if any, is removed (we are the hop it named).

    Routed means in a dialog we are on the path of: the Route we removed, or the strict
    router's Request-URI, is the Record-Route URI we placed (our ``psp=`` tag).  Such a
    request follows its Request-URI and route set; anything else, a preloaded Route to us
    or a To tag included, is an initial request whose target the chain must decide, or
    anybody could relay through us by writing those (RFC 3261 16.5).
    """
    routes = request.routes
    routed = bool(routes) and local.placed(request.uri)
    if routed:
        request.uri = routes.pop().uri
    uri = request.uri
    if isinstance(uri, URI) and uri.maddr and local.is_us(uri.copy(host=uri.maddr)):
        # maddr naming us: as if maddr, port and transport had not been there (16.4)
        params = {name: value for name, value in uri.params.items()
                  if name not in ("maddr", "transport")}
        request.uri = uri.copy(port=None, params=params)
    if routes and local.is_us(routes[0].uri):
        routed = local.placed(routes.pop(0).uri) or routed
    return routed


def next_hop(request: Request) -> URI:
    """Where ``request`` goes (RFC 3261 16.6 items 6 and 7); raises 416 for a non-SIP hop.

    A top Route without ``lr`` is a strict router: the Request-URI moves to the end of the
    Route set and the top Route becomes the Request-URI.  The hop is the top Route if
    there is one (loose routing), else the Request-URI.
    """
    routes = request.routes
    if routes and isinstance(routes[0].uri, URI) and not routes[0].uri.lr:
        strict = routes.pop(0)
        request.add_header("Route", f"<{request.uri}>")
        request.uri = strict.uri
        return strict.uri
    hop = routes[0].uri if routes else request.uri
    if not isinstance(hop, URI):
        raise SipError(f"no SIP next hop in {hop}", status=416)
    return hop


class Locator:
    """Turns a next hop into ordered targets for the branch that owns it (RFC 3263).

    An IP address is a target at once (port 5060 and UDP unless the URI says otherwise);
    a name goes to the resolver thread through ``core.resolve``.  Without ``udp`` (UDP
    disabled), a URI that names no transport is reached over TCP: RFC 3263 4.1 lets a
    client choose among the transports it supports.  With a ``blocklist``, targets that
    failed recently are moved to the end (RFC 3263 4.3).
    """

    def __init__(self, core: Core, blocklist: Blocklist | None = None, *, udp: bool = True) -> None:
        self.core = core
        self.blocklist = blocklist
        self.udp = udp

    def locate(self, hop: URI, found: Found, failed: Failed, now: float) -> None:
        """Call ``found(targets, now)`` with at least one target, or ``failed(now)``."""
        host, port, transport = job_target(hop)
        if transport is None and not self.udp:
            transport = "tcp"
        address = ip_literal(host)
        if address is not None:
            found((Peer(transport or "udp", address, port or DEFAULT_PORT),), now)
            return

        def resolved(answer: Resolved, now: float) -> None:
            if not answer.targets:
                failed(now)
            elif self.blocklist is None:
                found(answer.targets, now)
            else:
                found(self.blocklist.order(answer.targets, now), now)
        self.core.resolve(host, port, transport, resolved, now)

    def target_failed(self, peer: Peer, now: float) -> None:
        """``peer`` timed out, refused the connection or answered 503."""
        if self.blocklist is not None:
            self.blocklist.mark_failed(peer, now)
