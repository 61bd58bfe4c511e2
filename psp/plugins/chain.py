"""The plugin chain: built from ``plugins``/``plugins_config``, run for every request.

PartySIP's model (partysip.md 2.1, 2.2), without dlopen:

* **Loading.** ``settings.plugin_chain`` pairs each configured plugin with its section.  A
  built-in name maps to its class; ``pkg.mod:Class`` is imported from outside the package;
  ``udp`` and ``tcp`` are transports, which belong to the rim, and are skipped here.  One
  plugin may appear twice with two sections.
* **Incoming chain.** ``on_request`` hooks run by level (REALLY_FIRST .. REALLY_LAST; one
  level in load order) and stop at the first MANDATE or STOP.  Without a MANDATE the last
  decision written wins.  FINAL hooks then run, unless the request was STOPped.  A plugin
  that raises ``SipError`` answers with that status (a MANDATE): this is the one boundary
  for errors in the chain; any other exception propagates to the caller.
* **Routed requests.** A request in a dialog we record-routed (``ctx.routed``) follows
  its route set: the plugins that pick targets (``Plugin.retargets``) never see it.
* **Settling.** The proxy always receives a usable decision (see :meth:`Chain.settle`):
  RFC 3261 16.5 (a routed request's only target is its R-URI), 8.2 / 16.7 (every
  request gets a final answer), no relaying that no plugin chose, and 17 (an ACK is
  never answered).
* **Other chains.** ``on_forward``, ``on_response`` and ``on_send_response`` run in the
  same order and stop only on STOP.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from psp.errors import SipError
from psp.plugins.auth import Auth
from psp.plugins.base import (
    Decision, Level, Location, Mode, Plugin, PluginError, RequestContext, Services, State,
)
from psp.plugins.filter import Filter
from psp.plugins.groups import Groups
from psp.plugins.ls_localdb import LocalDb
from psp.plugins.ls_sfull import Sfull
from psp.plugins.ls_static import Static
from psp.plugins.rgstrar import Rgstrar
from psp.plugins.syntax import Syntax

BUILTINS: Mapping[str, type[Plugin]] = {
    cls.name: cls for cls in (Syntax, Auth, Rgstrar, LocalDb, Sfull, Static, Filter, Groups)
}
# Transports are plugins in the original; here they are the rim's (psp/transport*.py).
TRANSPORTS = frozenset({"udp", "tcp"})
HOOKS = ("on_request", "on_forward", "on_response", "on_send_response")
# The answer to a request for another domain that no plugin chose to forward.
RELAYING_DENIED = "Relaying Denied"

Hook = Callable[..., Any]
Hooks = tuple[tuple[Level, Plugin, Hook], ...]


def plugin_class(name: str) -> type[Plugin]:
    """The class configured as ``name``: a built-in, or ``pkg.mod:Class`` imported."""
    if name in BUILTINS:
        return BUILTINS[name]
    module_name, colon, attribute = name.partition(":")
    if not colon:
        raise PluginError(f"unknown plugin {name!r}: not one of {' '.join(sorted(BUILTINS))}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PluginError(f"plugin {name!r}: cannot import {module_name}: {error}") from error
    cls = getattr(module, attribute, None)
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginError(f"plugin {name!r}: {attribute} is not a psp.plugins.base.Plugin subclass")
    return cls


@contextlib.contextmanager
def _reading(section: str) -> Iterator[None]:
    """A plugin's refusal of its section names that section, as a configuration error does.

    Plugins name the key and the problem (``forward: 'x' is not host[:port]``); only the
    chain knows which section they were given (``plugins_config`` may rename it).
    """
    try:
        yield
    except PluginError as error:
        raise PluginError(f"[{section}] {error}") from error


def _overrides(plugin: Plugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(Plugin, hook)


def _incoming(hooks: Hooks, routed: bool) -> tuple[tuple[Hook, ...], tuple[Hook, ...]]:
    """The ``on_request`` hooks, then the FINAL ones, that run for a (not) routed request.

    A routed request follows the route set of its dialog (RFC 3261 16.4, 16.6 item 6), so
    the plugins that pick targets are left out: one rule here, not one check in each.
    """
    kept = [(level, hook) for level, plugin, hook in hooks if not (routed and plugin.retargets)]
    return (tuple(hook for level, hook in kept if level is not Level.FINAL),
            tuple(hook for level, hook in kept if level is Level.FINAL))


class Chain:
    """Plugins in load order, their hooks sorted by level, and the rules that run them."""

    def __init__(self, plugins: Iterable[Plugin], config: Iterable[tuple[str, str]] = ()) -> None:
        self.plugins = tuple(plugins)
        self._config = tuple(config)
        self._hooks = {hook: self._ordered(hook) for hook in HOOKS}
        # routed -> (the incoming hooks, the FINAL hooks) for such a request
        self._incoming = {routed: _incoming(self._hooks["on_request"], routed)
                          for routed in (False, True)}

    @classmethod
    def from_settings(cls, settings: Any, services: Services) -> Chain:
        """Build every configured plugin; one that fails closes those built before it."""
        config = tuple((name, section) for name, section in settings.plugin_chain
                       if name not in TRANSPORTS)
        plugins: list[Plugin] = []
        try:
            for name, section in config:
                plugin_type = plugin_class(name)
                with _reading(section):
                    plugins.append(plugin_type(settings.sections.get(section), services))
        except BaseException:
            for plugin in reversed(plugins):
                plugin.close()
            raise
        return cls(plugins, config)

    def _ordered(self, hook: str) -> Hooks:
        found: list[tuple[Level, Plugin, Hook]] = []
        for plugin in self.plugins:
            if not _overrides(plugin, hook):
                continue
            level = plugin.level(hook)
            if level is Level.FINAL and hook != "on_request":
                raise PluginError(f"plugin {plugin.name!r}: FINAL is a level for on_request only")
            found.append((level, plugin, getattr(plugin, hook)))
        # sorted() is stable, so one level keeps the load order.
        return tuple(sorted(found, key=lambda pair: pair[0]))

    def run_request(self, ctx: RequestContext) -> Decision:
        """Run the incoming chain and return the settled decision for ``ctx.request``."""
        decision = Decision()
        incoming, final = self._incoming[ctx.routed]
        for hook in incoming:
            self._call(hook, ctx, decision)
            if decision.final:
                break
        for hook in final:
            if decision.state is State.STOP:
                break
            self._call(hook, ctx, decision)
        self.settle(ctx, decision)
        return decision

    @staticmethod
    def _call(hook: Hook, ctx: RequestContext, decision: Decision) -> None:
        try:
            hook(ctx, decision)
        except SipError as error:
            decision.answer(error.status, State.MANDATE, error.reason, error.headers)

    @staticmethod
    def settle(ctx: RequestContext, decision: Decision) -> None:
        """Make ``decision`` something the proxy can act on without guessing.

        * Nobody decided: a routed request is forwarded to its R-URI (the Route set picks
          the next hop, RFC 3261 16.5/16.6); any other request is answered 404 when its
          R-URI is ours, 403 Relaying Denied when it is not: only a plugin forwards a
          request for another domain (``ls_sfull``, ``ls_static``, ``filter``, ``groups``),
          or we would be an open relay.  The original dropped such requests unanswered.
        * A forward or redirect without locations becomes 404 (as the original's empty 3xx).
        * SEQ locations are ordered by q, highest first; equal q keep their order.
        * An ACK is never answered (RFC 3261 17): a UAS or REDIRECT decision becomes STOP.
        """
        if decision.state is State.STOP:
            return
        request = ctx.request
        if decision.mode is None and ctx.routed:
            decision.forward([Location(request.uri)], decision.state)
        elif decision.mode is None and not ctx.is_local(request.uri):
            decision.answer(403, decision.state, RELAYING_DENIED)
        elif decision.mode is None or (decision.mode is not Mode.UAS and not decision.locations):
            decision.answer(404, decision.state)
        elif decision.mode is Mode.SEQ:
            decision.locations = tuple(sorted(decision.locations, key=lambda loc: -loc.q))
        if request.method == "ACK" and decision.mode in (Mode.UAS, Mode.REDIRECT):
            decision.stop()

    def _run_message(self, hook_name: str, ctx: RequestContext, message: Any) -> bool:
        for _, _, hook in self._hooks[hook_name]:
            if hook(ctx, message) is State.STOP:
                return False
        return True

    def run_forward(self, ctx: RequestContext, request: Any) -> bool:
        """Run ``on_forward`` on a branch copy; False: a plugin STOPped it, do not send it."""
        return self._run_message("on_forward", ctx, request)

    def run_response(self, ctx: RequestContext, response: Any) -> bool:
        """Run ``on_response`` on a response from downstream; False: ignore the response."""
        return self._run_message("on_response", ctx, response)

    def run_send_response(self, ctx: RequestContext, response: Any) -> bool:
        """Run ``on_send_response`` on a response for upstream; False: do not send it."""
        return self._run_message("on_send_response", ctx, response)

    def reload(self, settings: Any, services: Services | None = None) -> None:
        """Give every plugin its (new) section; the list of plugins itself needs a restart."""
        config = tuple((name, section) for name, section in settings.plugin_chain
                       if name not in TRANSPORTS)
        if config != self._config:
            raise PluginError("plugins or plugins_config changed: restart to apply that")
        for plugin, (_, section) in zip(self.plugins, config):
            if services is not None:
                plugin.services = services
            with _reading(section):
                plugin.reload(settings.sections.get(section))

    def close(self) -> None:
        """Close the plugins, last loaded first."""
        for plugin in reversed(self.plugins):
            plugin.close()
