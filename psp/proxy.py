"""The proxy: the transaction user that drives PartySIP's plugin chain (RFC 3261 section 16).

:class:`Proxy` is what the core (psp/core.py) calls for every new request, ACK, CANCEL,
response and client failure.  For a new request it does, in order:

1. 100 Trying at once for an INVITE (16.2);
2. 16.4 Route pre-processing on a copy of the request (psp/routing.py), which also tells
   whether it is routed (in a dialog we record-routed);
3. an OPTIONS addressed to the proxy itself is answered here (RFC 3261 11, 16.3 item 3),
   even with Max-Forwards 0; any other request with Max-Forwards 0 gets 483 (16.3 item 3:
   the one place that checks it, so that no chain can forward such a request);
4. the plugin chain decides (docs/plugins.md), and the decision is carried out: STOP drops
   the request and abandons its server transaction, UAS and REDIRECT answer it locally,
   FORK and SEQ forward it through a :class:`psp.context.ProxyContext` (16.5 to 16.10).

Responses we generate carry ``Server: <banner>/<version>`` (``TU.local_response``);
relayed responses and forwarded requests are left as they are (no User-Agent is added).

ACKs for 2xx (and any ACK no transaction absorbs) go through the same 16.4 and chain and
are relayed statelessly to the first location decided (16.11 style), so that an ACK
cannot be relayed where an INVITE could not; a CANCEL gets 200 whenever its INVITE's
server transaction exists and then cancels that INVITE's branches (16.10), or 481; a
response that matches no transaction is relayed by its Via only when its top Via is ours
(16.7 step 3, 18.2.2), else dropped and counted.  The registrations' expiry runs on the
core's timers.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from psp import branch, forwarding
from psp.context import Branch, ProxyContext
from psp.core import TU, Core, response_peer
from psp.errors import SipError
from psp.events import Peer
from psp.message import Request, Response, server_header
from psp.plugins.base import Decision, Mode, RequestContext, Services, State
from psp.plugins.chain import Chain
from psp.rfc3263 import Blocklist
from psp.routing import Local, Locator, next_hop, preprocess, preprocess_edits
from psp.timers import TimerHandle
from psp.transaction import Transaction
from psp.uri import URI

# What an OPTIONS to the proxy lists: every method it relays or answers.
ALLOW = ("INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, SUBSCRIBE, NOTIFY, "
         "REFER, MESSAGE, PUBLISH")


class Proxy(TU):
    """The transaction user of the core: validation, the chain, and forwarding (module doc)."""

    def __init__(self, local: Local, chain: Chain, services: Services, *,
                 blocklist: Blocklist | None = None, add_path: bool = False,
                 server: str | None = None) -> None:
        self.local = local
        self.chain = chain
        self.services = services
        self.blocklist = blocklist
        self.add_path = add_path
        self.server = server
        self.stats = {"stray_dropped": 0, "stopped": 0}
        self._expiry: TimerHandle[Any] | None = None
        self._expiry_at: float | None = None

    @classmethod
    def from_settings(cls, settings: Any, chain: Chain, services: Services,
                      blocklist: Blocklist | None = None) -> Proxy:
        """The proxy partysip.conf describes (serverip, servername, ports, rfc3327, banner)."""
        local = Local.from_settings(settings, services.secret)
        return cls(local, chain, services, blocklist=blocklist, add_path=settings.rfc3327,
                   server=server_header(settings.banner))

    def attach(self, core: Core) -> None:
        super().attach(core)
        self.locator = Locator(core, self.blocklist, udp=self.local.udp)
        self._arm_expiry()

    def request_key(self, request: Request) -> str:
        """The loop-detecting key of the branches of ``request`` (psp/branch.py)."""
        return branch.request_key(request, self.services.secret)

    # ------------------------------------------------------------------ new requests

    def on_request(self, server_tx: Transaction, request: Request, now: float) -> None:
        if request.method == "INVITE":
            self.core.respond(server_tx, self.local_response(request, 100), now)
        # 16.4 edits the request the chain sees; the server transaction keeps the original
        # (its responses copy its Via, From, To, Call-ID and CSeq, RFC 2543 matching its
        # R-URI), so it gets a copy first, when there is anything to edit.
        copy = request.copy() if preprocess_edits(request) else request
        routed = preprocess(copy, self.local)
        if self._for_us(copy):
            self._answer(server_tx, None, self.local_response(request, 200, headers=[("Allow", ALLOW)]),
                         now)
            return
        ctx, decision = self._decide(copy, routed, server_tx.peer, now)
        self._carry_out(server_tx, ctx, decision, now)

    def _decide(self, request: Request, routed: bool, peer: Peer,
                now: float) -> tuple[RequestContext, Decision]:
        """16.3 item 3, then the chain, for ``request`` after 16.4 (a new request or an ACK).

        Raises SipError 483 for Max-Forwards 0: no plugin sees a request we must not forward.
        """
        if request.max_forwards == 0:
            raise SipError("Max-Forwards reached 0", status=483)
        ctx = RequestContext(request, peer, now, routed, self.local.is_local, self.services)
        decision = self.chain.run_request(ctx)
        self._arm_expiry()  # the chain may have registered or removed bindings
        return ctx, decision

    def _for_us(self, request: Request) -> bool:
        """An OPTIONS for the proxy itself: no Route left and a user-less R-URI of ours."""
        uri = request.uri
        return (request.method == "OPTIONS" and not request.routes and isinstance(uri, URI)
                and uri.user is None and self.local.is_local(uri))

    def _carry_out(self, server_tx: Transaction, ctx: RequestContext, decision: Decision,
                   now: float) -> None:
        """Act on the chain's settled decision (docs/proxy.md, the decision table)."""
        if decision.state is State.STOP:
            self.stats["stopped"] += 1
            self.core.abandon(server_tx, now)
        elif decision.mode in (Mode.UAS, Mode.REDIRECT):
            if decision.response is not None:  # built by a plugin or the registrar: still ours
                response = self.stamp(decision.response)
            else:
                assert decision.status is not None  # the chain settles UAS/REDIRECT with one
                response = self.local_response(server_tx.request, decision.status, decision.reason,
                                               decision.local_headers())
            self._answer(server_tx, ctx, response, now)
        else:
            ProxyContext(self, server_tx, ctx, decision).start(now)

    def _answer(self, server_tx: Transaction, ctx: RequestContext | None, response: Response,
                now: float) -> None:
        """A response of our own; the plugins' on_send_response sees it when there is a context.

        A plugin that refuses to send it leaves the request unanswered, as a STOP does.
        """
        if ctx is None or self.chain.run_send_response(ctx, response):
            self.core.respond(server_tx, response, now)
        else:
            self.core.abandon(server_tx, now)

    # ------------------------------------------------------------------ ACK and CANCEL

    def on_ack(self, request: Request, peer: Peer, now: float) -> None:
        """An ACK for a 2xx: relayed statelessly to where the chain sends it, or dropped.

        It is never answered (RFC 3261 17): Max-Forwards 0, a local decision (the chain
        turns it into STOP) or no SIP next hop drop it.
        """
        ack = request  # no transaction keeps an ACK for a 2xx: 16.4 may edit it in place
        routed = preprocess(ack, self.local)
        try:
            _, decision = self._decide(ack, routed, peer, now)
        except SipError:
            return
        if decision.state is State.STOP:
            return
        # An ACK cannot fork: its dialog is with one UAS, the first location.
        relayed = forwarding.branch_request(ack, decision.locations[0], self.local,
                                            arrived_on=peer.transport, record_route=False,
                                            add_path=False)
        try:
            hop = next_hop(relayed)
        except SipError:
            return
        key = self.request_key(ack)
        self.locator.locate(hop, partial(self._send_ack, relayed, key), lambda now: None, now)

    def _send_ack(self, ack: Request, key: str, targets: tuple[Peer, ...], now: float) -> None:
        forwarded = forwarding.attempt(ack, self.local, key, 0, targets[0].transport)
        self.core.send_stateless(forwarded, targets[0], now)

    def on_cancel(self, cancel_stx: Transaction, invite_stx: Transaction | None, now: float) -> None:
        """16.10: 200 whenever the INVITE's server transaction exists, then cancel its branches."""
        if invite_stx is None:
            raise SipError("no transaction to cancel", status=481)
        self.core.respond(cancel_stx, self.local_response(cancel_stx.request, 200), now)
        context = invite_stx.context
        if isinstance(context, ProxyContext):
            context.cancel(now)

    # ------------------------------------------------------------------ responses and failures

    def on_response(self, client_tx: Transaction, response: Response, now: float) -> None:
        owner = client_tx.context
        if isinstance(owner, Branch):  # else: the answer to one of our CANCELs, kept here
            owner.context.on_response(owner, client_tx, response, now)

    def on_client_timeout(self, client_tx: Transaction, now: float) -> None:
        owner = client_tx.context
        if isinstance(owner, Branch):
            owner.context.on_failure(owner, client_tx, 408, now)

    def on_client_error(self, client_tx: Transaction, now: float) -> None:
        owner = client_tx.context
        if isinstance(owner, Branch):  # 16.9: a transport error counts as a 503
            owner.context.on_failure(owner, client_tx, 503, now)

    def on_server_terminated(self, server_tx: Transaction, now: float) -> None:
        context = server_tx.context
        if isinstance(context, ProxyContext):
            context.server_gone(now)

    def on_stray_response(self, response: Response, peer: Peer, now: float) -> None:
        """A response of no transaction (a late 2xx): relayed by the next Via if the top one is ours."""
        vias = response.vias
        if len(vias) < 2 or not self.local.is_our_via(vias[0]) or branch.key_of(vias[0].branch) is None:
            self.stats["stray_dropped"] += 1
            return
        response.pop_via()
        upstream = response.top_via
        assert upstream is not None  # there were two Vias
        self.core.send_stateless(response, response_peer(upstream, None), now)

    # ------------------------------------------------------------------ registrations

    def _arm_expiry(self) -> None:
        """Run the location store's expiry at its next deadline (on the core's timer heap)."""
        due = self.services.store.next_expiry()
        if due is None or (self._expiry_at is not None and self._expiry_at <= due):
            return
        self.core.cancel_timer(self._expiry)
        self._expiry_at = due
        self._expiry = self.core.call_at(due, self._expire)

    def _expire(self, now: float) -> None:
        self._expiry = self._expiry_at = None
        self.services.store.expire(now)
        self._arm_expiry()
