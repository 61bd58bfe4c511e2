"""TCP for the transport thread: listeners, the connection table, framing and buffered writes.

RFC 3261 18 (stream transports: Content-Length framing, 18.3; a response goes back on the
connection its request came on, 18.2.2, or, once that one has closed, on a new connection
to the Via's received address and sent-by port; connections are reused towards the same
peer, 18.1.1), RFC 5626 3.5.1 (a CRLFCRLF keep-alive ping is answered with CRLF).

Everything here runs on the transport thread only; the selector, the sockets and the table
are never touched by another thread.  Sockets are non-blocking, connects are asynchronous,
and every connection is bounded: a cap on their number, on the bytes waiting to be written
to each, on the size of a message being framed, an idle timeout, and a read timeout for a
message that has started to arrive but does not complete.  A half-open peer can therefore
hold one table slot for at most the idle timeout, a peer that trickles a message byte by
byte (slowloris) for at most the read timeout, and neither blocks the others.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from psp.errors import ParseError
from psp.events import Peer
from psp.metrics import Metrics
from psp.parser import KEEPALIVE, StreamFramer, parse

log = logging.getLogger("psp.transport")

RECV_SIZE = 65536
ACCEPTS_PER_EVENT = 32
DEFAULT_PORT = 5060  # RFC 3261 18.2.2, for a sent-by without a port (no TLS here: never 5061)

Deliver = Callable[[bytes, Peer, float], None]
Fail = Callable[[Peer, str, float], None]


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """The bounds put on TCP connections (settings tcp_* and max_message_size)."""

    max_connections: int
    idle_timeout: float
    max_buffer: int
    max_message_size: int
    read_timeout: float  # from the first bytes of a message to its last


@dataclass(eq=False, slots=True)
class Connection:
    """One TCP connection: socket, framer, bytes waiting to be written, last activity."""

    cid: int
    sock: socket.socket
    addr: tuple[str, int]
    framer: StreamFramer
    last: float
    connecting: bool = False
    partial_since: float | None = None  # when bytes of a still incomplete message arrived
    # Opened for a response whose request's connection had closed: that request's source,
    # the peer its server transaction knows, to which a failure of this one is reported too.
    reply_to: Peer | None = None
    out: bytearray = field(default_factory=bytearray)
    events: int = selectors.EVENT_READ

    @property
    def peer(self) -> Peer:
        return Peer("tcp", self.addr[0], self.addr[1], self.cid)


class TcpTransport:
    """The TCP half of the transport: accepts, connects, reads, frames and writes."""

    def __init__(
        self, selector: selectors.BaseSelector, limits: TcpLimits, metrics: Metrics,
        deliver: Deliver, fail: Fail,
    ) -> None:
        self._selector = selector
        self._limits = limits
        self._metrics = metrics
        self._deliver = deliver
        self._fail = fail
        self._listeners: list[socket.socket] = []
        self._by_id: dict[int, Connection] = {}
        self._by_addr: dict[tuple[str, int], Connection] = {}
        self._next_id = 1
        self._next_sweep: float | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    # ------------------------------------------------------------ listeners

    def listen(self, host: str, port: int) -> socket.socket:
        """Bind and listen on ``host``:``port``; raises OSError."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # A restart must not wait for old connections in TIME_WAIT; on Linux this does
            # not let two live listeners share the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listeners.append(sock)
        self._selector.register(sock, selectors.EVENT_READ, partial(self._accept, sock))
        return sock

    def _accept(self, listener: socket.socket, now: float, _mask: int) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and friends: keep serving the others
                log.warning("accept failed: %s", error)
                return
            if len(self._by_id) >= self._limits.max_connections:
                self._metrics.dropped.labels("tcp_connection_cap").inc()
                sock.close()
                continue
            sock.setblocking(False)
            self._add(sock, (addr[0], addr[1]), now, connecting=False)

    # ------------------------------------------------------------ the table

    def _add(self, sock: socket.socket, addr: tuple[str, int], now: float, connecting: bool) -> Connection:
        # Each message is written whole: Nagle's algorithm would hold a small one back until
        # the peer acknowledges the last, and a delayed ACK makes that up to 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        size = min(self._limits.max_message_size, self._limits.max_buffer)
        events = selectors.EVENT_WRITE if connecting else selectors.EVENT_READ
        conn = Connection(self._next_id, sock, addr, StreamFramer(size), now, connecting, events=events)
        self._next_id += 1
        self._by_id[conn.cid] = conn
        self._by_addr[addr] = conn
        self._selector.register(sock, events, partial(self._on_event, conn))
        self._sweep_by(now + self._limits.idle_timeout)
        return conn

    def _sweep_by(self, deadline: float) -> None:
        if self._next_sweep is None or deadline < self._next_sweep:
            self._next_sweep = deadline

    def find(self, peer: Peer) -> Connection | None:
        """The open connection for ``peer``: by its id, else any to its address."""
        if peer.conn is not None:
            conn = self._by_id.get(peer.conn)
            if conn is not None:
                return conn
        return self._by_addr.get((peer.host, peer.port))

    def close(self, conn: Connection, reason: str | None, now: float) -> None:
        """Forget ``conn``; with a ``reason``, report a transport failure for it."""
        if self._by_id.pop(conn.cid, None) is None:
            return
        if self._by_addr.get(conn.addr) is conn:
            del self._by_addr[conn.addr]
        self._selector.unregister(conn.sock)
        conn.sock.close()
        if reason is not None:
            self._failed(conn.peer, conn.reply_to, reason, now)

    def _failed(self, peer: Peer, reply_to: Peer | None, reason: str, now: float) -> None:
        """Count a failure and report it for ``peer`` and for the source it answers, if any."""
        self._metrics.transport_failures.labels("tcp").inc()
        self._fail(peer, reason, now)
        if reply_to is not None:
            self._fail(reply_to, reason, now)

    def next_deadline(self) -> float | None:
        """When the idle sweep must run next (None: no connection can expire)."""
        return self._next_sweep

    def sweep(self, now: float) -> None:
        """Close the connections idle for too long, or too slow to complete a message."""
        idle, slow = self._limits.idle_timeout, self._limits.read_timeout
        for conn in list(self._by_id.values()):
            if conn.last + idle <= now:
                log.debug("closing idle connection %s", conn.addr)
                self.close(conn, "idle timeout" if conn.out or conn.connecting else None, now)
            elif conn.partial_since is not None and conn.partial_since + slow <= now:
                log.info("closing TCP connection from %s: a message still incomplete after %.0f s",
                         conn.addr, slow)
                self._metrics.dropped.labels("tcp_read_timeout").inc()
                self.close(conn, None, now)
        deadlines = [c.last + idle for c in self._by_id.values()]
        deadlines += [c.partial_since + slow for c in self._by_id.values() if c.partial_since is not None]
        self._next_sweep = min(deadlines) if deadlines else None

    def close_all(self) -> None:
        for conn in list(self._by_id.values()):
            self.close(conn, None, 0.0)
        for sock in self._listeners:
            self._selector.unregister(sock)
            sock.close()
        self._listeners.clear()

    # ------------------------------------------------------------ sending

    def send(self, data: bytes, peer: Peer, now: float) -> None:
        """Queue ``data`` for ``peer``, connecting first if no connection exists.

        A ``peer`` with a connection id is the source of a request (only the transport
        makes those) and ``data`` a response to it.
        """
        conn = self.find(peer)
        if conn is None and peer.conn is not None:
            conn = self._reopen(data, peer, now)
        elif conn is None:
            conn = self._connect(peer, now)
        if conn is not None and self._queue(conn, data, now):
            self._metrics.count_sent("tcp", data)

    def _reopen(self, response: bytes, source: Peer, now: float) -> Connection | None:
        """RFC 3261 18.2.2: the request's connection has closed, so the response goes to the
        top Via's received address (the transport always adds it when the sent-by host is
        not the source) and sent-by port; not to the source port, an ephemeral one that
        nothing listens on."""
        via = parse(response).top_via
        target = Peer("tcp", via.received or via.host, via.port or DEFAULT_PORT)
        return self.find(target) or self._connect(target, now, reply_to=source)

    def _queue(self, conn: Connection, data: bytes, now: float) -> bool:
        if len(conn.out) + len(data) > self._limits.max_buffer:
            self._metrics.dropped.labels("tcp_buffer_full").inc()
            self.close(conn, "send buffer full", now)
            return False
        conn.out += data
        if not conn.connecting:
            self._write(conn, now)
        return True

    def _connect(self, peer: Peer, now: float, reply_to: Peer | None = None) -> Connection | None:
        target = Peer("tcp", peer.host, peer.port)
        if len(self._by_id) >= self._limits.max_connections:
            self._failed(target, reply_to, "too many connections", now)
            return None
        family = socket.AF_INET6 if ":" in peer.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            err = sock.connect_ex((peer.host, peer.port))
        except OSError as error:  # e.g. a host that is not an address
            err = error.errno or errno.EINVAL
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(target, reply_to, f"connect: {errno.errorcode.get(err, err)}", now)
            return None
        conn = self._add(sock, (peer.host, peer.port), now, connecting=True)
        conn.reply_to = reply_to
        return conn

    def _write(self, conn: Connection, now: float) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self.close(conn, f"send: {error.strerror or error}", now)
            return
        del conn.out[:sent]
        conn.last = now
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if events != conn.events:  # epoll_ctl only when the interest really changes
            conn.events = events
            self._selector.modify(conn.sock, events, partial(self._on_event, conn))

    # ------------------------------------------------------------ events

    def _on_event(self, conn: Connection, now: float, mask: int) -> None:
        if conn.connecting:
            self._connected(conn, now)
            return
        if mask & selectors.EVENT_WRITE:
            self._write(conn, now)
        if mask & selectors.EVENT_READ and conn.cid in self._by_id:
            self._read(conn, now)

    def _connected(self, conn: Connection, now: float) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.close(conn, f"connect: {errno.errorcode.get(err, err)}", now)
            return
        conn.connecting = False
        self._write(conn, now)

    def _read(self, conn: Connection, now: float) -> None:
        try:
            chunk = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.close(conn, f"recv: {error.strerror or error}", now)
            return
        if not chunk:  # orderly close; a failure only if we still had something to say
            self.close(conn, "closed by peer" if conn.out else None, now)
            return
        conn.last = now
        try:
            items = conn.framer.feed(chunk)
        except ParseError as error:
            self._metrics.parse_errors.labels("tcp").inc()
            log.info("closing TCP connection from %s: %s", conn.addr, error)
            self.close(conn, None, now)
            return
        if items:
            conn.partial_since = None
        elif conn.partial_since is None and chunk.strip():  # a lone CRLF starts no message
            conn.partial_since = now
            self._sweep_by(now + self._limits.read_timeout)
        for item in items:
            if item is KEEPALIVE:
                self._queue(conn, b"\r\n", now)
            else:
                self._deliver(item, conn.peer, now)
