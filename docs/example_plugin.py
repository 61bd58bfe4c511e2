"""An example third-party plugin: refuse some user agents, mark what we forward.

Load it by dotted path, with this directory on ``sys.path`` (``PYTHONPATH=docs``)::

    plugins = syntax example_plugin:RejectUserAgent auth rgstrar ls_localdb
    plugins_config = syntax screening auth rgstrar localdb

    [screening]
    user_agents = "friendly-scanner", sipvicious
    mark = X-Screened

Every request whose User-Agent contains one of ``user_agents`` (case-insensitive) is
answered 403 before any other plugin looks at it; every request that passed and is
forwarded carries the header named by ``mark`` (none when the key is absent).  See
docs/plugins.md for the contract this class follows.
"""

from __future__ import annotations

from typing import Any

from psp.errors import SipError
from psp.message import Request
from psp.plugins.base import Decision, Level, Plugin, RequestContext, State


class RejectUserAgent(Plugin):
    """403 for configured User-Agent substrings; a marker header on forwarded requests."""

    name = "reject_ua"
    levels = {"on_request": Level.REALLY_FIRST}

    def reload(self, section: Any) -> None:
        super().reload(section)
        values = section.values if section is not None else {}
        agents = values.get("user_agents", ())
        # configobj gives a lone value as a string, several as a list.
        agents = (agents,) if isinstance(agents, str) else agents
        self.agents = tuple(agent.lower() for agent in agents)
        self.mark = values.get("mark")

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        agent = (ctx.request.header("User-Agent") or "").lower()
        if any(banned in agent for banned in self.agents):
            raise SipError(f"user agent {agent!r} refused", status=403)

    def on_forward(self, ctx: RequestContext, request: Request) -> State | None:
        if self.mark:
            request.set_header(self.mark, "yes")
        return None
