"""RFC 3263 resolution against a real DNS server (dnsmasq on loopback, see dnsfixture)."""

from __future__ import annotations

import os
import queue
import random
import re
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LOOPBACK, SIPP_DIR, ServerProcess, Sipp, SippRun, free_port, needs_sipp, udp_bound
from dnsfixture import DNSMASQ, DnsServer, dnsmasq, host, srv
from psp.dnscache import CachedLookup, DnsCache, DnspythonFetcher, make_resolver
from psp.events import Peer, Resolved, ResolveJob
from psp.metrics import Metrics
from psp.resolver import Resolver
from psp.rfc3263 import Query, resolve
from psp.settings import ResolverSettings
from test_server import final, options

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
    wire = Wire(server.port, timeout=5.0)
    started = time.monotonic()
    targets, error = wire.resolve("nope.test")
    assert time.monotonic() - started < 4.0  # the answer itself, not the 5 s timeout
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
        wire = Wire(silent.getsockname()[1], timeout=1.0)
        started = time.monotonic()
        targets, error = wire.resolve("example.test")
        elapsed = time.monotonic() - started
    assert targets == () and error is not None and "timeout" in error
    # One query's timeout (1 s), not one per planned query (NAPTR, two SRV, A: 4 s or more).
    assert elapsed < 2.5
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

UAS_HOSTS = ("127.0.0.2", "127.0.0.3")
Started = tuple[subprocess.Popen[bytes], str]


def uac_to(directory: Path, domain: str) -> Path:
    """tests/sipp/uac_call.xml calling sip:[service]@``domain`` (Request-URI and To) and
    logging, for each call, the address in the answering UAS's Contact: ``answered by IP``."""
    text = (SIPP_DIR / "uac_call.xml").read_text()
    at_uas, ok = "[remote_ip]:[remote_port]", '<recv response="200" rtd="true" rrs="true"/>'
    for piece in (f"@{at_uas};transport=[transport] SIP/2.0", f"@{at_uas}>", ok):
        assert text.count(piece) == 1, piece
    text = text.replace(f"@{at_uas};transport=[transport] SIP/2.0", f"@{domain} SIP/2.0")
    text = text.replace(f"@{at_uas}>", f"@{domain}>").replace(ok, ok[:-2] + """>
    <action>
      <ereg regexp="[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+" search_in="hdr" header="Contact:"
            check_it="true" assign_to="host"/>
      <log message="answered by [$host]"/>
    </action>
  </recv>""")
    scenario = directory / f"uac_{domain}.xml"
    scenario.write_text(text)
    return scenario


def start_uases(sipp: Sipp, ports: dict[str, int], calls: int = 1) -> list[Started]:
    """A SIPp UAS (tests/sipp/uas_call.xml) on each ``address: port``, each bound once this returns."""
    callees = [sipp.start("uas_call.xml", "-i", address, port=port, calls=calls, timeout=60)
               for address, port in ports.items()]
    deadline = time.monotonic() + 10
    for (address, port), (proc, _) in zip(ports.items(), callees):
        while not udp_bound(address, port):  # another process: no event to wait on
            assert proc.poll() is None and time.monotonic() < deadline, f"no SIPp on {address}:{port}"
            time.sleep(0.02)
    return callees


def dns_proxy(partysip: Callable[..., ServerProcess], dns_server: DnsServer, timeout: float = 1.0,
              **keys: Any) -> ServerProcess:
    """A stateful proxy whose resolver asks ``dns_server`` (one query: at most ``timeout``)."""
    return partysip(plugins="syntax ls_sfull", sections={"resolver": {
        "nameservers": "127.0.0.1", "port": dns_server.port, "timeout": timeout}}, **keys)


def call(sipp: Sipp, server: ServerProcess, scenario: Path, *args: str, **options: Any) -> SippRun:
    """Run ``scenario`` (see :func:`uac_to`) through the proxy over UDP."""
    proxy = f"{LOOPBACK}:{server.udp_port}"
    return sipp.run(scenario, proxy, "-rsa", proxy, "-s", "user", *args, **options)


def call_example_test(partysip: Callable[..., ServerProcess], sipp: Sipp, tmp_path: Path,
                      uas_hosts: tuple[str, ...]) -> tuple[ServerProcess, SippRun, list[Started]]:
    """One call to sip:user@example.test through the proxy; UASes run on ``uas_hosts``.

    SRV: uas1 (127.0.0.2, priority 10) before uas2 (127.0.0.3, priority 20), on free ports.
    Returns the proxy, the caller's run and the UASes (each ends after one call: -m 1).
    """
    ports = {address: free_port(address) for address in UAS_HOSTS}
    records = (
        srv("_sip._udp.example.test", "uas1.example.test", ports["127.0.0.2"], 10, 0),
        srv("_sip._udp.example.test", "uas2.example.test", ports["127.0.0.3"], 20, 0),
        host("uas1.example.test", "127.0.0.2"), host("uas2.example.test", "127.0.0.3"),
    )
    with dnsmasq(records) as dns_server:
        server = dns_proxy(partysip, dns_server, t1=0.05)
        callees = start_uases(sipp, {address: ports[address] for address in uas_hosts})
        caller = call(sipp, server, uac_to(tmp_path, "example.test"))
    return server, caller, callees


def succeeded(run: SippRun) -> bool:
    return run.returncode == 0 and run.counter("SuccessfulCall") == 1


@needs_sipp
def test_a_call_reaches_the_highest_priority_srv_target(partysip, sipp, tmp_path: Path) -> None:
    _, caller, (uas1, uas2) = call_example_test(partysip, sipp, tmp_path, UAS_HOSTS)
    assert succeeded(caller), caller.describe()
    callee = sipp.wait(uas1, timeout=10)
    assert succeeded(callee), callee.describe()
    assert uas2[0].poll() is None  # still waiting for its one call: it never got one


@needs_sipp
def test_when_the_first_target_is_down_the_call_lands_on_the_second(partysip, sipp,
                                                                   tmp_path: Path) -> None:
    server, caller, (uas2,) = call_example_test(partysip, sipp, tmp_path, ("127.0.0.3",))
    assert succeeded(caller), caller.describe()
    callee = sipp.wait(uas2, timeout=10)
    assert succeeded(callee), callee.describe()
    # uas1 stays at the end of target lists for [resolver] blocklist_time (30 s).
    assert "\npsp_dns_blocklisted_targets 1.0\n" in server.scrape()


@needs_sipp
def test_calls_spread_over_srv_targets_in_proportion_to_their_weights(partysip, sipp, tmp_path: Path) -> None:
    calls, heavy_share = 300, 0.75
    ports = {address: free_port(address) for address in UAS_HOSTS}
    records = (  # one priority, weights 3:1 (RFC 2782)
        srv("_sip._udp.spread.test", "heavy.spread.test", ports["127.0.0.2"], 10, 75),
        srv("_sip._udp.spread.test", "light.spread.test", ports["127.0.0.3"], 10, 25),
        host("heavy.spread.test", "127.0.0.2"), host("light.spread.test", "127.0.0.3"),
    )
    log = tmp_path / "answers.log"
    with dnsmasq(records) as dns_server:
        server = dns_proxy(partysip, dns_server, loglevel=4)
        start_uases(sipp, ports, calls=calls)
        caller = call(sipp, server, uac_to(tmp_path, "spread.test"), "-r", "60", "-l", "30",
                      "-trace_logs", "-log_file", str(log), calls=calls, timeout=60)
    assert caller.returncode == 0 and caller.counter("SuccessfulCall") == calls, caller.describe()
    answered = Counter(re.findall(r"answered by (\S+)", log.read_text()))
    assert sum(answered.values()) == calls and set(answered) <= set(UAS_HOSTS), answered
    # Each call's first target is a fresh weighted draw: 127.0.0.2 answers Binomial(300, 0.75)
    # calls, 225 on average with a standard deviation of 7.5.  Tolerance: 5 standard
    # deviations (+-37); uniform (150) or fixed (0 or 300) choices fall far outside.
    assert abs(answered["127.0.0.2"] - calls * heavy_share) < 37, answered


def test_a_call_to_a_missing_domain_gets_its_final_response_at_once(partysip, udp) -> None:
    resolver_timeout = 3.0
    with dnsmasq() as dns_server:
        server = dns_proxy(partysip, dns_server, timeout=resolver_timeout)
        invite = options(udp.getsockname()[1], "z9hG4bK-nxdomain", uri="sip:user@nope.test", method="INVITE")
        started = time.monotonic()
        answer = final(udp, server, invite)
        elapsed = time.monotonic() - started
    # NXDOMAIN is an answer, not a silence: no resolver timeout, no Timer B or C.
    assert elapsed < resolver_timeout, f"the final response took {elapsed:.2f} s"
    # docs/proxy.md: an unresolvable next hop ends the branch as a 503 (RFC 3261 16.9),
    # which goes upstream as 500 (16.7 never relays a 503).
    assert answer.status == 500, answer.status
    counted = server.metrics()['psp_dns_queries_total{rdtype="NAPTR",result="nxdomain"}']
    assert counted == 1
