"""The ``ls_sfull`` plugin ("stateful for foreign"): relay requests for other domains.

RFC 3261 16.5: when the R-URI names a domain this proxy is not responsible for, the R-URI
itself is the only target.  At LAST, a request whose R-URI is not ours is forwarded to
its R-URI, MANDATE (``mode statefull``); a preloaded Route set stays its next hop (16.6
item 6).  Without this plugin (or ``ls_static``, ``filter``, ``groups``) such a request
gets 403: we are no open relay.  A non-SIP R-URI (``tel:``) is left alone, as no SIP next
hop can be derived from it.  The original's ``mode redirect`` answered 302 with the
R-URI itself, which 8.3 forbids ("MUST NOT redirect a request to a URI equal to the one in
the Request-URI": a UA using us as outbound proxy would retry forever); a redirect server
refuses what it cannot redirect elsewhere, so that mode proposes 404.  Requests for our
domains are left to ``ls_localdb``.  The original's own Route checks are
the proxy's RFC 3261 16.4 pre-processing now.
"""

from __future__ import annotations

from psp.plugins.base import Decision, Level, Location, RequestContext, RoutingPlugin, State
from psp.uri import URI


class Sfull(RoutingPlugin):
    """Forwards (or redirects) requests whose R-URI is not one of ours."""

    name = "ls_sfull"
    levels = {"on_request": Level.LAST}

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        uri = ctx.request.uri
        # A tel: or other non-SIP R-URI has no SIP next hop: only filter can retarget it.
        if not isinstance(uri, URI) or ctx.is_local(uri):
            return
        if self.mode == "redirect":
            decision.answer(404, State.PROPOSE)
        else:
            decision.forward([Location(uri)], record_route=self.record_route)
