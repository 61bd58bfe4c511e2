"""Calls per second through the proxy: SIPp UAC -> proxy -> SIPp UAS, side by side with Kamailio.

Each call is INVITE / (100) / 180 / 200 / ACK / pause 100 ms / BYE / 200, with the route set
of Record-Route honoured by ACK and BYE (bench/scenarios/uac_call.xml, uas_call.xml).  The
callee is registered (REGISTER of sip:callee@localhost to the UAS's address, then calls to
sip:callee@localhost) when the proxy's registrar answers 200, else reached through the
Request-URI naming the UAS; Kamailio gets the same.  UDP first, TCP as a second row.

For each proxy and transport: a sweep for the highest rate with zero failed calls (runs of
--duration seconds, each on a freshly started proxy), then runs at 25 %, 50 % and 90 % of
that rate for the p50/p95/p99 of INVITE->180 and INVITE->200 (SIPp's rtd, 1 ms resolution),
and CPU seconds of the proxy's processes per 1,000 calls (/proc/PID/stat utime + stime
around the run).  With --kamailio, Kamailio also runs at PartySIP's 50 % rate, so that CPU
per call is compared at the same load.

    python3 bench/calls.py --kamailio            # about 15 minutes
    python3 bench/calls.py --quick --transport udp
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the package "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import targets
from bench.common import (LOOPBACK, MACHINE_NOTE, RESULTS, Processes, Sipp, add_common_arguments,
                          cpu_seconds, duration_of, free_port, note, require, write_json)
from bench.sweep import Run, judge, latency_of, latency_runs, sweep

SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1"}
CALL_TAIL = 0.1  # seconds a call lasts after its INVITE: the 100 ms wait before the BYE
TRACED_SECONDS = 5.0  # the first, traced run of a row (does the callee see Record-Route?)


@dataclass
class CallBench:
    """Runs call loads; ``mode`` is 'registered' or 'ruri' (see the module docstring)."""

    sipp: Sipp
    processes: Processes
    workdir: Path
    duration: float
    mode: str = "ruri"
    runs: int = 0

    def register_callee(self, target: targets.Target, transport: str, uas_port: int) -> bool:
        """REGISTER sip:callee@localhost -> 127.0.0.1:uas_port; True on a 200."""
        users = self.workdir / "callee.csv"
        users.write_text("SEQUENTIAL\ncallee;[authentication]\n")
        result = self.sipp.run(
            "register.xml", "-inf", str(users), "-key", "domain", "localhost",
            "-key", "contact", f"{LOOPBACK}:{uas_port};transport={transport}", "-key", "expires", "3600",
            port=free_port(), transport="u1", calls=1, timeout=10, remote=f"{LOOPBACK}:{target.port}")
        return result.counter("SuccessfulCall") == 1

    def uri(self, transport: str, uas_port: int) -> str:
        if self.mode == "registered":
            return "sip:callee@localhost"
        return f"sip:callee@{LOOPBACK}:{uas_port};transport={transport}"

    def run_at(self, name: str, transport: str, rate: float, trace: bool = False) -> Run:
        """One load of ``rate`` calls/s for ``duration`` s against a fresh ``name``."""
        self.runs += 1
        target = targets.start(name, self.workdir / f"{name}-{self.runs}", self.processes)
        try:
            return self._load(target, transport, rate, trace)
        finally:
            target.stop()

    def _load(self, target: targets.Target, transport: str, rate: float, trace: bool) -> Run:
        duration = min(self.duration, TRACED_SECONDS) if trace else self.duration
        expected = max(1, round(rate * duration))
        uas_port = free_port()
        if self.mode == "registered" and not self.register_callee(target, transport, uas_port):
            return Run(target.name, transport, rate, expected, 0, 0, 0, 0, 0.0, 0.0,
                       problem="the callee's REGISTER failed")
        mode = SIPP_TRANSPORT[transport]
        limit = duration * 3 + 60
        uas = self.sipp.start("uas_call.xml", *(["-trace_msg", "-message_file", "messages.log"] if trace else []),
                              port=uas_port, transport=mode, calls=expected, timeout=limit)
        time.sleep(0.3)
        uri = self.uri(transport, uas_port)
        before = cpu_seconds(target.pids())
        load = self.sipp.run(
            "uac_call.xml", "-key", "ruri", uri, "-key", "to", uri, "-r", f"{rate:.0f}",
            "-l", str(max(50, round(rate))), "-recv_timeout", "8s",
            port=free_port(), transport=mode, calls=expected, timeout=duration * 2 + 30,
            remote=f"{LOOPBACK}:{target.port}", rtt=True)
        callee = self.sipp.finish(uas, timeout=6.0)
        used = cpu_seconds(target.pids()) - before
        succeeded, failed, seconds, problem = judge(load, expected, duration,
                                                    callee.counter("FailedCall"), CALL_TAIL)
        if not target.alive():
            problem = f"{target.name} died: {target.log_tail(3)}"
        run = Run(target.name, transport, rate, expected, succeeded, failed, callee.counter("FailedCall"),
                  load.counter("Retransmissions"), round(seconds, 2), round(used, 3), latency_of(load), problem)
        if trace:
            run.record_routed = _record_routed(uas[1] / "messages.log")
        return run


def _record_routed(log: Path) -> int:
    """How many INVITEs the callee received with a Record-Route header."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for block in text.split("INVITE sip:")[1:] if "\nRecord-Route:" in block.split("\n\n")[0])


def probe(bench: CallBench, transport: str) -> dict[str, Any]:
    """Decide the mode on PartySIP (registered when its registrar answers), then one traced call each."""
    target = targets.start("partysip", bench.workdir / "probe", bench.processes)
    try:
        registered = bench.register_callee(target, transport, free_port())
    finally:
        target.stop()
    bench.mode = "registered" if registered else "ruri"
    note(f"callee reached {'as a registered user' if registered else 'through the Request-URI'}")
    return {"mode": bench.mode}


def bench_row(bench: CallBench, name: str, transport: str, args: argparse.Namespace,
              same_rate: float | None = None) -> dict[str, Any]:
    """Sweep, latency runs (and a run at ``same_rate``) for one proxy and transport."""
    traced = bench.run_at(name, transport, 10, trace=True)
    note(traced.line())
    record_routed = traced.record_routed
    if not record_routed:
        note(f"WARNING: {name} did not Record-Route the INVITE (the callee saw no Record-Route)")

    def run_at(rate: float) -> Run:
        return bench.run_at(name, transport, rate)
    best, runs = sweep(run_at, args.start_rate, args.max_rate, max_runs=6 if args.quick else 12)
    row: dict[str, Any] = {
        "target": name, "transport": transport, "mode": bench.mode, "record_route": bool(record_routed),
        "best_rate": best, "sweep": [run.as_dict() for run in runs],
        "latency": [] if args.no_latency else latency_runs(run_at, best),
    }
    if same_rate:
        run = run_at(same_rate)
        note("same-rate run:", run.line())
        row["same_rate"] = run.as_dict()
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--transport", choices=("udp", "tcp", "both"), default="both",
                        help="UDP, TCP or both rows (default both)")
    parser.add_argument("--start-rate", type=float, default=200, help="first rate of the sweep (default 200)")
    parser.add_argument("--max-rate", type=float, default=6400, help="the sweep stops there (default 6400)")
    parser.add_argument("--no-latency", action="store_true", help="skip the 25/50/90 %% latency runs")
    args = parser.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole call benchmark for parsed ``args``; writes and returns the JSON figures."""
    sipp_binary = require("sipp", "sip-tester", install=args.install_sipp)
    if args.kamailio:
        require("kamailio", "kamailio", install=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="psp-bench-calls-"))
    processes = Processes()
    bench = CallBench(Sipp(sipp_binary, workdir, processes), processes, workdir, duration_of(args))
    transports = ("udp", "tcp") if args.transport == "both" else (args.transport,)
    result: dict[str, Any] = {"benchmark": "calls", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "machine": MACHINE_NOTE, "duration": bench.duration, "quick": args.quick,
                              "rows": []}
    try:
        result.update(probe(bench, transports[0]))
        for transport in transports:
            row = bench_row(bench, "partysip", transport, args)
            result["rows"].append(row)
            if args.kamailio:
                half = round(row["best_rate"] / 2) if row["best_rate"] else None
                result["rows"].append(bench_row(bench, "kamailio", transport, args, same_rate=half))
    finally:
        processes.stop_all()
    write_json(args.out or RESULTS / "calls.json", result)
    print_rows(result)
    return result


def print_rows(result: dict[str, Any]) -> None:
    print(f"\ncalls per second ({result['machine']}):")
    for row in result["rows"]:
        half = next((p for p in row["latency"] if p["fraction"] == 0.5), None)
        p99 = half["latency"].get("inv180", {}).get("p99") if half else None
        print(f"  {row['target']:8} {row['transport']}: best clean {row['best_rate']} cps, "
              f"p99 INVITE->180 at 50 %: {p99} ms, record-route: {row['record_route']}")


if __name__ == "__main__":
    main()
