"""The RFC 3263 planner, SRV ordering and the failover blocklist, without a network."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from psp.events import Peer
from psp.rfc3263 import (MAX_QUERIES, NXDOMAIN, Answer, Blocklist, Naptr, Query, Resolution, Srv,
                         job_target, order_srv, resolve)
from psp.uri import parse_uri

NODATA = Answer((), 60)


class FakeDns:
    """Canned answers keyed by (name, rdtype); unknown names are NXDOMAIN.  Records asks."""

    def __init__(self, zone: dict[tuple[str, str], Answer]) -> None:
        self.zone = zone
        self.asked: list[Query] = []

    def __call__(self, query: Query) -> Answer:
        self.asked.append(query)
        answer = self.zone.get((query.name, query.rdtype))
        if answer is not None:
            return answer
        known = any(name == query.name for name, _ in self.zone)
        return NODATA if known else Answer((), 60, NXDOMAIN)


def addresses(*items: str) -> Answer:
    return Answer(tuple(items), 60)


def first_choice(low: int, high: int) -> int:
    """A random source that always draws the lowest value: the first record wins ties."""
    return low


EXAMPLE = {
    ("example.test", "NAPTR"): Answer((
        Naptr(20, 50, "S", "SIP+D2T", "_sip._tcp.example.test"),
        Naptr(5, 50, "S", "SIPS+D2T", "_sips._tcp.example.test"),
        Naptr(10, 50, "U", "SIP+D2U", "!^.*$!sip:x@y!"),
        Naptr(10, 50, "s", "SIP+D2U", "_sip._udp.example.test."),
    ), 60),
    ("_sip._udp.example.test", "SRV"): Answer((
        Srv(20, 0, 5062, "uas2.example.test."), Srv(10, 0, 5061, "uas1.example.test."),
    ), 60),
    ("_sip._tcp.example.test", "SRV"): Answer((Srv(10, 0, 5070, "uas1.example.test."),), 60),
    ("uas1.example.test", "A"): addresses("127.0.0.2"),
    ("uas2.example.test", "A"): addresses("127.0.0.3"),
    ("uas2.example.test", "AAAA"): addresses("::1"),
}


def test_naptr_then_srv_gives_every_target_in_order() -> None:
    dns = FakeDns(EXAMPLE)
    targets, error = resolve("Example.Test.", None, None, dns, first_choice)
    assert error is None
    assert targets == (
        Peer("udp", "127.0.0.2", 5061), Peer("udp", "127.0.0.3", 5062),
        Peer("udp", "::1", 5062), Peer("tcp", "127.0.0.2", 5070),
    )
    # The SIPS+D2T record (no TLS here) and the non-"S" record lead to no query.
    assert Query("_sips._tcp.example.test", "SRV") not in dns.asked
    assert dns.asked[:2] == [Query("example.test", "NAPTR"), Query("_sip._udp.example.test", "SRV")]


def test_without_naptr_both_srv_names_are_asked_udp_first() -> None:
    zone = {
        ("host.test", "A"): addresses("127.0.0.9"),
        ("_sip._tcp.host.test", "SRV"): Answer((Srv(1, 1, 5080, "tcp.host.test"),), 60),
        ("tcp.host.test", "A"): addresses("127.0.0.4"),
    }
    dns = FakeDns(zone)
    targets, error = resolve("host.test", None, None, dns)
    assert (targets, error) == ((Peer("tcp", "127.0.0.4", 5080),), None)
    assert dns.asked[:3] == [
        Query("host.test", "NAPTR"), Query("_sip._udp.host.test", "SRV"),
        Query("_sip._tcp.host.test", "SRV"),
    ]
    assert Query("host.test", "A") not in dns.asked  # SRV found: no A fallback


def test_without_naptr_or_srv_the_host_is_used_on_5060_udp() -> None:
    dns = FakeDns({("plain.test", "A"): addresses("127.0.0.4"),
                   ("plain.test", "AAAA"): addresses("::1")})
    targets, error = resolve("plain.test", None, None, dns)
    assert error is None
    assert targets == (Peer("udp", "127.0.0.4", 5060), Peer("udp", "::1", 5060))


def test_explicit_transport_skips_naptr_and_uses_its_srv() -> None:
    dns = FakeDns(EXAMPLE)
    targets, _ = resolve("example.test", None, "TCP", dns, first_choice)
    assert targets == (Peer("tcp", "127.0.0.2", 5070),)
    assert dns.asked[0] == Query("_sip._tcp.example.test", "SRV")
    assert all(q.rdtype != "NAPTR" for q in dns.asked)


def test_explicit_transport_without_srv_falls_back_to_the_host() -> None:
    dns = FakeDns({("plain.test", "A"): addresses("127.0.0.4")})
    assert resolve("plain.test", None, "tcp", dns) == ((Peer("tcp", "127.0.0.4", 5060),), None)


def test_address_types_can_be_limited_to_ipv4() -> None:
    dns = FakeDns(EXAMPLE)
    targets, _ = resolve("uas2.example.test", 5099, None, dns, address_types=("A",))
    assert targets == (Peer("udp", "127.0.0.3", 5099),)
    assert [q.rdtype for q in dns.asked] == ["A"]


def test_explicit_port_means_address_records_only() -> None:
    dns = FakeDns(EXAMPLE)
    targets, _ = resolve("uas2.example.test", 5099, None, dns)
    assert targets == (Peer("udp", "127.0.0.3", 5099), Peer("udp", "::1", 5099))
    assert [q.rdtype for q in dns.asked] == ["A", "AAAA"]


@pytest.mark.parametrize(("host", "port", "transport", "expected"), [
    ("192.0.2.1", None, None, Peer("udp", "192.0.2.1", 5060)),
    ("192.0.2.1", 5070, "tcp", Peer("tcp", "192.0.2.1", 5070)),
    ("[::1]", None, None, Peer("udp", "::1", 5060)),
    ("2001:DB8::0:1", 5080, "udp", Peer("udp", "2001:db8::1", 5080)),
])
def test_numeric_hosts_need_no_dns(host: str, port: int | None, transport: str | None,
                                   expected: Peer) -> None:
    dns = FakeDns({})
    assert resolve(host, port, transport, dns) == ((expected,), None)
    assert dns.asked == []


def test_unsupported_transport_fails_without_a_query() -> None:
    dns = FakeDns(EXAMPLE)
    targets, error = resolve("example.test", None, "sctp", dns)
    assert targets == () and error is not None and "sctp" in error
    assert dns.asked == []


def test_nxdomain_ends_after_one_query() -> None:
    dns = FakeDns(EXAMPLE)
    targets, error = resolve("nope.example.test", None, None, dns)
    assert targets == ()
    assert error == "nope.example.test: no such domain (NXDOMAIN)"
    assert dns.asked == [Query("nope.example.test", "NAPTR")]


def test_dns_failure_ends_the_resolution_at_once() -> None:
    dns = FakeDns({("example.test", "NAPTR"): Answer(error="timeout")})
    targets, error = resolve("example.test", None, None, dns)
    assert targets == () and error is not None and "timeout" in error
    assert len(dns.asked) == 1


def test_targets_found_before_a_failure_are_kept() -> None:
    zone = dict(EXAMPLE)
    zone[("_sip._tcp.example.test", "SRV")] = Answer(error="SERVFAIL")
    targets, error = resolve("example.test", None, None, FakeDns(zone), first_choice)
    assert error is None
    assert targets[0] == Peer("udp", "127.0.0.2", 5061)
    assert all(peer.transport == "udp" for peer in targets)


def test_srv_target_dot_means_no_service_and_no_fallback() -> None:
    dns = FakeDns({("_sip._udp.off.test", "SRV"): Answer((Srv(0, 0, 0, "."),), 60),
                   ("off.test", "A"): addresses("127.0.0.5")})
    targets, error = resolve("off.test", None, "udp", dns)
    assert targets == () and error == "off.test: no SIP server found"
    assert Query("off.test", "A") not in dns.asked


def test_a_target_reached_twice_is_listed_once() -> None:
    zone = {("_sip._udp.dup.test", "SRV"): Answer(
        (Srv(1, 0, 5060, "a.dup.test"), Srv(2, 0, 5060, "b.dup.test")), 60),
        ("a.dup.test", "A"): addresses("127.0.0.6"), ("b.dup.test", "A"): addresses("127.0.0.6")}
    assert resolve("dup.test", None, "udp", FakeDns(zone)) == ((Peer("udp", "127.0.0.6", 5060),), None)


def test_a_huge_srv_set_is_bounded_by_the_query_budget() -> None:
    zone: dict[tuple[str, str], Answer] = {("_sip._udp.big.test", "SRV"): Answer(
        tuple(Srv(i, 0, 5060, f"h{i}.big.test") for i in range(100)), 60)}
    zone.update({(f"h{i}.big.test", "A"): addresses(f"127.0.1.{i}") for i in range(100)})
    dns = FakeDns(zone)
    targets, error = resolve("big.test", None, "udp", dns)
    assert len(dns.asked) == MAX_QUERIES
    assert error is None and targets[0] == Peer("udp", "127.0.1.0", 5060)


def test_the_planner_is_driven_one_query_at_a_time() -> None:
    resolution = Resolution("plain.test", 5070, "tcp")
    assert resolution.next_query() == Query("plain.test", "A")
    resolution.take(addresses("127.0.0.7"))
    assert resolution.next_query() == Query("plain.test", "AAAA")
    resolution.take(NODATA)
    assert resolution.next_query() is None
    assert resolution.targets == (Peer("tcp", "127.0.0.7", 5070),)
    with pytest.raises(RuntimeError):
        resolution.take(NODATA)


# ---------------------------------------------------------------- RFC 2782 ordering

def test_srv_priority_lowest_first_whatever_the_weights() -> None:
    records = [Srv(30, 100, 1, "c"), Srv(10, 1, 1, "a"), Srv(20, 1000, 1, "b")]
    for seed in range(20):
        assert [r.target for r in order_srv(records, random.Random(seed).randint)] == ["a", "b", "c"]


def test_weighted_choice_follows_the_running_sum() -> None:
    records = [Srv(1, 10, 1, "a"), Srv(1, 30, 1, "b")]
    draws = iter([11, 1])  # 11 > 10: past "a"'s share, into "b"'s
    order = order_srv(records, lambda low, high: next(draws))
    assert [r.target for r in order] == ["b", "a"]


def test_weights_share_first_place_in_proportion() -> None:
    records = [Srv(1, 60, 1, "a"), Srv(1, 30, 1, "b"), Srv(1, 10, 1, "c")]
    rng = random.Random(3263)
    runs = 6000
    firsts = Counter(order_srv(records, rng.randint)[0].target for _ in range(runs))
    # Five standard deviations of a binomial count: a fair algorithm never misses.
    for target, weight in (("a", 0.6), ("b", 0.3), ("c", 0.1)):
        sigma = (runs * weight * (1 - weight)) ** 0.5
        assert abs(firsts[target] - runs * weight) < 5 * sigma


def test_weight_zero_comes_after_weighted_records() -> None:
    records = [Srv(1, 0, 1, "zero"), Srv(1, 1, 1, "one"), Srv(1, 0, 1, "nil")]
    for seed in range(30):
        order = [r.target for r in order_srv(records, random.Random(seed).randint)]
        assert order[0] == "one" and sorted(order[1:]) == ["nil", "zero"]


# ---------------------------------------------------------------- blocklist

A, B, C = Peer("udp", "127.0.0.2", 5060), Peer("udp", "127.0.0.3", 5060), Peer("tcp", "127.0.0.4", 5060)


def test_blocklist_moves_failed_targets_to_the_end_until_the_duration_ends() -> None:
    blocklist = Blocklist(30.0)
    blocklist.mark_failed(A, now=100.0)
    assert blocklist.is_blocked(A, 129.9) and not blocklist.is_blocked(A, 130.0)
    assert blocklist.order((A, B, C), 110.0) == (B, C, A)
    assert blocklist.order((A, B, C), 131.0) == (A, B, C)


def test_blocklist_keeps_everything_when_everything_failed() -> None:
    blocklist = Blocklist(30.0)
    for peer in (B, A, C):
        blocklist.mark_failed(peer, 0.0)
    assert blocklist.order((A, B, C), 1.0) == (A, B, C)
    assert blocklist.blocked(1.0) == 3 and blocklist.blocked(31.0) == 0


def test_blocklist_is_per_target_not_per_host_or_connection() -> None:
    blocklist = Blocklist(30.0)
    blocklist.mark_failed(Peer("tcp", "127.0.0.4", 5060, conn=7), 0.0)
    assert blocklist.is_blocked(Peer("tcp", "127.0.0.4", 5060), 1.0)
    assert not blocklist.is_blocked(Peer("tcp", "127.0.0.4", 5061), 1.0)
    assert not blocklist.is_blocked(Peer("udp", "127.0.0.4", 5060), 1.0)


def test_blocklist_remarking_extends_and_size_is_bounded() -> None:
    blocklist = Blocklist(10.0, max_entries=2)
    blocklist.mark_failed(A, 0.0)
    blocklist.mark_failed(B, 1.0)
    blocklist.mark_failed(A, 5.0)   # A is now the newest mark
    blocklist.mark_failed(C, 6.0)   # over the bound: B, the oldest, is forgotten
    assert not blocklist.is_blocked(B, 7.0)
    assert blocklist.is_blocked(A, 14.0) and blocklist.is_blocked(C, 7.0)


# ---------------------------------------------------------------- job fields from a URI

@pytest.mark.parametrize(("text", "expected"), [
    ("sip:bob@example.test", ("example.test", None, None)),
    ("sip:bob@example.test:5070;transport=TCP", ("example.test", 5070, "tcp")),
    ("sips:bob@example.test", ("example.test", None, "tcp")),
    ("sip:bob@example.test;maddr=192.0.2.7", ("192.0.2.7", None, None)),
])
def test_job_target_from_uri(text: str, expected: tuple[str, int | None, str | None]) -> None:
    uri = parse_uri(text)
    assert job_target(uri) == expected  # type: ignore[arg-type]
