"""The ``ls_static`` plugin: a static routing table and reject list (RFC 3261 16.5).

At FIRST, in this order:

* ``forward <host> <newhost>``: the first rule whose host equals the R-URI host (case
  insensitive) retargets the request to the same URI with ``newhost`` (``name``,
  ``name:port`` or ``[v6]:port``) as host - forwarded, or redirected with ``mode redirect``
  - MANDATE;
* ``reject <host|*> <code>``: the first rule whose host matches (``*``: every request,
  ours included) answers ``code``, MANDATE;
* otherwise a request for one of our domains gets 404, PROPOSE: the default answer that
  the location plugins usually overwrite.
"""

from __future__ import annotations

from typing import Any

from psp.errors import ParseError
from psp.plugins.base import (
    Decision, Level, Location, PluginError, RoutingPlugin, RequestContext, State,
)
from psp.uri import URI, AbsoluteURI, parse_uri


def new_host(text: str) -> tuple[str, int | None]:
    """``newhost`` of a forward rule as (host, port)."""
    try:
        uri = parse_uri(f"sip:{text}")
    except ParseError as error:
        raise PluginError(f"forward: {text!r} is not host[:port]") from error
    if not isinstance(uri, URI) or uri.user is not None or uri.params or uri.headers:
        raise PluginError(f"forward: {text!r} is not host[:port]")
    return uri.host, uri.port


class Static(RoutingPlugin):
    """Rewrites the R-URI host by table, or rejects by table."""

    name = "ls_static"
    levels = {"on_request": Level.FIRST}

    def reload(self, section: Any) -> None:
        super().reload(section)
        forwards = section.forward if section is not None else ()
        self.forwards = [(rule.host, new_host(rule.newhost)) for rule in forwards]
        self.rejects = list(section.reject) if section is not None else []

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        uri = ctx.request.uri
        target = self.retarget(uri)
        if target is not None:
            decision.by_mode(self.mode, [Location(target)], record_route=self.record_route)
            return
        host = uri.host.lower() if isinstance(uri, URI) else None
        for rule in self.rejects:
            if rule.host == "*" or rule.host == host:
                decision.answer(rule.code, State.MANDATE)
                return
        if ctx.is_local(uri):
            decision.answer(404, State.PROPOSE)

    def retarget(self, uri: URI | AbsoluteURI) -> URI | None:
        """The R-URI with its host rewritten by the first matching forward rule, if any."""
        if not isinstance(uri, URI):
            return None
        host = uri.host.lower()
        for match, (target, port) in self.forwards:
            if match == host:
                return uri.copy(host=target, port=uri.port if port is None else port)
        return None
