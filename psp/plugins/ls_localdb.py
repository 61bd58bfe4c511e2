"""The ``ls_localdb`` plugin: the location service for our own domains (RFC 3261 16.5, 10).

At LAST, for a request whose R-URI is ours, REGISTER excepted (its R-URI names the
registrar's domain, not somebody to look up: RFC 3261 10.2; when ``rgstrar`` does not
take it, the chain answers 404, never this plugin's 484):

* no user part: 484 (PROPOSE) - there is nobody to look up;
* the address-of-record (``psp.registrar.aor_of``) is looked up in the location store,
  and the permanent contacts of the static users ([userinfo] ``contact``) are added;
* bindings become locations with their q and their Path as route set (RFC 3327), and
  the [localdb] ``mode`` decides (MANDATE): ``sf_forking`` forks to all of them,
  ``sf_sequential`` tries them by q, ``statefull`` forwards to the best one only (the
  original's default single contact), ``redirect`` answers 302 with all of them;
* a user we know (a static user, or one with stored bindings) with no live binding gets
  480, anyone else 404; both only PROPOSE, so a later plugin may still route the request.

``record-route`` of the section asks the proxy to stay on the path.
"""

from __future__ import annotations

import math
from typing import Any

from psp.location import Binding, same_contact
from psp.plugins.base import Decision, Level, Location, RequestContext, RoutingPlugin, State
from psp.registrar import aor_of
from psp.uri import URI, parse_uri


def binding_location(binding: Binding, now: float) -> Location:
    """A stored binding as a location: its contact, q, Path and remaining lifetime."""
    expires = None if binding.expires_at == math.inf else max(0, int(binding.expires_at - now))
    return Location(parse_uri(binding.contact), binding.q, binding.path, expires)


class LocalDb(RoutingPlugin):
    """Finds the contacts registered (or configured) for a local address-of-record."""

    name = "ls_localdb"
    levels = {"on_request": Level.LAST}

    def reload(self, section: Any) -> None:
        super().reload(section)
        # AOR -> permanent contacts; users with no contact are still known (480, not 404).
        self.static: dict[str, list[str]] = {}
        for user in self.services.users:
            contacts = self.static.setdefault(aor_of(parse_uri(user.aor)), [])
            if user.contact:
                contacts.append(user.contact)

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        request = ctx.request
        uri = request.uri
        if request.method == "REGISTER" or not isinstance(uri, URI) or not ctx.is_local(uri):
            return
        if not uri.user:
            decision.answer(484, State.PROPOSE)
            return
        aor = aor_of(uri)
        locations = self.locations(aor, ctx.now)
        if locations:
            if self.mode == "statefull":
                locations = locations[:1]
            decision.by_mode(self.mode, locations, record_route=self.record_route)
        elif aor in self.static or self.services.store.bindings(aor):
            decision.answer(480, State.PROPOSE)
        else:
            decision.answer(404, State.PROPOSE)

    def locations(self, aor: str, now: float) -> list[Location]:
        """Live bindings then static contacts not already bound, best q first."""
        bindings = self.services.store.lookup(aor, now)
        found = [binding_location(binding, now) for binding in bindings]
        for contact in self.static.get(aor, ()):
            if not any(same_contact(binding.contact, contact) for binding in bindings):
                found.append(Location(parse_uri(contact)))
        # sort() is stable: the store's order (most recent first) breaks q ties.
        found.sort(key=lambda location: -location.q)
        return found
