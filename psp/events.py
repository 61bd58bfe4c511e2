"""Small immutable records that cross thread boundaries.

The transport, resolver and processor threads talk only through FIFOs; these named
tuples are the items on them (see docs/architecture.md, "Records that cross threads").
``Peer`` names a transport-level destination or source (RFC 3261 18, 18.2.2) and is
hashable so it can key connection tables.  Named tuples rather than frozen dataclasses:
as immutable, and built and hashed in C; several are made for every message, and a frozen
dataclass's ``__init__`` (one ``object.__setattr__`` per field) cost more than the rest
of the hand-off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # only for annotations: events must not pull the message layer in at run time
    from psp.message import Message


class Peer(NamedTuple):
    """A transport address: 'udp' or 'tcp', host, port and, for TCP, the connection id."""

    transport: str
    host: str
    port: int
    conn: int | None = None


class Received(NamedTuple):
    """A parsed message from ``peer``, stamped when the transport read it (transport -> processor)."""

    message: Message
    peer: Peer
    t_in: float


class Outgoing(NamedTuple):
    """Bytes to send to ``peer`` (processor -> transport); ``t_in`` of the cause, if any."""

    data: bytes
    peer: Peer
    t_in: float | None


class ResolveJob(NamedTuple):
    """A request to resolve ``host`` into peers per RFC 3263 (processor -> resolver)."""

    job: int
    host: str
    port: int | None
    transport: str | None
    t_in: float


class Resolved(NamedTuple):
    """The answer to ResolveJob ``job``: ordered targets, or an error text (resolver -> processor)."""

    job: int
    targets: tuple[Peer, ...]
    error: str | None
    t_in: float


class TransportFailed(NamedTuple):
    """Sending to ``peer`` failed (connection refused, reset, ICMP...) (transport -> processor)."""

    peer: Peer
    reason: str
    t_in: float
