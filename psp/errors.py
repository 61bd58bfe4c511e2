"""Exceptions that carry the SIP status they imply.

Every error raised inside the pure core is a :class:`SipError`.  It knows the status code
(and optionally the reason phrase and extra headers) of the response a server should send
back, so that each thread can turn it into a response at exactly one boundary (RFC 3261
8.2, 16.3, 21).  :class:`ParseError` is what the message layer raises for malformed input
(RFC 3261 section 7, 20, 25; RFC 4475): 400 by default, 505 for a bad SIP version, 501 for
an unknown method whose CSeq does not match.
"""

from __future__ import annotations

from collections.abc import Iterable


class SipError(Exception):
    """An error that maps to a SIP response status (500 unless a subclass says otherwise)."""

    status: int = 500
    reason: str | None = None

    def __init__(
        self,
        message: str = "",
        status: int | None = None,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)


class ParseError(SipError):
    """Malformed SIP input; ``status`` is what a server should answer (400 by default)."""

    status = 400
