"""The resolv thread(s): turn a host (name or address) into transport targets.

RFC 3263 section 4 (NAPTR, SRV, A/AAAA) as planned by :mod:`psp.rfc3263`, its queries
answered through the TTL cache of :mod:`psp.dnscache`; :func:`lookup` is that step, and
everything else here is the thread around it.

DNS blocks, so it never runs on the processor: the processor submits a ``ResolveJob``
(:meth:`Resolver.submit`), one of ``threads`` workers looks it up, and posts a
``Resolved`` onto the processor's inbound FIFO.  A failure or a timeout is a ``Resolved``
with no targets and an ``error`` text, never an exception in the processor.  With
nameservers configured, dnspython queries them; without, resolv.conf's servers answer
NAPTR and SRV and the system's ``getaddrinfo`` gives addresses (/etc/hosts included).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from psp.dnscache import CachedLookup, DnsCache, DnspythonFetcher, SystemFetcher, make_resolver
from psp.events import Peer, Resolved, ResolveJob
from psp.fifo import Fifo
from psp.metrics import Metrics
from psp.rfc3263 import ADDRESS_TYPES, Answer, Query, resolve
from psp.settings import ResolverSettings

log = logging.getLogger("psp.resolver")

POST_TIMEOUT = 5.0  # how long a worker waits for room on a full inbound FIFO


class ResolveError(Exception):
    """The host could not be resolved; the message says why."""


Lookup = Callable[[str, int | None, str | None], tuple[Peer, ...]]


def make_dns_lookup(
    config: ResolverSettings, metrics: Metrics, clock: Callable[[], float] = time.monotonic,
) -> CachedLookup:
    """DNS queries for the [resolver] section, through a TTL cache of ``cache_size`` answers.

    With nameservers, dnspython asks them; without, NAPTR and SRV go to resolv.conf's
    servers and addresses come from getaddrinfo, so /etc/hosts still counts.
    """
    fetch: Callable[[Query], Answer] = DnspythonFetcher(
        make_resolver(config.nameservers, config.port, config.timeout))
    if not config.nameservers:
        fetch = SystemFetcher(fetch)
    return CachedLookup(fetch, DnsCache(config.cache_size), clock,
                        on_query=metrics.dns.count_query, on_hit=metrics.dns.count_hit)


def lookup(
    host: str, port: int | None, transport: str | None,
    dns_lookup: Callable[[Query], Answer], ipv6: bool,
) -> tuple[Peer, ...]:
    """The targets for ``host``, best first (RFC 3263 section 4; see docs/dns.md)."""
    address_types = ADDRESS_TYPES if ipv6 else ("A",)
    targets, error = resolve(host, port, transport, dns_lookup, address_types=address_types)
    if error is not None:
        raise ResolveError(error)
    return targets


class Resolver:
    """``threads`` workers taking jobs from ``fifo`` and posting ``Resolved`` on ``inbound``."""

    def __init__(
        self, config: ResolverSettings, inbound: Fifo[Any], metrics: Metrics, *,
        ipv6: bool = False, fifo_size: int = 0, lookup_fn: Lookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fifo: Fifo[tuple[float, ResolveJob] | None] = Fifo(fifo_size)
        self._inbound = inbound
        self._metrics = metrics
        self._clock = clock
        if lookup_fn is None:
            dns_lookup = make_dns_lookup(config, metrics, clock)
            lookup_fn = partial(lookup, dns_lookup=dns_lookup, ipv6=ipv6)
        self._lookup = lookup_fn
        self.threads = [
            threading.Thread(target=self._run, name=f"resolv-{n}", daemon=True)
            for n in range(max(1, config.threads))
        ]
        metrics.watch_fifo("dns", self.fifo.qsize, self.fifo.maxsize or None)  # 0: unbounded

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Let the workers finish the job in hand, then end them."""
        for _ in self.threads:
            self.fifo.put(None)
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout)

    def submit(self, job: ResolveJob) -> None:
        """Queue ``job`` (called by the processor; never blocks)."""
        try:
            self.fifo.put_nowait((self._clock(), job))
        except queue.Full:
            self._metrics.sheds.labels("dns").inc()
            # The processor is calling: never block it, even on its own FIFO.
            self._post(Resolved(job.job, (), "resolver FIFO full", self._clock()), timeout=0)

    def _run(self) -> None:
        while True:
            item = self.fifo.get()
            if item is None:
                return
            try:
                self._resolve(*item)
            except Exception:  # a bug on one job must not end the worker
                log.exception("internal error in the resolver")
                self._metrics.errors["resolver"].inc()

    def _resolve(self, queued: float, job: ResolveJob) -> None:
        start = self._clock()
        self._metrics.wait["dns"].observe(start - queued)
        try:
            targets, error = self._lookup(job.host, job.port, job.transport), None
        except ResolveError as failure:
            targets, error = (), str(failure)
        done = self._clock()
        self._metrics.dns_seconds.observe(done - start)
        (self._metrics.lookup_failed if error else self._metrics.lookup_ok).inc()
        if error:
            log.info("resolving %s failed: %s", job.host, error)
        self._post(Resolved(job.job, targets, error, done))

    def _post(self, resolved: Resolved, timeout: float = POST_TIMEOUT) -> None:
        try:
            self._inbound.put(resolved, block=timeout > 0, timeout=timeout or None)
        except queue.Full:
            self._metrics.dropped.labels("resolved_fifo_full").inc()
