"""The proxy context of one forwarded request: RFC 3261 16.6 to 16.10.

A :class:`ProxyContext` is the response context of RFC 3261 16.7: one server transaction
and the :class:`Branch` es the request was forwarded on, one per location (target, 16.5).
It lives in ``server_tx.context``; each branch is the ``context`` of its client
transactions.

* **Branches** (16.6): FORK starts every location at once, SEQ one after the other by q,
  the next one when the current one ends with a non-2xx final response or a timeout.  A
  branch's next hop is located through RFC 3263; on a transport error, a timeout or a 503
  the next address of that hop is tried on a new client transaction (RFC 3263 4.3).
* **Responses** (16.7): a 100 is absorbed; other provisionals are forwarded and restart
  the branch's Timer C (step 2, INVITE only); every 2xx is forwarded (step 5), later ones
  statelessly once the server transaction is done; non-2xx finals are kept until every
  branch has ended, then psp/selection.py picks the best one (steps 6-7).  A 2xx or a
  6xx ends the search: pending branches are cancelled and no new branch starts (step 10).
* **Timer C** (16.8): when it fires, a branch that had a provisional is cancelled; one
  without is treated as if it had answered 408 (and is cancelled if a provisional ever
  comes).  A cancelled branch that sends no final response within 64*T1 is given up.
* **CANCEL** (16.10, 9.1): every pending branch is cancelled, but a CANCEL is only sent
  on a branch that had a provisional; the others get it when their first provisional
  arrives, or end by their own timers.  The 487s come back as the final response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from psp import forwarding
from psp.errors import SipError
from psp.events import Peer
from psp.message import Request, Response
from psp.plugins.base import Decision, Location, Mode, RequestContext
from psp.routing import next_hop
from psp.selection import best_response
from psp.timers import TimerHandle
from psp.transaction import State, Transaction, derived_request

if TYPE_CHECKING:
    from psp.proxy import Proxy


@dataclass(eq=False)
class Branch:
    """One location of a proxied request and the client transaction serving it now."""

    context: ProxyContext
    request: Request                   # the copy for this location; our Via on top once sent
    targets: tuple[Peer, ...] = ()     # addresses of the next hop, in the order to try
    target: int = 0                    # the one in use
    client_tx: Transaction | None = None
    provisional: bool = False          # a 1xx arrived: a CANCEL may be sent (9.1)
    cancel_wanted: bool = False        # cancelled, or to be once a provisional arrives
    cancel_sent: bool = False
    done: bool = False                 # a final response ended it (or we stood in for one)
    timer: TimerHandle[Any] | None = None   # Timer C, or the wait for a cancelled branch


class ProxyContext:
    """One server transaction, its branches and its response context (module docstring)."""

    def __init__(self, proxy: Proxy, server_tx: Transaction, ctx: RequestContext,
                 decision: Decision) -> None:
        self.proxy = proxy
        self.core = proxy.core
        self.server_tx = server_tx
        self.ctx = ctx
        self.invite = ctx.request.method == "INVITE"
        self.key = proxy.request_key(ctx.request)
        self.record_route = decision.record_route
        self.sequential = decision.mode is Mode.SEQ
        self.waiting: list[Location] = list(decision.locations)
        self.branches: list[Branch] = []
        self.responses: list[Response] = []   # the final non-2xx of every ended branch
        self.stand_ins: list[Response] = []   # those of them we made up
        self.attempts = 0
        self.final_sent = False
        self.cancelled = False  # the UAC sent CANCEL
        self.closed = False     # a 2xx, a 6xx or a CANCEL: no new branch (16.7 step 5)
        server_tx.context = self

    # ------------------------------------------------------------------ branches

    def start(self, now: float) -> None:
        """Forward on the first location (SEQ) or on all of them (FORK)."""
        self._launch(1 if self.sequential else len(self.waiting), now)

    def _launch(self, count: int, now: float) -> None:
        # Every branch exists before any is sent, so that one ending at once (a STOP from
        # on_forward, an unroutable location) cannot settle the context early.
        new = [self._new_branch(self.waiting.pop(0)) for _ in range(count)]
        for branch in new:
            if not branch.done:
                self._send(branch, now)
        self._settle(now)

    def _new_branch(self, location: Location) -> Branch:
        proxy, ctx = self.proxy, self.ctx
        request = forwarding.branch_request(
            ctx.request, location, proxy.local, arrived_on=self.server_tx.peer.transport,
            record_route=self.record_route, add_path=proxy.add_path)
        branch = Branch(self, request)
        self.branches.append(branch)
        if not proxy.chain.run_forward(ctx, request):
            branch.done = True  # a plugin said not to send it: no response of its own
        return branch

    def _send(self, branch: Branch, now: float) -> None:
        try:
            hop = next_hop(branch.request)
        except SipError as error:
            self._finished(branch, self._stand_in(error.status), now)
            return
        self.proxy.locator.locate(hop, partial(self._located, branch),
                                  partial(self._unresolved, branch), now)

    def _located(self, branch: Branch, targets: tuple[Peer, ...], now: float) -> None:
        if branch.done:  # cancelled while the name was being resolved
            return
        branch.targets, branch.target = targets, 0
        self._attempt(branch, now)

    def _unresolved(self, branch: Branch, now: float) -> None:
        if not branch.done:  # no address: as a transport error, 503 (16.9)
            self._finished(branch, self._stand_in(503), now)

    def _attempt(self, branch: Branch, now: float) -> None:
        """Send the branch to its current target on a new client transaction."""
        peer = branch.targets[branch.target]
        if branch.target:  # a fail-over: the earlier attempt's transaction keeps its request
            branch.request = forwarding.retry(branch.request)
        request = forwarding.attempt(branch.request, self.proxy.local, self.key, self.attempts,
                                     peer.transport)
        self.attempts += 1
        branch.provisional = False
        branch.client_tx = self.core.send_request(request, peer, now, context=branch)
        if self.invite:
            self._arm(branch, self.core.settings.timer_c, self._timer_c, now)

    def _fail_over(self, branch: Branch, now: float) -> bool:
        """RFC 3263 4.3: try the next address of the hop; False when there is none to try."""
        self.proxy.locator.target_failed(branch.targets[branch.target], now)
        if branch.cancel_wanted or self.closed or branch.target + 1 >= len(branch.targets):
            return False
        branch.target += 1
        self._attempt(branch, now)
        return True

    def _stand_in(self, status: int) -> Response:
        """A response we make up for a branch that got none (408, 416, 487, 503)."""
        response = self.proxy.local_response(self.server_tx.request, status)
        self.stand_ins.append(response)
        return response

    # ------------------------------------------------------------------ responses

    def on_response(self, branch: Branch, client_tx: Transaction, response: Response,
                    now: float) -> None:
        """16.7: a response from downstream on one of this context's client transactions."""
        if not self.proxy.chain.run_response(self.ctx, response):
            return
        response.pop_via()
        if response.status < 200:
            self._provisional(branch, client_tx, response, now)
        elif response.status < 300:
            self._success(branch, client_tx, response, now)
        elif client_tx is branch.client_tx and not branch.done:
            if response.status != 503 or not self._fail_over(branch, now):
                self._finished(branch, response, now)

    def on_failure(self, branch: Branch, client_tx: Transaction, status: int, now: float) -> None:
        """Timer B/F (``status`` 408) or a transport error (503) ended a client transaction."""
        if client_tx is branch.client_tx and not branch.done and not self._fail_over(branch, now):
            self._finished(branch, self._stand_in(status), now)

    def _provisional(self, branch: Branch, client_tx: Transaction, response: Response,
                     now: float) -> None:
        if client_tx is not branch.client_tx:
            return
        branch.provisional = True
        if branch.cancel_wanted:
            if not branch.cancel_sent and client_tx.state is State.PROCEEDING:
                self._send_cancel(branch, now)
            return
        if branch.done or response.status == 100:
            return
        if self.invite:
            self._arm(branch, self.core.settings.timer_c, self._timer_c, now)
        if not self.final_sent:
            self._upstream(response, now)

    def _success(self, branch: Branch, client_tx: Transaction, response: Response,
                 now: float) -> None:
        if client_tx is branch.client_tx and not branch.done:
            branch.done = True
            self.core.cancel_timer(branch.timer)
        first = not self.final_sent
        self.final_sent = self.closed = True
        if first or self.invite:  # every 2xx to an INVITE goes up (16.7 step 5)
            self._upstream(response, now)
        if first:
            self._cancel_pending(now)

    def _finished(self, branch: Branch, response: Response | None, now: float) -> None:
        """``branch`` ended with the final non-2xx ``response`` (None: it was never sent)."""
        branch.done = True
        self.core.cancel_timer(branch.timer)
        branch.timer = None
        if response is not None:
            self.responses.append(response)
            if response.status >= 600 and not self.closed:
                self.closed = True
                self._cancel_pending(now)
        self._settle(now)

    def _settle(self, now: float) -> None:
        """Once no branch is pending: the next location (SEQ) or the best response upstream."""
        if self.final_sent or any(not branch.done for branch in self.branches):
            return
        if self.waiting and not self.closed:
            self._launch(1, now)
            return
        self.final_sent = True
        best = best_response(self.server_tx.request, self.responses, self.stand_ins,
                             make=self.proxy.local_response)
        self._upstream(best, now)

    def _upstream(self, response: Response, now: float) -> None:
        """Send ``response`` through the server transaction, or statelessly for a late 2xx.

        A final response a plugin refuses to send leaves nothing to wait for: the server
        transaction is abandoned (a no-op once it answered), as for a STOPped request.
        """
        tx = self.server_tx
        if not self.proxy.chain.run_send_response(self.ctx, response):
            if response.status >= 200:
                self.core.abandon(tx, now)
            return
        late = tx.state not in (State.TRYING, State.PROCEEDING, State.ACCEPTED)
        if late and self.invite and 200 <= response.status < 300:
            self.core.send_stateless(response, tx.peer, now)
        else:
            self.core.respond(tx, response, now)

    # ------------------------------------------------------------------ CANCEL and timers

    def cancel(self, now: float) -> None:
        """16.10: the UAC cancelled the INVITE (its CANCEL was answered 200 already)."""
        if self.final_sent or self.cancelled:
            return
        self.cancelled = self.closed = True
        self._cancel_pending(now)
        self._settle(now)

    def server_gone(self, now: float) -> None:
        """The server transaction ended (its timers, or a transport error upstream): stop
        every branch, then let go of them.

        Nothing reads the list once the final response is sent, and each branch still points
        here: a cycle that only the garbage collector's full scans would free
        (docs/performance.md).  Branches still waiting keep this context alive themselves.
        """
        if not self.final_sent:
            self.final_sent = self.closed = True
            self._cancel_pending(now)
        self.branches = []

    def _cancel_pending(self, now: float) -> None:
        if not self.invite:  # 9.1: a non-INVITE request is never cancelled
            return
        for branch in self.branches:
            if not branch.done and not branch.cancel_wanted:
                self._cancel_branch(branch, now)

    def _cancel_branch(self, branch: Branch, now: float) -> None:
        branch.cancel_wanted = True
        if branch.client_tx is None:  # still resolving: nothing was sent, nothing to cancel
            self._finished(branch, self._stand_in(487), now)
        elif branch.provisional and branch.client_tx.state is State.PROCEEDING:
            self._send_cancel(branch, now)

    def _send_cancel(self, branch: Branch, now: float) -> None:
        tx = branch.client_tx
        assert tx is not None
        branch.cancel_sent = True
        self.core.send_request(derived_request(tx.request, "CANCEL"), tx.peer, now)
        self._arm(branch, 64 * self.core.settings.t1, self._give_up, now)

    def _arm(self, branch: Branch, delay: float, fire: Callable[[Branch, float], None],
             now: float) -> None:
        self.core.cancel_timer(branch.timer)
        branch.timer = self.core.call_at(now + delay, partial(fire, branch))

    def _timer_c(self, branch: Branch, now: float) -> None:
        """16.8: cancel a branch that had a provisional; one without has as good as said 408."""
        branch.timer = None
        if branch.done:
            return
        branch.cancel_wanted = True
        if branch.provisional:
            self._send_cancel(branch, now)
        else:
            self._finished(branch, self._stand_in(408), now)

    def _give_up(self, branch: Branch, now: float) -> None:
        """A cancelled branch never sent its final response: end it for it."""
        branch.timer = None
        if not branch.done:
            self._finished(branch, self._stand_in(487 if self.cancelled else 408), now)
