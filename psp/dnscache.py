"""DNS queries for the resolver thread(s): dnspython behind a TTL cache (rim).

:class:`DnsCache` keeps answers for their TTL (RFC 1035 3.2.1, RFC 2181 8): positive answers
for the RRset's TTL, NXDOMAIN and NODATA for the SOA-derived negative TTL of RFC 2308
section 5 (``min(SOA TTL, SOA MINIMUM)``), and server failures briefly, as RFC 2308
section 7 allows.  It is bounded (least recently used entries go first) and takes ``now``
as an argument so that tests can move time.

:class:`CachedLookup` is the ``lookup`` callable that :func:`psp.rfc3263.resolve` asks:
cache first, then one real query per (name, type) however many resolver threads want it
at the same moment (the others wait for that query and share its answer).

:class:`DnspythonFetcher` runs one query with ``dns.resolver.Resolver`` and turns the
result into the plain records of :mod:`psp.rfc3263`, so that nothing past this module
sees a dnspython object.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.NAPTR
import dns.rdtypes.IN.SRV
import dns.resolver

from psp.rfc3263 import ADDRESS_TYPES, NXDOMAIN, Answer, Naptr, Query, Record, Srv

#: Server failures are remembered this long (RFC 2308 section 7.1 allows up to 5 minutes;
#: a short time stops a burst of requests from each waiting out a dead server's timeout
#: without keeping a passing loss around).
FAILURE_TTL = 5.0
#: No answer is kept longer than this, whatever TTL the zone asked for.
MAX_TTL = 3600.0
#: getaddrinfo tells no TTL; the original PartySIP kept host lookups this long too.
SYSTEM_TTL = 60.0

Clock = Callable[[], float]
#: on_query(rdtype, result, seconds), result in "ok" | "nodata" | "nxdomain" | "error".
QueryObserver = Callable[[str, str, float], None]
#: on_hit(rdtype): an answer came from the cache.
HitObserver = Callable[[str], None]


def result_label(answer: Answer) -> str:
    """The bounded metrics label for ``answer``'s outcome."""
    if answer.failed:
        return "error"
    if answer.error == NXDOMAIN:
        return "nxdomain"
    return "ok" if answer.records else "nodata"


class DnsCache:
    """Answers by query, each until its TTL runs out; at most ``max_entries`` (LRU)."""

    def __init__(
        self, max_entries: int = 10000, max_ttl: float = MAX_TTL, failure_ttl: float = FAILURE_TTL
    ) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.failure_ttl = failure_ttl
        self._entries: OrderedDict[Query, tuple[Answer, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: Query, now: float) -> Answer | None:
        """The cached answer to ``query`` if it has not expired at ``now``."""
        entry = self._entries.get(query)
        if entry is None:
            return None
        answer, expires = entry
        if now >= expires:
            del self._entries[query]
            return None
        self._entries.move_to_end(query)
        return answer

    def put(self, query: Query, answer: Answer, now: float) -> None:
        """Keep ``answer`` from ``now`` for its TTL (failures: ``failure_ttl``)."""
        ttl = min(self.failure_ttl if answer.failed else answer.ttl, self.max_ttl)
        if ttl <= 0 or self.max_entries <= 0:
            return  # TTL 0 means "use once, do not cache" (RFC 1035 3.2.1)
        self._entries[query] = (answer, now + ttl)
        self._entries.move_to_end(query)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


@dataclass
class _Flight:
    """A query under way; threads that want the same answer wait on ``done``."""

    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer = field(default_factory=lambda: Answer(error="lookup abandoned"))


class CachedLookup:
    """``lookup(query) -> Answer`` through a :class:`DnsCache`, merging identical queries.

    Safe to call from several resolver threads at once: the cache is only touched under
    one lock, and the query itself runs outside it.
    """

    def __init__(
        self,
        fetch: Callable[[Query], Answer],
        cache: DnsCache,
        clock: Clock = time.monotonic,
        on_query: QueryObserver | None = None,
        on_hit: HitObserver | None = None,
    ) -> None:
        self.cache = cache
        self._fetch = fetch
        self._clock = clock
        self._on_query = on_query
        self._on_hit = on_hit
        self._lock = threading.Lock()
        self._flights: dict[Query, _Flight] = {}

    def __call__(self, query: Query) -> Answer:
        with self._lock:
            cached = self.cache.get(query, self._clock())
            flight = self._flights.get(query)
            leader = cached is None and flight is None
            if leader:
                flight = self._flights[query] = _Flight()
        if cached is not None:
            if self._on_hit is not None:
                self._on_hit(query.rdtype)
            return cached
        assert flight is not None
        if not leader:
            flight.done.wait()
            return flight.answer
        return self._lead(query, flight)

    def _lead(self, query: Query, flight: _Flight) -> Answer:
        start = self._clock()
        try:
            flight.answer = self._fetch(query)
        finally:
            # Waiters are released even if the fetch raised: they see "lookup abandoned".
            with self._lock:
                self.cache.put(query, flight.answer, start)
                del self._flights[query]
            flight.done.set()
        if self._on_query is not None:
            self._on_query(query.rdtype, result_label(flight.answer), self._clock() - start)
        return flight.answer


def make_resolver(nameservers: Sequence[str], port: int, timeout: float) -> dns.resolver.Resolver:
    """A dnspython resolver for ``nameservers`` (empty: /etc/resolv.conf's) on ``port``.

    ``timeout`` bounds a whole query, retries included, so a dead server costs at most
    that long before the resolution fails.
    """
    try:
        resolver = dns.resolver.Resolver(configure=not nameservers)
    except dns.resolver.NoResolverConfiguration:
        # No usable resolv.conf: every query fails cleanly ("SERVFAIL") instead.
        resolver = dns.resolver.Resolver(configure=False)
    if nameservers:
        resolver.nameservers = list(nameservers)
    resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


class DnspythonFetcher:
    """Runs one :class:`Query` with dnspython; never raises for DNS trouble."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def __call__(self, query: Query) -> Answer:
        try:
            result = self.resolver.resolve(
                query.name + ".", query.rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as missing:
            return Answer((), _negative_ttl(missing), NXDOMAIN)
        except dns.resolver.LifetimeTimeout:
            return Answer(error="timeout")
        except dns.resolver.NoNameservers:
            return Answer(error="SERVFAIL")  # every server failed or refused
        except dns.exception.DNSException as trouble:
            return Answer(error=type(trouble).__name__)
        records = tuple(_record(rdata) for rdata in result.rrset) if result.rrset else ()
        # dnspython already applies RFC 2308 to NODATA: minimum_ttl is the SOA's then.
        return Answer(records, float(result.chaining_result.minimum_ttl))


class SystemFetcher:
    """Without configured nameservers: the system decides addresses, as getaddrinfo does.

    A and AAAA come from ``getaddrinfo`` so that /etc/hosts and nsswitch still count;
    NAPTR and SRV go to resolv.conf's servers through ``dns_fetch``.  Those servers may not
    know a name the hosts file knows, so their NXDOMAIN or failure is passed on as "no
    records" (kept ``SYSTEM_TTL``): resolution then goes on to the address lookup.
    """

    def __init__(self, dns_fetch: Callable[[Query], Answer]) -> None:
        self._dns_fetch = dns_fetch

    def __call__(self, query: Query) -> Answer:
        if query.rdtype not in ADDRESS_TYPES:
            answer = self._dns_fetch(query)
            return answer if answer.error is None else Answer((), SYSTEM_TTL)
        family = socket.AF_INET if query.rdtype == "A" else socket.AF_INET6
        try:
            infos = socket.getaddrinfo(query.name, None, family, socket.SOCK_DGRAM)
        except socket.gaierror as error:
            if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
                return Answer((), SYSTEM_TTL)
            return Answer(error=error.strerror or "getaddrinfo failed")
        return Answer(tuple(dict.fromkeys(str(info[4][0]) for info in infos)), SYSTEM_TTL)


def _negative_ttl(missing: dns.resolver.NXDOMAIN) -> float:
    """RFC 2308 section 5 TTL of an NXDOMAIN, as dnspython's chaining computes it."""
    for response in missing.responses().values():
        try:
            return float(response.resolve_chaining().minimum_ttl)
        except dns.exception.DNSException:
            continue
    return float(dns.message.NEGATIVE_TTL_WITHOUT_SOA)


def _record(rdata: dns.rdata.Rdata) -> Record:
    """The :mod:`psp.rfc3263` form of an A, AAAA, SRV or NAPTR rdata."""
    if isinstance(rdata, (dns.rdtypes.IN.A.A, dns.rdtypes.IN.AAAA.AAAA)):
        return str(rdata.address)
    if isinstance(rdata, dns.rdtypes.IN.NAPTR.NAPTR):
        return Naptr(rdata.order, rdata.preference, rdata.flags.decode("ascii", "replace"),
                     rdata.service.decode("ascii", "replace"), _name(rdata.replacement))
    if isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
        return Srv(rdata.priority, rdata.weight, rdata.port, _name(rdata.target))
    raise TypeError(f"no RFC 3263 use for {rdata.rdtype!r} records")


def _name(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()
