"""The ``rgstrar`` plugin: the registrar in the chain (RFC 3261 10.3).

At FIRST, a REGISTER (not a routed one: the plugin ``retargets``, so the chain keeps
those from it) is handed to ``psp.registrar.Registrar.handle`` with the location store.
When the registrar takes it (its To names one of our domains), its response - the 200
with the bindings, or the SipError it raised (400, 404, 420, 423, ...) - is the answer,
MANDATE.  A REGISTER for another domain is left alone so that it can be forwarded
(``ls_sfull``).  Authentication
is the ``auth`` plugin's, which runs before (REALLY_FIRST).  Each answer of the registrar
is counted in ``services.stats.registrations``: its 200 ``accepted``, its errors
``rejected``.
"""

from __future__ import annotations

import functools

from psp.errors import SipError
from psp.events import Peer
from psp.plugins.base import Decision, Level, Plugin, RequestContext


@functools.lru_cache(maxsize=1024)
def source_text(peer: Peer) -> str:
    """A peer as the registrar records it: "transport:host:port".

    Cached, so that the bindings of UAs behind one address (a NAT, an edge proxy, a load
    generator) share one string instead of 67 bytes each (bench/location_memory.py).
    """
    return f"{peer.transport}:{peer.host}:{peer.port}"


class Rgstrar(Plugin):
    """Answers REGISTER requests for our domains."""

    name = "rgstrar"
    levels = {"on_request": Level.FIRST}
    retargets = True  # it decides that a REGISTER ends here

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        if ctx.request.method != "REGISTER":
            return
        services = self.services
        source = source_text(ctx.source)
        counts = services.stats.registrations
        try:
            response = services.registrar.handle(ctx.request, services.store, ctx.now, source)
        except SipError:
            counts["rejected"] += 1
            raise
        if response is not None:
            counts["accepted"] += 1
            decision.respond(response)
