"""Where PartySIP's CPU goes under a SIPp call load: py-spy samples of the running server.

Starts PartySIP as bench/calls.py does (record-route on, the callee registered when the
registrar answers), offers --rate calls/s over UDP, and after a 3 s warm-up samples the
server with py-spy (only the thread holding the GIL) for --duration seconds twice:

    py-spy record --pid PID --duration D --rate 100 --function --threads --gil --format raw -o profile.txt
    py-spy record --pid PID --duration D --rate 100 --function --threads --gil -o profile.svg

and prints, from the raw samples, the functions with the largest share of the samples:
*self* (the function itself was running) and *total* (it was on the stack), by thread too,
and the server's user and system CPU seconds per second meanwhile (/proc/PID/stat).
py-spy pauses the process for each sample: the load is a little slower while it runs.

    pip install py-spy; python3 bench/pyspy.py --rate 300
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the package "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import targets
from bench.calls import CallBench
from bench.common import (LOOPBACK, MACHINE_NOTE, RESULTS, Processes, Sipp, cpu_times, free_port, note, require,
                          write_json)

WARMUP = 3.0


def aggregate(raw: Path, top: int) -> dict[str, Any]:
    """Self and total shares of each function from py-spy's raw (collapsed stack) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        modules[module_of(frames[-1])] += count
        for frame in set(frames[1:]):
            total[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "share": round(100.0 * n / samples, 1), "samples": n}
                for name, n in counter.most_common(top)]
    total_of = {name: round(100.0 * n / samples, 1) for name, n in total.items()} if samples else {}
    return {"samples": samples, "threads": share(threads), "modules": share(modules),
            "self": share(own), "total": share(total),
            "total_of": {name: total_of[name] for name, _ in own.most_common(top)}}


def module_of(frame: str) -> str:
    """'psp/parser.py' of 'parse (psp/parser.py:12)'; other packages by name; 'stdlib'."""
    found = re.search(r"\(([^():]+)(?::\d+)?\)$", frame)
    if not found:
        return frame
    path = found.group(1)
    if path.startswith("psp/") or path.startswith("<"):
        return path
    return path.split("/")[0] if "/" in path else "stdlib"


def spy(pid: int, seconds: float, output: Path, raw: bool) -> None:
    # --gil: only samples of the thread holding the GIL, that is Python at work; waiting on a
    # queue or in select is not a cost (system calls made without the GIL are not counted).
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
               "--function", "--threads", "--gil", "--output", str(output)]
    if raw:
        command += ["--format", "raw"]
    subprocess.run(command, check=True, timeout=seconds + 60, stdout=subprocess.DEVNULL,
                   stderr=subprocess.STDOUT)


def profile(args: argparse.Namespace, workdir: Path, processes: Processes) -> dict[str, Any]:
    sipp = Sipp(require("sipp", "sip-tester", install=args.install_sipp), workdir, processes)
    bench = CallBench(sipp, processes, workdir, args.duration)
    target = targets.start("partysip", workdir / "partysip", processes)
    try:
        uas_port = free_port()
        bench.mode = "registered" if bench.register_callee(target, "udp", uas_port) else "ruri"
        calls = round(args.rate * (2 * args.duration + WARMUP + 5))
        uas = sipp.start("uas_call.xml", port=uas_port, transport="u1", calls=calls,
                         timeout=calls / args.rate + 60)
        time.sleep(0.3)
        uri = bench.uri("udp", uas_port)
        uac = sipp.start("uac_call.xml", "-key", "ruri", uri, "-key", "to", uri, "-r", f"{args.rate:.0f}",
                         "-l", str(max(50, round(args.rate))), "-recv_timeout", "8s", port=free_port(),
                         transport="u1", calls=calls, timeout=calls / args.rate + 30,
                         remote=f"{LOOPBACK}:{target.port}")
        time.sleep(WARMUP)
        began, before = time.monotonic(), cpu_times(target.pids())
        spy(target.proc.pid, args.duration, args.out_dir / "profile.txt", raw=True)
        after, elapsed = cpu_times(target.pids()), time.monotonic() - began
        spy(target.proc.pid, args.duration, args.out_dir / "profile.svg", raw=False)
        load = sipp.finish(uac, timeout=calls / args.rate + 40)
        sipp.finish(uas, timeout=5)
    finally:
        target.stop()
    note(f"load during the profile: {load.counter('SuccessfulCall')} calls ok, "
         f"{load.counter('FailedCall')} failed")
    return {"rate": args.rate, "mode": bench.mode, "calls_ok": load.counter("SuccessfulCall"),
            "calls_failed": load.counter("FailedCall"),
            "cpu_user_per_second": round((after[0] - before[0]) / elapsed, 3),
            "cpu_system_per_second": round((after[1] - before[1]) / elapsed, 3)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--rate", type=float, default=300, help="calls per second offered (default 300)")
    parser.add_argument("--duration", type=float, default=20, help="seconds of each py-spy recording")
    parser.add_argument("--top", type=int, default=15, help="functions listed (default 15)")
    parser.add_argument("--install-sipp", action="store_true", help="apt-get install sip-tester when missing")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where profile.txt/.svg/.json go")
    parser.add_argument("--workdir", type=Path, default=None, help="where the server and SIPp write")
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    require("py-spy", "py-spy (pip install py-spy)", install=False)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    processes = Processes()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="psp-bench-profile-"))
    try:
        result = {"benchmark": "profile", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": MACHINE_NOTE,
                  "command": "py-spy record --pid PID --duration D --rate 100 --function --threads --gil --format raw",
                  **profile(args, workdir, processes)}
    finally:
        processes.stop_all()
    result.update(aggregate(args.out_dir / "profile.txt", args.top))
    write_json(args.out_dir / "profile.json", result)
    print(f"\nPartySIP under {args.rate:.0f} calls/s, {result['samples']} samples holding the GIL; CPU "
          f"{result['cpu_user_per_second']} s user + {result['cpu_system_per_second']} s system per second "
          f"({MACHINE_NOTE}):")
    print("threads: " + ", ".join(f"{t['function']} {t['share']} %" for t in result["threads"]))
    print("modules (self): " + ", ".join(f"{m['function']} {m['share']} %" for m in result["modules"]))
    print("| function | self % | total % |\n|---|---:|---:|")
    for entry in result["self"]:
        print(f"| `{entry['function']}` | {entry['share']} | {result['total_of'].get(entry['function'], '')} |")
    return result


if __name__ == "__main__":
    main()
