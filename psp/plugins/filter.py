"""The ``filter`` plugin: R-URI rewriting by regular expressions (RFC 3261 16.5 targets).

At MIDDLE, for a request whose R-URI is in
``filter_scope`` (``internal``: ours, ``external``: not ours, ``both``), the R-URI text is
searched with each ``forward`` rule's regex in order (case-insensitive, unanchored like
the original's POSIX ``regexec``).  The first match yields one location: the rule's
replacement URI with ``%1`` .. ``%9`` replaced by the match's groups (the original knew
``%1`` and ``%2`` only; an unmatched group is empty).  It is forwarded, or redirected with
``mode redirect``, MANDATE.  With no match the request gets 404, PROPOSE.

A typical use turns ``tel:`` URIs into SIP URIs of a gateway (allow ``tel`` in [syntax]).
A replacement naming one of our own domains sends the request back to us as a spiral, so
that the location plugins then look it up.
"""

from __future__ import annotations

import re
from typing import Any

from psp.plugins.base import Decision, Level, Location, RequestContext, RoutingPlugin, State
from psp.uri import parse_uri

_GROUP = re.compile(r"%([1-9])")


def substitute(template: str, match: re.Match[str]) -> str:
    """``template`` with %N replaced by group N of ``match`` ('' when absent or unmatched)."""
    def group(ref: re.Match[str]) -> str:
        index = int(ref.group(1))
        return (match.group(index) or "") if index <= (match.re.groups) else ""
    return _GROUP.sub(group, template)


class Filter(RoutingPlugin):
    """Retargets requests whose R-URI matches a configured regex."""

    name = "filter"
    levels = {"on_request": Level.MIDDLE}

    def reload(self, section: Any) -> None:
        super().reload(section)
        self.scope = section.filter_scope if section is not None else "both"
        self.rules = tuple(section.forward) if section is not None else ()

    def in_scope(self, ctx: RequestContext) -> bool:
        if self.scope == "both":
            return True
        return ctx.is_local(ctx.request.uri) == (self.scope == "internal")

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        if not self.in_scope(ctx):
            return
        text = str(ctx.request.uri)
        for rule in self.rules:
            match = rule.regex.search(text)
            if match is not None:
                target = parse_uri(substitute(rule.replacement, match))
                decision.by_mode(self.mode, [Location(target)], record_route=self.record_route)
                return
        decision.answer(404, State.PROPOSE)
