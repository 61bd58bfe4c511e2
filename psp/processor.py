"""The sfp thread: the single owner of SIP state, driving :class:`psp.core.Core`.

RFC 3261 17 (the transaction layer runs here, and only here) with its timers as data:
the thread blocks on the inbound FIFO with the next timer deadline as its timeout, so an
idle server uses no CPU and a timer fires when it is due, not at the next tick.

Each turn takes one item (blocking), then whatever else is already queued (up to
``BATCH``), hands each to the core, fires due timers, and then drains the core's outbox:
first the ``before_send`` hook (the SQLite location store commits there, so no 200 OK
leaves before its registration is on disk), then the messages to the transport and the
resolver jobs to the resolver.  Batching amortises that hook and the metrics.

With ``batch_linger`` set, a busy thread lingers: woken by an item less than
``LINGER_WINDOW`` lingers after its previous turn began, with fewer than ``LINGER_MIN``
items queued, it sleeps ``linger`` seconds first, so that the turn takes a batch.  A
message handled in a batch costs less CPU than one handled alone after a sleep (warm
caches; one wake-up, one commit): with the threads free to run on two CPUs, at 2,000
REGISTERs/s, about a quarter less (bench/flow.py --handoff), for about ``linger`` more
latency.  With every thread on one CPU (``cpu_affinity``) it gains little, hence off by
default.  An idle server never lingers, and a busy one finds its batch already queued.

A commit the disk refuses (``StoreError``) does not hold the answers back: the journal
keeps the changes queued, the failure is counted (``psp_store_commit_failures_total``) and
logged (one error per ``STORE_LOG_INTERVAL``), and the next attempt comes
``COMMIT_RETRY`` seconds later, whether or not messages arrive, so the changes reach the
disk within that time once it takes them again.  Between attempts the hook is skipped:
each one may cost the journal's busy timeout, and a locked file must not slow every batch.

A ``(CALL, function)`` item runs ``function(now)`` here, in its turn: the way other
threads change SIP state (a SIGHUP reload) without a lock.  A stop item starts the
drain: the loop goes on until no transaction waits for a final response any more
(``core.pending()`` is 0) or ``drain_time`` has passed.  Timers alone do not hold it: the
bindings' expiry timer never ends while registrations exist, and transactions that already
sent their final response only absorb retransmissions.  Then ``on_exit`` runs on this
thread (the location store is flushed and closed by the thread that owns it).  A bug while
handling one item is logged, counted, and the thread goes on with the next.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from psp.events import Outgoing, Received, Resolved, ResolveJob, TransportFailed
from psp.fifo import Fifo
from psp.metrics import Metrics, message_kind
from psp.store_sqlite import StoreError

log = logging.getLogger("psp.processor")

BATCH = 64
LINGER_MIN = 8      #: items already queued that make lingering pointless
LINGER_WINDOW = 4   #: linger only when the previous turn began within this many lingers
STOP = object()  #: put this on the inbound FIFO to make the processor drain and exit
CALL = object()  #: ``(CALL, function)`` on the inbound FIFO: ``function(now)`` runs on this thread
COMMIT_RETRY = 1.0  #: seconds from a failed commit to the next attempt
STORE_LOG_INTERVAL = 10.0  #: seconds between two commit-failure log lines: one a second is noise


class Processor:
    """Runs the core on its own thread; other threads talk to it through ``inbound``."""

    def __init__(
        self, core: Any, inbound: Fifo[Any], metrics: Metrics, *,
        send: Callable[[Outgoing], None], resolve: Callable[[ResolveJob], None],
        before_send: Callable[[], None] | None = None, on_exit: Callable[[], None] | None = None,
        heartbeat: Callable[[], None] | None = None, heartbeat_interval: float | None = None,
        linger: float = 0.0, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.core = core
        self.inbound = inbound
        self._metrics = metrics
        self._send = send
        self._resolve = resolve
        self._before_send = before_send
        self._on_exit = on_exit
        self._heartbeat = heartbeat
        self._heartbeat_interval = heartbeat_interval
        self._next_heartbeat = 0.0
        self._clock = clock
        self._sleep = sleep
        self.linger = linger  # batch_linger; a reload sets it, on this thread
        self._turn_at = -math.inf  # when the last turn began
        self._drain_until: float | None = None
        self._commit_retry: float | None = None  # set while commits fail: when to try again
        self._commit_failures = 0  # since the last log line
        self._commit_logged: float | None = None
        self._errors = metrics.errors["processor"]
        self._wait = metrics.wait["inbound"]
        self.thread = threading.Thread(target=self.run, name="sfp", daemon=True)
        metrics.watch_fifo("inbound", inbound.qsize, inbound.maxsize)

    def start(self) -> None:
        self.thread.start()

    def stop(self, drain_time: float) -> None:
        """Ask the thread to finish its transactions within ``drain_time`` seconds, then exit."""
        if self.thread.is_alive():  # a dead thread would never make room on a full FIFO
            self.inbound.put((STOP, drain_time))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        if self.thread.ident is not None:
            self.thread.join(timeout)
        return not self.thread.is_alive()

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """The thread's loop; ``on_exit`` runs here at the end, on the thread that owns the state."""
        try:
            inbound = self.inbound
            while not self._drained():
                first = self._wait_item()
                batch = [] if first is None else [first]
                if first is not None and self._should_linger():
                    self._sleep(self.linger)
                # This thread is the only consumer: what qsize() counts is there to take.
                for _ in range(min(inbound.qsize(), BATCH - len(batch))):
                    batch.append(inbound.get_nowait())
                self._turn(batch)
        finally:
            if self._on_exit is not None:
                self._guard(self._exit, self._on_exit)

    def _should_linger(self) -> bool:
        linger = self.linger
        if not linger or self.inbound.qsize() >= LINGER_MIN:
            return False
        return self._clock() - self._turn_at < LINGER_WINDOW * linger

    def _turn(self, batch: list[Any]) -> None:
        now = self._turn_at = self._clock()
        for item in batch:
            self._guard(self._dispatch, item, now)
        deadline = self.core.next_deadline()
        if deadline is not None and deadline <= now:
            self._guard(self.core.on_timers, now)
        self._flush(now)
        done = self._clock()
        for item in batch:
            if type(item) is Received:
                self._metrics.processing_child(message_kind(item.message)).observe(done - item.t_in)
        self._beat(done)

    def _wait_item(self) -> Any:
        now = self._clock()
        wake = [self.core.next_deadline(), self._drain_until, self._commit_retry]
        if self._heartbeat_interval is not None:
            wake.append(self._next_heartbeat)
        due = [t for t in wake if t is not None]
        timeout = max(0.0, min(due) - now) if due else None
        try:
            return self.inbound.get(timeout=timeout)
        except queue.Empty:
            return None

    def _dispatch(self, item: Any, now: float) -> None:
        kind = type(item)
        if kind is tuple and item[0] is STOP:
            self._start_drain(item[1], now)
            return
        if kind is tuple and item[0] is CALL:
            item[1](now)
            return
        self._wait.observe(now - item.t_in)
        if kind is Received:
            self.core.on_received(item.message, item.peer, now)
        elif kind is Resolved:
            self.core.on_resolved(item, now)
        elif kind is TransportFailed:
            self.core.on_transport_failed(item, now)
        else:
            raise TypeError(f"unexpected item on the inbound FIFO: {item!r}")

    def _guard(self, handler: Callable[..., None], *args: Any) -> None:
        """Run one handler; a bug is logged with its traceback and counted, and we go on."""
        try:
            handler(*args)
        except Exception:
            log.exception("internal error in the processor (%s)", getattr(handler, "__name__", handler))
            self._errors.inc()

    def _flush(self, now: float) -> None:
        outbox = self.core.outbox
        effects = list(outbox)
        outbox.clear()
        # Every turn, not only when there are messages: a timer may have changed the store.
        if self._before_send is not None:
            self._guard(self._commit, self._before_send, now)
        for effect in effects:
            if type(effect) is ResolveJob:
                self._guard(self._resolve, effect)
            else:
                self._guard(self._send, effect)

    # ------------------------------------------------------------ the store

    def _commit(self, before_send: Callable[[], None], now: float) -> None:
        """Run ``before_send``, unless a failed commit's retry is not due yet."""
        if self._commit_retry is not None and now < self._commit_retry:
            return
        try:
            before_send()
        except StoreError as error:
            self._commit_failed(error, now)
            return
        if self._commit_retry is not None:
            log.warning("recovery file written again; the registrations queued since the "
                        "last good commit are on disk")
            self._commit_retry = None

    def _commit_failed(self, error: StoreError, now: float) -> None:
        # The answers still go: holding them would not bring the disk back, and the
        # changes stay queued for the next attempt.
        self._metrics.store_commit_failures.inc()
        self._commit_retry = now + COMMIT_RETRY
        self._commit_failures += 1
        if self._commit_logged is None or now >= self._commit_logged + STORE_LOG_INTERVAL:
            log.error("%s; service goes on, the changes wait for the next commit (%d failed "
                      "commit(s) since the last report; a crash now loses them)", error,
                      self._commit_failures)
            self._commit_failures = 0
            self._commit_logged = now

    def _exit(self, on_exit: Callable[[], None]) -> None:
        """Run ``on_exit``: its last commit failing loses the changes; that is no bug."""
        try:
            on_exit()
        except StoreError as error:
            self._metrics.store_commit_failures.inc()
            log.error("%s: lost at exit", error)

    def _beat(self, now: float) -> None:
        if self._heartbeat is not None and now >= self._next_heartbeat:
            self._guard(self._heartbeat)
            self._next_heartbeat = now + (self._heartbeat_interval or 0.0)

    # ------------------------------------------------------------ drain

    def _start_drain(self, drain_time: float, now: float) -> None:
        if self._drain_until is None:
            log.info("draining: up to %.1f s for transactions to finish", drain_time)
            self._drain_until = now + drain_time

    def _drained(self) -> bool:
        """Draining and either no transaction left to wait for or out of time."""
        if self._drain_until is None:
            return False
        return self.core.pending() == 0 or self._clock() >= self._drain_until
