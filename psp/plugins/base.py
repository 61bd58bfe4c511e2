"""The plugin API: what a plugin sees, what it may decide, and the class it extends.

PartySIP routes every new request through a chain of plugins (partysip.md section 2;
docs/plugins.md).  This module holds the vocabulary of that chain and nothing else:

* :class:`Level`, :class:`Mode`, :class:`State`: the original's hook priorities, request
  modes (PSP_UAS_MODE, PSP_SFULL_MODE = PSP_FORK_MODE, PSP_SEQ_MODE, plus redirect) and
  chain states (PSP_CONTINUE, PSP_PROPOSE, PSP_MANDATE, PSP_STOP);
* :class:`Location`: one target of a forward or of a 3xx (RFC 3261 16.5, 21.3; RFC 3327);
* :class:`Decision`: what the incoming chain decided for one request;
* :class:`RequestContext` and :class:`Services`: what every hook is given, with the
  counters plugins keep for the metrics scrape (:class:`ServiceStats`);
* :class:`Plugin`: the base class, whose docstring is the extension contract.

Running the chain is psp/plugins/chain.py's job; acting on a Decision is the proxy's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # annotations only: the services are built by the rim and passed in
    from psp.digest import Authenticator
    from psp.events import Peer
    from psp.location import LocationStore
    from psp.message import Request, Response
    from psp.registrar import Registrar
    from psp.settings import Settings, User
    from psp.uri import URI, AbsoluteURI


# The values of a section's ``mode`` key: statefull and sf_forking fork, sf_sequential
# tries one location after the other, redirect answers 3xx.
CONFIG_MODES = ("statefull", "sf_forking", "sf_sequential", "redirect")


class PluginError(ValueError):
    """A plugin that cannot be found, loaded or configured: a start-up (or reload) failure."""


class Level(enum.IntEnum):
    """When a hook runs: lower first; hooks of one level run in load order."""

    REALLY_FIRST = 0
    FIRST = 1
    MIDDLE = 2
    LAST = 3
    REALLY_LAST = 4
    FINAL = 5  # incoming hooks only: after the chain ended (unless STOPped)


class Mode(enum.Enum):
    """How the proxy handles the request."""

    UAS = "uas"            # answer locally with Decision.status (or Decision.response)
    FORK = "fork"          # forward to every location in parallel
    SFULL = "fork"         # the original's name for FORK (an alias: same member)
    SEQ = "seq"            # forward to one location after the other, by q descending
    REDIRECT = "redirect"  # answer 3xx with one Contact per location


class State(enum.Enum):
    """How binding a decision is."""

    CONTINUE = "continue"  # nothing decided here: later plugins decide
    PROPOSE = "propose"    # a default later plugins may overwrite
    MANDATE = "mandate"    # final: the chain stops, FINAL hooks still run
    STOP = "stop"          # discard the request silently; in the other chains: stop here


@dataclass(frozen=True, slots=True)
class Location:
    """A target: where to send the request, or a Contact of a 3xx.

    ``path`` is the route set to push in front of the request as Route headers (the
    binding's Path, RFC 3327), each value a Route header value such as ``<sip:p;lr>``.
    ``expires`` is the remaining lifetime in seconds, written into a 3xx Contact.
    """

    uri: URI | AbsoluteURI
    q: float = 1.0
    path: tuple[str, ...] = ()
    expires: int | None = None

    def contact_value(self) -> str:
        """This location as a Contact header value of a redirect (RFC 3261 20.10, 21.3)."""
        q = f"{self.q:.3f}".rstrip("0").rstrip(".")
        value = f"<{self.uri}>;q={q}"
        return value if self.expires is None else f"{value};expires={self.expires}"


@dataclass(slots=True)
class Decision:
    """What the incoming chain decided for one request.

    A plugin writes a decision whole with :meth:`answer`, :meth:`respond`,
    :meth:`forward`, :meth:`redirect` or :meth:`stop`: the last one written wins unless a
    plugin MANDATEs.  ``mode`` stays None while nobody decided; the chain settles that
    before the proxy sees it (psp/plugins/chain.py).  ``record_route`` belongs to the
    written decision; a plugin that wants to add it to any decision does so at FINAL level.
    """

    mode: Mode | None = None
    state: State = State.CONTINUE
    status: int | None = None
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    locations: tuple[Location, ...] = ()
    record_route: bool = False
    response: Response | None = None

    def _write(self, mode: Mode, state: State, **values: Any) -> None:
        self.mode, self.state = mode, state
        self.status = values.get("status")
        self.reason = values.get("reason")
        self.headers = tuple(values.get("headers", ()))
        self.locations = tuple(values.get("locations", ()))
        self.record_route = values.get("record_route", False)
        self.response = values.get("response")

    def answer(self, status: int, state: State = State.PROPOSE, reason: str | None = None,
               headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer locally with ``status`` (the proxy builds the response)."""
        self._write(Mode.UAS, state, status=status, reason=reason, headers=headers)

    def respond(self, response: Response, state: State = State.MANDATE) -> None:
        """Answer locally with a complete response this plugin built (e.g. a registrar 200)."""
        self._write(Mode.UAS, state, status=response.status, reason=response.reason,
                    response=response)

    def forward(self, locations: Iterable[Location], state: State = State.MANDATE, *,
                sequential: bool = False, record_route: bool = False) -> None:
        """Forward to ``locations``: in parallel (FORK) or one after the other (SEQ)."""
        mode = Mode.SEQ if sequential else Mode.FORK
        self._write(mode, state, locations=locations, record_route=record_route)

    def redirect(self, locations: Iterable[Location], state: State = State.MANDATE,
                 status: int = 302) -> None:
        """Answer ``status`` (3xx) with one Contact per location."""
        self._write(Mode.REDIRECT, state, status=status, locations=locations)

    def by_mode(self, mode: str, locations: Iterable[Location], *, record_route: bool,
                state: State = State.MANDATE) -> None:
        """Forward or redirect as a section's ``mode`` says (the original's mode names)."""
        if mode == "redirect":
            self.redirect(locations, state)
        elif mode in CONFIG_MODES:
            self.forward(locations, state, sequential=mode == "sf_sequential",
                         record_route=record_route)
        else:
            raise PluginError(f"unknown mode {mode!r}: use {'|'.join(CONFIG_MODES)}")

    def stop(self) -> None:
        """Discard the request: no answer, no forward."""
        self.state = State.STOP

    @property
    def final(self) -> bool:
        """True once a plugin MANDATEd or STOPped: the chain ends here."""
        return self.state in (State.MANDATE, State.STOP)

    def local_headers(self) -> tuple[tuple[str, str], ...]:
        """The extra headers of a local answer: ``headers`` plus a redirect's Contacts."""
        if self.mode is not Mode.REDIRECT:
            return self.headers
        contacts = tuple(("Contact", location.contact_value()) for location in self.locations)
        return self.headers + contacts


@dataclass
class ServiceStats:
    """Counters the plugins keep, read by the metrics scrape (plain ints, docs/operations.md).

    * ``registrations``: REGISTERs the registrar answered (``rgstrar``): ``accepted`` (its
      200) or ``rejected`` (its 4xx/5xx); a digest challenge is not the registrar's answer.
    * ``auth_failures``: credentials for our realm that ``auth`` refused, by why (see
      ``psp.digest.AuthError``): ``bad``, ``stale``, ``forbidden``.  The challenge of a
      request that carried none is the normal first step, not a failure.
    """

    registrations: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "rejected": 0})
    auth_failures: dict[str, int] = field(default_factory=lambda: {"bad": 0, "stale": 0, "forbidden": 0})


@dataclass(frozen=True, slots=True)
class Services:
    """What plugins may use besides the request: built once by the server, owned by sfp.

    ``authenticator`` is None when the global ``authentication`` is off.  ``secret`` keys
    the loop-detecting branch hash (psp/branch.py); it is the original's magicstring2.
    ``stats`` goes on from one Services to the next a reload makes (``dataclasses.replace``
    keeps it), so that a SIGHUP never resets a counter.
    """

    store: LocationStore
    registrar: Registrar
    authenticator: Authenticator | None
    users: tuple[User, ...]
    settings: Settings
    secret: bytes
    stats: ServiceStats = field(default_factory=ServiceStats)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """One request as the chain sees it; the same context is given to the later hooks.

    ``request`` is the request after the proxy's RFC 3261 16.4 Route pre-processing.
    Plugins never modify it: retargeting is done by returning Locations, and changes to
    what is sent belong in ``on_forward`` on the branch copy.  ``routed`` is true for a
    request in a dialog we record-routed (the Route we removed carried our ``psp=`` tag):
    it follows its route set, and the chain does not show it to the plugins that pick
    targets (``Plugin.retargets``).
    ``is_local(uri)`` tells whether a URI names one of our domains or addresses.
    ``notes`` is a per-request scratch space for plugins, keyed by plugin name.
    """

    request: Request
    source: Peer
    now: float
    routed: bool
    is_local: Callable[[URI | AbsoluteURI], bool]
    services: Services
    notes: dict[str, Any] = field(default_factory=dict)


class Plugin:
    """Base class for the plugins of the chain.

    Methods for the chain (the caller):

    - ``__init__(section, services)``: build the plugin from its configuration section
      (a record of psp/settings.py for the built-ins, a ``PluginSection`` for third-party
      plugins, None for a section-less plugin) and the shared services.
    - ``on_request(ctx, decision)``: a new request arrived (the incoming chain).  Write the
      decision, or leave it untouched to let other plugins decide.  Raise
      ``psp.errors.SipError`` to answer with its status (a MANDATE).
    - ``on_forward(ctx, request)``: ``request`` is a copy about to be sent on one branch;
      change it in place.
    - ``on_response(ctx, response)``: a response arrived from downstream for ``ctx``.
    - ``on_send_response(ctx, response)``: ``response`` is about to be sent upstream (a
      forwarded or a locally built one); change it in place.
    - ``reload(section)``: the configuration was reloaded (SIGHUP).
    - ``close()``: the server stops.

    The last three hooks return None, or ``State.STOP`` to end that chain: on_forward's STOP
    means the branch is not sent, on_response's that the response is ignored,
    on_send_response's that it is not sent.

    Methods that may be overridden: all of the above.  Only overridden hooks are run.  The
    built-ins read their section in ``reload``, which their ``__init__`` calls, so one
    method parses the configuration.  Hooks must not block: they run on the processor
    thread (no sockets, no sleeping, no files) and receive ``now`` in the context.

    Class variables that may be overridden:

    - ``name``: the plugin's name in ``plugins`` (built-ins keep the original names).
    - ``levels``: hook name -> :class:`Level`; a hook not listed runs at ``Level.MIDDLE``.
      ``Level.FINAL`` is valid for ``on_request`` only.
    - ``retargets``: True for a plugin that decides where a request goes (a location
      service, a registrar); its ``on_request`` is then never run for a routed request
      (``ctx.routed``), whose route set already says where it goes.
    """

    name: ClassVar[str] = ""
    levels: ClassVar[Mapping[str, Level]] = {}
    retargets: ClassVar[bool] = False

    def __init__(self, section: Any, services: Services) -> None:
        self.services = services
        self.reload(section)

    def on_request(self, ctx: RequestContext, decision: Decision) -> None:
        """Incoming hook: inspect ``ctx.request`` and write ``decision``."""

    def on_forward(self, ctx: RequestContext, request: Request) -> State | None:
        """A branch copy of ``ctx.request`` is about to be sent."""
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> State | None:
        """A response was received from downstream."""
        return None

    def on_send_response(self, ctx: RequestContext, response: Response) -> State | None:
        """A response is about to be sent upstream."""
        return None

    def reload(self, section: Any) -> None:
        """Take a configuration section: at start (from ``__init__``) and on SIGHUP.

        Overrides call ``super().reload(section)`` first, then read their keys.
        """
        self.section = section

    def close(self) -> None:
        """Release what the plugin holds (nothing by default)."""

    def level(self, hook: str) -> Level:
        """The level ``hook`` runs at."""
        return self.levels.get(hook, Level.MIDDLE)


class RoutingPlugin(Plugin):
    """A plugin that picks targets: it reads the original's ``mode`` and ``record-route`` keys."""

    retargets = True

    def reload(self, section: Any) -> None:
        super().reload(section)
        self.mode = section.mode if section is not None else "statefull"
        self.record_route = section.record_route if section is not None else False
