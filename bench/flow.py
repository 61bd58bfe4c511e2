"""CPU cost of whole calls and registrations through the proxy, in process, without sockets.

Runs the real pipeline minus sockets and threads, as the two threads would run it:
bytes -> ``psp.parser.parse`` -> the transport's received/rport fix (``psp.transport.fix_via``)
-> ``Core.on_received`` of the core ``psp.server.build_core`` wires from a benchmark
configuration (plugins ``syntax rgstrar ls_localdb ls_sfull``, record-route on, the location
store journaled to a temporary SQLite file) -> due timers -> the journal's commit (the
processor's ``before_send``) -> ``core.outbox`` bytes.  A scripted caller and callee answer
those bytes as bench/scenarios/uac_call.xml and uas_call.xml do: INVITE, 100, 180, 200,
ACK and BYE along the Record-Route, 200.  Then REGISTERs of a fresh user each, committed
in batches of ``--batch`` as the processor commits once per turn.

Only the proxy's work is timed (``time.process_time`` around each processor turn, its own
cost subtracted); the scripted user agents are not.  The clock is simulated: calls start
``1/--rate`` seconds apart, so transactions end by their timers as in a real run and the
timer heap holds what it would hold.  CPU time is immune to other processes' load; the
best of ``--repeat`` runs is printed, with the garbage collections seen meanwhile (CPU
time of each, by generation).  The collector is set as the server sets it
(``psp.server.tune_gc``) unless ``--gc`` says otherwise.

``--handoff`` measures the thread model instead: the same REGISTERs paced at
``--handoff-rate``, first in one thread, then through a feeder thread (the transport's
share) and the real processor thread with its FIFO, once per ``--switch`` interval and
``--linger`` (the processor's ``batch_linger``).

    python3 bench/flow.py --calls 5000
    python3 bench/flow.py --calls 3000 --profile     # cProfile of the proxy's work only
    python3 bench/flow.py --calls 4000 --warmup 8000 --gc default   # steady state, CPython's GC
    python3 bench/flow.py --handoff --registers 6000 --handoff-rate 1500
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: import psp from this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cProfile  # noqa: E402 - after the sys.path fix above
import pstats  # noqa: E402

from psp.config import load_text  # noqa: E402
from psp.events import Outgoing, Peer, Received  # noqa: E402
from psp.fifo import Fifo  # noqa: E402
from psp.metrics import Metrics  # noqa: E402
from psp.message import Request  # noqa: E402
from psp.parser import parse  # noqa: E402
from psp.processor import Processor  # noqa: E402
from psp.server import Wiring, build_core, tune_gc  # noqa: E402
from psp.transport import fix_via  # noqa: E402

PROXY = ("127.0.0.1", 5060)
CALLER = Peer("udp", "127.0.0.1", 5061)
CALLEE = Peer("udp", "127.0.0.1", 5062)
REGISTRANT = Peer("udp", "127.0.0.1", 5063)
CONFIG = """serverip = 127.0.0.1
servername = localhost
serverport_udp = 5060
plugins = syntax rgstrar ls_localdb ls_sfull
loglevel = 2
recovery_file = {path}
[localdb]
record-route = on
[sfull]
record-route = on
"""
SDP = "v=0\r\no={who} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
INVITE = (
    "INVITE sip:callee@localhost SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1;rport\r\n"
    'From: "bench" <sip:caller@localhost>;tag={n}\r\n'
    "To: <sip:callee@localhost>\r\n"
    "Call-ID: {n}-flow@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:caller@127.0.0.1:5061;transport=udp>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n{sdp}"
)
IN_DIALOG = (  # ACK and BYE: to the callee's Contact, along the route set of the 200
    "{method} {target} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-{cseq};rport\r\n"
    "{routes}"
    'From: "bench" <sip:caller@localhost>;tag={n}\r\n'
    "{to}\r\n"
    "Call-ID: {n}-flow@127.0.0.1\r\n"
    "CSeq: {cseq} {method}\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)
REGISTER = (
    "REGISTER sip:localhost SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-r{n};rport\r\n"
    "From: <sip:{user}@localhost>;tag=r{n}\r\n"
    "To: <sip:{user}@localhost>\r\n"
    "Call-ID: r{n}-flow@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:{user}@{contact}>\r\n"
    "Expires: 3600\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)
CALL_TAIL = 0.1  # the BYE follows the ACK after 100 ms, as in uac_call.xml


# ------------------------------------------------------------------ the scripted user agents


def header_lines(data: bytes) -> tuple[str, dict[str, list[str]]]:
    """The start line and the header lines by lowercase name, as SIPp's [last_X:] sees them."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    start, *lines = head.split("\r\n")
    found: dict[str, list[str]] = {}
    for line in lines:
        found.setdefault(line.partition(":")[0].strip().lower(), []).append(line)
    return start, found


def answer(data: bytes, status: str, tag: str, contact: bool = True, sdp: bool = False) -> bytes:
    """The callee's response to the request ``data`` (uas_call.xml)."""
    _, found = header_lines(data)
    to = found["to"][0]
    lines = [f"SIP/2.0 {status}", *found["via"], *found.get("record-route", ()), found["from"][0],
             to if ";tag=" in to else f"{to};tag={tag}", found["call-id"][0], found["cseq"][0]]
    if contact:
        lines.append(f"Contact: <sip:callee@{CALLEE.host}:{CALLEE.port};transport=udp>")
    body = SDP.format(who="callee") if sdp else ""
    if sdp:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def in_dialog(method: str, n: int, cseq: int, ok: bytes) -> bytes:
    """The caller's ACK or BYE: R-URI the 200's Contact, Route its Record-Route reversed."""
    _, found = header_lines(ok)
    target = found["contact"][0].partition("<")[2].partition(">")[0]
    routes = "".join(f"Route: {line.partition(':')[2].strip()}\r\n"
                     for line in reversed(found.get("record-route", [])))
    return IN_DIALOG.format(method=method, target=target, n=n, cseq=cseq, routes=routes,
                            to=found["to"][0]).encode()


def one(sent: list[Outgoing], peer: Peer, start: str) -> bytes:
    """The only message of ``sent`` for ``peer``, checked to start with ``start``."""
    mine = [out.data for out in sent if out.peer == peer]
    if len(mine) != 1 or not mine[0].startswith(start.encode()):
        raise AssertionError(f"expected one {start!r} to {peer}, got {[d[:40] for d in mine]}")
    return mine[0]


# ------------------------------------------------------------------ the proxy, timed


class Pipeline:
    """The transport's inbound work and one processor turn, timed in CPU seconds."""

    def __init__(self, wiring: Wiring, now: float) -> None:
        self.core = wiring.core
        self.commit = wiring.before_send or (lambda: None)
        self.close = wiring.close or (lambda: None)
        self.now = now
        self.cpu = 0.0
        self.profile: cProfile.Profile | None = None
        self._overhead = _clock_overhead()

    def turn(self, batch: list[tuple[bytes, Peer]]) -> list[Outgoing]:
        """Parse and fix each message, hand it to the core, fire due timers, commit, drain."""
        core, now = self.core, self.now
        if self.profile is not None:
            self.profile.enable()
        start = time.process_time()
        for data, peer in batch:
            message = parse(data)
            if isinstance(message, Request):
                fix_via(message, peer)
            core.on_received(message, peer, now)
        deadline = core.next_deadline()
        if deadline is not None and deadline <= now:
            core.on_timers(now)
        self.commit()
        sent = list(core.outbox)
        core.outbox.clear()
        self.cpu += time.process_time() - start - self._overhead
        if self.profile is not None:
            self.profile.disable()
        return sent


def _clock_overhead() -> float:
    """What one pair of process_time() calls costs, subtracted from every timed turn."""
    rounds = 20000
    start = time.process_time()
    for _ in range(rounds):
        time.process_time()
    return (time.process_time() - start) / rounds


def call(pipe: Pipeline, n: int) -> None:
    """One whole call through the proxy (uac_call.xml against uas_call.xml)."""
    sdp = SDP.format(who="caller")
    invite = INVITE.format(n=n, length=len(sdp), sdp=sdp).encode()
    sent = pipe.turn([(invite, CALLER)])
    one(sent, CALLER, "SIP/2.0 100")
    forwarded = one(sent, CALLEE, "INVITE ")
    one(pipe.turn([(answer(forwarded, "180 Ringing", f"u{n}"), CALLEE)]), CALLER, "SIP/2.0 180")
    ok = one(pipe.turn([(answer(forwarded, "200 OK", f"u{n}", sdp=True), CALLEE)]), CALLER, "SIP/2.0 200")
    one(pipe.turn([(in_dialog("ACK", n, 1, ok), CALLER)]), CALLEE, "ACK ")
    pipe.now += CALL_TAIL
    bye = one(pipe.turn([(in_dialog("BYE", n, 2, ok), CALLER)]), CALLEE, "BYE ")
    one(pipe.turn([(answer(bye, "200 OK", f"u{n}", contact=False), CALLEE)]), CALLER, "SIP/2.0 200")
    pipe.now -= CALL_TAIL


def registrations(pipe: Pipeline, first: int, count: int, batch: int) -> None:
    """``count`` REGISTERs of fresh users, ``batch`` per processor turn (one commit each)."""
    for start in range(first, first + count, batch):
        numbers = range(start, min(start + batch, first + count))
        messages = [(REGISTER.format(n=n, user=f"user{n}", contact=f"127.0.0.1:{10000 + n % 50000}").encode(),
                     REGISTRANT) for n in numbers]
        sent = pipe.turn(messages)
        if len(sent) != len(messages) or not all(out.data.startswith(b"SIP/2.0 200") for out in sent):
            raise AssertionError(f"expected {len(messages)} 200s, got {[out.data[:40] for out in sent]}")
        pipe.now += len(messages) / 1000.0


# ------------------------------------------------------------------ runs


@contextmanager
def gc_pauses() -> Iterator[list[tuple[int, float]]]:
    """(generation, CPU seconds) of every garbage collection while the block runs."""
    pauses: list[tuple[int, float]] = []
    started: list[float] = []

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.process_time())
        elif started:
            pauses.append((info["generation"], time.process_time() - started.pop()))

    gc.callbacks.append(watch)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(watch)


def fresh(directory: Path) -> Pipeline:
    """A newly wired core (its own SQLite journal) and the callee registered."""
    settings = load_text(CONFIG.format(path=directory / "location.sqlite"))
    pipe = Pipeline(build_core(settings), time.monotonic())
    contact = f"{CALLEE.host}:{CALLEE.port};transport=udp"
    register = REGISTER.format(n=0, user="callee", contact=contact).encode()
    one(pipe.turn([(register, REGISTRANT)]), REGISTRANT, "SIP/2.0 200")
    return pipe


def measure(kind: str, count: int, warmup: int, run: Callable[[Pipeline, int, int], None],
            profile: cProfile.Profile | None) -> tuple[float, list[tuple[int, float]], int]:
    """CPU microseconds per unit of ``count`` units run after ``warmup`` ones, the GC pauses
    meanwhile and the objects the collector tracks at the end."""
    with tempfile.TemporaryDirectory(prefix=f"flow-{kind}-") as directory:
        pipe = fresh(Path(directory))
        run(pipe, 1, warmup)
        pipe.cpu = 0.0
        pipe.profile = profile
        with gc_pauses() as pauses:
            run(pipe, 1 + warmup, count)
        pipe.profile = None
        tracked = len(gc.get_objects())
        pipe.close()
        return pipe.cpu / count * 1e6, pauses, tracked


def calls(rate: float) -> Callable[[Pipeline, int, int], None]:
    def run(pipe: Pipeline, first: int, count: int) -> None:
        for n in range(first, first + count):
            call(pipe, n)
            pipe.now += 1.0 / rate
    return run


def registers(batch: int) -> Callable[[Pipeline, int, int], None]:
    def run(pipe: Pipeline, first: int, count: int) -> None:
        registrations(pipe, first, count, batch)
    return run


# ------------------------------------------------------------------ the thread hand-off


def registers_paced(count: int) -> list[bytes]:
    """REGISTERs of ``count`` fresh users, as the feeder sends them."""
    return [REGISTER.format(n=n, user=f"user{n}", contact=f"127.0.0.1:{10000 + n % 50000}").encode()
            for n in range(count)]


def _pace(start: float, n: int, rate: float) -> None:
    """Sleep until datagram ``n`` is due, as the transport waits in select() between datagrams."""
    pause = start + n / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)


def one_thread(count: int, rate: float) -> float:
    """CPU microseconds per REGISTER (the whole process, sleeps included) of the same paced
    load handled in one thread, a turn each."""
    with tempfile.TemporaryDirectory(prefix="flow-paced-") as directory:
        pipe = fresh(Path(directory))
        datagrams = registers_paced(count)
        cpu, start = time.process_time(), time.monotonic()
        for n, data in enumerate(datagrams):
            _pace(start, n, rate)
            pipe.turn([(data, REGISTRANT)])
        cpu = time.process_time() - cpu
        pipe.close()
    return cpu / count * 1e6


def handoff(count: int, rate: float, switch: float, linger: float) -> tuple[float, list[float], float]:
    """REGISTERs through the real threads minus sockets, at ``rate`` per second.

    A feeder thread does the transport's share (parse, fix, ``Received`` onto the bounded
    inbound FIFO), sleeping between datagrams as the transport waits in select(); the real
    :class:`psp.processor.Processor` thread (metrics, batching and its ``linger``, the
    journal's commit per turn) drives the core and hands each response to ``send``, which
    notes when it left.
    Returns CPU microseconds per REGISTER (the whole process), the sorted arrival-to-send
    delays (wall clock: the GIL hand-offs are what they show) and REGISTERs per turn.
    """
    sys.setswitchinterval(switch)
    with tempfile.TemporaryDirectory(prefix="flow-handoff-") as directory:
        settings = load_text(CONFIG.format(path=Path(directory) / "location.sqlite"))
        wiring = build_core(settings)
        inbound: Fifo[Any] = Fifo(settings.fifo_size)
        sent: list[tuple[float, bytes]] = []
        turns = [0]

        def commit() -> None:  # once per processor turn: count the turns too
            turns[0] += 1
            if wiring.before_send is not None:
                wiring.before_send()

        processor = Processor(wiring.core, inbound, Metrics(), resolve=lambda job: None,
                              send=lambda out: sent.append((time.monotonic(), out.data)),
                              before_send=commit, on_exit=wiring.close, linger=linger)
        datagrams, arrived = registers_paced(count), [0.0] * count
        cpu = time.process_time()
        processor.start()
        feeder = threading.Thread(target=_feed, args=(datagrams, arrived, inbound, rate), name="tlp")
        feeder.start()
        feeder.join()
        deadline = time.monotonic() + 10.0
        while len(sent) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        processor.stop(0.0)
        processor.join(5.0)
        cpu = time.process_time() - cpu
    waits = sorted(when - arrived[int(data.split(b"Call-ID: r", 1)[1].split(b"-", 1)[0])]
                   for when, data in sent)
    return cpu / count * 1e6, waits, count / max(1, turns[0])


def _feed(datagrams: list[bytes], arrived: list[float], inbound: Fifo[Any], rate: float) -> None:
    """The transport's share of each datagram, paced at ``rate`` per second."""
    start = time.monotonic()
    for n, data in enumerate(datagrams):
        _pace(start, n, rate)
        arrived[n] = time.monotonic()
        message = parse(data)
        fix_via(message, REGISTRANT)
        inbound.put_nowait(Received(message, REGISTRANT, arrived[n]))


def handoff_report(count: int, rate: float, switches: list[float], lingers: list[float], repeat: int) -> None:
    """One thread at the same pace, then the two threads at each switch interval and linger:
    the difference in CPU is what the hand-off costs (or saves); the delays are what it adds."""
    for _ in range(max(1, repeat)):
        alone = one_thread(count, rate)
        print(f"{count} REGISTERs at {rate:.0f}/s, one thread: {alone:6.1f} CPU us per REGISTER")
        for switch in switches:
            for linger in lingers:
                micros, waits, per_turn = handoff(count, rate, switch, linger)
                print(f"  two threads, switch interval {switch * 1e3:3.1f} ms, linger {linger * 1e3:3.1f} ms: "
                      f"{micros:6.1f} CPU us per "
                      f"REGISTER ({micros - alone:+.1f}), {per_turn:.1f} per turn, arrival->send p50 "
                      f"{_ms(waits, 0.5)} p99 {_ms(waits, 0.99)} max {_ms(waits, 1.0)} ms, "
                      f"{len(waits)}/{count} answered", flush=True)


def _ms(waits: list[float], fraction: float) -> str:
    return f"{waits[min(len(waits) - 1, int(fraction * len(waits)))] * 1e3:.2f}" if waits else "-"


def describe(pauses: list[tuple[int, float]]) -> str:
    """How many collections of each generation, their CPU time and the longest of each."""
    if not pauses:
        return "no GC"
    parts = []
    for generation in range(3):
        times = [seconds for gen, seconds in pauses if gen == generation]
        if times:
            parts.append(f"gen{generation} {len(times)}x {sum(times) * 1e3:.1f} ms "
                         f"(longest {max(times) * 1e3:.1f})")
    return "GC " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--calls", type=int, default=3000, help="calls per run (default 3000)")
    parser.add_argument("--registers", type=int, help="REGISTERs per run (default: as many as --calls)")
    parser.add_argument("--batch", type=int, default=8, help="REGISTERs per processor turn and commit (default 8)")
    parser.add_argument("--rate", type=float, default=250.0, help="simulated calls/s: spacing of the calls' clock")
    parser.add_argument("--warmup", type=int,
                        help="calls (REGISTERs) run before measuring (default: a tenth); 8000 at 250 calls/s "
                             "reaches the steady state, where transactions end as fast as they start")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is printed (default 3)")
    parser.add_argument("--profile", action="store_true",
                        help="one run of each under cProfile (the proxy's work only)")
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumulative", "ncalls"),
                        help="order of the --profile listing (default tottime: self time)")
    parser.add_argument("--top", type=int, default=30, help="functions shown by --profile (default 30)")
    parser.add_argument("--gc", choices=("server", "default", "off"), default="server",
                        help="the garbage collector as psp.server.tune_gc() sets it (default), CPython's "
                             "defaults, or off (what it costs)")
    parser.add_argument("--handoff", action="store_true",
                        help="instead: --registers REGISTERs paced at --handoff-rate, in one thread, then "
                             "through a feeder and the processor thread (the hand-off's cost and delays)")
    parser.add_argument("--handoff-rate", type=float, default=2000.0, help="REGISTERs/s offered (default 2000)")
    parser.add_argument("--switch", default="5",
                        help="sys.setswitchinterval values to try, in ms (default 5; e.g. 5,1,0.5)")
    parser.add_argument("--linger", default="0,1",
                        help="the processor's batch_linger values to try, in ms (default 0,1)")
    args = parser.parse_args()
    if args.gc == "server":
        tune_gc()
    elif args.gc == "off":
        gc.disable()
    if args.handoff:
        switches = [float(switch) / 1e3 for switch in args.switch.split(",")]
        lingers = [float(linger) / 1e3 for linger in args.linger.split(",")]
        handoff_report(args.registers or args.calls, args.handoff_rate, switches, lingers, args.repeat)
        return
    cases = (("call", args.calls, calls(args.rate)),
             ("REGISTER", args.registers or args.calls, registers(args.batch)))
    for kind, count, run in cases:
        warmup = args.warmup if args.warmup is not None else max(1, count // 10)
        if args.profile:
            profile = cProfile.Profile()
            micros, _, _ = measure(kind, count, warmup, run, profile)
            print(f"--- cProfile of {count} {kind}s ({micros:.1f} us each under the profiler)")
            pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)
            continue
        results = [measure(kind, count, warmup, run, None) for _ in range(max(1, args.repeat))]
        best, pauses, tracked = min(results, key=lambda result: result[0])
        label = f"{kind}s of {count}" + (f", commit per {args.batch}" if kind == "REGISTER" else "")
        print(f"{label:32} {best:8.1f} CPU us per {kind} "
              f"(runs: {' '.join(f'{r[0]:.1f}' for r in results)}); {describe(pauses)}; "
              f"{tracked} objects tracked at the end")

if __name__ == "__main__":
    main()
