"""TcpTransport driven on the test's thread: one selector, real loopback sockets, no threads.

RFC 3261 18.2.2: a response goes back on the connection of its request; once that one has
closed, on a new connection to the Via's received address and sent-by port.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from psp.events import Peer
from psp.metrics import Metrics
from psp.transport_tcp import TcpLimits, TcpTransport
from tests.conftest import LOOPBACK, free_port

TIMEOUT = 5.0
LIMITS = TcpLimits(max_connections=8, idle_timeout=300.0, max_buffer=65536, max_message_size=65535,
                   read_timeout=32.0)


def request(sent_by: str) -> bytes:
    return (
        "REGISTER sip:localhost SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {sent_by};branch=z9hG4bK-tcp1\r\n"
        "From: <sip:alice@localhost>;tag=f1\r\nTo: <sip:alice@localhost>\r\n"
        "Call-ID: tcp-1@test\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def response_to(via: str) -> bytes:
    """A 200 to ``request``, its Via as the transport would have fixed it (received added)."""
    return (
        f"SIP/2.0 200 OK\r\nVia: {via}\r\n"
        "From: <sip:alice@localhost>;tag=f1\r\nTo: <sip:alice@localhost>;tag=t1\r\n"
        "Call-ID: tcp-1@test\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class Loop:
    """A TcpTransport with its selector, pumped by the test until a condition holds."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.delivered: list[tuple[bytes, Peer]] = []
        self.failed: list[tuple[Peer, str]] = []
        self.metrics = Metrics()
        self.tcp = TcpTransport(self.selector, LIMITS, self.metrics,
                                lambda data, peer, _now: self.delivered.append((data, peer)),
                                lambda peer, reason, _now: self.failed.append((peer, reason)))
        self.port = self.tcp.listen(LOOPBACK, 0).getsockname()[1]

    def watch(self, sock: socket.socket) -> None:
        """Wake ``until`` when the test's own ``sock`` becomes readable."""
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, lambda _now, _mask: None)

    def until(self, condition: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + TIMEOUT
        while not (result := condition()):
            left = deadline - time.monotonic()
            assert left > 0, "condition not reached"
            for key, mask in self.selector.select(left):
                key.data(time.monotonic(), mask)
        return result

    def close(self) -> None:
        self.tcp.close_all()
        self.selector.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    made = Loop()
    yield made
    made.close()


def test_a_response_after_its_connection_closed_goes_to_received_and_the_sent_by_port(loop) -> None:
    with socket.create_server((LOOPBACK, 0)) as ua_listener:  # where the UA takes connections
        loop.watch(ua_listener)
        ua_port = ua_listener.getsockname()[1]
        with socket.create_connection((LOOPBACK, loop.port), timeout=TIMEOUT) as client:
            client.sendall(request(f"ua.invalid:{ua_port}"))
            (_, source), = loop.until(lambda: loop.delivered)
        loop.until(lambda: len(loop.tcp) == 0)  # the server saw the close
        assert source.port != ua_port and source.conn is not None
        response = response_to(f"SIP/2.0/TCP ua.invalid:{ua_port};branch=z9hG4bK-tcp1;received={LOOPBACK}")
        loop.tcp.send(response, source, time.monotonic())
        accepted, _ = loop.until(lambda: _accept(ua_listener))
        with accepted:
            loop.watch(accepted)
            assert loop.until(lambda: _readable(accepted)) == response
    assert loop.failed == []


def test_without_a_sent_by_port_the_new_connection_goes_to_5060(loop) -> None:
    source = Peer("tcp", LOOPBACK, 40000, conn=99)  # a connection the table no longer has
    loop.tcp.send(response_to("SIP/2.0/TCP ua.invalid;branch=z9hG4bK-x;received=192.0.2.7"),
                  source, time.monotonic())
    # A documentation address: the connect is still in progress, or refused at once by a
    # machine without a route; either way it went to 5060.
    reported = [(peer.host, peer.port) for peer, _ in loop.failed]
    assert loop.tcp.find(Peer("tcp", "192.0.2.7", 5060)) is not None or reported == [
        ("192.0.2.7", 5060), (LOOPBACK, 40000)]


def test_a_failed_reconnect_is_reported_for_the_source_its_transaction_knows(loop) -> None:
    closed = free_port()  # nothing listens there
    source = Peer("tcp", LOOPBACK, 40000, conn=99)
    loop.tcp.send(response_to(f"SIP/2.0/TCP {LOOPBACK}:{closed};branch=z9hG4bK-x"), source, time.monotonic())
    loop.until(lambda: len(loop.failed) == 2)
    assert {(peer.host, peer.port) for peer, _ in loop.failed} == {(LOOPBACK, closed), (LOOPBACK, 40000)}
    assert all("ECONNREFUSED" in reason for _, reason in loop.failed)
    assert loop.metrics.registry.get_sample_value("psp_transport_failures_total", {"transport": "tcp"}) == 1


def _accept(listener: socket.socket) -> tuple[socket.socket, Any] | None:
    try:
        return listener.accept()
    except BlockingIOError:
        return None


def _readable(sock: socket.socket) -> bytes | None:
    try:
        return sock.recv(65535) or None
    except BlockingIOError:
        return None


def test_accepted_and_opened_connections_send_without_nagle_delay(loop) -> None:
    with socket.create_server((LOOPBACK, 0)) as ua_listener:
        loop.watch(ua_listener)
        ua_port = ua_listener.getsockname()[1]
        with socket.create_connection((LOOPBACK, loop.port), timeout=TIMEOUT) as client:
            client.sendall(request(f"{LOOPBACK}:{ua_port}"))
            (_, source), = loop.until(lambda: loop.delivered)
            accepted = loop.tcp.find(source)
            assert accepted.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        opened_for = Peer("tcp", LOOPBACK, ua_port)
        loop.tcp.send(response_to(f"SIP/2.0/TCP {LOOPBACK}:{ua_port};branch=z9hG4bK-tcp1"), opened_for,
                      time.monotonic())
        opened = loop.tcp.find(opened_for)
        assert opened.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
