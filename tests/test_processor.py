"""The processor thread around a fake core: dispatch, timers, batching, hooks, errors, drain."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from psp import processor as processor_module
from psp.events import Outgoing, Peer, Received, Resolved, ResolveJob, TransportFailed
from psp.metrics import Metrics
from psp.processor import Processor
from psp.store_sqlite import StoreError

TIMEOUT = 5.0
PEER = Peer("udp", "127.0.0.1", 5060)


class FakeCore:
    """Records calls; each received message yields one Outgoing and, for INVITE, a ResolveJob."""

    def __init__(self) -> None:
        self.outbox: list[Any] = []
        self.calls: list[tuple[str, Any]] = []
        self.deadlines: list[float] = []
        self.renew = 0.0  # > 0: every timer run schedules another one this far ahead
        self.waiting = 0  # what pending() reports: transactions a drain waits for
        self.settle_on_timer = False  # True: the next timer run ends every waiting transaction
        self.fired = threading.Event()
        self.fail_on: str | None = None

    def on_received(self, message: Any, peer: Peer, now: float) -> None:
        self.calls.append(("received", message.method))
        if message.method == self.fail_on:
            raise RuntimeError("bug on this message")
        self.outbox.append(Outgoing(message.method.encode(), peer, now))
        if message.method == "INVITE":
            self.outbox.append(ResolveJob(1, "example.org", None, None, now))

    def on_resolved(self, resolved: Resolved, now: float) -> None:
        self.calls.append(("resolved", resolved.job))

    def on_transport_failed(self, failed: TransportFailed, now: float) -> None:
        self.calls.append(("failed", failed.reason))

    def on_timers(self, now: float) -> None:
        due = [d for d in self.deadlines if d <= now]
        self.deadlines = [d for d in self.deadlines if d > now]
        self.calls.append(("timers", (due, now)))
        if self.renew:
            self.deadlines.append(now + self.renew)
        if self.settle_on_timer:
            self.waiting = 0
        self.fired.set()

    def next_deadline(self) -> float | None:
        return min(self.deadlines, default=None)

    def pending(self) -> int:
        return self.waiting


def received(method: str) -> Received:
    return Received(SimpleNamespace(method=method), PEER, time.monotonic())


class Harness:
    def __init__(self, **options: Any) -> None:
        self.core = FakeCore()
        self.inbound: queue.Queue[Any] = queue.Queue(100)
        self.metrics = Metrics()
        self.log: list[tuple[str, Any]] = []
        self.sent = queue.Queue()
        options.setdefault("before_send", lambda: self.log.append(("before_send", None)))
        self.processor = Processor(
            self.core, self.inbound, self.metrics, send=self._send, resolve=self._resolve, **options,
        )

    def _send(self, outgoing: Outgoing) -> None:
        self.log.append(("send", outgoing.data))
        self.sent.put(outgoing)

    def _resolve(self, job: ResolveJob) -> None:
        self.log.append(("resolve", job.host))
        self.sent.put(job)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        made.append(Harness(**options))
        return made[-1]

    yield make
    for h in made:
        h.processor.stop(0.0)
        h.processor.join(TIMEOUT)


def test_received_goes_to_the_core_and_its_outbox_to_transport_and_resolver(harness) -> None:
    h = harness()
    h.processor.start()
    h.inbound.put(received("INVITE"))
    assert h.sent.get(timeout=TIMEOUT).data == b"INVITE"
    assert h.sent.get(timeout=TIMEOUT).host == "example.org"
    assert h.log == [("before_send", None), ("send", b"INVITE"), ("resolve", "example.org")]
    assert h.core.outbox == []
    assert h.sample("psp_processing_seconds_count", kind="INVITE") == 1
    assert h.sample("psp_fifo_wait_seconds_count", fifo="inbound") == 1


def test_resolved_and_transport_failed_reach_their_handlers(harness) -> None:
    h = harness()
    h.inbound.put(Resolved(7, (PEER,), None, time.monotonic()))
    h.inbound.put(TransportFailed(PEER, "reset", time.monotonic()))
    h.inbound.put(received("OPTIONS"))
    h.processor.start()
    h.sent.get(timeout=TIMEOUT)
    assert h.core.calls == [("resolved", 7), ("failed", "reset"), ("received", "OPTIONS")]


def test_items_already_queued_are_handled_as_one_batch(harness) -> None:
    h = harness()
    for n in range(10):
        h.inbound.put(received("OPTIONS" if n else "REGISTER"))
    h.processor.start()
    for _ in range(10):
        h.sent.get(timeout=TIMEOUT)
    # one before_send for the ten answers: the commit is amortised over the batch
    assert [entry for entry, _ in h.log].count("before_send") == 1
    assert h.sample("psp_processing_seconds_count", kind="REGISTER") == 1
    assert h.sample("psp_processing_seconds_count", kind="OPTIONS") == 9


def test_a_timer_fires_when_due_without_any_input(harness) -> None:
    h = harness()
    due = time.monotonic() + 0.1
    h.core.deadlines.append(due)
    h.processor.start()
    assert h.core.fired.wait(TIMEOUT)
    (_, (fired, now)), = h.core.calls
    assert fired == [due] and now >= due


def test_an_earlier_timer_set_while_waiting_is_honoured_after_the_next_item(harness) -> None:
    h = harness()
    h.processor.start()
    h.core.deadlines.append(time.monotonic() + 0.05)  # only seen once the thread wakes up
    h.inbound.put(received("OPTIONS"))
    assert h.core.fired.wait(TIMEOUT)


def test_a_bug_on_one_item_is_counted_and_the_next_item_is_served(harness) -> None:
    h = harness()
    h.core.fail_on = "BUG"
    h.inbound.put(received("BUG"))
    h.inbound.put(received("OPTIONS"))
    h.processor.start()
    assert h.sent.get(timeout=TIMEOUT).data == b"OPTIONS"
    assert h.sample("psp_internal_errors_total", thread="processor") == 1
    assert h.processor.thread.is_alive()


def test_drain_does_not_wait_for_timers_when_no_transaction_is_pending(harness) -> None:
    h = harness()
    h.core.renew = 0.05  # a timer that never ends, like the bindings' expiry
    h.core.deadlines.append(time.monotonic() + 0.05)
    h.processor.start()
    started = time.monotonic()
    h.processor.stop(drain_time=60.0)
    assert h.processor.join(20.0)
    assert time.monotonic() - started < 20.0  # drain_time is 60 s


def test_drain_waits_for_pending_transactions_to_finish(harness) -> None:
    h = harness()
    h.core.waiting = 1
    h.core.settle_on_timer = True  # the transaction gets its final answer when the timer fires
    h.core.deadlines.append(time.monotonic() + 0.2)
    h.processor.start()
    h.processor.stop(drain_time=60.0)
    assert h.processor.join(TIMEOUT)
    assert h.core.fired.is_set()


def test_drain_gives_up_after_drain_time(harness) -> None:
    h = harness()
    h.core.waiting = 1  # a transaction that never finishes
    h.core.renew = 0.05
    h.core.deadlines.append(time.monotonic() + 0.05)
    h.processor.start()
    started = time.monotonic()
    h.processor.stop(drain_time=0.3)
    assert h.processor.join(TIMEOUT)
    assert 0.3 <= time.monotonic() - started < TIMEOUT


def test_heartbeat_is_fed_while_idle_and_on_exit_runs_on_the_thread(harness) -> None:
    beats: list[float] = []
    enough = threading.Event()
    exits: list[str] = []

    def beat() -> None:
        beats.append(time.monotonic())
        if len(beats) >= 3:
            enough.set()

    h = harness(heartbeat=beat, heartbeat_interval=0.05,
                on_exit=lambda: exits.append(threading.current_thread().name))
    h.processor.start()
    assert enough.wait(TIMEOUT)
    assert all(later - earlier >= 0.04 for earlier, later in zip(beats, beats[1:]))
    h.processor.stop(0.0)
    assert h.processor.join(TIMEOUT)
    assert exits == ["sfp"]


class RefusingStore:
    """A before_send hook whose first ``refusals`` commits fail as a locked file does."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.attempts: list[float] = []
        self.written = threading.Event()

    def __call__(self) -> None:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.refusals:
            raise StoreError("cannot write recovery file x.sqlite: database is locked "
                             "(1 change(s) not written)")
        self.written.set()


def test_a_refused_commit_sends_the_answers_counts_logs_and_retries_without_input(
        harness, monkeypatch, caplog) -> None:
    monkeypatch.setattr(processor_module, "COMMIT_RETRY", 0.2)
    store = RefusingStore(refusals=2)
    h = harness(before_send=store)
    h.processor.start()
    h.inbound.put(received("REGISTER"))
    assert h.sent.get(timeout=TIMEOUT).data == b"REGISTER"  # answered though not on disk
    h.inbound.put(received("OPTIONS"))
    assert h.sent.get(timeout=TIMEOUT).data == b"OPTIONS"
    assert store.written.wait(TIMEOUT)  # no message needed for the retries
    h.inbound.put(received("BYE"))  # handled in the next turn: the previous one has ended
    assert h.sent.get(timeout=TIMEOUT).data == b"BYE"
    first, second, third = store.attempts[:3]
    # the OPTIONS came before the retry was due: no attempt for it, the locked file
    # must not cost every batch a busy wait
    assert second - first >= 0.2 and third - second >= 0.2
    assert h.sample("psp_store_commit_failures_total") == 2
    assert h.sample("psp_internal_errors_total", thread="processor") == 0
    errors = [r for r in caplog.records if r.name == "psp.processor" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "database is locked" in errors[0].getMessage()  # rate-limited
    assert any("written again" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_a_commit_refused_at_exit_is_a_loss_logged_not_an_internal_error(harness, caplog) -> None:
    def close() -> None:
        raise StoreError("cannot write recovery file x.sqlite: disk I/O error (3 change(s) not written)")

    h = harness(on_exit=close)
    h.processor.start()
    h.processor.stop(0.0)
    assert h.processor.join(TIMEOUT)
    assert h.sample("psp_store_commit_failures_total") == 1
    assert h.sample("psp_internal_errors_total", thread="processor") == 0
    assert any("3 change(s) not written" in r.getMessage() and "lost at exit" in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")


def test_a_busy_processor_lingers_for_a_batch_and_an_idle_one_does_not(harness) -> None:
    now = [100.0]
    slept: list[float] = []
    h = harness(linger=0.5, clock=lambda: now[0], sleep=slept.append)
    h.processor.start()
    h.inbound.put(received("OPTIONS"))  # the first item: nothing was busy before it
    h.sent.get(timeout=TIMEOUT)
    assert slept == []
    now[0] += 1.0  # within LINGER_WINDOW lingers of that turn: busy
    h.inbound.put(received("INFO"))
    h.sent.get(timeout=TIMEOUT)
    assert slept == [0.5]
    now[0] += 60.0  # a minute later: idle, the message goes at once
    h.inbound.put(received("BYE"))
    h.sent.get(timeout=TIMEOUT)
    assert slept == [0.5]


def test_no_linger_when_a_batch_is_already_queued_or_lingering_is_off(harness) -> None:
    now = [100.0]
    slept: list[float] = []
    h = harness(linger=0.5, clock=lambda: now[0], sleep=slept.append)
    h.processor.start()
    h.inbound.put(received("OPTIONS"))
    h.sent.get(timeout=TIMEOUT)
    with h.inbound.mutex:  # queue.Queue: hold the consumer off while the batch is queued
        for _ in range(processor_module.LINGER_MIN + 1):
            h.inbound.queue.append(received("INFO"))
        h.inbound.not_empty.notify()
    for _ in range(processor_module.LINGER_MIN + 1):
        h.sent.get(timeout=TIMEOUT)
    assert slept == []
    h.processor.linger = 0.0  # as a reload of batch_linger = 0 sets it
    h.inbound.put(received("BYE"))
    h.sent.get(timeout=TIMEOUT)
    assert slept == []
