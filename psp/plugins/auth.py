"""The ``auth`` plugin: Digest authentication in the chain (RFC 3261 22.1, 22.3; 16.3 item 6).

It wraps ``psp.digest.Authenticator`` (the services' one): at REALLY_FIRST it checks every
request but ACK and CANCEL (they cannot be resubmitted with credentials) and lets the
authenticator's SipError (401/407 with challenges, 400, 403) become the answer.  When a
request is forwarded, the credentials meant for our realm are removed from the branch copy
(22.3: they are of no use downstream and should not travel further).

A REGISTER is challenged with 401 when we are its registrar, with 407 otherwise; the
``force_use_of_407`` key of [auth] changes that: ``on`` always uses 407, ``detect`` uses
407 for a REGISTER whose UA already answers with Proxy-Authorization (the kind of broken
UA the original's detect mode was written for), ``off`` follows the rule above.
With the global ``authentication off`` (no authenticator) the plugin does nothing.
Credentials that fail are counted in ``services.stats.auth_failures`` by why
(``psp.digest.AuthError.failure``); the challenge of a request without any is not.
"""

from __future__ import annotations

import copy
from typing import Any

from psp.digest import AuthError, Authenticator
from psp.message import Request
from psp.plugins.base import Decision, Level, Plugin, RequestContext, State


def forced_407(authenticator: Authenticator | None) -> Authenticator | None:
    """A view of ``authenticator`` that challenges REGISTER with 407 too.

    A shallow copy: users, secret and the replay table stay shared with the original.
    """
    if authenticator is None or authenticator.force_407:
        return authenticator
    view = copy.copy(authenticator)
    view.force_407 = True
    return view


def _answers_407_way(request: Request) -> bool:
    """A REGISTER that answers with Proxy-Authorization where Authorization belongs."""
    return request.has("Proxy-Authorization") and not request.has("Authorization")


class Auth(Plugin):
    """Challenges requests without valid credentials; strips ours before forwarding."""

    name = "auth"
    levels = {"on_request": Level.REALLY_FIRST}

    def reload(self, section: Any) -> None:
        super().reload(section)
        self.force = section.force_use_of_407 if section is not None else "off"
        self._forced = forced_407(self.services.authenticator)

    def _view(self, ctx: RequestContext) -> Authenticator | None:
        """The authenticator that decides 401 or 407 for this request (None: auth is off)."""
        if self.services.authenticator is None or not self.services.settings.authentication:
            return None
        request = ctx.request
        if request.method != "REGISTER" or self.force == "on" or not ctx.is_local(request.uri):
            return self._forced
        if self.force == "detect" and _answers_407_way(request):
            return self._forced
        return self.services.authenticator

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        view = self._view(ctx)
        if view is not None:
            # The authenticator itself lets ACK and CANCEL through (RFC 3261 22.1).
            try:
                ctx.notes[self.name] = view.check(ctx.request, ctx.now)
            except AuthError as error:
                if error.failure is not None:
                    self.services.stats.auth_failures[error.failure] += 1
                raise

    def on_forward(self, ctx: RequestContext, request: Request) -> State | None:
        view = self._view(ctx)
        if view is not None:
            view.strip(request)
        return None
