"""The resolver threads: addresses, DNS over a loopback nameserver, getaddrinfo, failures."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from psp.events import Peer, Resolved, ResolveJob
from psp.metrics import Metrics
from psp.resolver import ResolveError, Resolver, lookup, make_dns_lookup

TIMEOUT = 5.0
ZONE = {("sip.example.test.", "A"): ["192.0.2.10", "192.0.2.11"],
        ("sip.example.test.", "AAAA"): ["2001:db8::10"]}


def config(**changes: Any) -> SimpleNamespace:
    base = dict(nameservers=(), port=53, timeout=1.0, threads=1, cache_size=100, blocklist_time=30.0)
    return SimpleNamespace(**{**base, **changes})


class TinyNameserver:
    """Answers A/AAAA queries from ZONE on a loopback UDP port; NXDOMAIN for anything else."""

    def __init__(self, answer: bool = True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self._answer = answer
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            question = query.question[0]
            name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
            self.queries.append(f"{name} {rdtype}")
            if self._answer:
                self.sock.sendto(self._reply(query, name, rdtype).to_wire(), addr)

    @staticmethod
    def _reply(query: dns.message.Message, name: str, rdtype: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        if not any(key[0] == name for key in ZONE):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in ZONE:
            reply.answer.append(dns.rrset.from_text_list(name, 60, "IN", rdtype, ZONE[(name, rdtype)]))
        return reply

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def nameserver() -> Iterator[TinyNameserver]:
    server = TinyNameserver()
    yield server
    server.close()


def run_job(resolver_config: SimpleNamespace, job: ResolveJob, **options: Any) -> tuple[Resolved, Metrics]:
    inbound: queue.Queue[Any] = queue.Queue()
    metrics = Metrics()
    resolver = Resolver(resolver_config, inbound, metrics, **options)
    resolver.start()
    try:
        resolver.submit(job)
        return inbound.get(timeout=TIMEOUT), metrics
    finally:
        resolver.stop(TIMEOUT)


def test_an_address_needs_no_lookup() -> None:
    assert lookup("192.0.2.1", None, None, None, False) == (Peer("udp", "192.0.2.1", 5060),)
    assert lookup("::1", 5070, "TCP", None, True) == (Peer("tcp", "::1", 5070),)


def test_names_are_resolved_by_the_configured_nameserver(nameserver) -> None:
    dns_resolver = make_dns_lookup(config(nameservers=("127.0.0.1",), port=nameserver.port), Metrics())
    # an RRset has no order: compare as sets
    assert set(lookup("sip.example.test", None, "tcp", dns_resolver, False)) == {
        Peer("tcp", "192.0.2.10", 5060), Peer("tcp", "192.0.2.11", 5060)}
    assert lookup("sip.example.test", 5080, None, dns_resolver, True)[-1] == Peer("udp", "2001:db8::10", 5080)
    with pytest.raises(ResolveError, match="no such domain"):
        lookup("nowhere.example.test", None, None, dns_resolver, False)


def test_the_resolver_cache_spares_a_second_query(nameserver) -> None:
    dns_resolver = make_dns_lookup(config(nameservers=("127.0.0.1",), port=nameserver.port), Metrics())
    lookup("sip.example.test", None, None, dns_resolver, False)
    first = list(nameserver.queries)  # RFC 3263: NAPTR, both SRV names, then A
    lookup("sip.example.test", None, None, dns_resolver, False)
    assert nameserver.queries == first and first[-1] == "sip.example.test. A"


def test_without_nameservers_the_system_resolver_is_used() -> None:
    system = make_dns_lookup(config(), Metrics())
    assert Peer("udp", "127.0.0.1", 5060) in lookup("localhost", None, None, system, False)


def test_a_job_becomes_resolved_on_the_inbound_fifo(nameserver) -> None:
    job = ResolveJob(42, "sip.example.test", 5062, "udp", time.monotonic())
    resolved, metrics = run_job(config(nameservers=("127.0.0.1",), port=nameserver.port), job)
    assert (resolved.job, resolved.error) == (42, None)
    assert set(resolved.targets) == {Peer("udp", "192.0.2.10", 5062), Peer("udp", "192.0.2.11", 5062)}
    assert metrics.registry.get_sample_value("psp_dns_lookups_total", {"result": "ok"}) == 1
    assert metrics.registry.get_sample_value("psp_fifo_wait_seconds_count", {"fifo": "dns"}) == 1


def test_a_silent_nameserver_yields_an_error_after_the_timeout() -> None:
    silent = TinyNameserver(answer=False)
    try:
        started = time.monotonic()
        job = ResolveJob(1, "sip.example.test", None, None, started)
        resolved, metrics = run_job(config(nameservers=("127.0.0.1",), port=silent.port, timeout=0.2), job)
    finally:
        silent.close()
    assert resolved.targets == () and resolved.error
    assert time.monotonic() - started < 3.0
    assert metrics.registry.get_sample_value("psp_dns_lookups_total", {"result": "error"}) == 1


def test_a_bug_in_a_lookup_is_counted_and_the_worker_goes_on() -> None:
    def flaky(host: str, port: int | None, transport: str | None) -> tuple[Peer, ...]:
        if host == "bug":
            raise KeyError(host)
        return (Peer("udp", "192.0.2.1", 5060),)

    inbound: queue.Queue[Any] = queue.Queue()
    metrics = Metrics()
    resolver = Resolver(config(), inbound, metrics, lookup_fn=flaky)
    resolver.start()
    resolver.submit(ResolveJob(1, "bug", None, None, 0.0))
    resolver.submit(ResolveJob(2, "fine", None, None, 0.0))
    assert inbound.get(timeout=TIMEOUT).job == 2
    resolver.stop(TIMEOUT)
    assert metrics.registry.get_sample_value("psp_internal_errors_total", {"thread": "resolver"}) == 1


def test_a_full_resolver_fifo_answers_at_once_with_an_error() -> None:
    inbound: queue.Queue[Any] = queue.Queue()
    metrics = Metrics()
    resolver = Resolver(config(), inbound, metrics, fifo_size=1)  # not started: nothing drains it
    resolver.submit(ResolveJob(1, "a.example", None, None, 0.0))
    resolver.submit(ResolveJob(2, "b.example", None, None, 0.0))
    resolved = inbound.get_nowait()
    assert (resolved.job, resolved.targets, resolved.error) == (2, (), "resolver FIFO full")
    sample = metrics.registry.get_sample_value
    assert (sample("psp_fifo_depth", {"fifo": "dns"}), sample("psp_fifo_capacity", {"fifo": "dns"})) == (1, 1)
