"""A first, simple stateful proxy: the transaction user that proves the engine end to end.

RFC 3261 section 16 in its simplest form, one branch per request: Max-Forwards (16.3 item
3, 16.6 item 3), loose-routing Route pre-processing (16.4) and next-hop choice (16.6 items
6-7), our own Via (16.6 item 8), a 100 Trying for INVITE (16.2), provisional and final
responses relayed through the server transaction (16.7, the 100 absorbed), CANCEL (16.10,
9.1-9.2), ACK for 2xx relayed statelessly (16.11 style), stray responses relayed per 16.7
/ 18.2.2, Timer C (16.6 item 11, 16.8), 408 on a client timeout, 503 on a transport
error.  OPTIONS to the proxy itself gets 200 with Allow; other requests for us get 404.

Seams for the full proxy (plugins, forking, Record-Route, registrar): :meth:`Proxy.route`
decides the next hop, :meth:`Proxy.answer_locally` handles requests for us,
:meth:`Proxy.forward` starts a branch, and per-request state lives in :class:`Forward`.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from psp.branch import COOKIE
from psp.core import TU, response_peer
from psp.errors import SipError
from psp.events import Peer, Resolved
from psp.headers import Via
from psp.message import Request, Response, make_response
from psp.timers import TimerHandle
from psp.transaction import State, Transaction, derived_request
from psp.uri import URI, AbsoluteURI

ALLOW = "INVITE, ACK, CANCEL, OPTIONS, BYE"
DEFAULT_MAX_FORWARDS = 70
DEFAULT_PORT = 5060


@dataclass(frozen=True)
class Local:
    """Who we are: the hosts (names and addresses) and ports we answer to, and our Via host."""

    hosts: frozenset[str]
    ports: Mapping[str, int]  # transport ('udp', 'tcp') -> our port
    via_host: str

    @classmethod
    def from_settings(cls, settings: Any) -> Local:
        """From partysip.conf's serverip, serverip6, servername and serverport_* keys."""
        ips = tuple(settings.serverip) + tuple(settings.serverip6)
        names = tuple(settings.servername)
        ports = {"udp": settings.serverport_udp}
        if settings.serverport_tcp:
            ports["tcp"] = settings.serverport_tcp
        hosts = frozenset(host.lower() for host in ips + names)
        return cls(hosts, ports, (ips or names)[0])

    def is_us(self, uri: URI | AbsoluteURI) -> bool:
        """True when ``uri`` names this proxy (PartySIP's rule: a missing port matches)."""
        if not isinstance(uri, URI) or uri.host.lower() not in self.hosts:
            return False
        return uri.port is None or uri.port in self.ports.values()


@dataclass
class Forward:
    """The state of one proxied request: its server transaction and its single branch."""

    server_tx: Transaction
    request: Request  # the copy we forward
    client_tx: Transaction | None = None
    timer_c: TimerHandle[Any] | None = None
    cancel_pending: bool = False  # CANCEL received before any provisional on the branch (9.1)


def numeric_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Proxy(TU):
    """The transaction user: forwards what is not for us, answers OPTIONS to us."""

    def __init__(self, config: Local | Any) -> None:
        self.local = config if isinstance(config, Local) else Local.from_settings(config)

    # ------------------------------------------------------------------ requests

    def on_request(self, server_tx: Transaction, request: Request, now: float) -> None:
        forwarded = self.prepare(request)
        target = self.route(forwarded)
        if target is None:
            self.answer_locally(server_tx, request, now)
            return
        if request.method == "INVITE":
            self.core.respond(server_tx, make_response(request, 100), now)
        self.forward(Forward(server_tx, forwarded), target, now)

    def prepare(self, request: Request) -> Request:
        """A copy of ``request`` with Max-Forwards checked and decremented (16.3 item 3, 16.6 item 3)."""
        hops = request.max_forwards
        if hops is not None and hops <= 0:
            raise SipError("Max-Forwards reached 0", status=483)
        forwarded = request.copy()
        forwarded.set_header("Max-Forwards", str(DEFAULT_MAX_FORWARDS if hops is None else hops - 1))
        return forwarded

    def route(self, request: Request) -> URI | None:
        """The next hop of ``request`` (16.4, 16.6 items 6-7), None when it is for us.

        Our own top Route is removed from ``request`` (loose routing).
        """
        routes = request.routes
        if routes and self.local.is_us(routes[0].uri):
            routes.pop(0)
        if routes:
            target = routes[0].uri
        elif self.local.is_us(request.uri):
            return None
        else:
            target = request.uri
        if not isinstance(target, URI):
            raise SipError(f"cannot route to {target}", status=416)
        return target

    def answer_locally(self, server_tx: Transaction, request: Request, now: float) -> None:
        if request.method != "OPTIONS":
            raise SipError("no such user here", status=404)
        self.core.respond(server_tx, make_response(request, 200, headers=[("Allow", ALLOW)]), now)

    def forward(self, ctx: Forward, target: URI, now: float) -> None:
        """Send ``ctx.request`` to ``target`` on a new client transaction, resolving names first."""
        server_tx = ctx.server_tx
        server_tx.context = ctx
        transport = (target.transport or "udp").lower()
        ctx.request.push_via(self.our_via(transport))
        if ctx.request.method == "INVITE":
            self._arm_timer_c(ctx, now)

        def start(peer: Peer, now: float) -> None:
            if server_tx.state in (State.PROCEEDING, State.TRYING):  # not answered meanwhile
                ctx.client_tx = self.core.send_request(ctx.request, peer, now, context=ctx)
        self.resolve(target.host, target.port, transport, start, lambda t: self._fail(ctx, 503, t), now)

    def our_via(self, transport: str) -> Via:
        """A Via for us with a fresh branch and an empty rport (RFC 3581) (16.6 item 8)."""
        branch = COOKIE + secrets.token_hex(12)
        port = self.local.ports.get(transport, self.local.ports.get("udp"))
        return Via(transport.upper(), self.local.via_host, port, {"branch": branch, "rport": None})

    def resolve(self, host: str, port: int | None, transport: str,
                found: Callable[[Peer, float], None], failed: Callable[[float], None], now: float) -> None:
        """Call ``found(peer, now)`` with the first target for ``host``, or ``failed(now)``."""
        if numeric_host(host):
            found(Peer(transport, host, port or DEFAULT_PORT), now)
            return

        def resolved(answer: Resolved, now: float) -> None:
            if answer.targets:
                found(answer.targets[0], now)
            else:
                failed(now)
        self.core.resolve(host, port, transport, resolved, now)

    # ------------------------------------------------------------------ ACK and CANCEL

    def on_ack(self, request: Request, peer: Peer, now: float) -> None:
        """An ACK for a 2xx is forwarded statelessly; one for us, or unroutable, ends here."""
        try:
            forwarded = self.prepare(request)
            target = self.route(forwarded)
        except SipError:
            return  # an ACK is never answered
        if target is None:
            return
        transport = (target.transport or "udp").lower()
        forwarded.push_via(self.our_via(transport))

        def send(peer: Peer, now: float) -> None:
            self.core.send_stateless(forwarded, peer, now)
        self.resolve(target.host, target.port, transport, send, lambda t: None, now)

    def on_cancel(self, cancel_stx: Transaction, invite_stx: Transaction | None, now: float) -> None:
        """16.10: 200 to the CANCEL, then cancel the branch once it had a provisional (9.1)."""
        if invite_stx is None:
            raise SipError("no transaction to cancel", status=481)
        self.core.respond(cancel_stx, make_response(cancel_stx.request, 200), now)
        ctx = invite_stx.context
        if not isinstance(ctx, Forward) or invite_stx.state is not State.PROCEEDING:
            return  # answered here, or already final: the CANCEL has no effect (9.2)
        if ctx.client_tx is None:
            # the branch does not exist yet (name still resolving): nothing to cancel downstream
            self._fail(ctx, 487, now)
        elif ctx.client_tx.state is State.PROCEEDING:
            self._send_cancel(ctx, ctx.client_tx, now)
        elif ctx.client_tx.state is State.CALLING:
            ctx.cancel_pending = True

    def _send_cancel(self, ctx: Forward, client_tx: Transaction, now: float) -> None:
        ctx.cancel_pending = False
        self.core.send_request(derived_request(ctx.request, "CANCEL"), client_tx.peer, now)

    # ------------------------------------------------------------------ responses

    def on_response(self, client_tx: Transaction, response: Response, now: float) -> None:
        """16.7: relay through the server transaction; a 100 stops here; CANCELs' answers too."""
        ctx = client_tx.context
        if not isinstance(ctx, Forward):
            return
        if response.status < 200 and ctx.cancel_pending:
            self._send_cancel(ctx, client_tx, now)
        if response.status == 100:
            return
        if response.status < 200:
            if ctx.timer_c is not None:
                self._arm_timer_c(ctx, now)  # 16.7 item 2: a provisional restarts Timer C
        else:
            self.core.cancel_timer(ctx.timer_c)
        response.pop_via()
        self.core.respond(ctx.server_tx, response, now)

    def on_stray_response(self, response: Response, peer: Peer, now: float) -> None:
        """A response of no transaction (a late 2xx retransmission): relay it statelessly."""
        top = response.top_via
        if top is None or top.host.lower() not in self.local.hosts or len(response.vias) < 2:
            return
        response.pop_via()
        next_via = response.top_via
        assert next_via is not None
        self.core.send_stateless(response, response_peer(next_via, None), now)

    def on_client_timeout(self, client_tx: Transaction, now: float) -> None:
        self._branch_failed(client_tx, 408, now)

    def on_client_error(self, client_tx: Transaction, now: float) -> None:
        self._branch_failed(client_tx, 503, now)

    def on_server_terminated(self, server_tx: Transaction, now: float) -> None:
        ctx = server_tx.context
        if isinstance(ctx, Forward):
            self.core.cancel_timer(ctx.timer_c)

    def _branch_failed(self, client_tx: Transaction, status: int, now: float) -> None:
        ctx = client_tx.context
        if isinstance(ctx, Forward) and ctx.client_tx is client_tx:
            self._fail(ctx, status, now)

    def _fail(self, ctx: Forward, status: int, now: float) -> None:
        """Answer the request ourselves; a no-op once a final response went upstream."""
        self.core.cancel_timer(ctx.timer_c)
        request = ctx.server_tx.request
        self.core.respond(ctx.server_tx, make_response(request, status), now)

    # ------------------------------------------------------------------ Timer C

    def _arm_timer_c(self, ctx: Forward, now: float) -> None:
        self.core.cancel_timer(ctx.timer_c)
        ctx.timer_c = self.core.call_at(now + self.core.settings.timer_c, lambda t: self._timer_c(ctx, t))

    def _timer_c(self, ctx: Forward, now: float) -> None:
        """16.8: cancel a branch that had a provisional, else answer 408 for it."""
        ctx.timer_c = None
        if ctx.client_tx is not None and ctx.client_tx.state is State.PROCEEDING:
            self._send_cancel(ctx, ctx.client_tx, now)
        else:
            self._fail(ctx, 408, now)
