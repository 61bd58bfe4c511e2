"""The tlp thread: owns every socket, turns bytes into messages and messages into bytes.

RFC 3261 18 (transport layer: 18.1.1 sending requests, 18.2.1 received/rport on the top
Via, 18.2.2 where responses go), RFC 3581 (rport), RFC 3261 8.1.3.1/21.5.4 (a stateless
503 with Retry-After under overload).

One thread blocks in ``selectors`` on the UDP sockets, the TCP listeners and connections
(see :mod:`psp.transport_tcp`) and a socketpair that other threads write to wake it: no
polling interval.  Every datagram or framed TCP message is parsed here; requests get the
received/rport fix, and the result goes onto the processor's bounded inbound FIFO.

Overload is explicit and bounded.  New work (a request outside a dialog, or one that
starts a dialog) is answered 503 with Retry-After by the transport itself once the FIFO
is 90% full; the last tenth is kept for what finishes work already accepted: in-dialog
requests (BYE), ACK, CANCEL, responses and DNS answers.  Only a full FIFO refuses
in-dialog requests (503), and ACK, CANCEL and responses are then dropped: they never get a
503.  Nor does the retransmission of a request this thread queued recently (its server
transaction key, RFC 3261 17.2.3, among the last ``fifo_size`` it queued): the request
itself waits in the FIFO or has its transaction, and a 503 to the copy would end the
client's transaction (RFC 3261 17.1) with the answer to the original on its way; the copy
is dropped and counted (``psp_dropped_total{reason="queued_retransmission"}``).  Every
refusal is counted; the log gets one line per ``SHED_LOG_INTERVAL`` at most.
A datagram over ``max_message_size`` is answered 513 when it can be (RFC 3261 21.5.14).
Every response made here (503, 513, and the stateless 400/505/501 of an unparsable
request) carries our ``Server`` header, as the proxy's own responses do; ``server`` holds
its value, replaced by a reload (one attribute write, read by this thread).
At log level debug (7-8) every message received and sent is traced, one event each.

With ``batch_linger`` set, the busy thread lingers as the processor does: when its last
wake-up was less than ``LINGER_WINDOW`` lingers ago, it sleeps ``linger`` seconds before
the next ``select()``, so that datagrams gather in the socket's buffer and one wake-up
reads several.  Each wake-up costs far more than its ``select()``: the GIL changes hands
around every system call, and the caches are cold (docs/performance.md).

Sending: UDP ``sendto`` is thread safe and never blocks on a non-blocking socket, so the
processor calls :meth:`Transport.send` and sends directly.  TCP may have to connect or wait
for a slow peer, so TCP sends go on the outbound FIFO and wake this thread.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from psp.core import response_peer
from psp.errors import ParseError
from psp.events import Outgoing, Peer, Received, TransportFailed
from psp.fifo import Fifo
from psp.matching import Key, server_key
from psp.message import Message, Request, make_response, server_header
from psp.metrics import Metrics
from psp.parser import error_response, parse
from psp.processor import LINGER_WINDOW
from psp.settings import Settings
from psp.transport_tcp import TcpLimits, TcpTransport

log = logging.getLogger("psp.transport")

UDP_BUFFER = 65535  # one datagram: the largest UDP payload, not socketserver's 8192
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
DATAGRAMS_PER_EVENT = 64  # amortise select() under load without starving the other sockets
SHED_LOG_INTERVAL = 10.0  # seconds between two overload log lines: a flood must not flood the log
# A TCP message still incomplete after 64*T1 is useless: its sender's transaction has
# timed out (Timer B/F, RFC 3261 17.1.1.2), so the connection is a slowloris.
READ_TIMEOUT_T1 = 64


class BindError(Exception):
    """A socket could not be bound; the message is one line for the operator."""


def same_address(via_host: str, source: str) -> bool:
    """True when the Via sent-by host is the source address (RFC 3261 18.2.1)."""
    if via_host == source:
        return True
    try:
        return ipaddress.ip_address(via_host) == ipaddress.ip_address(source)
    except ValueError:  # a host name never equals an address: received is added
        return False


def fix_via(message: Message, peer: Peer) -> None:
    """Add received (18.2.1) and fill an empty rport (RFC 3581 4) on the top Via."""
    via = message.top_via
    if via is None:
        return
    wants_rport = "rport" in via.params and not via.params["rport"]
    if not wants_rport and same_address(via.host, peer.host):
        return
    params = {"received": peer.host}
    if wants_rport:
        params["rport"] = str(peer.port)
    message.update_top_via(params)


# Bytes from the network must not forge log lines or drive a terminal: every control
# character but TAB and LF (CRLF line ends become LF) is shown as \xNN.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(9), *range(11, 32), 127)}


def trace(direction: str, peer: Peer, data: bytes) -> None:
    """The per-message SIP trace: one debug event per message, only when debug is on."""
    if log.isEnabledFor(logging.DEBUG):
        text = data.decode("utf-8", "replace").replace("\r\n", "\n").translate(_CONTROLS)
        log.debug("%s %s %s:%d (%d bytes)\n%s", direction, peer.transport.upper(), peer.host, peer.port,
                  len(data), text)


def stateless_tag(request: Request) -> str:
    """A To tag that is the same for every retransmission of ``request`` (RFC 3261 8.2.6.2)."""
    via = request.top_via
    seed = f"{request.call_id}|{via.params.get('branch') if via else ''}"
    return hashlib.blake2s(seed.encode(), digest_size=6).hexdigest()


class Transport:
    """The transport thread and its sockets.  ``bind()``, then ``start()``; ``send()`` from any thread."""

    def __init__(
        self, settings: Settings, inbound: Fifo[Any], metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._inbound = inbound
        self._metrics = metrics
        self._clock = clock
        self.outbound: Fifo[tuple[float, Outgoing]] = Fifo(settings.fifo_size)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        limits = TcpLimits(
            settings.tcp_max_connections, settings.tcp_idle_timeout, settings.tcp_max_buffer,
            settings.max_message_size, READ_TIMEOUT_T1 * settings.t1,
        )
        # New work stops at 90% (see the module docstring); a FIFO of 1..9 keeps no reserve.
        self._new_work_limit = settings.fifo_size - settings.fifo_size // 10
        # Server transaction keys of the new requests queued last, oldest first (a dict as
        # an ordered set): a retransmission of one of them is dropped, never refused.
        self._queued: dict[Key, None] = {}
        self._shed_since_log = 0
        self._shed_logged: float | None = None
        self._tcp = TcpTransport(self._selector, limits, metrics, self._deliver, self._failed)
        self._udp: list[socket.socket] = []
        self._stopping = False
        self.draining = False
        self.server = server_header(settings.banner)  # the Server value of our own responses
        self.linger = settings.batch_linger  # replaced by a reload (one attribute write)
        self._woke_at = -math.inf  # when select() last returned events
        self.addresses: list[tuple[str, str, int]] = []
        self.thread = threading.Thread(target=self._run, name="tlp", daemon=True)
        metrics.watch_fifo("outbound", self.outbound.qsize, settings.fifo_size)
        metrics.watch_tcp(lambda: len(self._tcp))

    # ------------------------------------------------------------ lifecycle

    def bind(self) -> None:
        """Open every socket the settings ask for; raises :class:`BindError`."""
        s = self._settings
        hosts = list(s.serverip) or ["0.0.0.0"]
        if s.ipv6_enable:
            hosts += list(s.serverip6) or ["::"]
        for host in hosts:
            if s.serverport_udp:
                self._bind_one("udp", host, s.serverport_udp, self._bind_udp)
            if s.serverport_tcp:
                self._bind_one("tcp", host, s.serverport_tcp, self._tcp.listen)

    def _bind_one(self, transport: str, host: str, port: int, bind: Callable[[str, int], socket.socket]) -> None:
        try:
            sock = bind(host, port)
        except OSError as error:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise BindError(f"cannot bind {transport.upper()} {where}: {error.strerror or error}") from None
        self.addresses.append((transport, host, sock.getsockname()[1]))

    def _bind_udp(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # A burst beyond the default buffer is lost before this thread even wakes up;
            # the kernel caps the request at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._udp.append(sock)
        self._selector.register(sock, selectors.EVENT_READ, partial(self._read_udp, sock))
        return sock

    def start(self) -> None:
        self.thread.start()

    def drain(self) -> None:
        """Shutting down: refuse new dialogs and out-of-dialog requests with 503 from now on."""
        self.draining = True

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread, close every socket, and wait for it."""
        self._stopping = True
        self._wake()
        if self.thread.is_alive():
            self.thread.join(timeout)
        self._close()

    def _close(self) -> None:
        self._tcp.close_all()
        for sock in self._udp:
            sock.close()
        self._udp.clear()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------ sending (any thread)

    def send(self, outgoing: Outgoing) -> None:
        """Send ``outgoing``: directly for UDP, through the outbound FIFO for TCP."""
        peer = outgoing.peer
        if peer.transport == "udp":
            self._send_udp(outgoing.data, peer)
            return
        if peer.transport != "tcp":
            self._metrics.transport_failures.labels(peer.transport).inc()
            self._failed(peer, f"transport {peer.transport} is not supported", self._clock())
            return
        try:
            self.outbound.put_nowait((self._clock(), outgoing))
        except queue.Full:
            self._metrics.sheds.labels("outbound").inc()
            self._failed(peer, "outbound FIFO full", self._clock())
            return
        self._wake()

    def _send_udp(self, data: bytes, peer: Peer) -> None:
        family = socket.AF_INET6 if ":" in peer.host else socket.AF_INET
        sock = next((s for s in self._udp if s.family == family), None)
        try:
            if sock is None:
                raise OSError(f"no UDP socket for {family.name}")
            sock.sendto(data, (peer.host, peer.port))
        except OSError as error:  # full socket buffer, unreachable network, closed socket...
            self._metrics.transport_failures.labels("udp").inc()
            self._failed(peer, f"sendto: {error.strerror or error}", self._clock())
            return
        self._metrics.count_sent("udp", data)
        trace("sent to", peer, data)

    def _send_tcp(self, data: bytes, peer: Peer, now: float) -> None:
        trace("sending to", peer, data)
        self._tcp.send(data, peer, now)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # already pending, or shut down
            pass

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._step()
            except Exception:  # a bug on one event must not take the transport down
                log.exception("internal error in the transport thread")
                self._metrics.errors["transport"].inc()

    def _step(self) -> None:
        linger = self.linger
        if linger and self._clock() - self._woke_at < LINGER_WINDOW * linger:
            time.sleep(linger)  # busy: let a batch gather (the module docstring)
        deadline = self._tcp.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - self._clock())
        events = self._selector.select(timeout)
        now = self._clock()
        if events:
            self._woke_at = now
        for key, mask in events:
            key.data(now, mask)
        if deadline is not None and now >= deadline:
            self._tcp.sweep(now)

    def _on_wake(self, now: float, _mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                queued, outgoing = self.outbound.get_nowait()
            except queue.Empty:
                return
            self._metrics.wait["outbound"].observe(now - queued)
            self._send_tcp(outgoing.data, outgoing.peer, now)

    def _read_udp(self, sock: socket.socket, _now: float, _mask: int) -> None:
        limit = self._settings.max_message_size
        for _ in range(DATAGRAMS_PER_EVENT):
            try:
                data, addr = sock.recvfrom(UDP_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # an ICMP error surfacing on the socket: keep reading
                log.debug("UDP receive error: %s", error)
                continue
            peer = Peer("udp", addr[0], addr[1])
            if len(data) > limit:
                self._metrics.dropped.labels("oversize").inc()
                self._answer_unparsed(data, ParseError(f"over {limit} bytes", status=513), peer)
                continue
            self._deliver(data, peer, self._clock())

    # ------------------------------------------------------------ inbound path

    def _deliver(self, data: bytes, peer: Peer, now: float) -> None:
        """Parse one message from ``peer`` and hand it to the processor, or answer it here."""
        if len(data) <= 4 and not data.strip():  # a CRLF keep-alive ping over UDP: no answer
            return
        trace("received from", peer, data)
        try:
            message = parse(data)
        except ParseError as error:
            self._reject(data, error, peer)
            return
        self._metrics.count_received(peer.transport, message)
        request = message if isinstance(message, Request) else None
        queued_key = None
        if request is not None:
            fix_via(request, peer)
            if self._is_new_work(request):
                queued_key = server_key(request)
                if self._refuses_new_work():
                    self._refuse(request, peer, queued_key)
                    return
        try:
            self._inbound.put_nowait(Received(message, peer, now))
        except queue.Full:
            self._shed(request, peer)
            return
        if queued_key is not None:
            self._remember(queued_key)

    def _refuse(self, request: Request, peer: Peer, key: Key) -> None:
        """New work while overloaded or draining: 503, unless it retransmits a queued request."""
        if key in self._queued:
            self._metrics.dropped.labels("queued_retransmission").inc()
            return
        self._answer_503(request, peer, "draining" if self.draining else "request")

    def _remember(self, key: Key) -> None:
        queued = self._queued
        queued[key] = None
        if len(queued) > self._settings.fifo_size:
            del queued[next(iter(queued))]

    @staticmethod
    def _is_new_work(request: Request) -> bool:
        return request.method not in ("ACK", "CANCEL") and request.to.tag is None

    def _refuses_new_work(self) -> bool:
        return self.draining or self._inbound.qsize() >= self._new_work_limit

    def _reject(self, data: bytes, error: ParseError, peer: Peer) -> None:
        self._metrics.parse_errors.labels(peer.transport).inc()
        self._answer_unparsed(data, error, peer)

    def _answer_unparsed(self, data: bytes, error: ParseError, peer: Peer) -> None:
        response = error_response(data, error)
        if response is None:  # a response, or a request without a usable Via: drop it
            log.debug("dropping unparsable message from %s: %s", peer, error)
            return
        # The request never got its received/rport; its echo in the response does, so that
        # the answer goes where the request came from (RFC 3261 18.2.1, 18.2.2).
        fix_via(response, peer)
        self._reply(response, peer)

    def _shed(self, request: Request | None, peer: Peer) -> None:
        """The FIFO is full: drop a response, ACK or CANCEL, refuse anything else."""
        if request is None:
            self._metrics.sheds.labels("response").inc()
        elif request.method in ("ACK", "CANCEL"):
            self._metrics.sheds.labels(request.method.lower()).inc()
        else:
            self._answer_503(request, peer, "in_dialog")
            return
        self._log_shed()

    def _log_shed(self) -> None:
        """One warning per SHED_LOG_INTERVAL at most, with the count since the last one."""
        self._shed_since_log += 1
        now = self._clock()
        if self._shed_logged is not None and now < self._shed_logged + SHED_LOG_INTERVAL:
            return
        log.warning("overload: %d message(s) shed since the last report, inbound FIFO %d/%d; "
                    "new requests get 503 Retry-After: %d", self._shed_since_log, self._inbound.qsize(),
                    self._settings.fifo_size, self._settings.retry_after)
        self._shed_since_log = 0
        self._shed_logged = now

    def _answer_503(self, request: Request, peer: Peer, kind: str) -> None:
        self._metrics.sheds.labels(kind).inc()
        if kind != "draining":  # refusing work while stopping is the plan, not an overload
            self._log_shed()
        retry = ("Retry-After", str(self._settings.retry_after))
        response = make_response(request, 503, to_tag=request.to.tag or stateless_tag(request), headers=[retry])
        self._reply(response, peer)

    def _reply(self, response: Message, peer: Peer) -> None:
        """Send a response made here: stamped with our Server header, routed by its Via."""
        via = response.top_via
        if via is None:
            return
        server = self.server
        if server:
            response.add_header("Server", server)
        target = response_peer(via, peer)
        data = response.to_bytes()
        if target.transport == "udp":
            self._send_udp(data, target)
        else:
            self._send_tcp(data, target, self._clock())

    def _failed(self, peer: Peer, reason: str, now: float) -> None:
        log.info("transport failure towards %s: %s", peer, reason)
        try:
            self._inbound.put_nowait(TransportFailed(peer, reason, now))
        except queue.Full:
            self._metrics.dropped.labels("failure_fifo_full").inc()
