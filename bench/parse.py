"""Benchmark of the message layer: what a proxy pays per message.

Measures, on one core, messages per second and microseconds per message for
  * parse: psp.parser.parse() of the wire bytes;
  * proxy: parse + the touches of a stateful proxy (top Via branch, CSeq, Call-ID, To tag,
    Max-Forwards decrement via set_header, push_via of a new Via, the Route list) +
    to_bytes();
on a typical INVITE with SDP and a typical 200 OK.  Run: python3 bench/parse.py [--help]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

from psp.headers import Via
from psp.parser import parse

INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Max-Forwards: 70\r\n"
    "Route: <sip:proxy.atlanta.example.com;lr>\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.4:5060>\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: SIPp/3.7\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
)
SDP = (
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.4\r\ns=-\r\n"
    "c=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 97\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:97 iLBC/8000\r\n"
)
OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKnashds8.0;received=198.51.100.1\r\n"
    "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.4\r\n"
    "Record-Route: <sip:198.51.100.1;lr>\r\n"
    "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:bob@192.0.2.7:5060>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
)


def wire(template: str) -> bytes:
    return (template.format(length=len(SDP)) + SDP).encode()


def proxy_touch(data: bytes) -> bytes:
    """What a stateful proxy reads and changes on a message it forwards."""
    message = parse(data)
    top = message.top_via
    assert top is not None
    key = (top.branch, message.cseq.method, message.call_id, message.to.tag)
    if message.max_forwards is not None:
        message.set_header("Max-Forwards", str(message.max_forwards - 1))
    if hasattr(message, "method"):  # requests go downstream with our Via on top
        message.push_via(Via("UDP", "198.51.100.1", 5060, {"branch": "z9hG4bKnashds8.0", "rport": None}))
        routes = message.routes
        assert key and routes is not None
    else:  # responses go upstream without it
        message.pop_via()
    return message.to_bytes()


def measure(function: Callable[[bytes], object], data: bytes, seconds: float) -> tuple[float, float]:
    """(messages per second, microseconds per message) of one core: CPU time of this
    process (time spent descheduled does not count), fastest of many short runs (the
    machine is shared, and the minimum is the figure least disturbed by other work)."""
    runs, count = 25, max(50, int(seconds * 40000 / 25))
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        for _ in range(count):
            function(data)
        best = min(best, (time.process_time() - start) / count)
    return 1 / best, best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="rough duration of each measurement")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the proxy path")
    args = parser.parse_args()
    cases = {"INVITE+SDP": wire(INVITE), "200 OK+SDP": wire(OK)}
    for name, data in cases.items():
        for label, function in (("parse", parse), ("parse+proxy+to_bytes", proxy_touch)):
            rate, micros = measure(function, data, args.seconds)
            print(f"{name:12} {label:22} {rate:10.0f} msg/s {micros:8.2f} us/msg")
    if args.profile:
        data = cases["INVITE+SDP"]
        profile = cProfile.Profile()
        profile.runcall(lambda: [proxy_touch(data) for _ in range(20000)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
