"""Small immutable records that cross thread boundaries.

The transport, resolver and processor threads talk only through FIFOs; these frozen,
slotted dataclasses are the items on them (see docs/architecture.md, "Records that cross
threads").  ``Peer`` names a transport-level destination or source (RFC 3261 18, 18.2.2)
and is hashable so it can key connection tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: events must not pull the message layer in at run time
    from psp.message import Message


@dataclass(frozen=True, slots=True)
class Peer:
    """A transport address: 'udp' or 'tcp', host, port and, for TCP, the connection id."""

    transport: str
    host: str
    port: int
    conn: int | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """A parsed message from ``peer``, stamped when the transport read it (transport -> processor)."""

    message: Message
    peer: Peer
    t_in: float


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes to send to ``peer`` (processor -> transport); ``t_in`` of the cause, if any."""

    data: bytes
    peer: Peer
    t_in: float | None


@dataclass(frozen=True, slots=True)
class ResolveJob:
    """A request to resolve ``host`` into peers per RFC 3263 (processor -> resolver)."""

    job: int
    host: str
    port: int | None
    transport: str | None
    t_in: float


@dataclass(frozen=True, slots=True)
class Resolved:
    """The answer to ResolveJob ``job``: ordered targets, or an error text (resolver -> processor)."""

    job: int
    targets: tuple[Peer, ...]
    error: str | None
    t_in: float


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """Sending to ``peer`` failed (connection refused, reset, ICMP...) (transport -> processor)."""

    peer: Peer
    reason: str
    t_in: float
