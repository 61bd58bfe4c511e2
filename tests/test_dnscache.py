"""The DNS TTL cache and the merged, cached lookup, with a fake clock and fake queries."""

from __future__ import annotations

import threading

import pytest

from psp.dnscache import CachedLookup, DnsCache, result_label
from psp.rfc3263 import NXDOMAIN, Answer, Query, Srv

Q = Query("_sip._udp.example.test", "SRV")
POSITIVE = Answer((Srv(10, 1, 5060, "uas1.example.test"),), ttl=30)
MISSING = Answer((), ttl=60, error=NXDOMAIN)
NODATA = Answer((), ttl=45)
TIMEOUT = Answer(error="timeout")


class CountingCache(DnsCache):
    """A cache that counts its lookups: a caller has read the in-flight table once counted.

    ``CachedLookup`` reads the cache and the table of queries in flight under one lock, and
    the leader needs that lock to retire its flight, so a counted caller is sure to share
    the leader's answer instead of fetching again.
    """

    def __init__(self, **options: int) -> None:
        super().__init__(**options)
        self.lookups = threading.Semaphore(0)

    def get(self, query: Query, now: float) -> Answer | None:
        self.lookups.release()
        return super().get(query, now)

    def wait_for_lookups(self, count: int) -> None:
        for _ in range(count):
            assert self.lookups.acquire(timeout=5), "a lookup thread never reached the cache"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("answer", [POSITIVE, MISSING, NODATA])
def test_answers_live_exactly_their_ttl(answer: Answer) -> None:
    cache = DnsCache()
    cache.put(Q, answer, now=100.0)
    assert cache.get(Q, 100.0 + answer.ttl - 0.001) is answer
    assert cache.get(Q, 100.0 + answer.ttl) is None
    assert len(cache) == 0  # the expired entry is gone, not just hidden


def test_failures_live_failure_ttl_and_ttl_is_capped() -> None:
    cache = DnsCache(max_ttl=10.0, failure_ttl=2.0)
    cache.put(Q, TIMEOUT, now=0.0)
    assert cache.get(Q, 1.9) is TIMEOUT and cache.get(Q, 2.0) is None
    cache.put(Q, POSITIVE, now=0.0)  # TTL 30, capped to 10
    assert cache.get(Q, 9.9) is POSITIVE and cache.get(Q, 10.0) is None


def test_ttl_zero_and_size_zero_cache_nothing() -> None:
    cache = DnsCache()
    cache.put(Q, Answer(("127.0.0.1",), ttl=0), now=0.0)
    assert cache.get(Q, 0.0) is None
    off = DnsCache(max_entries=0)
    off.put(Q, POSITIVE, now=0.0)
    assert off.get(Q, 0.0) is None


def test_least_recently_used_goes_first_when_full() -> None:
    cache = DnsCache(max_entries=2)
    a, b, c = (Query(f"{name}.test", "A") for name in "abc")
    cache.put(a, POSITIVE, 0.0)
    cache.put(b, POSITIVE, 0.0)
    assert cache.get(a, 1.0) is POSITIVE  # a is now the most recently used
    cache.put(c, POSITIVE, 1.0)
    assert cache.get(b, 1.0) is None
    assert cache.get(a, 1.0) is POSITIVE and cache.get(c, 1.0) is POSITIVE


@pytest.mark.parametrize(("answer", "label"), [
    (POSITIVE, "ok"), (NODATA, "nodata"), (MISSING, "nxdomain"), (TIMEOUT, "error"),
])
def test_result_labels(answer: Answer, label: str) -> None:
    assert result_label(answer) == label


def test_lookup_uses_the_cache_until_the_ttl_expires() -> None:
    clock, fetched, queries, hits = Clock(), [], [], []
    lookup = CachedLookup(
        lambda q: fetched.append(q) or POSITIVE, DnsCache(), clock,
        on_query=lambda rdtype, result, seconds: queries.append((rdtype, result)),
        on_hit=hits.append,
    )
    assert lookup(Q) is POSITIVE
    clock.now += 29.0
    assert lookup(Q) is POSITIVE
    assert (fetched, queries, hits) == ([Q], [("SRV", "ok")], ["SRV"])
    clock.now += 1.0
    lookup(Q)
    assert fetched == [Q, Q]


def test_concurrent_identical_queries_make_one_fetch() -> None:
    release, started, calls = threading.Event(), threading.Event(), []

    def slow_fetch(query: Query) -> Answer:
        calls.append(query)
        started.set()
        assert release.wait(5)
        return POSITIVE

    # No caching: only the merge can keep the late threads from fetching again.
    cache = CountingCache(max_entries=0)
    lookup = CachedLookup(slow_fetch, cache)
    results: list[Answer] = []
    threads = [threading.Thread(target=lambda: results.append(lookup(Q))) for _ in range(4)]
    threads[0].start()
    assert started.wait(5)
    for thread in threads[1:]:
        thread.start()
    cache.wait_for_lookups(4)  # the leader and the three others met the flight in progress
    release.set()
    for thread in threads:
        thread.join(5)
    assert calls == [Q]
    assert results == [POSITIVE] * 4


def test_waiters_get_a_clean_failure_when_the_fetch_crashes() -> None:
    release, started = threading.Event(), threading.Event()

    def broken_fetch(query: Query) -> Answer:
        started.set()
        release.wait(5)
        raise RuntimeError("bug")

    cache = CountingCache()
    lookup = CachedLookup(broken_fetch, cache)
    waited: list[Answer] = []
    leader_errors: list[BaseException] = []

    def lead() -> None:
        try:
            lookup(Q)
        except RuntimeError as error:
            leader_errors.append(error)

    leader = threading.Thread(target=lead)
    leader.start()
    assert started.wait(5)
    waiter = threading.Thread(target=lambda: waited.append(lookup(Q)))
    waiter.start()
    cache.wait_for_lookups(2)  # the waiter joined the leader's flight before it crashed
    release.set()
    leader.join(5)
    waiter.join(5)
    assert len(leader_errors) == 1
    assert len(waited) == 1 and waited[0].failed
