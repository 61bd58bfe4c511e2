"""psp.fifo: the bounded FIFO between the threads."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from psp.fifo import Fifo


def test_items_come_out_in_order() -> None:
    fifo: Fifo[int] = Fifo(10)
    for n in range(5):
        fifo.put_nowait(n)
    assert fifo.qsize() == 5
    assert [fifo.get_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(queue.Empty):
        fifo.get_nowait()


def test_a_full_fifo_refuses_without_waiting() -> None:
    fifo: Fifo[int] = Fifo(2)
    fifo.put_nowait(1)
    fifo.put_nowait(2)
    assert fifo.full()
    with pytest.raises(queue.Full):
        fifo.put_nowait(3)
    with pytest.raises(queue.Full):
        fifo.put(3, block=False)
    assert fifo.qsize() == 2


def test_a_blocking_put_gives_up_after_its_timeout() -> None:
    fifo: Fifo[int] = Fifo(1)
    fifo.put_nowait(1)
    started = time.monotonic()
    with pytest.raises(queue.Full):
        fifo.put(2, timeout=0.05)
    assert time.monotonic() - started >= 0.05
    assert fifo.qsize() == 1


def test_a_blocking_put_goes_in_once_the_consumer_makes_room() -> None:
    fifo: Fifo[str] = Fifo(1)
    fifo.put_nowait("first")
    consumer = threading.Timer(0.05, fifo.get_nowait)
    consumer.start()
    fifo.put("second", timeout=5.0)
    consumer.join()
    assert fifo.get_nowait() == "second"


def test_get_with_a_timeout_raises_empty() -> None:
    fifo: Fifo[int] = Fifo(1)
    with pytest.raises(queue.Empty):
        fifo.get(timeout=0.01)


def test_maxsize_zero_is_unbounded() -> None:
    fifo: Fifo[int] = Fifo(0)
    for n in range(10_000):
        fifo.put_nowait(n)
    assert fifo.qsize() == 10_000 and not fifo.full()
