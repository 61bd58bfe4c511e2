"""Via branch values of this proxy: transaction ids that also tell loops from spirals.

RFC 3261 16.6 item 8 asks a proxy that detects loops for a branch made of two parts: one
unique per branch (8.1.1.7, magic cookie first) and one that reflects every field that
influences routing, so that 16.3 item 4 can recompute it when a request comes back.  Our
branch is ``z9hG4bK<key>.<index>``:

* ``key`` is a keyed hash of the routing inputs (R-URI, top Route, Proxy-Require,
  Proxy-Authorization, From, To tag, Call-ID, CSeq number) and of the top Via the
  request carried when it reached us (its branch when RFC 3261-style, else the whole Via).
  Since that Via's branch is unique per client transaction, so is the key.  The whole From
  value stands for its tag: nothing on a loop rewrites From, and a proxy reads From only
  here, so hashing it as written spares parsing it for every request we forward.
* ``index`` numbers the branches of one proxied request (forking, sequential tries).

When a request returns, our earlier Via sits somewhere below the top and the Via just
under it is the one that was on top when we first received it.  Recomputing the key with
that Via and the current routing inputs gives our old key back exactly when nothing that
affects routing changed: a loop (482).  Any change (a retargeted R-URI, a new Route) is a
spiral.  The hash is keyed with the proxy's secret, so only Vias this proxy wrote can match
and another proxy of ours on the path is never mistaken for us; that replaces the sent-by
comparison of 16.3 item 4, which NAT and multi-homing make unreliable.
"""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the message layer is passed in, never built here
    from psp.headers import Via
    from psp.message import Request

COOKIE = "z9hG4bK"
_KEY_LENGTH = 32  # hex digits of a 16-byte digest
_HEX = frozenset("0123456789abcdef")


def incoming_part(via: Via | None) -> str:
    """What identifies the upstream transaction: an RFC 3261 branch, else the whole Via."""
    if via is None:
        return ""
    branch = via.branch
    if branch and branch.startswith(COOKIE) and len(branch) > len(COOKIE):
        return branch
    return str(via)


def loop_key(request: Request, incoming: Via | None, secret: bytes) -> str:
    """The hash of ``request``'s routing inputs as received under the Via ``incoming``.

    ``request`` must be the request after the RFC 3261 16.4 Route pre-processing and before
    any retargeting, exactly as the plugin chain sees it (``ctx.request``).
    """
    fields = (
        str(request.uri),
        request.header("Route") or "",
        ",".join(request.header_values("Proxy-Require")),
        "\n".join(request.header_values("Proxy-Authorization")),
        request.header("From") or "",
        request.to.tag or "",
        request.call_id,
        str(request.cseq.number),
        incoming_part(incoming),
    )
    data = "\x00".join(fields).encode("utf-8", "surrogateescape")
    return hashlib.blake2s(data, key=_hash_key(secret), digest_size=_KEY_LENGTH // 2).hexdigest()


@functools.lru_cache(maxsize=8)
def _hash_key(secret: bytes) -> bytes:
    """blake2s takes a key of at most 32 bytes: any secret is first reduced to that (once)."""
    return hashlib.blake2s(secret).digest()


def make_branch(key: str, index: int) -> str:
    """Our branch parameter for branch number ``index`` of the request whose key is ``key``."""
    return f"{COOKIE}{key}.{index}"


def key_of(branch: str | None) -> str | None:
    """The loop key inside a branch we would have written, or None for anybody else's."""
    if not branch or not branch.startswith(COOKIE):
        return None
    key, dot, index = branch[len(COOKIE):].partition(".")
    if not dot or not index.isdigit() or len(key) != _KEY_LENGTH or not _HEX.issuperset(key):
        return None
    return key


def request_key(request: Request, secret: bytes) -> str:
    """The key for the branches of a request we forward now (its top Via is the incoming one)."""
    return loop_key(request, request.top_via, secret)


def is_loop(request: Request, secret: bytes) -> bool:
    """True when a Via of ours carries the key this request would get now (16.3 item 4)."""
    vias = request.vias
    for index, via in enumerate(vias):
        key = key_of(via.branch)
        if key is None:
            continue
        incoming = vias[index + 1] if index + 1 < len(vias) else None
        if key == loop_key(request, incoming, secret):
            return True
    return False
