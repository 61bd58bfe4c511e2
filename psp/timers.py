"""Transaction timer values and a deadline heap that never reads the clock.

RFC 3261 section 17 (table 4 of Appendix A) defines timers A to K, section 16.6/16.7
Timer C for proxies, and RFC 6026 section 8.4 adds Timers L and M.  This module knows
their durations and back-off rules, including the reliable-transport rules (17.1.1.2,
17.1.2.2, 17.2.1, 17.2.2): retransmission timers A, E and G only run on unreliable
transports, and the wait timers D, I, J and K are zero on reliable ones.

:class:`TimerHeap` is the one place deadlines live (the sfp thread waits on its inbound
FIFO until :meth:`TimerHeap.next_deadline`).  ``now`` always comes in as an argument.
Cancellation is lazy: a cancelled entry stays in the heap and is dropped when it reaches
the top, so cancel is O(1) and a late or cancelled timer is a harmless no-op.  A cancelled
entry lets go of its payload at once: a proxy's cancelled Timer C would otherwise keep its
whole call alive for over three minutes after the call ended, and the garbage collector
scanning those calls was the largest cost of a proxy under load (bench/flow.py,
docs/performance.md).  The heap is compacted when cancelled entries outnumber live ones.
Timers of one fixed delay (every transaction timer) wait in FIFO *lanes* instead of the
heap: O(1) a push, and 92 bytes less each (bench/tx_memory.py).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
H = TypeVar("H", bound="TimerHandle[Any]")
_HEAP_SLACK = 1024  # cancelled entries tolerated beyond the live ones before a compaction


class IdEnum(enum.Enum):
    """An Enum hashed by identity, as its members are singletons compared by identity.

    The transaction tables, timer handles and counters hash these members on every event;
    ``Enum.__hash__`` is a Python function call, this is the C one (bench/flow.py).
    """

    __hash__ = object.__hash__


class Timer(IdEnum):
    """The RFC 3261 / RFC 6026 timers, by their letter."""

    A = "A"  # ICT request retransmission
    B = "B"  # ICT transaction timeout
    C = "C"  # proxy INVITE timeout (16.6 step 11)
    D = "D"  # ICT wait for response retransmissions
    E = "E"  # NICT request retransmission
    F = "F"  # NICT transaction timeout
    G = "G"  # IST final response retransmission
    H = "H"  # IST wait for ACK
    I = "I"  # noqa: E741  (the RFC's name) IST wait for ACK retransmissions
    J = "J"  # NIST wait for request retransmissions
    K = "K"  # NICT wait for response retransmissions
    L = "L"  # IST wait in Accepted (RFC 6026)
    M = "M"  # ICT wait in Accepted (RFC 6026)


RETRANSMIT_TIMERS = frozenset({Timer.A, Timer.E, Timer.G})
# Timers that only absorb retransmissions, which a reliable transport never produces.
WAIT_TIMERS = frozenset({Timer.D, Timer.I, Timer.J, Timer.K})


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1, T2, T4 and Timer C in seconds (RFC 3261 17.1.1.1, 16.6); every other timer derives from them."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float = 180.0

    def __post_init__(self) -> None:
        if min(self.t1, self.t2, self.t4, self.timer_c) <= 0:
            raise ValueError("timer values must be positive")
        if self.t2 < self.t1:
            raise ValueError("T2 must not be smaller than T1")

    def duration(self, timer: Timer, reliable: bool) -> float | None:
        """The initial value of ``timer``; None when it must not run at all."""
        if reliable and timer in RETRANSMIT_TIMERS:
            return None
        if reliable and timer in WAIT_TIMERS:
            return 0.0
        if timer in RETRANSMIT_TIMERS:
            return self.t1
        if timer is Timer.C:
            return self.timer_c
        if timer is Timer.D:
            # 17.1.1.2: "at least 32 seconds", and never shorter than 64*T1 (oSIP does the same)
            return max(32.0, 64 * self.t1)
        if timer in (Timer.I, Timer.K):
            return self.t4
        return 64 * self.t1  # B, F, H, J, L, M

    def backoff(self, timer: Timer, interval: float) -> float:
        """The next retransmission interval after ``interval``: A doubles, E and G cap at T2."""
        doubled = 2 * interval
        return doubled if timer is Timer.A else min(doubled, self.t2)


class TimerHandle(Generic[T]):
    """A scheduled entry; cancelling only marks it, the heap drops it lazily."""

    __slots__ = ("deadline", "payload", "cancelled")

    def __init__(self, deadline: float, payload: T) -> None:
        self.deadline = deadline
        self.payload = payload
        self.cancelled = False


class TimerHeap(Generic[T]):
    """Deadlines in a binary heap and in FIFO lanes; payloads are callbacks or keys, as the owner likes.

    A *lane* is a fixed delay: the caller's clock never goes back, so entries scheduled
    ``now + delay`` with one delay fall due in the order they were scheduled, and a deque
    per delay keeps them at O(1) a push, as bare handles.  The transactions' timers are
    such (64*T1, T4, T1 doubled: a dozen values), tens of thousands at once under load;
    the heap's ``(deadline, sequence, handle)`` entry would cost them 92 bytes more each
    (bench/tx_memory.py).  An entry whose deadline would come before its lane's last one
    goes to the heap.  Equal deadlines pop heap first, then the lanes in the order they were
    first used, each in schedule order.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle[T]]] = []
        # the sequence number breaks ties so equal deadlines pop in schedule order
        self._seq = itertools.count()
        self._lanes: dict[float, deque[TimerHandle[T]]] = {}
        self.active = 0
        self._stale = 0  # cancelled entries still stored, dropped when they reach the front

    def __len__(self) -> int:
        return self.active

    def schedule(self, deadline: float, payload: T, lane: float | None = None) -> TimerHandle[T]:
        """Add ``payload`` due at ``deadline`` (in ``lane``, its fixed delay, if given); keep the
        handle to cancel it."""
        return self.add(TimerHandle(deadline, payload), lane)

    def add(self, handle: H, lane: float | None = None) -> H:
        """Add a handle made by the caller (a subclass that carries more than its payload)."""
        deadline = handle.deadline
        self.active += 1
        if lane is not None:
            queue = self._lanes.get(lane)
            if queue is None:
                queue = self._lanes[lane] = deque()
            if not queue or queue[-1].deadline <= deadline:
                queue.append(handle)
                return handle
        heapq.heappush(self._heap, (deadline, next(self._seq), handle))
        return handle

    def cancel(self, handle: TimerHandle[T] | None) -> None:
        """Forget ``handle``; cancelling twice, None, or an already fired handle is a no-op."""
        if handle is not None and not handle.cancelled:
            handle.cancelled = True
            handle.payload = None  # type: ignore[assignment]  # never read again: let it go now
            self.active -= 1
            self._stale += 1
            if self._stale > self.active + _HEAP_SLACK:
                self._compact()

    def _compact(self) -> None:
        """Drop the cancelled entries (amortised O(1) per cancel: the entries at least halve)."""
        self._heap = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        for lane, queue in self._lanes.items():
            self._lanes[lane] = deque(handle for handle in queue if not handle.cancelled)
        self._stale = 0

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None when nothing is scheduled."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._stale -= 1
        earliest = heap[0][0] if heap else None
        for queue in self._lanes.values():
            while queue and queue[0].cancelled:
                queue.popleft()
                self._stale -= 1
            if queue and (earliest is None or queue[0].deadline < earliest):
                earliest = queue[0].deadline
        return earliest

    def pop_due(self, now: float) -> list[T]:
        """Remove and return the payloads of every live entry due at or before ``now``, in order."""
        heap = self._heap
        runs: list[list[TimerHandle[T]]] = [[]]
        while heap and heap[0][0] <= now:
            runs[0].append(heapq.heappop(heap)[2])
        for queue in self._lanes.values():
            if queue and queue[0].deadline <= now:
                run = []
                while queue and queue[0].deadline <= now:
                    run.append(queue.popleft())
                runs.append(run)
        handles = runs[0] if len(runs) == 1 else list(heapq.merge(*runs, key=_deadline))
        due: list[T] = []
        for handle in handles:
            if handle.cancelled:
                self._stale -= 1
                continue
            # a fired handle counts as cancelled so a later cancel() is a no-op
            handle.cancelled = True
            self.active -= 1
            due.append(handle.payload)
            handle.payload = None  # type: ignore[assignment]
        return due


def _deadline(handle: TimerHandle[T]) -> float:
    return handle.deadline
