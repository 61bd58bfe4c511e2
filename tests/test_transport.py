"""The transport thread on loopback, driven by raw sockets (no processor behind it)."""

from __future__ import annotations

import dataclasses
import queue
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from psp import __version__
from psp.config import load_text
from psp.events import Outgoing, Peer, Received, TransportFailed
from psp.metrics import Metrics
from psp.parser import parse
from psp.transport import BindError, Transport, fix_via, same_address
from tests.conftest import LOOPBACK, free_port

TIMEOUT = 5.0
SERVER = f"PartySIP/{__version__}"  # the default banner


def request(method: str = "OPTIONS", branch: str = "z9hG4bK-1", via: str = "10.0.0.1:5060;rport",
            to_tag: str = "", body: bytes = b"", extra: str = "", version: str = "SIP/2.0") -> bytes:
    to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:bob@127.0.0.1 {version}\r\n"
        f"Via: SIP/2.0/UDP {via};branch={branch}\r\n"
        "From: <sip:alice@example.org>;tag=a1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@example.org\r\n"
        f"CSeq: 1 {method}\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


RESPONSE = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-9\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: r\r\nCSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@dataclasses.dataclass
class Running:
    transport: Transport
    inbound: queue.Queue[Any]
    metrics: Metrics
    port: int

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def next_item(self) -> Any:
        return self.inbound.get(timeout=TIMEOUT)


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    """Start a transport with config lines plus settings overrides (unvalidated)."""
    running: list[Transport] = []

    def make(config: str = "", **overrides: Any) -> Running:
        port = free_port()
        settings = load_text(f"plugins = syntax\nserverport_udp = {port}\nserverport_tcp = {port}\n{config}")
        settings = dataclasses.replace(settings, **overrides)
        inbound: queue.Queue[Any] = queue.Queue(settings.fifo_size)
        metrics = Metrics()
        transport = Transport(settings, inbound, metrics)
        transport.bind()
        transport.start()
        running.append(transport)
        return Running(transport, inbound, metrics, port)

    yield make
    for transport in running:
        transport.stop(TIMEOUT)


def tcp_client(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# ---------------------------------------------------------------- pure helpers


def test_same_address_compares_addresses_not_spellings() -> None:
    assert same_address("127.0.0.1", "127.0.0.1")
    assert same_address("0:0::1", "::1")
    assert not same_address("host.example", "127.0.0.1")
    assert not same_address("10.0.0.1", "127.0.0.1")


def test_fix_via_adds_received_when_the_host_differs_and_fills_rport() -> None:
    message = parse(request(via="pc33.example.org:5070;rport"))
    fix_via(message, Peer("udp", "192.0.2.4", 40000))
    via = message.top_via
    assert (via.received, via.rport, via.port) == ("192.0.2.4", 40000, 5070)
    assert b"received=192.0.2.4" in message.to_bytes()


def test_fix_via_leaves_a_truthful_via_alone() -> None:
    message = parse(request(via="192.0.2.4:5060"))
    fix_via(message, Peer("udp", "192.0.2.4", 5060))
    assert "received" not in message.top_via.params


def test_fix_via_adds_received_with_rport_even_when_the_host_matches() -> None:
    # RFC 3581 4: with rport, received is inserted even if it equals the sent-by host.
    message = parse(request(via="192.0.2.4:5060;rport"))
    fix_via(message, Peer("udp", "192.0.2.4", 6000))
    assert (message.top_via.received, message.top_via.rport) == ("192.0.2.4", 6000)


# ---------------------------------------------------------------- UDP


def test_udp_request_reaches_the_inbound_fifo_with_received_and_rport(start, udp) -> None:
    run = start()
    udp.sendto(request(), (LOOPBACK, run.port))
    item = run.next_item()
    assert isinstance(item, Received)
    assert item.peer == Peer("udp", LOOPBACK, udp.getsockname()[1])
    via = item.message.top_via
    assert (via.received, via.rport) == (LOOPBACK, udp.getsockname()[1])
    assert run.sample("psp_messages_received_total", transport="udp", method="OPTIONS", status_class="none") == 1


def test_garbage_is_counted_and_does_not_stop_the_next_message(start, udp) -> None:
    run = start()
    for junk in (b"\x00\xff garbage", b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", b"\r\n"):
        udp.sendto(junk, (LOOPBACK, run.port))
    udp.sendto(request(), (LOOPBACK, run.port))
    assert run.next_item().message.method == "OPTIONS"
    assert run.sample("psp_parse_errors_total", transport="udp") == 2
    udp.settimeout(0.2)  # nothing must have been answered to the garbage or the bad response
    with pytest.raises(socket.timeout):
        udp.recv(65535)


@pytest.mark.parametrize(("data", "status"), [
    (request(extra="Max-Forwards: many\r\n"), 400),
    (request(version="SIP/3.0"), 505),
])
def test_unparsable_request_with_a_usable_via_is_answered_statelessly(start, udp, data, status) -> None:
    run = start()
    udp.sendto(data, (LOOPBACK, run.port))
    response = parse(udp.recv(65535))
    assert response.status == status
    assert response.top_via.received == LOOPBACK
    assert response.to.tag
    assert response.header("Server") == SERVER
    assert run.inbound.empty()


def test_an_empty_banner_means_no_server_header_on_our_own_responses(start, udp) -> None:
    run = start('banner = ""\n')
    udp.sendto(request(extra="Max-Forwards: many\r\n"), (LOOPBACK, run.port))
    response = parse(udp.recv(65535))
    assert response.status == 400 and not response.has("Server")


def test_oversized_datagram_is_dropped_and_counted(start, udp) -> None:
    run = start("max_message_size = 1024\n")
    udp.sendto(request(body=b"x" * 2000), (LOOPBACK, run.port))
    udp.sendto(request(), (LOOPBACK, run.port))
    assert run.next_item().message.body == b""
    assert run.sample("psp_dropped_total", reason="oversize") == 1


def test_full_inbound_fifo_answers_503_with_retry_after_and_drops_ack_and_responses(start, udp) -> None:
    run = start("fifo_size = 1\nretry_after = 7\n")
    udp.sendto(request(branch="z9hG4bK-first"), (LOOPBACK, run.port))
    udp.sendto(request("ACK", branch="z9hG4bK-ack"), (LOOPBACK, run.port))
    udp.sendto(RESPONSE, (LOOPBACK, run.port))
    udp.sendto(request("INVITE", branch="z9hG4bK-shed"), (LOOPBACK, run.port))
    response = parse(udp.recv(65535))  # the first answer is the INVITE's: nothing for the ACK
    assert (response.status, response.header("Retry-After")) == (503, "7")
    assert response.top_via.branch == "z9hG4bK-shed"
    assert response.header("Server") == SERVER
    assert run.next_item().message.top_via.branch == "z9hG4bK-first"
    assert run.sample("psp_overload_sheds_total", kind="request") == 1
    assert run.sample("psp_overload_sheds_total", kind="ack") == 1
    assert run.sample("psp_overload_sheds_total", kind="response") == 1


def test_draining_refuses_new_requests_but_passes_in_dialog_ones(start, udp) -> None:
    run = start()
    run.transport.drain()
    udp.sendto(request("INVITE"), (LOOPBACK, run.port))
    assert parse(udp.recv(65535)).status == 503
    udp.sendto(request("BYE", to_tag="b1"), (LOOPBACK, run.port))
    assert run.next_item().message.method == "BYE"


def test_udp_send_goes_out_directly_and_is_counted(start, udp) -> None:
    run = start()
    run.transport.send(Outgoing(RESPONSE, Peer("udp", LOOPBACK, udp.getsockname()[1]), None))
    assert udp.recv(65535) == RESPONSE
    assert run.sample("psp_messages_sent_total", transport="udp", method="OPTIONS", status_class="2xx") == 1


def test_bind_failure_is_one_clear_line(udp) -> None:
    port = udp.getsockname()[1]
    settings = load_text(f"plugins = syntax\nserverport_udp = {port}\nserverport_tcp = 0\n")
    transport = Transport(settings, queue.Queue(), Metrics())
    with pytest.raises(BindError, match=rf"^cannot bind UDP 127\.0\.0\.1:{port}: Address already in use$"):
        transport.bind()
    transport.stop()


# ---------------------------------------------------------------- TCP


def test_tcp_messages_are_framed_across_chunks(start) -> None:
    run = start()
    first, second = request(body=b"v=0\r\n"), request("BYE", branch="z9hG4bK-2", to_tag="t")
    stream = first + second
    with tcp_client(run.port) as client:
        for cut in (10, len(first) - 3, len(first) + 20):  # inside a header, the body, the next
            client.sendall(stream[:cut])
            stream = stream[cut:]
        client.sendall(stream)
        one, two = run.next_item(), run.next_item()
    assert (one.message.method, one.message.body, two.message.method) == ("OPTIONS", b"v=0\r\n", "BYE")
    assert one.peer.transport == "tcp" and one.peer.conn is not None and one.peer == two.peer


def test_tcp_keepalive_ping_gets_a_crlf(start) -> None:
    run = start()
    with tcp_client(run.port) as client:
        client.sendall(b"\r\n\r\n")
        assert client.recv(16) == b"\r\n"


def test_tcp_response_goes_back_on_the_connection_of_the_request(start) -> None:
    run = start()
    with tcp_client(run.port) as client:
        client.sendall(request())
        peer = run.next_item().peer
        run.transport.send(Outgoing(RESPONSE, peer, None))
        assert client.recv(65535) == RESPONSE


def test_a_half_open_connection_does_not_block_the_others(start, udp) -> None:
    run = start()
    with tcp_client(run.port) as stalled, tcp_client(run.port) as other:
        stalled.sendall(request()[:40])  # never finished
        other.sendall(request(branch="z9hG4bK-other"))
        assert run.next_item().message.top_via.branch == "z9hG4bK-other"
        udp.sendto(request(branch="z9hG4bK-udp"), (LOOPBACK, run.port))
        assert run.next_item().message.top_via.branch == "z9hG4bK-udp"


def test_connections_over_the_cap_are_refused(start) -> None:
    run = start("tcp_max_connections = 2\n")
    clients = [tcp_client(run.port) for _ in range(2)]
    for n, client in enumerate(clients):
        client.sendall(request(branch=f"z9hG4bK-{n}"))
        run.next_item()  # accepted and served
    with tcp_client(run.port) as extra:
        try:
            assert extra.recv(1) == b""
        except ConnectionResetError:
            pass
    assert run.sample("psp_dropped_total", reason="tcp_connection_cap") == 1
    for client in clients:
        client.close()


def test_framing_error_closes_the_connection(start) -> None:
    run = start()
    with tcp_client(run.port) as client:
        client.sendall(request().replace(b"Content-Length: 0\r\n", b""))
        assert client.recv(1) == b""
    assert run.sample("psp_parse_errors_total", transport="tcp") == 1


def test_outbound_tcp_connects_once_and_reuses_the_connection(start) -> None:
    run = start()
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(TIMEOUT)
        peer = Peer("tcp", LOOPBACK, listener.getsockname()[1])
        run.transport.send(Outgoing(RESPONSE, peer, None))
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            assert conn.recv(65535) == RESPONSE
            run.transport.send(Outgoing(b"again", peer, None))
            assert conn.recv(65535) == b"again"
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert run.sample("psp_fifo_wait_seconds_count", fifo="outbound") == 2


def test_connect_failure_becomes_transport_failed(start) -> None:
    run = start()
    port = free_port()  # nothing listens there
    run.transport.send(Outgoing(RESPONSE, Peer("tcp", LOOPBACK, port), None))
    failed = run.next_item()
    assert isinstance(failed, TransportFailed)
    assert (failed.peer.host, failed.peer.port) == (LOOPBACK, port)
    assert "ECONNREFUSED" in failed.reason


def test_send_over_the_buffer_cap_closes_and_reports(start) -> None:
    run = start(tcp_max_buffer=2048)
    with tcp_client(run.port) as client:
        client.sendall(request())
        peer = run.next_item().peer
        run.transport.send(Outgoing(b"x" * 4096, peer, None))
        failed = run.next_item()
        assert isinstance(failed, TransportFailed) and failed.peer.conn == peer.conn
        assert client.recv(1) == b""
    assert run.sample("psp_dropped_total", reason="tcp_buffer_full") == 1


def test_idle_connections_are_closed(start) -> None:
    run = start(tcp_idle_timeout=0.2)
    with tcp_client(run.port) as client:
        client.sendall(request())
        run.next_item()
        assert client.recv(1) == b""  # closed by the idle sweep, no event needed from us


def test_an_unsupported_transport_is_a_transport_failure(start) -> None:
    run = start()
    run.transport.send(Outgoing(RESPONSE, Peer("sctp", LOOPBACK, 5060), None))
    failed = run.next_item()
    assert isinstance(failed, TransportFailed) and "sctp" in failed.reason


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_udp_when_enabled(start) -> None:
    run = start("ipv6_enable = on\nserverip6 = ::1\n")
    assert ("udp", "::1", run.port) in run.transport.addresses
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
        client.bind(("::1", 0))
        client.settimeout(TIMEOUT)
        client.sendto(request(via="[::1]:5060;rport"), ("::1", run.port))
        item = run.next_item()
        assert item.peer == Peer("udp", "::1", client.getsockname()[1])
        assert "received" in item.message.top_via.params  # rport asked for it
        run.transport.send(Outgoing(RESPONSE, item.peer, None))
        assert client.recv(65535) == RESPONSE
