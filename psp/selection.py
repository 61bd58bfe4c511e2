"""Choosing the final response of a forked request: RFC 3261 16.7 steps 6 and 7.

Given every final non-2xx response the branches of one request produced (received from
downstream, or stood in for by the proxy: 408 for a branch that timed out, 503 for one that
could not be reached, RFC 3261 16.8 and 16.9), :func:`best_response` returns the one to
send upstream:

* none at all: 408 (Request Timeout), of our own;
* a 6xx if there is one (the first received);
* otherwise the lowest class; within 4xx the responses that tell the UAC how to retry
  (401, 407, 415, 420, 484) come first; then responses from downstream before the ones
  we stood in with; then the lowest code, then the first received;
* a chosen 503 becomes a 500 of our own: a 503 upstream would say that *we* are
  unavailable, and make the UAC avoid this proxy for everything (16.7 step 6);
* a chosen 401 or 407 carries the WWW-Authenticate and Proxy-Authenticate values of
  every 401 and 407 received, so the UAC can answer all the challenges at once (step 7).

2xx responses never come here: every 2xx is forwarded as it arrives (16.7 step 5).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from psp.message import Request, Response

# Builds a response of our own (the proxy's TU.local_response, with our Server header).
MakeResponse = Callable[[Request, int], Response]

# 16.7 step 6: responses "that provide information affecting resubmission of this request".
RESUBMISSION = (401, 407, 415, 420, 484)
CHALLENGES = ("WWW-Authenticate", "Proxy-Authenticate")


def best_response(request: Request, responses: Sequence[Response],
                  stand_ins: Collection[Response], *, make: MakeResponse) -> Response:
    """The response to send upstream for ``request`` among ``responses`` (see the module doc).

    ``stand_ins`` are those of ``responses`` that the proxy made up for a branch; ``make``
    builds the 408 and 500 of our own.
    """
    if not responses:
        return make(request, 408)

    def rank(index: int) -> tuple[int, int, int, int, int]:
        response = responses[index]
        status = response.status
        if status >= 600:
            return (0, 0, 0, 0, index)  # any 6xx first, the first received
        preferred = 0 if status in RESUBMISSION else 1
        return (status // 100, preferred, int(response in stand_ins), status, index)

    best = responses[min(range(len(responses)), key=rank)]
    if best.status == 503:
        return make(request, 500)
    if best.status in (401, 407):
        return with_all_challenges(best, responses)
    return best


def with_all_challenges(chosen: Response, responses: Sequence[Response]) -> Response:
    """``chosen`` with the challenges of every other 401/407 added, unchanged (16.7 step 7)."""
    merged = chosen.copy()
    for response in responses:
        if response is chosen or response.status not in (401, 407):
            continue
        for name in CHALLENGES:
            for line in _lines(response, name):
                merged.add_header(name, line)
    return merged


def _lines(response: Response, name: str) -> list[str]:
    # Challenge values contain commas: take whole header lines, never split them.
    return [value for header, value in response.items() if header.lower() == name.lower()]
