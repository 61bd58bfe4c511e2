"""Memory of REGISTERs in process: where it goes (tracemalloc) and what stays (resident set).

Runs ``--count`` REGISTERs of unique users through the pipeline bench/flow.py drives
(``psp.parser.parse``, the transport's ``fix_via``, ``Core.on_received`` of the core
``psp.server.build_core`` wires, the SQLite journal committed once per ``--batch``), on a
simulated clock at ``--rate`` REGISTERs per second, shaped as bench/scenarios/register.xml
sends them (one Contact host and port for all users, as bench/registrations.py runs SIPp).
Each REGISTER's server transaction then lives its 64*T1 = 32 s (Timer J) after the 200, as
in a real run: at 1,500/s about 48,000 of them are alive at the peak.  The clock then
moves ``--settle`` seconds on and the due timers fire, so that every transaction ends.

Reported at the peak (right after the last REGISTER) and after the settle: the live
transactions, timer entries and bindings, and either

* (default) tracemalloc: the traced bytes per REGISTER and the ``--top`` allocation sites
  grouped by ``--by`` (``lineno`` or ``filename``), deterministic, where the memory goes; or
* ``--rss``: the resident set of this process before the first REGISTER, at the peak and
  after the settle, per binding: the in-process part of bench/memory.py (no SIPp, no
  sockets, no threads), where CPython's allocator keeps what the transactions used.

    python3 bench/tx_memory.py --count 100000
    python3 bench/tx_memory.py --count 100000 --rss
    python3 bench/tx_memory.py --count 20000 --by filename --top 15
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import psp and bench from this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.flow import CONFIG, REGISTRANT, Pipeline  # noqa: E402 - after the sys.path fix above
from psp.config import load_text  # noqa: E402
from psp.server import build_core, tune_gc  # noqa: E402

# bench/scenarios/register.xml as SIPp fills it in: Call-ID "<n>-<pid>@<ip>", tag "<pid>-<n>"
REGISTER = (
    "REGISTER sip:localhost SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-4242-{n}-0;rport\r\n"
    "From: <sip:user{n:06d}@localhost>;tag=4242-{n}\r\n"
    "To: <sip:user{n:06d}@localhost>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:user{n:06d}@127.0.0.1:5070>\r\n"
    "Expires: 3600\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


def resident_bytes() -> int:
    """Current resident set size (Linux /proc), in bytes."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def register_all(pipe: Pipeline, first: int, count: int, rate: float, batch: int) -> None:
    """``count`` REGISTERs of fresh users from number ``first``, ``batch`` per processor turn,
    ``rate`` per simulated second."""
    for start in range(first, first + count, batch):
        numbers = range(start, min(start + batch, first + count))
        sent = pipe.turn([(REGISTER.format(n=n).encode(), REGISTRANT) for n in numbers])
        if len(sent) != len(numbers) or not all(out.data.startswith(b"SIP/2.0 200") for out in sent):
            raise AssertionError(f"expected {len(numbers)} 200s, got {[out.data[:40] for out in sent]}")
        pipe.now += len(numbers) / rate


def settle(pipe: Pipeline, seconds: float) -> None:
    """Move the clock on by ``seconds``, a processor turn (due timers) every simulated 0.1 s."""
    end = pipe.now + seconds
    while pipe.now < end:
        pipe.now = min(end, pipe.now + 0.1)
        pipe.turn([])


def census(pipe: Pipeline) -> str:
    """Live transactions by kind, timer entries (heap and lanes, cancelled ones included), bindings."""
    core = pipe.core
    alive = {kind: n for kind, n in core.stats.transactions.items() if n}
    timers = core._heap  # noqa: SLF001 - a benchmark looks inside
    heap = len(timers._heap) + sum(len(lane) for lane in timers._lanes.values())  # noqa: SLF001
    store = core.tu.services.store  # type: ignore[attr-defined]
    return f"transactions {alive or 0}, timer entries {heap}, bindings {store.count}"


def top_sites(snapshot: tracemalloc.Snapshot, base: tracemalloc.Snapshot, by: str, top: int,
              count: int) -> None:
    """What ``snapshot`` holds beyond ``base``: in all, and the ``top`` sites, per REGISTER."""
    mine = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diffs = snapshot.filter_traces(mine).compare_to(base.filter_traces(mine), by)
    total = sum(diff.size_diff for diff in diffs)
    print(f"  traced beyond the start: {total / 2**20:.1f} MiB, {total / count:.0f} bytes per REGISTER; "
          f"top {top} by {by}:")
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    for diff in sorted(diffs, key=lambda diff: -diff.size_diff)[:top]:
        frame = diff.traceback[0]
        where = frame.filename.replace(root, "")
        site = where if by == "filename" else f"{where}:{frame.lineno}"
        print(f"  {diff.size_diff / count:8.1f} B/REGISTER {diff.count_diff:+9d} blocks  {site}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--count", type=int, default=100_000,
                        help="REGISTERs of unique users (default 100000)")
    parser.add_argument("--rate", type=float, default=1500.0,
                        help="REGISTERs per simulated second (default 1500)")
    parser.add_argument("--batch", type=int, default=8,
                        help="REGISTERs per processor turn and commit (default 8)")
    parser.add_argument("--settle", type=float, default=40.0,
                        help="simulated seconds after the last REGISTER (default 40: Timer J is 32 s)")
    parser.add_argument("--rss", action="store_true", help="resident set instead of tracemalloc")
    parser.add_argument("--by", choices=("lineno", "filename"), default="lineno",
                        help="how tracemalloc groups the allocation sites (default lineno)")
    parser.add_argument("--top", type=int, default=25, help="allocation sites shown (default 25)")
    args = parser.parse_args()
    tune_gc()
    traced = not args.rss

    def reading(name: str) -> tuple[str, str, int, tracemalloc.Snapshot | None]:
        gc.collect()
        return name, census(pipe), resident_bytes(), tracemalloc.take_snapshot() if traced else None

    with tempfile.TemporaryDirectory(prefix="tx-memory-") as directory:
        settings = load_text(CONFIG.format(path=Path(directory) / "location.sqlite"))
        pipe = Pipeline(build_core(settings), time.monotonic())
        register_all(pipe, 10**7, 64, args.rate, args.batch)  # every cache warm before the first reading
        settle(pipe, args.settle)
        gc.collect()
        empty = resident_bytes()
        if traced:
            tracemalloc.start()
            base = tracemalloc.take_snapshot()
        register_all(pipe, 0, args.count, args.rate, args.batch)
        readings = [reading("peak")]
        settle(pipe, args.settle)
        readings.append(reading("settled"))
        pipe.close()
    print(f"{args.count} REGISTERs at {args.rate:.0f}/s (simulated), commit per {args.batch}")
    for name, counts, resident, snapshot in readings:
        print(f"{name}: {counts}")
        if snapshot is None:
            print(f"  resident: {resident / 2**20:.1f} MiB, {(resident - empty) / args.count:.0f} bytes "
                  f"per REGISTER above the {empty / 2**20:.1f} MiB before")
        else:
            top_sites(snapshot, base, args.by, args.top, args.count)

if __name__ == "__main__":
    main()
