"""Every Prometheus metric of the server, defined in one place, and the HTTP endpoint.

The rim threads update these metrics; the pure core never sees them.  What the core knows
(transactions active and completed, retransmissions, timeouts, registrations, auth
failures: the core's, the proxy's and the plugins' counters) is read from one ``stats``
mapping at scrape time (:data:`CORE_METRICS` lists the keys), and so are the depths of
the FIFOs, so that nothing is paid per message for them.
What is counted per message (messages received and sent, FIFO waits, processing time) goes
into :class:`Tally` and :class:`Timings`: plain ints and lists, each written by one thread
only, so no lock is taken per message (prometheus_client's children take one per ``inc()``
and ``observe()``, a few microseconds a message on the hot path); a collector turns them
into the usual counter and histogram families at scrape time.  The process collector adds
memory, CPU and open files.
The inventory, with the Kamailio and OpenSIPS equivalents, is in docs/operations.md.

Each :class:`Metrics` owns its own ``CollectorRegistry`` so that several servers (tests)
in one process never share counters.  Names use the ``psp_`` prefix; label values are
bounded (unknown SIP methods are counted as ``other``) so that a peer sending random
method names cannot grow the series without bound.
"""

from __future__ import annotations

import bisect
import math
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               make_wsgi_app)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from psp import __version__

if TYPE_CHECKING:
    from psp.message import Message

#: SIP methods that get a label value of their own; anything else is "other".
KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER "
    "MESSAGE UPDATE".split()
)
FIFOS = ("inbound", "outbound", "dns")
# Label values known in advance get their series at 0 from the start, so that rate() and
# alerts see them before the first event (docs/operations.md describes each).
SHED_KINDS = ("request", "in_dialog", "ack", "cancel", "response", "outbound", "dns", "draining")
DROP_REASONS = ("oversize", "tcp_connection_cap", "tcp_buffer_full", "tcp_read_timeout",
                "failure_fifo_full", "resolved_fifo_full", "queued_retransmission")
THREADS = ("transport", "processor", "resolver")

# From 100 us (an idle processor) to 5 s (a stuck one): SIP's T1 is 0.5 s, so anything
# above it already means retransmissions.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)

# Outgoing messages are bytes: peek at the start line and the CSeq method rather than parse.
_START = re.compile(rb"SIP/2\.0 ([1-6])\d\d |([A-Za-z]+) ")
_CSEQ = re.compile(rb"\n(?:CSeq)[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.IGNORECASE)

StatsSource = Callable[[], Mapping[str, Any]]
_CLASSES = {n: f"{n}xx" for n in range(1, 7)}


def method_label(method: str) -> str:
    """The label value for ``method``: itself when known, else ``other``."""
    return method if method in KNOWN_METHODS else "other"


def message_kind(message: Message) -> str:
    """The processing-latency kind of ``message``: its method, or ``response``."""
    method = getattr(message, "method", None)
    return "response" if method is None else method_label(method)


#: What :class:`_CoreCollector` exports from the stats mapping: (key, metric name, type,
#: label of a dict value or None for a number, help).  A key that the core and the
#: services do not provide is not exported.
CORE_METRICS: tuple[tuple[str, str, str, str | None, str], ...] = (
    ("transactions", "psp_transactions_active", "gauge", "kind",
     "Transactions alive in the core, by kind (ICT, IST, NICT, NIST)"),
    ("completed", "psp_transactions_completed", "counter", "class",
     "Server transactions that sent their final response, by its class (2xx .. 6xx)"),
    ("retransmissions", "psp_retransmissions", "counter", None,
     "Messages retransmitted by the transaction layer"),
    ("timeouts", "psp_timeouts", "counter", None, "Transactions ended by a timeout (Timer B, F or H)"),
    ("transport_errors", "psp_transaction_transport_errors", "counter", None,
     "Transactions ended by a transport error (RFC 3261 17.1.4, 17.2.4)"),
    ("stray_responses", "psp_stray_responses", "counter", None,
     "Responses that matched no client transaction"),
    ("noop_events", "psp_transaction_absorbed_events", "counter", None,
     "Retransmissions and late timers a transaction absorbed without effect"),
    ("stopped", "psp_requests_stopped", "counter", None, "Requests a plugin discarded (STOP)"),
    ("stray_dropped", "psp_stray_responses_dropped", "counter", None,
     "Stray responses dropped: their top Via is not ours, or no Via is left to relay them to"),
    ("registrations_active", "psp_registrations_active", "gauge", None,
     "Contacts bound in the location store"),
    ("registrations", "psp_registrations", "counter", "result",
     "REGISTER requests answered by the registrar, by result (accepted, rejected)"),
    ("auth_failures", "psp_auth_failures", "counter", "reason",
     "Credentials for our realm that failed the digest check, by reason (bad, stale, forbidden)"),
)


class _CoreCollector(Collector):
    """Samples the core's statistics when Prometheus scrapes (never per message)."""

    def __init__(self, stats: StatsSource) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        snapshot = self._stats()
        for key, name, kind, label, documentation in CORE_METRICS:
            value = snapshot.get(key)
            if value is None:
                continue
            family_type = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
            family = family_type(name, documentation, labels=[label] if label else None)
            if label is None:
                family.add_metric([], value)
            else:
                for label_value, count in sorted(value.items()):
                    family.add_metric([label_value], count)
            yield family


class Tally:
    """Counts by label values, with no lock: each thread writes a dict of its own.

    A thread's first count creates its dict (``setdefault`` is atomic); from then on only
    that thread writes it, and a scrape copies and sums them all.
    """

    def __init__(self) -> None:
        self._threads: dict[int, dict[tuple[str, ...], int]] = {}

    def add(self, key: tuple[str, ...]) -> None:
        """One more for ``key``, counted in the calling thread's dict."""
        ident = threading.get_ident()
        counts = self._threads.get(ident)
        if counts is None:
            counts = self._threads.setdefault(ident, {})
        counts[key] = counts.get(key, 0) + 1

    def totals(self) -> dict[tuple[str, ...], int]:
        """The sum over every thread's dict (a copy: the counting goes on meanwhile)."""
        summed: dict[tuple[str, ...], int] = {}
        for counts in list(self._threads.values()):
            for key, count in counts.copy().items():
                summed[key] = summed.get(key, 0) + count
        return summed


class Timing:
    """One histogram series written by one thread: bucket counts and a sum, no lock."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: the first bound >= seconds, as Prometheus buckets are "le".
        self.counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self.total += seconds


class Timings:
    """A histogram family by one label, its series created on first use (``child``)."""

    def __init__(self, name: str, documentation: str, label: str,
                 bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.documentation, self.label, self.bounds = name, documentation, label, bounds
        self._series: dict[str, Timing] = {}

    def child(self, value: str) -> Timing:
        """The series for label ``value``; a thread that observes it must be its only writer."""
        series = self._series.get(value)
        if series is None:
            series = self._series.setdefault(value, Timing(self.bounds))
        return series

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, series in sorted(self._series.copy().items()):
            counts, running, buckets = list(series.counts), 0, []
            for bound, count in zip((*self.bounds, math.inf), counts):
                running += count
                buckets.append((floatToGoString(bound), running))
            family.add_metric([value], buckets, series.total)
        return family


class _TallyCollector(Collector):
    """Exports the lock-free tallies and timings when Prometheus scrapes."""

    def __init__(self, counters: list[tuple[str, str, tuple[str, ...], Tally]], timings: list[Timings]) -> None:
        self._counters = counters
        self._timings = timings

    def collect(self) -> Iterator[Metric]:
        for name, documentation, labels, tally in self._counters:
            family = CounterMetricFamily(name, documentation, labels=list(labels))
            for key, count in sorted(tally.totals().items()):
                family.add_metric(list(key), count)
            yield family
        for timings in self._timings:
            yield timings.family()


class Metrics:
    """The metrics of one server instance, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.fifo_depth = Gauge("psp_fifo_depth", "Items waiting in each FIFO", ["fifo"], registry=reg)
        # Per message: lock-free, exported at scrape time (see the module docstring).
        self.fifo_wait = Timings("psp_fifo_wait_seconds", "Seconds items spent queued in each FIFO", "fifo")
        self.processing = Timings("psp_processing_seconds",
                                  "Seconds from receipt to the last effect of a message", "kind")
        self._received = Tally()
        self._sent = Tally()
        message_labels = ("transport", "method", "status_class")
        reg.register(_TallyCollector(
            [("psp_messages_received", "SIP messages received", message_labels, self._received),
             ("psp_messages_sent", "SIP messages sent", message_labels, self._sent)],
            [self.fifo_wait, self.processing]))
        self.parse_errors = Counter(
            "psp_parse_errors", "Messages that could not be parsed or framed", ["transport"],
            registry=reg,
        )
        self.dropped = Counter(
            "psp_dropped", "Input not processed, by reason", ["reason"], registry=reg
        )
        self.sheds = Counter(
            "psp_overload_sheds", "Work refused (503) or dropped because a FIFO was full, by kind",
            ["kind"], registry=reg,
        )
        self.internal_errors = Counter(
            "psp_internal_errors", "Bugs caught at a thread's top level", ["thread"], registry=reg
        )
        self.transport_failures = Counter(
            "psp_transport_failures", "Connect failures, resets and send errors", ["transport"],
            registry=reg,
        )
        self.dns_lookups = Counter(
            "psp_dns_lookups", "Resolver jobs, by result", ["result"], registry=reg
        )
        self.dns_seconds = Histogram(
            "psp_dns_lookup_seconds", "Seconds a resolver job took", buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.tcp_connections = Gauge(
            "psp_tcp_connections", "Open TCP connections", registry=reg
        )
        self.store_commit_failures = Counter(
            "psp_store_commit_failures",
            "Location store commits the recovery file refused (the changes wait for the next one)",
            registry=reg,
        )
        self.dns = DnsMetrics(reg)
        self._add_process_metrics(reg)
        self._bind_children()
        self._http: tuple[WSGIServer, socket.socket] | None = None  # the server and its stop socket

    def _add_process_metrics(self, reg: CollectorRegistry) -> None:
        """Memory, CPU, files (prometheus_client's process collector), uptime, version, reloads,
        and the series of known label values at 0."""
        ProcessCollector(registry=reg)
        started = time.monotonic()
        Gauge("psp_uptime_seconds", "Seconds since the server started", registry=reg).set_function(
            lambda: time.monotonic() - started)
        Gauge("psp_build_info", "Always 1; the version is the label", ["version"], registry=reg).labels(
            __version__).set(1)
        self.fifo_capacity = Gauge("psp_fifo_capacity", "Items each FIFO holds at most", ["fifo"],
                                   registry=reg)
        self.reloads = Counter("psp_reloads", "Configuration reloads (SIGHUP), by result", ["result"],
                               registry=reg)
        for result in ("ok", "refused"):
            self.reloads.labels(result)
        for kind in SHED_KINDS:
            self.sheds.labels(kind)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for transport in ("udp", "tcp"):
            self.parse_errors.labels(transport)
            self.transport_failures.labels(transport)

    def _bind_children(self) -> None:
        """Pre-bind the label children used on hot paths (a label lookup costs a lock)."""
        # Each FIFO's wait is observed by its one consumer thread.
        self.wait = {name: self.fifo_wait.child(name) for name in FIFOS}
        self.errors = {name: self.internal_errors.labels(name) for name in THREADS}
        self.lookup_ok = self.dns_lookups.labels("ok")
        self.lookup_failed = self.dns_lookups.labels("error")

    def processing_child(self, kind: str) -> Timing:
        """The processing-latency series for ``kind``: the processor thread's alone."""
        return self.processing.child(kind)

    def count_received(self, transport: str, message: Message) -> None:
        """Count one parsed incoming ``message``."""
        status = getattr(message, "status", None)
        if status is None:
            key = (transport, method_label(message.method), "none")  # type: ignore[attr-defined]
        else:
            key = (transport, method_label(message.cseq.method), _CLASSES[status // 100])
        self._received.add(key)

    def count_sent(self, transport: str, data: bytes) -> None:
        """Count one outgoing message from its bytes (start line and CSeq method)."""
        start = _START.match(data)
        if start is None:
            key = (transport, "other", "none")
        elif start.group(1) is not None:
            cseq = _CSEQ.search(data)
            method = cseq.group(1).decode("ascii").upper() if cseq else "other"
            key = (transport, method_label(method), start.group(1).decode("ascii") + "xx")
        else:
            key = (transport, method_label(start.group(2).decode("ascii")), "none")
        self._sent.add(key)

    def watch_fifo(self, name: str, depth: Callable[[], int], capacity: int | None = None) -> None:
        """Report ``depth()`` as the depth of FIFO ``name`` whenever Prometheus scrapes."""
        self.fifo_depth.labels(name).set_function(depth)
        if capacity is not None:
            self.fifo_capacity.labels(name).set(capacity)

    def watch_tcp(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the number of open TCP connections at scrape time."""
        self.tcp_connections.set_function(count)

    def watch_core(self, stats: StatsSource) -> None:
        """Sample ``stats()`` at scrape time: the keys of :data:`CORE_METRICS` it has."""
        self.registry.register(_CoreCollector(stats))

    def serve(self, address: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP on ``address``:``port`` (port 0: any); the bound port.

        Not prometheus_client's ``start_http_server``: its ``serve_forever`` polls twice a
        second and makes every shutdown wait for the next poll.  This loop blocks until a
        scrape or a stop arrives.
        """
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class = type("MetricsServer", (_MetricsServer,), {"address_family": family})
        server = make_server(address, port, make_wsgi_app(self.registry), server_class, _QuietHandler)
        stop_r, stop_w = socket.socketpair()
        self._http = (server, stop_w)
        threading.Thread(target=self._serve, args=(server, stop_r), name="metrics", daemon=True).start()
        return int(server.server_port)

    @staticmethod
    def _serve(server: WSGIServer, stop: socket.socket) -> None:
        with stop, selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(stop, selectors.EVENT_READ)
            while all(key.fileobj is server for key, _ in selector.select()):
                server.handle_request()  # readable: returns at once, the reply runs in a thread
        server.server_close()

    def close(self) -> None:
        """Stop the HTTP endpoint, if it runs (the serving thread closes its socket)."""
        if self._http is not None:
            _server, stop = self._http
            stop.close()  # the other end becomes readable: the loop ends
            self._http = None


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds the process up at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not worth a log line each."""


# ---------------------------------------------------------------- DNS (RFC 3263)
# Per DNS query, below the per-job psp_dns_lookups: psp.dnscache reports each query and
# each cache hit; the proxy's blocklist is sampled at scrape time.


class DnsMetrics:
    """DNS queries by record type and result, their latency, cache hits, blocklisted targets.

    Label values are bounded: record types are the four RFC 3263 asks for, results are
    ``psp.dnscache.result_label``'s four.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "psp_dns_queries", "DNS queries sent, by record type and result", ["rdtype", "result"],
            registry=registry,
        )
        self.query_seconds = Histogram(
            "psp_dns_query_seconds", "Seconds one DNS query took", ["rdtype"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.cache_hits = Counter(
            "psp_dns_cache_hits", "DNS answers taken from the cache", ["rdtype"], registry=registry
        )
        self.blocklisted = Gauge(
            "psp_dns_blocklisted_targets", "Targets avoided after a failure (RFC 3263 4.3)",
            registry=registry,
        )

    def count_query(self, rdtype: str, result: str, seconds: float) -> None:
        """One DNS query sent and answered (or failed) after ``seconds``."""
        self.queries.labels(rdtype, result).inc()
        self.query_seconds.labels(rdtype).observe(seconds)

    def count_hit(self, rdtype: str) -> None:
        """One answer served from the DNS cache."""
        self.cache_hits.labels(rdtype).inc()

    def watch_blocklist(self, blocked: Callable[[], int]) -> None:
        """Report ``blocked()`` (targets blocked now) whenever Prometheus scrapes."""
        self.blocklisted.set_function(blocked)
