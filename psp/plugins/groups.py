"""The ``groups`` plugin: hunt groups (RFC 3261 16.5 target sets, 16.6 forking).

At FIRST, a request whose R-URI user part is a group's
name - and whose host is the group's ``domain`` when one is set, or else one of our own
domains - goes to the group's members, MANDATE: all at once (group ``mode sf_forking``)
or one after the other in the listed order (``mode sf_sequential``; the original parsed
that mode but always forked).  With the section's ``mode redirect`` the members are
returned in a 302 instead.

[groups] holds one subsection per group, named after it: ``members`` (URIs), ``mode``,
``domain``.  The original matched a group without a domain on any host, foreign ones
included; we require the R-URI to be ours then.
"""

from __future__ import annotations

from typing import Any

from psp.plugins.base import Decision, Level, Location, RequestContext, RoutingPlugin
from psp.settings import Group
from psp.uri import URI, parse_uri


class Groups(RoutingPlugin):
    """Expands a group's address into its members."""

    name = "groups"
    levels = {"on_request": Level.FIRST}

    def reload(self, section: Any) -> None:
        super().reload(section)
        self.groups = tuple(section.groups) if section is not None else ()
        self.members = {group.name: tuple(Location(parse_uri(uri)) for uri in group.members)
                        for group in self.groups}

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        uri = ctx.request.uri
        if not isinstance(uri, URI) or not uri.user:
            return
        for group in self.groups:
            if _addresses(group, uri, ctx):
                mode = "redirect" if self.mode == "redirect" else group.mode
                decision.by_mode(mode, self.members[group.name], record_route=self.record_route)
                return


def _addresses(group: Group, uri: URI, ctx: RequestContext) -> bool:
    """Whether ``uri`` is the group's address (19.1.4: user case-sensitive, host not)."""
    if group.name != uri.user:
        return False
    if group.domain is None:
        return ctx.is_local(uri)
    return group.domain == uri.host.lower()
