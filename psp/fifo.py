"""The FIFOs between the threads: bounded, thread-safe, and cheap per item.

oSIP's multi-thread mode hands work between its threads through FIFOs; so do we (the
inbound FIFO to the processor, the outbound FIFO to the transport, the DNS FIFO to the
resolver; docs/architecture.md).  Every message crosses one, so the hand-off is on the hot
path: ``queue.Queue`` does its locking in Python (a ``Condition`` per put and per get,
about 2 us each), ``queue.SimpleQueue`` does it in C (about 0.1 us) but has no capacity.
:class:`Fifo` is a SimpleQueue with the capacity checked on ``put``: the producers are
the transport, resolver and signal threads, the consumer one thread, and a put that finds
the FIFO full raises ``queue.Full`` (``put_nowait``) or waits for room (``put``).

The check and the put are not one atomic step: two producers that both see one free slot
both get in, so the depth may pass ``maxsize`` by at most one item per producer thread.
A blocking ``put`` waits for room by short sleeps: it is only used where the FIFO is full
and the alternative is dropping (a DNS answer, a reload, the stop), never per message.
"""

from __future__ import annotations

import queue
import time
from typing import Generic, TypeVar

T = TypeVar("T")

#: How long a blocking put sleeps between two looks for room.
PUT_POLL = 0.001


class Fifo(Generic[T]):
    """A bounded FIFO (``maxsize`` 0: unbounded) with the ``queue.Queue`` methods we use."""

    __slots__ = ("maxsize", "_queue", "get", "get_nowait", "qsize")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()
        # The consumer's side is SimpleQueue's own, in C: get(timeout=...) raises queue.Empty.
        self.get = self._queue.get
        self.get_nowait = self._queue.get_nowait
        self.qsize = self._queue.qsize

    def full(self) -> bool:
        return 0 < self.maxsize <= self._queue.qsize()

    def put_nowait(self, item: T) -> None:
        """Queue ``item``, or raise ``queue.Full``."""
        if self.maxsize and self._queue.qsize() >= self.maxsize:
            raise queue.Full
        self._queue.put(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Queue ``item``; when full, wait up to ``timeout`` (None: for ever) for room."""
        if not block:
            self.put_nowait(item)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.full():
            if deadline is not None and time.monotonic() >= deadline:
                raise queue.Full
            time.sleep(PUT_POLL)
        self._queue.put(item)

    def __repr__(self) -> str:
        return f"<Fifo {self.qsize()}/{self.maxsize or 'unbounded'}>"

