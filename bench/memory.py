"""Memory per registration: the whole proxy process with 0 and with 100,000 bindings.

Starts the proxy (persistence on for PartySIP), reads its memory, registers --count unique
users over SIPp (bench/registrations.py's scenario, at --rate per second), waits --settle
seconds (a REGISTER's server transaction lives 64*T1 = 32 s after its 200 over UDP, so
the default 40 s lets them go), and reads its memory again.  The difference divided by the
bindings is the cost of one binding in the running server, transactions' leftovers and
allocator slack included.

Memory is the resident set (Rss) and the proportional set (Pss, shared pages divided among
the processes sharing them) from /proc/PID/smaps_rollup, summed over the proxy's
processes: one for PartySIP, the main process and its workers for Kamailio (--kamailio),
whose usrloc lives in shared memory, so that Pss is its figure.  For comparison,
bench/location_memory.py measures PartySIP's LocationStore alone, and bench/tx_memory.py
the same REGISTERs in process, by allocation site (tracemalloc) or as Rss.

    python3 bench/memory.py --kamailio
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the package "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import targets
from bench.common import (BENCH, LOOPBACK, MACHINE_NOTE, RESULTS, Processes, Sipp, memory, note, require,
                          write_json)
from bench.registrations import RegisterBench


def gauge(target: targets.Target, name: str) -> int | None:
    """The sum of a gauge's samples on PartySIP's /metrics (None when not there)."""
    if target.metrics_port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{target.metrics_port}/metrics", timeout=5) as reply:
            page = reply.read().decode()
    except OSError:
        return None
    found = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", page, re.M)
    return int(sum(float(value) for value in found)) if found else None


def measure(bench: RegisterBench, name: str, count: int, rate: float, settle: float) -> dict[str, Any]:
    """Memory of ``name`` empty, then with ``count`` bindings, right after and after ``settle`` s."""
    target = bench.start(name, 0, auth=False)
    try:
        time.sleep(1.0)
        empty = memory(target.pids())
        run = bench.load(target, rate, count, count, auth=False)
        note(run.line())
        loaded = memory(target.pids())
        time.sleep(settle)
        settled = memory(target.pids())
        bindings = gauge(target, "psp_registrations_active")
        transactions = gauge(target, "psp_transactions_active")
    finally:
        target.stop()
    figure = "pss" if name == "kamailio" else "rss"
    registered = run.succeeded
    return {
        "target": name, "count": count, "registered": registered, "bindings_reported": bindings,
        "transactions_left": transactions,
        "clean": run.clean, "problem": run.problem, "measure": figure,
        "empty": empty, "loaded": loaded, "settled": settled,
        "bytes_per_binding": round((settled[figure] - empty[figure]) / registered) if registered else None,
        "bytes_per_binding_before_settle": round((loaded[figure] - empty[figure]) / registered) if registered else None,
    }


def store_alone(count: int) -> int | None:
    """Bytes per binding of bench/location_memory.py (the LocationStore without the server)."""
    done = subprocess.run([sys.executable, str(BENCH / "location_memory.py"), "--count", str(count)],
                          capture_output=True, text=True, timeout=600, check=False)
    found = re.search(r"bytes per binding:\s+(\d+)", done.stdout)
    if not found:
        note(f"bench/location_memory.py said nothing usable: {done.stdout[-300:]} {done.stderr[-300:]}")
    return int(found.group(1)) if found else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--count", type=int, default=100_000, help="bindings to register (default 100000)")
    parser.add_argument("--rate", type=float, default=1500, help="REGISTERs per second (default 1500)")
    parser.add_argument("--settle", type=float, default=40.0, help="seconds to wait before the second reading")
    parser.add_argument("--quick", action="store_true", help="10,000 bindings and a 5 s settle")
    parser.add_argument("--kamailio", action="store_true", help="measure Kamailio too")
    parser.add_argument("--install-sipp", action="store_true", help="apt-get install sip-tester when missing")
    parser.add_argument("--workdir", type=Path, default=None, help="where the servers and SIPp write")
    parser.add_argument("--out", type=Path, default=None, help="JSON file of the figures")
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    count, settle = (10_000, 5.0) if args.quick else (args.count, args.settle)
    sipp_binary = require("sipp", "sip-tester", install=args.install_sipp)
    if args.kamailio:
        require("kamailio", "kamailio", install=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="psp-bench-mem-"))
    processes = Processes()
    duration = count / args.rate
    bench = RegisterBench(Sipp(sipp_binary, workdir, processes), processes, workdir, duration, auth_users=0)
    result: dict[str, Any] = {"benchmark": "memory", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "machine": MACHINE_NOTE, "count": count, "rate": args.rate, "settle": settle,
                              "rows": []}
    try:
        for name in ("partysip", "kamailio") if args.kamailio else ("partysip",):
            result["rows"].append(measure(bench, name, count, args.rate, settle))
    finally:
        processes.stop_all()
    result["store_alone_bytes_per_binding"] = store_alone(count)
    write_json(args.out or RESULTS / "memory.json", result)
    print(f"\nmemory per binding ({count} bindings; {MACHINE_NOTE}):")
    for row in result["rows"]:
        print(f"  {row['target']:8} {row['measure']}: {row['bytes_per_binding']} bytes per binding "
              f"({row['registered']} registered; {row['bytes_per_binding_before_settle']} before the settle)")
    print(f"  LocationStore alone (bench/location_memory.py): {result['store_alone_bytes_per_binding']} bytes")
    return result


if __name__ == "__main__":
    main()
