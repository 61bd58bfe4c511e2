"""Locating SIP servers: the client side of RFC 3263 section 4, without any I/O.

:class:`Resolution` is a planner in the style of dnspython's ``_Resolution``: it says
which DNS query to make next (:meth:`Resolution.next_query`), takes the answer
(:meth:`Resolution.take`) and ends with an ordered tuple of :class:`psp.events.Peer`
targets, or an error.  Whoever owns the sockets (the resolver thread) runs the queries;
tests feed canned answers.  Implemented here:

* RFC 3263 4.1, transport selection: an explicit ``transport`` wins; a numeric host or an
  explicit port means UDP; otherwise NAPTR (services SIP+D2U and SIP+D2T, the ones we
  support), else SRV ``_sip._udp`` and ``_sip._tcp``, else UDP.
* RFC 3263 4.2, port and address: a numeric host is used as is; an explicit port means
  A/AAAA only; otherwise SRV, else A/AAAA on port 5060.
* RFC 3263 4.3 and RFC 2782: SRV records ordered by priority, then by a weighted random
  choice whose random source is injected.  Every target is kept, in order, so that the
  proxy can fail over to the next one; :class:`Blocklist` moves targets that failed
  recently to the end of such a list.
* RFC 8020: once a name is NXDOMAIN, nothing at or below it is asked for again.

sips: we offer no TLS, so SIPS+D2T records are skipped and :func:`job_target` maps a sips
URI to transport ``tcp`` (resolved as sip over TCP).  RFC 3261 26.2 wants TLS on every
hop of a sips request; docs/dns.md records this deviation.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psp.events import Peer

if TYPE_CHECKING:
    from psp.uri import URI

DEFAULT_PORT = 5060
#: Transports we can send on, in our order of preference (RFC 3263 4.1 leaves it to us).
SUPPORTED_TRANSPORTS = ("udp", "tcp")
#: NAPTR services (RFC 3263 section 8) that lead to a transport we support.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp"}
#: Address record types, asked for in this order for every target host (by default).
ADDRESS_TYPES = ("A", "AAAA")
#: ``Answer.error`` of a name that does not exist; any other error is a failure.
NXDOMAIN = "NXDOMAIN"
#: Queries one resolution may make: an SRV set with dozens of targets must not turn one
#: request into a flood of lookups.
MAX_QUERIES = 24

RandInt = Callable[[int, int], int]


@dataclass(frozen=True, slots=True)
class Query:
    """One DNS question: ``name`` (no trailing dot, lower case) and ``rdtype``."""

    name: str
    rdtype: str  # 'NAPTR' | 'SRV' | 'A' | 'AAAA'


@dataclass(frozen=True, slots=True)
class Naptr:
    """The NAPTR fields RFC 3263 uses (RFC 3403 section 4.1)."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    """An SRV record (RFC 2782); ``target`` '.' means "no such service here"."""

    priority: int
    weight: int
    port: int
    target: str


Record = Naptr | Srv | str  # str: an address from an A or AAAA record


@dataclass(frozen=True, slots=True)
class Answer:
    """What a query returned: records (empty: NODATA), their TTL, or an error.

    ``error`` is ``NXDOMAIN`` for a name that does not exist, or a short text ("timeout",
    "SERVFAIL", ...) when the DNS could not answer at all.
    """

    records: tuple[Record, ...] = ()
    ttl: float = 0.0
    error: str | None = None

    @property
    def failed(self) -> bool:
        """True when the DNS gave no answer (as opposed to a negative one)."""
        return self.error is not None and self.error != NXDOMAIN


class _Failure(Exception):
    """Ends a resolution early: the DNS itself failed."""


@functools.lru_cache(maxsize=4096)
def ip_literal(host: str) -> str | None:
    """``host`` as a normalised IP address when it is one (brackets allowed), else None.

    Cached: the proxy asks about the same few hosts (ours, its peers') several times per
    message, and ``ipaddress`` parses in Python, failing by exception for a name.
    """
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def order_srv(records: Iterable[Srv], randint: RandInt = random.randint) -> list[Srv]:
    """Order SRV records for contacting: by priority, then weighted random (RFC 2782).

    ``randint(a, b)`` returns a uniform integer with a <= n <= b.
    """
    groups: dict[int, list[Srv]] = {}
    for record in records:
        groups.setdefault(record.priority, []).append(record)
    ordered: list[Srv] = []
    for priority in sorted(groups):
        ordered.extend(_weighted_order(groups[priority], randint))
    return ordered


def _weighted_order(group: Sequence[Srv], randint: RandInt) -> list[Srv]:
    # RFC 2782 draws from [0, sum], which gives the first record one share too many
    # (the errata discuss it); drawing from [1, sum] makes each record's chance exactly
    # weight/sum.  Weight-0 records therefore come last, in random order.
    remaining = list(group)
    ordered: list[Srv] = []
    while remaining:
        total = sum(record.weight for record in remaining)
        if total == 0:
            index = randint(0, len(remaining) - 1)
        else:
            point, running, index = randint(1, total), 0, 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= point:
                    break
        ordered.append(remaining.pop(index))
    return ordered


def job_target(uri: URI) -> tuple[str, int | None, str | None]:
    """The (host, port, transport) to put in a ResolveJob for ``uri`` (RFC 3261 19.1.1).

    ``maddr`` overrides the host.  A sips URI becomes transport ``tcp``: we offer no TLS,
    so this is a documented downgrade rather than the TLS hop RFC 3261 26.2 asks for.
    """
    host = uri.maddr or uri.host
    transport = "tcp" if uri.scheme == "sips" else uri.transport
    return host, uri.port, transport


class Resolution:
    """Plans the DNS queries that turn a SIP host into ordered targets (RFC 3263 4).

    Drive it with ``while (q := r.next_query()) is not None: r.take(answer_for(q))``,
    then read :attr:`targets` (ordered, possibly empty) and :attr:`error` (set only when
    there are no targets).
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        transport: str | None = None,
        *,
        randint: RandInt = random.randint,
        address_types: Sequence[str] = ADDRESS_TYPES,
        max_queries: int = MAX_QUERIES,
    ) -> None:
        self.host = host.rstrip(".").lower()
        self.targets: tuple[Peer, ...] = ()
        self.error: str | None = None
        self._randint = randint
        self._address_types = tuple(address_types)
        self._budget = max_queries
        self._found: list[Peer] = []
        self._missing: set[str] = set()
        self._plan = self._run(port, transport.lower() if transport else None)
        self._pending = self._advance(None)

    def next_query(self) -> Query | None:
        """The query to run next, or None when the resolution is over."""
        return self._pending

    def take(self, answer: Answer) -> None:
        """Feed the answer to :meth:`next_query`'s query."""
        if self._pending is None:
            raise RuntimeError("no query is pending")
        self._pending = self._advance(answer)

    def _advance(self, answer: Answer | None) -> Query | None:
        try:
            return self._plan.send(answer)
        except StopIteration:
            self._finish(None)
        except _Failure as failure:
            self._finish(str(failure))
        return None

    def _finish(self, failure: str | None) -> None:
        # Targets found before a failure are still worth trying: the error is reported
        # only when there is nothing to try.
        self.targets = tuple(self._found)
        if self.targets:
            return
        if failure is not None:
            self.error = failure
        elif self.host in self._missing:
            self.error = f"{self.host}: no such domain ({NXDOMAIN})"
        else:
            self.error = f"{self.host}: no SIP server found"

    def _run(self, port: int | None, transport: str | None) -> Generator[Query, Answer, None]:
        if transport is not None and transport not in SUPPORTED_TRANSPORTS:
            raise _Failure(f"unsupported transport {transport!r}")
        literal = ip_literal(self.host)
        if literal is not None:
            self._add(Peer(transport or "udp", literal, port or DEFAULT_PORT))
            return
        if port is not None:
            yield from self._addresses(transport or "udp", self.host, port)
            return
        if transport is not None:
            services = [(transport, _srv_name(transport, self.host))]
        else:
            services = (yield from self._naptr()) or [
                (name, _srv_name(name, self.host)) for name in SUPPORTED_TRANSPORTS
            ]
        found = False
        for service_transport, srv_name in services:
            found = (yield from self._srv(service_transport, srv_name)) or found
        if not found:
            yield from self._addresses(services[0][0], self.host, DEFAULT_PORT)

    def _naptr(self) -> Generator[Query, Answer, list[tuple[str, str]]]:
        """Supported NAPTR services of the host, best first, as (transport, SRV name)."""
        records = yield from self._ask(self.host, "NAPTR")
        usable = sorted(
            (r for r in records if isinstance(r, Naptr)
             and r.flags.lower() == "s" and r.service.upper() in NAPTR_SERVICES),
            key=lambda r: (r.order, r.preference),
        )
        return [(NAPTR_SERVICES[r.service.upper()], r.replacement) for r in usable]

    def _srv(self, transport: str, name: str) -> Generator[Query, Answer, bool]:
        """Resolve the targets of SRV ``name``; True when any SRV record exists."""
        records = [r for r in (yield from self._ask(name, "SRV")) if isinstance(r, Srv)]
        for record in order_srv(records, self._randint):
            if record.target.rstrip(".") != "":  # target '.': decidedly not here (RFC 2782)
                yield from self._addresses(transport, record.target, record.port)
        return bool(records)

    def _addresses(self, transport: str, name: str, port: int) -> Generator[Query, Answer, None]:
        for rdtype in self._address_types:
            for address in (yield from self._ask(name, rdtype)):
                if isinstance(address, str):
                    self._add(Peer(transport, address, port))

    def _ask(self, name: str, rdtype: str) -> Generator[Query, Answer, tuple[Record, ...]]:
        name = name.rstrip(".").lower()
        if self._budget <= 0 or any(_at_or_below(name, gone) for gone in self._missing):
            return ()
        self._budget -= 1
        answer = yield Query(name, rdtype)
        if answer.failed:
            raise _Failure(f"DNS {rdtype} {name}: {answer.error}")
        if answer.error == NXDOMAIN:
            self._missing.add(name)
        return answer.records

    def _add(self, peer: Peer) -> None:
        if peer not in self._found:
            self._found.append(peer)


def _srv_name(transport: str, host: str) -> str:
    return f"_sip._{transport}.{host}"


def _at_or_below(name: str, ancestor: str) -> bool:
    return name == ancestor or name.endswith("." + ancestor)


def resolve(
    host: str,
    port: int | None,
    transport: str | None,
    lookup: Callable[[Query], Answer],
    randint: RandInt = random.randint,
    address_types: Sequence[str] = ADDRESS_TYPES,
) -> tuple[tuple[Peer, ...], str | None]:
    """Run a whole :class:`Resolution`, asking ``lookup`` for each query: (targets, error)."""
    resolution = Resolution(host, port, transport, randint=randint, address_types=address_types)
    while (query := resolution.next_query()) is not None:
        resolution.take(lookup(query))
    return resolution.targets, resolution.error


class Blocklist:
    """Targets that failed recently, per target (RFC 3263 4.3 failover).

    A target marked failed is moved to the end of target lists for ``duration`` seconds;
    it is never removed, so that when every target has failed they are still tried.
    At most ``max_entries`` targets are remembered (the oldest marks are forgotten first).
    """

    def __init__(self, duration: float, max_entries: int = 4096) -> None:
        self.duration = duration
        self.max_entries = max_entries
        self._until: dict[tuple[str, str, int], float] = {}  # insertion order = expiry order

    def mark_failed(self, peer: Peer, now: float) -> None:
        """Remember that ``peer`` failed at ``now`` (transport error, timeout, 503)."""
        key = _key(peer)
        self._until.pop(key, None)
        self._until[key] = now + self.duration
        self._prune(now)

    def is_blocked(self, peer: Peer, now: float) -> bool:
        """True while ``peer`` is within ``duration`` of its last failure."""
        until = self._until.get(_key(peer))
        return until is not None and now < until

    def order(self, targets: Iterable[Peer], now: float) -> tuple[Peer, ...]:
        """``targets`` with the blocked ones moved to the end, each group in its order."""
        targets = tuple(targets)
        blocked = [peer for peer in targets if self.is_blocked(peer, now)]
        return tuple(peer for peer in targets if peer not in blocked) + tuple(blocked)

    def blocked(self, now: float) -> int:
        """How many targets are blocked at ``now``; changes nothing.

        A metrics scrape may call this from another thread: ``list()`` copies the values
        in one step under the GIL, so a concurrent ``mark_failed`` cannot break it.
        """
        return sum(1 for until in list(self._until.values()) if now < until)

    def _prune(self, now: float) -> None:
        # Every entry lasts the same duration, so the first one expires first.
        while self._until:
            key, until = next(iter(self._until.items()))
            if until > now and len(self._until) <= self.max_entries:
                break
            del self._until[key]


def _key(peer: Peer) -> tuple[str, str, int]:
    # Per target, whatever TCP connection reached it.
    return (peer.transport, peer.host, peer.port)
