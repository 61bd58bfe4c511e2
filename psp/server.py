"""The server's lifecycle: wiring, threads, signals, drain and systemd notifications.

Builds the pieces (metrics, transport, resolver, the core and its transaction user,
processor), binds every socket before any thread starts, starts the threads in order
(resolver, transport, processor, metrics), tells systemd READY=1, and then the main
thread only waits: for a signal, or for a thread that died.

* SIGTERM / SIGINT: STOPPING=1; the transport refuses new work (503), the processor gets
  ``drain_time`` seconds to let its transactions finish (RFC 3261 17 timers keep
  running meanwhile), then the threads are joined in reverse order and ``run`` returns 0.
* SIGHUP: logged as "reload requested" (reloading itself comes later).
* A thread that ends unexpectedly makes the process exit non-zero, so that systemd
  restarts a whole server instead of leaving a half-alive one.

A socket that cannot be bound is one line on the log and a non-zero exit code.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from psp.metrics import Metrics
from psp.processor import Processor
from psp.resolver import Resolver
from psp.sdnotify import Notifier
from psp.settings import Settings
from psp.transport import BindError, Transport

if TYPE_CHECKING:
    from psp.digest import Authenticator

log = logging.getLogger("psp.server")

WATCH_INTERVAL = 1.0  # how often the main thread checks that every thread is alive
JOIN_TIMEOUT = 5.0    # per thread, after the drain
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


def build_core(settings: Settings) -> Wiring:
    """The core, its transaction user (the proxy and its plugin chain) and their services.

    The location store is loaded from the SQLite journal (``recovery_file``) and gets the
    static users' contacts; the journal commits before each batch of sends.  The secret
    (loop detection, Record-Route tag, nonces) is ``magicstring`` or one kept next to the
    journal, so that both survive a restart.
    """
    from psp.core import Core
    from psp.location import LocationStore
    from psp.plugins.base import Services
    from psp.plugins.chain import Chain
    from psp.proxy import Proxy
    from psp.registrar import Registrar
    from psp.rfc3263 import Blocklist
    from psp.store_sqlite import SqliteJournal, load_or_create_secret
    from psp.timers import TimerSettings

    secret = settings.magicstring or load_or_create_secret(settings.recovery_file + ".secret")
    journal = SqliteJournal(settings.recovery_file)
    store = LocationStore(journal, journal.load(time.monotonic(), time.time()))
    limits = settings.sections["rgstrar"]
    registrar = Registrar(settings.servername, limits.default_expires, limits.min_expires,
                          limits.max_expires)
    for user in settings.users:
        if user.contact:
            registrar.add_static(store, user.aor, user.contact)
    services = Services(store, registrar, _authenticator(settings, secret), settings.users,
                        frozenset(settings.servername), settings, secret.encode())
    chain = Chain.from_settings(settings, services)
    blocklist = Blocklist(settings.resolver.blocklist_time)
    proxy = Proxy.from_settings(settings, chain, services, blocklist)
    core = Core(TimerSettings(settings.t1, settings.t2, settings.t4, settings.timer_c), proxy)

    def stats() -> dict[str, Any]:
        return {**snapshot(core.stats), **proxy.stats, "registrations_active": store.count}

    def close() -> None:
        chain.close()
        journal.close()

    return Wiring(core, stats=stats, before_send=journal.commit, close=close,
                  blocked=lambda: blocklist.blocked(time.monotonic()))


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


class Server:
    """One server instance: its threads, queues and metrics."""

    def __init__(
        self, settings: Settings, notifier: Notifier | None = None,
        build: Callable[[Settings], Wiring] = build_core,
    ) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.inbound: queue.Queue[Any] = queue.Queue(settings.fifo_size)
        self.transport = Transport(settings, self.inbound, self.metrics)
        self.resolver = Resolver(
            settings.sections["resolver"], self.inbound, self.metrics,
            ipv6=settings.ipv6_enable, fifo_size=settings.fifo_size,
        )
        self.wiring = build(settings)
        self.metrics.watch_core(self.wiring.stats)
        if self.wiring.blocked is not None:
            self.metrics.dns.watch_blocklist(self.wiring.blocked)
        interval = self.notifier.watchdog_interval
        self.processor = Processor(
            self.wiring.core, self.inbound, self.metrics,
            send=self.transport.send, resolve=self.resolver.submit,
            before_send=self.wiring.before_send, on_exit=self.wiring.close,
            heartbeat=self.notifier.watchdog if interval else None, heartbeat_interval=interval,
        )
        self.metrics_port: int | None = None
        # Signal handlers only set a flag and write here: an Event.set() in a handler can
        # deadlock on the lock the interrupted main thread holds, a socket write cannot.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._stop_requested = False
        self._reload_requested = False

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
                log.info("reload requested")
            dead = [t.name for t in self.threads() if not t.is_alive()]
            if dead:
                log.critical("thread %s ended unexpectedly; exiting", ", ".join(dead))
                self.stop(drain_time=0.0)
                return EX_SOFTWARE
            if self._stop_requested:
                return 0

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


def run(settings: Settings) -> int:
    """Run a server until SIGTERM/SIGINT; the process exit code."""
    server = Server(settings)
    server.install_signals()
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
