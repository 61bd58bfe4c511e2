"""A real DNS server for tests: dnsmasq on 127.0.0.1, on a port picked free at run time.

dnsmasq serves the zone ``test`` authoritatively, so that negative answers carry an SOA
(RFC 2308) and every TTL is ``ttl``.  Records are given as dnsmasq options, built with
:func:`srv`, :func:`naptr` and :func:`host`.  The server is stopped by its own PID.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dns.exception
import dns.message
import dns.query

from conftest import free_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
ZONE = "test"


def srv(name: str, target: str, port: int, priority: int, weight: int) -> str:
    """An SRV record option (RFC 2782 field order: priority, weight)."""
    return f"--srv-host={name},{target},{port},{priority},{weight}"


def naptr(name: str, order: int, preference: int, service: str, replacement: str) -> str:
    """A NAPTR record option with flag "S" and no regexp, as RFC 3263 uses them."""
    return f"--naptr-record={name},{order},{preference},S,{service},,{replacement}"


def host(name: str, *addresses: str) -> str:
    """A/AAAA records for ``name``."""
    return f"--host-record={name},{','.join(addresses)}"


#: example.test: NAPTR to UDP then TCP; UDP SRV with uas1 (priority 10) before uas2 (20);
#: weighted.test: one priority, weights 3:1; plain.test: only an A record.
EXAMPLE_RECORDS = (
    naptr("example.test", 10, 50, "SIP+D2U", "_sip._udp.example.test"),
    naptr("example.test", 20, 50, "SIP+D2T", "_sip._tcp.example.test"),
    srv("_sip._udp.example.test", "uas1.example.test", 5061, 10, 60),
    srv("_sip._udp.example.test", "uas2.example.test", 5062, 20, 40),
    srv("_sip._tcp.example.test", "uas1.example.test", 5061, 10, 0),
    host("uas1.example.test", "127.0.0.2"),
    host("uas2.example.test", "127.0.0.3", "::1"),
    srv("_sip._udp.weighted.test", "heavy.weighted.test", 5070, 1, 75),
    srv("_sip._udp.weighted.test", "light.weighted.test", 5071, 1, 25),
    host("heavy.weighted.test", "127.0.0.4"),
    host("light.weighted.test", "127.0.0.5"),
    host("plain.test", "127.0.0.6"),
)


class DnsServer:
    """One dnsmasq process; ``port`` is where it answers on 127.0.0.1."""

    def __init__(self, records: Sequence[str], ttl: int) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", f"--port={self.port}",
             "--listen-address=127.0.0.1", "--bind-interfaces", "--conf-file=/dev/null",
             "--pid-file=", f"--auth-server=ns.{ZONE},127.0.0.1", f"--auth-zone={ZONE}",
             f"--auth-soa=1,hostmaster.{ZONE}", f"--auth-ttl={ttl}", f"--local-ttl={ttl}",
             *records],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def wait_ready(self, deadline: float) -> bool:
        """Poll with a real query until dnsmasq answers; False if it died or is too slow."""
        probe = dns.message.make_query(f"ns.{ZONE}.", "SOA")
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                dns.query.udp(probe, "127.0.0.1", port=self.port, timeout=0.05)
                return True
            except (dns.exception.Timeout, OSError):
                continue
        return False

    def stop(self) -> str:
        """Stop this dnsmasq (by its PID only), reap it, and return what it wrote."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err.decode(errors="replace").strip()


@contextmanager
def dnsmasq(records: Sequence[str] = EXAMPLE_RECORDS, ttl: int = 30) -> Iterator[DnsServer]:
    """Run dnsmasq with ``records`` for the block (a new port if another process took it)."""
    for _attempt in range(3):
        server = DnsServer(records, ttl)
        if server.wait_ready(time.monotonic() + 5.0):
            break
        output = server.stop()
    else:
        raise RuntimeError(f"dnsmasq did not start: {output}")
    try:
        yield server
    finally:
        server.stop()
