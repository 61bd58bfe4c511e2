"""The server's lifecycle: wiring, threads, signals, drain and systemd notifications.

Builds the pieces (metrics, transport, resolver, the core and its transaction user,
processor), binds every socket before any thread starts, starts the threads in order
(resolver, transport, processor, metrics), tells systemd READY=1, and then the main
thread only waits: for a signal, or for a thread that died.

* SIGTERM / SIGINT: STOPPING=1; the transport refuses new work (503), the processor gets
  ``drain_time`` seconds to let its transactions finish (RFC 3261 17 timers keep
  running meanwhile), then the threads are joined in reverse order and ``run`` returns 0.
* SIGHUP: the main thread reads and checks the file; a broken one is refused with its
  problems logged.  What needs a restart (addresses, ports, plugin list, limits) is
  logged and keeps its running value; the rest is posted on the inbound FIFO and applied
  on the processor thread, the owner of SIP state: plugin sections, users, auth, log
  settings and the Server ``banner``, for new transactions.  RELOADING=1, then READY=1
  with the outcome in STATUS.
* While running, STATUS= carries the load (FIFO depth, transactions, registrations), and
  the processor thread's loop feeds the watchdog: a wedged loop stops WATCHDOG=1.
* A thread that ends unexpectedly makes the process exit non-zero, so that systemd
  restarts a whole server instead of leaving a half-alive one.

A socket that cannot be bound is one line on the log and a non-zero exit code.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from functools import partial
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

from psp import __version__
from psp.config import ConfigError, load
from psp.fifo import Fifo
from psp.logs import setup_logging
from psp.message import server_header
from psp.metrics import Metrics
from psp.plugins.base import PluginError
from psp.processor import CALL, Processor
from psp.resolver import Resolver
from psp.sdnotify import Notifier
from psp.settings import Settings
from psp.transport import BindError, Transport

if TYPE_CHECKING:
    from psp.digest import Authenticator
    from psp.registrar import Registrar

log = logging.getLogger("psp.server")

WATCH_INTERVAL = 1.0  # how often the main thread checks that every thread is alive
JOIN_TIMEOUT = 5.0    # per thread, after the drain
STATUS_INTERVAL = 5.0  # seconds between two STATUS= load reports (sent only when changed)
RELOAD_POST_TIMEOUT = 5.0  # how long a reload waits for room on a full inbound FIFO
# Bound or built once at start: a reload logs a change of these and keeps the running value.
RESTART_KEYS = (
    "serverip", "serverip6", "servername", "serverport_udp", "serverport_tcp", "ipv6_enable",
    "plugins", "plugin_chain", "recovery_file", "magicstring", "rfc3327", "t1", "t2", "t4",
    "timer_c", "fifo_size", "retry_after", "max_message_size", "tcp_max_connections",
    "tcp_idle_timeout", "tcp_max_buffer", "cpu_affinity",
)
RESTART_SECTIONS = ("metrics", "resolver")
# Collector thresholds (young, middle, full) of tune_gc(); CPython's are (700, 10, 10).
GC_THRESHOLDS = (200, 0, 50_000)
EX_OSERR = getattr(os, "EX_OSERR", 71)
EX_SOFTWARE = getattr(os, "EX_SOFTWARE", 70)


@dataclass
class Wiring:
    """The SIP logic the processor drives, and the hooks it offers the rim."""

    core: Any
    stats: Callable[[], Mapping[str, Any]]
    before_send: Callable[[], None] | None = None
    close: Callable[[], None] | None = None
    blocked: Callable[[], int] | None = None  # targets the proxy avoids now (RFC 3263 4.3)
    # Applies new settings to the transaction user, on the processor thread; raises to refuse.
    reload: Callable[[Settings], None] | None = None


def build_core(settings: Settings) -> Wiring:
    """The core, its transaction user (the proxy and its plugin chain) and their services.

    The location store is loaded from the SQLite journal (``recovery_file``) and gets the
    static users' contacts; the journal commits before each batch of sends.  The secret
    (loop detection, Record-Route tag, nonces) is ``magicstring`` or one kept next to the
    journal, so that both survive a restart.  Raises ``StoreError`` (a file that cannot be
    opened) or ``PluginError`` (a plugin that refuses its section).
    """
    from psp.core import Core
    from psp.location import LocationStore
    from psp.plugins.base import Services
    from psp.plugins.chain import Chain
    from psp.proxy import Proxy
    from psp.rfc3263 import Blocklist
    from psp.store_sqlite import SqliteJournal, load_or_create_secret
    from psp.timers import TimerSettings

    secret = settings.magicstring or load_or_create_secret(settings.recovery_file + ".secret")
    journal = SqliteJournal(settings.recovery_file)
    try:
        store = LocationStore(journal, journal.load(time.monotonic(), time.time()))
        registrar = _registrar(settings)
        for user in settings.users:
            if user.contact:
                registrar.add_static(store, user.aor, user.contact)
        services = Services(store, registrar, _authenticator(settings, secret), settings.users,
                            settings, secret.encode())
        chain = Chain.from_settings(settings, services)
    except BaseException:  # a refusal (StoreError, PluginError) leaves no file open behind it
        journal.close()
        raise
    blocklist = Blocklist(settings.resolver.blocklist_time)
    proxy = Proxy.from_settings(settings, chain, services, blocklist)
    core = Core(TimerSettings(settings.t1, settings.t2, settings.t4, settings.timer_c), proxy,
                cancel_ignores_to_tag=settings.disable_check_for_osip_to_tag_in_cancel)

    def stats() -> dict[str, Any]:
        return {**snapshot(core.stats), **proxy.stats, **snapshot(vars(services.stats)),
                "registrations_active": store.count}

    def close() -> None:
        chain.close()
        journal.close()

    return Wiring(core, stats=stats, before_send=journal.commit, close=close,
                  blocked=lambda: blocklist.blocked(time.monotonic()), reload=partial(reload_services, proxy))


def _registrar(settings: Settings) -> Registrar:
    from psp.registrar import Registrar  # noqa: F811 - the run-time import

    limits = settings.sections["rgstrar"]
    # Our addresses are domains of ours too (routing.Local.is_local says so for the R-URI).
    domains = settings.servername + settings.serverip + settings.serverip6
    return Registrar(domains, limits.default_expires, limits.min_expires, limits.max_expires)


def reload_services(proxy: Any, settings: Settings) -> None:
    """Give the proxy's plugin chain new sections and services (processor thread).

    The registrar's limits, the users and their permanent contacts, the authenticator and
    the proxy's Server header (``banner``) follow ``settings``; the location store, the
    secret and the counters (``Services.stats``) stay.  The authenticator is
    kept when nothing it depends on changed, so that its replay table survives.  A plugin
    that refuses its section raises (PluginError) and leaves ``proxy.services`` as it was;
    the caller then reloads the running settings to undo the plugins already reloaded.
    """
    old = proxy.services
    same_auth = (old.users, old.settings.serverrealm, old.settings.authentication,
                 old.settings.sections["auth"]) == (settings.users, settings.serverrealm,
                                                    settings.authentication, settings.sections["auth"])
    authenticator = old.authenticator if same_auth else _authenticator(settings, old.secret.decode())
    services = replace(old, registrar=_registrar(settings), authenticator=authenticator,
                       users=settings.users, settings=settings)
    proxy.chain.reload(settings, services)
    _sync_static_contacts(services, old.users)
    proxy.services = services
    proxy.server = server_header(settings.banner)


def _sync_static_contacts(services: Any, before: tuple[Any, ...]) -> None:
    """Permanent contacts ([userinfo] contact): drop the removed ones, add the new ones."""
    from psp.registrar import aor_of
    from psp.uri import parse_uri

    def pairs(users: tuple[Any, ...]) -> set[tuple[str, str]]:
        return {(user.aor, user.contact) for user in users if user.contact}

    old, new = pairs(before), pairs(services.users)
    for aor, contact in old - new:
        services.store.remove(aor_of(parse_uri(aor)), contact)
    for aor, contact in new - old:
        services.registrar.add_static(services.store, aor, contact)


def _authenticator(settings: Settings, secret: str) -> Authenticator | None:
    """The digest authenticator of ``serverrealm`` for the [userinfo] users, or None when off."""
    if not settings.authentication:
        return None
    from psp.digest import Authenticator, make_user  # noqa: F811 - the run-time import

    auth = settings.sections["auth"]
    users = [make_user(user.aor, user.login, settings.serverrealm, password=user.password,
                       ha1=user.ha1, algorithms=auth.algorithms) for user in settings.users]
    return Authenticator(settings.serverrealm, secret, users, lifetime=auth.nonce_lifetime,
                         algorithms=auth.algorithms, force_407=auth.force_use_of_407 == "on")


def snapshot(stats: Any) -> dict[str, Any]:
    """A copy of the core's counters (``stats.items()``), taken from the scrape thread.

    The processor may add a key to one of the inner dicts while we copy it; CPython then
    raises RuntimeError, and a second try almost always succeeds.
    """
    for _ in range(3):
        try:
            return {key: dict(value) if isinstance(value, Mapping) else value for key, value in stats.items()}
        except RuntimeError:
            continue
    return {}


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The top-level keys and ``[sections]`` whose values differ between two settings."""
    names = {"users": "[userinfo]", "plugin_chain": "plugins_config"}
    keys = [names.get(f.name, f.name) for f in fields(Settings)
            if f.name not in ("path", "sections") and getattr(old, f.name) != getattr(new, f.name)]
    if "plugins" in keys and "plugins_config" in keys:
        keys.remove("plugins_config")  # a new plugin list changes the chain by itself
    sections = sorted(set(old.sections) | set(new.sections))
    return keys + [f"[{name}]" for name in sections if old.sections.get(name) != new.sections.get(name)]


def keep_running_values(old: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """``new`` with the running values of what only a restart can change, and their names."""
    kept = [key for key in RESTART_KEYS if getattr(old, key) != getattr(new, key)]
    sections = dict(new.sections)
    for name in RESTART_SECTIONS:
        sections[name] = old.sections[name]
    for _, name in old.plugin_chain:  # the running chain keeps its sections
        sections.setdefault(name, old.sections.get(name))
    merged = replace(new, sections=MappingProxyType(sections), **{key: getattr(old, key) for key in kept})
    return merged, changed_keys(new, replace(merged, path=new.path))


class Server:
    """One server instance: its threads, queues and metrics."""

    def __init__(
        self, settings: Settings, notifier: Notifier | None = None,
        build: Callable[[Settings], Wiring] = build_core,
    ) -> None:
        self.settings = settings
        self.wiring = build(settings)  # first: what it refuses leaves no socket or thread behind
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.inbound: Fifo[Any] = Fifo(settings.fifo_size)
        self.transport = Transport(settings, self.inbound, self.metrics)
        self.resolver = Resolver(
            settings.sections["resolver"], self.inbound, self.metrics,
            ipv6=settings.ipv6_enable, fifo_size=settings.fifo_size,
        )
        self.metrics.watch_core(self.wiring.stats)
        if self.wiring.blocked is not None:
            self.metrics.dns.watch_blocklist(self.wiring.blocked)
        interval = self.notifier.watchdog_interval
        self.processor = Processor(
            self.wiring.core, self.inbound, self.metrics,
            send=self.transport.send, resolve=self.resolver.submit,
            before_send=self.wiring.before_send, on_exit=self.wiring.close,
            heartbeat=self.notifier.watchdog if interval else None, heartbeat_interval=interval,
            linger=settings.batch_linger,
        )
        self.metrics_port: int | None = None
        # Signal handlers only set a flag and write here: an Event.set() in a handler can
        # deadlock on the lock the interrupted main thread holds, a socket write cannot.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._stop_requested = False
        self._reload_requested = False
        self._status = ""
        self._status_due = 0.0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind every socket (raises BindError), then start the threads in order."""
        self.transport.bind()
        section = self.settings.sections["metrics"]
        if section.enabled:
            try:
                self.metrics_port = self.metrics.serve(section.address, section.port)
            except OSError as error:
                raise BindError(f"cannot bind metrics {section.address}:{section.port}: "
                                f"{error.strerror or error}") from None
        self.resolver.start()
        self.transport.start()
        self.processor.start()
        where = ", ".join(f"{t} {h}:{p}" for t, h, p in self.transport.addresses)
        log.info("serving on %s", where)
        self.notifier.notify(READY=1, STATUS=f"serving on {where}")

    def threads(self) -> list[threading.Thread]:
        return [*self.resolver.threads, self.transport.thread, self.processor.thread]

    def request_stop(self) -> None:
        self._stop_requested = True
        self._wake()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    def wait(self) -> int:
        """Block until asked to stop (0) or until a thread dies (non-zero)."""
        while True:
            if select.select([self._wake_r], [], [], WATCH_INTERVAL)[0]:
                self._wake_r.recv(4096)
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            dead = [t.name for t in self.threads() if not t.is_alive()]
            if dead:
                log.critical("thread %s ended unexpectedly; exiting", ", ".join(dead))
                self.stop(drain_time=0.0)
                return EX_SOFTWARE
            if self._stop_requested:
                return 0
            self._report_load()

    # ------------------------------------------------------------ systemd status

    def load_text(self) -> str:
        """The load in a few words: inbound FIFO, transactions, registrations."""
        stats = self.wiring.stats()
        parts = [f"inbound FIFO {self.inbound.qsize()}/{self.inbound.maxsize}"]
        if "transactions" in stats:
            parts.append(f"{sum(stats['transactions'].values())} transactions")
        if "registrations_active" in stats:
            parts.append(f"{stats['registrations_active']} registrations")
        return ", ".join(parts)

    def _report_load(self) -> None:
        """STATUS= every STATUS_INTERVAL, when the load changed (``systemctl status`` shows it)."""
        now = time.monotonic()
        if not self.notifier.enabled or now < self._status_due:
            return
        self._status_due = now + STATUS_INTERVAL
        status = f"serving: {self.load_text()}"
        if status != self._status:
            self._status = status
            self.notifier.notify(STATUS=status)

    # ------------------------------------------------------------ reload (SIGHUP)

    def reload(self) -> None:
        """Read and check the file here (main thread); apply it on the processor thread."""
        path = self.settings.path
        log.info("reload requested: reading %s", path)
        self.notifier.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)
        try:
            new = load(path)
        except ConfigError as error:
            self._refused("; ".join(error.problems))
            return
        new, kept = keep_running_values(self.settings, new)
        if kept:
            log.warning("reload: %s changed: needs a restart; the running values stay", ", ".join(kept))
        try:
            self.inbound.put((CALL, partial(self._apply, new)), timeout=RELOAD_POST_TIMEOUT)
        except queue.Full:
            self._refused("the inbound FIFO stayed full: the processor is overloaded")

    def _apply(self, new: Settings, _now: float) -> None:
        """Processor thread: the transaction user first (it may refuse), then logging."""
        old = self.settings
        try:
            if self.wiring.reload is not None:
                self.wiring.reload(new)
            setup_logging(new.loglevel, new.log, new.log_format)
        except Exception as error:  # whatever refuses the settings, the old ones must stay whole
            unexpected = not isinstance(error, (PluginError, OSError))
            self._rollback(old)
            self._refused(str(error), unexpected)
            return
        self.settings = new
        self.processor.linger = self.transport.linger = new.batch_linger
        self.transport.server = server_header(new.banner)  # the rim's own responses follow
        log.info("reloaded %s: %s", new.path, ", ".join(changed_keys(old, new)) or "nothing changed")
        self.metrics.reloads.labels("ok").inc()
        self.notifier.notify(READY=1, STATUS=f"reloaded; serving: {self.load_text()}")

    def _rollback(self, old: Settings) -> None:
        if self.wiring.reload is None:
            return
        try:
            self.wiring.reload(old)
        except Exception:
            log.critical("reload: the running settings could not be restored", exc_info=True)

    def _refused(self, reason: str, unexpected: bool = False) -> None:
        log.warning("reload refused: %s; the running settings stay", reason, exc_info=unexpected)
        self.metrics.reloads.labels("refused").inc()
        self.notifier.notify(READY=1, STATUS=f"reload refused; serving: {self.load_text()}")

    def stop(self, drain_time: float | None = None) -> None:
        """Drain, then join the threads in the reverse order of their start."""
        drain = self.settings.drain_time if drain_time is None else drain_time
        self.notifier.notify(STOPPING=1, STATUS="draining")
        self.transport.drain()
        if self.processor.thread.ident is None:  # never started: close the core's resources here
            if self.wiring.close is not None:
                self.wiring.close()
        else:
            self.processor.stop(drain)
            if not self.processor.join(drain + JOIN_TIMEOUT):
                log.error("the processor did not finish its drain")
        self.transport.stop(JOIN_TIMEOUT)
        self.resolver.stop(JOIN_TIMEOUT)
        self.metrics.close()
        self.notifier.close()
        self._wake_r.close()
        self._wake_w.close()

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads; the handlers only set flags (main thread)."""
        def stop(_signum: int, _frame: FrameType | None) -> None:
            self.request_stop()

        def reload(_signum: int, _frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)


def tune_gc() -> None:
    """The garbage collector for a proxy: frequent small collections, full ones hardly ever.

    A call lives on for 32 s after its BYE (Timers J, L, M), about 150 objects tracked by
    the collector each: 1.2 million at 250 calls/s.  With CPython's defaults a full
    collection scanned them all about every 16 s, a pause of about a second, and the
    young collections paused up to 150 ms: most of the p99 latency, and a third of the
    CPU (bench/flow.py; docs/performance.md).  Calls no longer leave reference cycles
    behind (the core and the proxy break theirs), so refcounting frees them and a full
    collection finds next to nothing.  Hence: what start-up built is frozen (never
    scanned again); young collections run often (GC_THRESHOLDS[0]), so each one scans a
    few messages' worth of new objects, and send their survivors straight to the old
    generation (GC_THRESHOLDS[1] = 0) instead of piling them up in the middle one; a
    full collection waits for GC_THRESHOLDS[2] young ones (tens of minutes at 250
    calls/s), for what other cycles remain.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def pin_threads(choice: str) -> int | None:
    """Keep every thread of the process on one CPU (``cpu_affinity``); the CPU, or None.

    The GIL lets one thread run Python at a time, so the threads gain nothing from a
    second CPU, and lose much: each hand-off of the GIL between CPUs moves the messages
    and the interpreter's shared objects (their reference counts are written by every
    thread) from one CPU's caches to the other's.  On one CPU the same REGISTER load took
    40 % less CPU (docs/performance.md).  Threads inherit the mask of the thread that
    starts them, so this runs before the server's threads start.  ``auto`` takes the
    highest-numbered CPU the process may use (CPU 0 gets the most interrupts and
    housekeeping); ``off`` leaves the affinity to the scheduler (or to systemd's
    ``CPUAffinity=``).
    """
    if choice == "off" or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed) if choice == "auto" else int(choice)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as error:  # a seccomp filter (SystemCallFilter=) or a container's policy
        log.warning("cpu_affinity = %s: cannot pin the threads to CPU %d (%s); they run where "
                    "the scheduler puts them", choice, cpu, error.strerror or error)
        return None
    return cpu


def run(settings: Settings) -> int:
    """Run a server until SIGTERM/SIGINT; the process exit code."""
    log.info("starting partysip %s: %s, plugins %s", __version__, settings.path, " ".join(settings.plugins))
    server = Server(settings)
    server.install_signals()
    tune_gc()
    cpu = pin_threads(settings.cpu_affinity)
    if cpu is not None:
        log.info("threads pinned to CPU %d (cpu_affinity = %s)", cpu, settings.cpu_affinity)
    try:
        server.start()
    except BindError as error:
        log.critical("%s", error)
        server.stop(drain_time=0.0)
        return EX_OSERR
    code = server.wait()
    if code == 0:
        log.info("stopping: draining for up to %.1f s", settings.drain_time)
        server.stop()
        log.info("stopped")
    return code
