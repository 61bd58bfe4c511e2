"""Which transaction a message belongs to: dictionary keys, never scans.

RFC 3261 17.1.3 (a response matches a client transaction by the branch of its top Via and
the method of its CSeq) and 17.2.3 (a request matches a server transaction by the branch,
the sent-by of its top Via and its method, an ACK matching the INVITE; a request whose
branch lacks the magic cookie falls back to the RFC 2543 rules: Request-URI, To tag, From
tag, Call-ID, CSeq number and top Via, the ACK's To tag being the one of the response the
server transaction sent).  Each rule is a function that builds a hashable key, so matching
is one dict lookup per message.  RFC 3261 9.2 relates a CANCEL to the INVITE it cancels by
building the INVITE's key from the CANCEL.

The RFC 3261 keys are strings, their fields joined by a line feed, not tuples: a completed
transaction keeps its key for 32 s (Timer J), and one string costs about 100 bytes where
a tuple of four objects cost 280 (bench/tx_memory.py); a string also hashes once.  The
branch, the one field a line feed might hide in, comes first, and the fields after it
cannot hold one, so two different keys never join into the same string.  The RFC 2543 key,
with several free-form fields, stays a tuple.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psp.branch import COOKIE
from psp.errors import ParseError

if TYPE_CHECKING:
    from psp.message import Request, Response

Key = str | tuple[object, ...]


def response_key(response: Response) -> Key | None:
    """The client-transaction key of ``response`` (17.1.3), None without a top Via branch."""
    via = response.top_via
    branch = via.branch if via is not None else None
    if not branch:
        return None
    return f"{branch}\n{response.cseq.method}"


def client_key(request: Request) -> Key:
    """The key under which a client transaction sending ``request`` waits for responses."""
    via = request.top_via
    if via is None or not via.branch:
        raise ValueError("a client transaction needs a top Via with a branch")
    return f"{via.branch}\n{request.cseq.method}"


def server_key(request: Request, method: str | None = None, to_tag: str | None = None,
               *, tagless: bool = False) -> Key:
    """The server-transaction key of ``request`` (17.2.3).

    ``method`` replaces the request's own (ACK is always looked up as INVITE; a CANCEL
    looks up its INVITE with ``method='INVITE'``); ``to_tag`` replaces the request's To tag
    in the RFC 2543 key (the IST files itself under the tag of its final response, which
    is what the ACK carries); ``tagless`` builds that key as if the To had no tag (the
    original's ``disable_check_for_osip_to_tag_in_cancel``, for UAs that put a To tag in
    the CANCEL of an INVITE that had none).
    """
    via = request.top_via
    if via is None:
        raise ParseError("request without a Via")
    method = method or request.method
    if method == "ACK":
        method = "INVITE"
    branch = via.branch
    if branch and branch.startswith(COOKIE):
        host, port = via.sent_by
        return f"{branch}\n{host.lower()}\n{port}\n{method}"
    if to_tag is None and not tagless:
        to_tag = request.to.tag
    return (
        str(request.uri), to_tag, request.from_.tag, request.call_id,
        request.cseq.number, str(via), method,
    )


def has_cookie(request: Request) -> bool:
    """True when the top Via branch is an RFC 3261 one (17.2.3 first rule applies)."""
    via = request.top_via
    branch = via.branch if via is not None else None
    return bool(branch and branch.startswith(COOKIE))
