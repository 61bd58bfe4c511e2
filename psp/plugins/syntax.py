"""The ``syntax`` plugin: a proxy's request validation, RFC 3261 16.3 items 2 to 5.

Runs at REALLY_FIRST for every method and, in the RFC's order:

2. the R-URI scheme must be in ``allowed_schemes`` ([syntax], default sip sips), else 416;
4. a loop gets 482, a spiral passes (psp/branch.py explains how they are told apart);
5. every Proxy-Require option is unsupported: 420 with all of them in ``Unsupported``
   (CANCEL excepted, RFC 3261 8.2.2.3).

Item 1 (reasonable syntax: mandatory headers present, CSeq method matching) is the
parser's, which raises ParseError before a request ever reaches the chain.  Item 3
(Max-Forwards 0: 483) is the proxy's, before the chain, so that no configuration of the
chain can forward such a request (psp/proxy.py).
"""

from __future__ import annotations

from typing import Any

from psp.branch import is_loop
from psp.errors import SipError
from psp.plugins.base import Decision, Level, Plugin, RequestContext


class Syntax(Plugin):
    """Rejects what a proxy must not forward: 416, 482, 420."""

    name = "syntax"
    levels = {"on_request": Level.REALLY_FIRST}

    def reload(self, section: Any) -> None:
        super().reload(section)
        schemes = section.allowed_schemes if section is not None else ("sip", "sips")
        self.allowed_schemes = frozenset(scheme.lower() for scheme in schemes)

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        request = ctx.request
        if request.uri.scheme.lower() not in self.allowed_schemes:
            raise SipError(f"R-URI scheme {request.uri.scheme!r} not allowed", 416)
        if is_loop(request, self.services.secret):
            raise SipError("the request looped back unchanged", 482)
        # 8.2.2.3: CANCEL carries no Proxy-Require that counts, and it must always be
        # able to cancel what its INVITE started.
        options = request.header_values("Proxy-Require") if request.method != "CANCEL" else []
        if options:
            # 16.3 item 5 and 8.2.2.3: list every option we do not support (all of them).
            raise SipError("unsupported Proxy-Require", 420,
                           headers=[("Unsupported", ", ".join(options))])
