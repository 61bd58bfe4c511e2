"""The request a proxy sends downstream: RFC 3261 16.6 items 1 to 5 and 8, RFC 3327.

:func:`branch_request` builds the copy of the request for one location (target) before
the plugins' ``on_forward`` hooks see it; :func:`attempt` adds our Via to a copy of that
for one client transaction (one target address of RFC 3263 4.3, each with its own
branch), or to the ACK for a 2xx relayed without a transaction.

The Via branch comes from psp/branch.py: the key of the request as received (its routing
inputs and incoming Via) and a number per client transaction, so that loop detection
(16.3 item 4) can recompute it.
"""

from __future__ import annotations

from psp import branch
from psp.message import Request
from psp.plugins.base import Location
from psp.routing import Local

DEFAULT_MAX_FORWARDS = 70
# RFC 3261 16.6 item 4: only requests that can create a dialog are record-routed
# (INVITE, SUBSCRIBE, REFER and NOTIFY, RFC 6665 / RFC 3515).
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


def decrement_max_forwards(request: Request) -> None:
    """16.6 item 3: one hop less, or 70 when the request carried none.

    The proxy refused a request at 0 before any plugin saw it (16.3 item 3), so this never
    goes below 0.
    """
    hops = request.max_forwards
    request.set_header("Max-Forwards", str(DEFAULT_MAX_FORWARDS if hops is None else hops - 1))


def supports_path(request: Request) -> bool:
    """True when the UA declared the path extension (RFC 3327 5.1: only then may we add Path)."""
    tags = request.header_values("Supported") + request.header_values("Require")
    return any(tag.strip().lower() == "path" for tag in tags)


def branch_request(request: Request, location: Location, local: Local, *, arrived_on: str,
                   record_route: bool, add_path: bool) -> Request:
    """The copy of ``request`` to send to ``location`` (16.6 items 1-5), without our Via yet.

    ``arrived_on`` is the transport of the incoming request: our Record-Route and Path
    URIs name the address the request reached us at.  ``add_path`` is the ``rfc3327``
    setting: a REGISTER of a UA that supports Path gets ours on top (RFC 3327 5.1).
    """
    copy = request.copy()
    copy.uri = location.uri.copy()
    if location.path:
        routes = list(location.path) + copy.header_values("Route")
        copy.remove_header("Route")
        for route in routes:
            copy.add_header("Route", route)
    decrement_max_forwards(copy)
    if record_route and copy.method in DIALOG_CREATING:
        copy.add_header("Record-Route", local.route_uri(arrived_on), first=True)
    if add_path and copy.method == "REGISTER" and supports_path(copy):
        copy.add_header("Path", local.route_uri(arrived_on), first=True)
    return copy


def attempt(request: Request, local: Local, key: str, number: int, transport: str) -> Request:
    """Push our Via on ``request`` (16.6 item 8), for client transaction ``number`` of the
    request keyed ``key``; returns ``request``, which the transaction then owns.

    In place: the copy made by :func:`branch_request` is the branch's own, and only a
    fail-over sends it again (:func:`retry` gives that attempt a copy of its own).  A
    relayed ACK for a 2xx gets number 0 of its own key, so that a retransmission of the
    ACK gets the same branch.
    """
    request.push_via(local.via(transport, branch.make_branch(key, number)))
    return request


def retry(sent: Request) -> Request:
    """A copy of a request :func:`attempt` sent, without our Via: for the next target."""
    copy = sent.copy()
    copy.pop_via()
    return copy
