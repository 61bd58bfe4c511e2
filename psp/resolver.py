"""The resolv thread(s): turn a host (name or address) into transport targets.

RFC 3261 18.1.1 and 19.1.2 (default port 5060, the transport named by the URI or UDP);
RFC 3263 4.2 in its simplest form, A and AAAA lookups.  NAPTR and SRV selection will
replace :func:`lookup` alone: everything else here is the thread around it.

DNS blocks, so it never runs on the processor: the processor submits a ``ResolveJob``
(:meth:`Resolver.submit`), one of ``threads`` workers looks it up, and posts a
``Resolved`` onto the processor's inbound FIFO.  A failure or a timeout is a ``Resolved``
with no targets and an ``error`` text, never an exception in the processor.  With
nameservers configured, dnspython queries them (with its LRU cache); without, the
system's ``getaddrinfo`` decides (resolv.conf, /etc/hosts).
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import dns.exception
import dns.resolver

from psp.events import Peer, Resolved, ResolveJob
from psp.metrics import Metrics
from psp.settings import ResolverSettings

log = logging.getLogger("psp.resolver")

DEFAULT_PORT = 5060
POST_TIMEOUT = 5.0  # how long a worker waits for room on a full inbound FIFO


class ResolveError(Exception):
    """The host could not be resolved; the message says why."""


Lookup = Callable[[str, int | None, str | None], tuple[Peer, ...]]


def make_dns_resolver(config: ResolverSettings) -> dns.resolver.Resolver | None:
    """A dnspython resolver for the [resolver] section, or None to use getaddrinfo."""
    if not config.nameservers:
        return None
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = list(config.nameservers)
    resolver.port = config.port
    resolver.timeout = config.timeout
    resolver.lifetime = config.timeout
    if config.cache_size:
        resolver.cache = dns.resolver.LRUCache(config.cache_size)
    return resolver


def lookup(
    host: str, port: int | None, transport: str | None,
    dns_resolver: dns.resolver.Resolver | None, ipv6: bool,
) -> tuple[Peer, ...]:
    """The targets for ``host``: itself when it is an address, else its A (and AAAA) records."""
    transport = (transport or "udp").lower()
    port = port or DEFAULT_PORT
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (Peer(transport, host, port),)
    if dns_resolver is None:
        addresses = _getaddrinfo(host, port, ipv6)
    else:
        addresses = _query(dns_resolver, host, ipv6)
    if not addresses:
        raise ResolveError(f"{host}: no address")
    return tuple(Peer(transport, address, port) for address in dict.fromkeys(addresses))


def _getaddrinfo(host: str, port: int, ipv6: bool) -> list[str]:
    family = socket.AF_UNSPEC if ipv6 else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except socket.gaierror as error:
        raise ResolveError(f"{host}: {error.strerror}") from None
    return [str(info[4][0]) for info in infos]


def _query(dns_resolver: dns.resolver.Resolver, host: str, ipv6: bool) -> list[str]:
    addresses: list[str] = []
    for rdtype in ("A", "AAAA") if ipv6 else ("A",):
        try:
            answer = dns_resolver.resolve(host, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise ResolveError(f"{host}: no such domain") from None
        except dns.exception.DNSException as error:
            raise ResolveError(f"{host}: {error}") from None
        addresses += [rdata.address for rdata in answer]
    return addresses


class Resolver:
    """``threads`` workers taking jobs from ``fifo`` and posting ``Resolved`` on ``inbound``."""

    def __init__(
        self, config: ResolverSettings, inbound: queue.Queue[Any], metrics: Metrics, *,
        ipv6: bool = False, fifo_size: int = 0, lookup_fn: Lookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fifo: queue.Queue[tuple[float, ResolveJob] | None] = queue.Queue(fifo_size)
        self._inbound = inbound
        self._metrics = metrics
        self._clock = clock
        if lookup_fn is None:
            dns_resolver = make_dns_resolver(config)
            lookup_fn = partial(lookup, dns_resolver=dns_resolver, ipv6=ipv6)
        self._lookup = lookup_fn
        self.threads = [
            threading.Thread(target=self._run, name=f"resolv-{n}", daemon=True)
            for n in range(max(1, config.threads))
        ]
        metrics.watch_fifo("dns", self.fifo.qsize)

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
