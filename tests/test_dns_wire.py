"""RFC 3263 resolution against a real DNS server (dnsmasq on loopback, see dnsfixture)."""

from __future__ import annotations

import os
import queue
import random
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import psp
from conftest import LOOPBACK, SIPP_DIR, ServerProcess, Sipp, SippRun, free_port, needs_sipp
from dnsfixture import DNSMASQ, DnsServer, dnsmasq, host, srv
from psp.dnscache import CachedLookup, DnsCache, DnspythonFetcher, make_resolver
from psp.events import Peer, Resolved, ResolveJob
from psp.metrics import Metrics
from psp.resolver import Resolver
from psp.rfc3263 import Query, resolve
from psp.settings import ResolverSettings

pytestmark = pytest.mark.skipif(not os.path.exists(DNSMASQ), reason="dnsmasq is not installed")
TTL = 30


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    with dnsmasq(ttl=TTL) as running:
        yield running


class Wire:
    """A cached lookup against one server, with a clock the test moves and a query log."""

    def __init__(self, port: int, timeout: float = 2.0) -> None:
        self.now = 0.0
        self.queries: list[tuple[str, str]] = []
        self.cache = DnsCache()
        fetch = DnspythonFetcher(make_resolver(["127.0.0.1"], port, timeout))
        self.lookup = CachedLookup(fetch, self.cache, lambda: self.now, on_query=self._count)

    def _count(self, rdtype: str, result: str, seconds: float) -> None:
        self.queries.append((rdtype, result))

    def resolve(self, host: str, randint: Callable[[int, int], int] = random.randint
                ) -> tuple[tuple[Peer, ...], str | None]:
        return resolve(host, None, None, self.lookup, randint)


def test_sip_uri_host_resolves_to_the_highest_priority_srv_target(server: DnsServer) -> None:
    targets, error = Wire(server.port).resolve("example.test")
    assert error is None
    # NAPTR picks UDP first; SRV priority 10 (uas1) before 20 (uas2, A then AAAA); then TCP.
    assert targets == (
        Peer("udp", "127.0.0.2", 5061), Peer("udp", "127.0.0.3", 5062),
        Peer("udp", "::1", 5062), Peer("tcp", "127.0.0.2", 5061),
    )


def test_weights_share_the_first_place_in_proportion(server: DnsServer) -> None:
    wire, rng, runs = Wire(server.port), random.Random(2782), 400
    firsts = Counter(wire.resolve("weighted.test", rng.randint)[0][0].host for _ in range(runs))
    # Weights 75:25.  Tolerance: 5 standard deviations of the binomial count
    # (sqrt(400 * 0.75 * 0.25) = 8.7, so 300 +- 43); a fair choice stays inside.
    assert abs(firsts["127.0.0.4"] - 300) < 43
    assert firsts["127.0.0.4"] + firsts["127.0.0.5"] == runs
    assert len(wire.queries) < 10  # the records came from the cache after the first run


def test_a_missing_name_fails_fast_and_is_cached_negatively(server: DnsServer) -> None:
    wire = Wire(server.port)
    started = time.monotonic()
    targets, error = wire.resolve("nope.test")
    assert time.monotonic() - started < 1.0
    assert targets == () and error == "nope.test: no such domain (NXDOMAIN)"
    assert wire.queries == [("NAPTR", "nxdomain")]  # RFC 8020: nothing below it is asked
    cached = wire.cache.get(Query("nope.test", "NAPTR"), wire.now)
    assert cached is not None and cached.ttl == TTL  # the SOA minimum (RFC 2308)
    assert wire.resolve("nope.test")[1] == error
    assert len(wire.queries) == 1


def test_ttl_expiry_queries_again(server: DnsServer) -> None:
    wire = Wire(server.port)
    assert wire.resolve("plain.test") == ((Peer("udp", "127.0.0.6", 5060),), None)
    first = list(wire.queries)
    assert ("A", "ok") in first and ("NAPTR", "nodata") in first
    wire.now = TTL - 0.5
    wire.resolve("plain.test")
    assert wire.queries == first
    wire.now = TTL
    wire.resolve("plain.test")
    assert wire.queries == first + first


def test_a_silent_server_gives_a_clean_failure_within_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        wire = Wire(silent.getsockname()[1], timeout=0.3)
        started = time.monotonic()
        targets, error = wire.resolve("example.test")
        elapsed = time.monotonic() - started
    assert targets == () and error is not None and "timeout" in error
    assert elapsed < 1.0  # one query's timeout, not one per planned query
    assert wire.queries == [("NAPTR", "error")]


def test_the_resolver_thread_posts_rfc3263_targets(server: DnsServer) -> None:
    settings = ResolverSettings(nameservers=("127.0.0.1",), port=server.port, timeout=2.0,
                                threads=1, cache_size=100, blocklist_time=30.0)
    inbound: queue.Queue[Resolved] = queue.Queue()
    metrics = Metrics()
    resolver = Resolver(settings, inbound, metrics)  # type: ignore[arg-type]
    resolver.start()
    try:
        answers = []
        for job, host in enumerate(("example.test", "example.test", "nope.test")):
            resolver.submit(ResolveJob(job, host, None, None, time.monotonic()))
            answers.append(inbound.get(timeout=5))
    finally:
        resolver.stop(5)
    expected = (Peer("udp", "127.0.0.2", 5061), Peer("udp", "127.0.0.3", 5062),
                Peer("tcp", "127.0.0.2", 5061))  # ipv6 off: no AAAA asked
    assert [(a.job, a.targets, a.error) for a in answers] == [
        (0, expected, None), (1, expected, None), (2, (), "nope.test: no such domain (NXDOMAIN)")]

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)
    assert sample("psp_dns_queries_total", rdtype="NAPTR", result="ok") == 1
    assert sample("psp_dns_queries_total", rdtype="NAPTR", result="nxdomain") == 1
    assert sample("psp_dns_cache_hits_total", rdtype="NAPTR") == 1  # the second job
    assert sample("psp_dns_query_seconds_count", rdtype="SRV") == 2


# ---------------------------------------------------------------- end to end, with SIPp

def proxy_uses_target_lists() -> bool:
    """True once the proxy takes RFC 3263 target lists: some psp module beyond the DNS
    ones imports psp.rfc3263 (docs/dns.md, "Contract for the proxy")."""
    dns_modules = {"rfc3263.py", "dnscache.py", "resolver.py"}
    package = Path(psp.__file__).parent
    return any("psp.rfc3263" in path.read_text() for path in package.glob("*.py")
               if path.name not in dns_modules)


needs_failover = pytest.mark.skipif(
    not proxy_uses_target_lists(),
    reason="the proxy does not use psp.rfc3263 target lists and its Blocklist yet",
)


def uac_to_example_test(directory: Path) -> Path:
    """tests/sipp/uac_call.xml with sip:[service]@example.test as Request-URI and To."""
    text = (SIPP_DIR / "uac_call.xml").read_text()
    at_uas = "[remote_ip]:[remote_port]"
    assert f"@{at_uas};transport=[transport] SIP/2.0" in text and f"@{at_uas}>" in text
    text = text.replace(f"@{at_uas};transport=[transport] SIP/2.0", "@example.test SIP/2.0")
    scenario = directory / "uac_example_test.xml"
    scenario.write_text(text.replace(f"@{at_uas}>", "@example.test>"))
    return scenario


Started = tuple[subprocess.Popen[bytes], str]


def call_example_test(partysip: Callable[..., ServerProcess], sipp: Sipp, tmp_path: Path,
                      uas_hosts: tuple[str, ...]) -> tuple[ServerProcess, SippRun, list[Started]]:
    """One call to sip:user@example.test through the proxy; UASes run on ``uas_hosts``.

    SRV: uas1 (127.0.0.2, priority 10) before uas2 (127.0.0.3, priority 20), on free ports.
    Returns the proxy, the caller's run and the UASes (each ends after one call: -m 1).
    """
    ports = {"127.0.0.2": free_port("127.0.0.2"), "127.0.0.3": free_port("127.0.0.3")}
    records = (
        srv("_sip._udp.example.test", "uas1.example.test", ports["127.0.0.2"], 10, 0),
        srv("_sip._udp.example.test", "uas2.example.test", ports["127.0.0.3"], 20, 0),
        host("uas1.example.test", "127.0.0.2"), host("uas2.example.test", "127.0.0.3"),
    )
    with dnsmasq(records) as dns_server:
        server = partysip(plugins="syntax ls_sfull", t1=0.05, sections={"resolver": {
            "nameservers": "127.0.0.1", "port": dns_server.port, "timeout": 1.0}})
        callees = [sipp.start("uas_call.xml", "-i", address, port=ports[address])
                   for address in uas_hosts]
        caller = sipp.run(uac_to_example_test(tmp_path), f"{LOOPBACK}:{server.udp_port}",
                          "-rsa", f"{LOOPBACK}:{server.udp_port}", "-s", "user")
    return server, caller, callees


def succeeded(run: SippRun) -> bool:
    return run.returncode == 0 and run.counter("SuccessfulCall") == 1


@needs_sipp
@needs_failover
def test_a_call_reaches_the_highest_priority_srv_target(partysip, sipp, tmp_path: Path) -> None:
    _, caller, (uas1, uas2) = call_example_test(partysip, sipp, tmp_path, ("127.0.0.2", "127.0.0.3"))
    assert succeeded(caller), caller.describe()
    callee = sipp.wait(uas1, timeout=10)
    assert succeeded(callee), callee.describe()
    assert uas2[0].poll() is None  # still waiting for its one call: it never got one


@needs_sipp
@needs_failover
def test_when_the_first_target_is_down_the_call_lands_on_the_second(partysip, sipp,
                                                                   tmp_path: Path) -> None:
    server, caller, (uas2,) = call_example_test(partysip, sipp, tmp_path, ("127.0.0.3",))
    assert succeeded(caller), caller.describe()
    callee = sipp.wait(uas2, timeout=10)
    assert succeeded(callee), callee.describe()
    # uas1 stays at the end of target lists for [resolver] blocklist_time (30 s).
    assert "\npsp_dns_blocklisted_targets 1.0\n" in server.scrape()
