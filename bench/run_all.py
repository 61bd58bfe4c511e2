"""Every benchmark from one command, then the table: PartySIP, and Kamailio with --kamailio.

Installs what is missing first: SIPp (Debian's sip-tester), matplotlib and py-spy (pip, the
"bench" extra), and with --kamailio Debian's kamailio.  Then runs, writing the JSON of
each into bench/results/:

  1. bench/calls.py          calls/s over UDP and TCP, latency at 25/50/90 %, CPU per call
  2. bench/registrations.py  REGISTERs/s without and with digest authentication
  3. bench/memory.py         memory of the whole process with 0 and 100,000 bindings
  4. bench/pyspy.py          py-spy profile of PartySIP at half its clean UDP call rate
  5. bench/plot.py           latency.png

and prints the table (also written to bench/results/table.md, with summary.json).  About
an hour with --kamailio; --quick is a smoke check of a few minutes whose figures are not
for reporting.

    python3 bench/run_all.py --kamailio
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the package "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import calls, memory, plot, pyspy, registrations
from bench.common import MACHINE_NOTE, RESULTS, note, require, write_json

TARGETS = {"calls": 1000.0, "cpu_ratio": 3.0, "registrations": 5000.0, "bytes": 1024.0, "p99_ms": 10.0}


def install_tools(kamailio: bool) -> None:
    """SIPp (and Kamailio) from Debian, matplotlib and py-spy from PyPI, when missing."""
    require("sipp", "sip-tester", install=True)
    if kamailio:
        require("kamailio", "kamailio", install=True)
    missing = [package for package, present in (("matplotlib", importlib.util.find_spec("matplotlib")),
                                                ("py-spy", shutil.which("py-spy"))) if not present]
    if missing:
        note(f"pip install {' '.join(missing)}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True, timeout=900)


def row(rows: list[dict[str, Any]], target: str, **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == target and all(r.get(k) == v for k, v in match.items())), None)


def latency_at(found: dict[str, Any] | None, fraction: float, rtd: str, point: str) -> float | None:
    for run in (found or {}).get("latency", []):
        if run["fraction"] == fraction:
            return run["latency"].get(rtd, {}).get(point)
    return None


def cpu_same_rate(call_rows: list[dict[str, Any]], transport: str) -> tuple[float | None, float | None]:
    """CPU s per 1,000 calls of PartySIP at 50 % of its rate, and of Kamailio at that same rate."""
    ours = row(call_rows, "partysip", transport=transport)
    theirs = row(call_rows, "kamailio", transport=transport)
    half = next((run for run in (ours or {}).get("latency", []) if run["fraction"] == 0.5), None)
    same = (theirs or {}).get("same_rate")
    return (half or {}).get("cpu_per_1000"), (same or {}).get("cpu_per_1000")


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's lines: measure, PartySIP, Kamailio, ratio, target, verdict."""
    call_rows, reg_rows = results["calls"]["rows"], results["registrations"]["rows"]
    mem_rows = results["memory"]["rows"]
    lines: list[dict[str, Any]] = []

    def add(measure: str, ours: float | None, theirs: float | None, target: str, holds: bool | None) -> None:
        ratio = round(ours / theirs, 2) if ours is not None and theirs else None
        lines.append({"measure": measure, "partysip": ours, "kamailio": theirs, "ratio": ratio,
                      "target": target, "holds": holds})

    for transport in ("udp", "tcp"):
        ours, theirs = row(call_rows, "partysip", transport=transport), row(call_rows, "kamailio", transport=transport)
        if ours is None:
            continue
        best = ours["best_rate"]
        add(f"calls/s, {transport.upper()}, zero failures, Record-Route {'on' if ours['record_route'] else 'MISSING'}",
            best, (theirs or {}).get("best_rate"), ">= 1000" if transport == "udp" else "-",
            (best or 0) >= TARGETS["calls"] if transport == "udp" else None)
        mine, kam = cpu_same_rate(call_rows, transport)
        add(f"CPU s per 1,000 calls, {transport.upper()}, same rate", mine, kam, "<= 3x Kamailio",
            mine / kam <= TARGETS["cpu_ratio"] if mine is not None and kam else None)
        p99 = latency_at(ours, 0.5, "inv180", "p99")
        add(f"p99 INVITE->180 (ms) at 50 % of the clean rate, {transport.upper()}", p99,
            latency_at(theirs, 0.5, "inv180", "p99"), "< 10 ms" if transport == "udp" else "-",
            p99 < TARGETS["p99_ms"] if p99 is not None and transport == "udp" else None)
    for auth in (False, True):
        ours, theirs = row(reg_rows, "partysip", auth=auth), row(reg_rows, "kamailio", auth=auth)
        if ours is None:
            continue
        add(f"registrations/s, {'digest auth' if auth else 'no auth'}, persistence on (Kamailio: memory)",
            ours["best_rate"], (theirs or {}).get("best_rate"), "-" if auth else ">= 5000",
            None if auth else (ours["best_rate"] or 0) >= TARGETS["registrations"])
    ours, theirs = row(mem_rows, "partysip"), row(mem_rows, "kamailio")
    if ours:
        per = ours["bytes_per_binding"]
        add(f"bytes per binding, whole process, {ours['count']} bindings (PartySIP Rss, Kamailio Pss)",
            per, (theirs or {}).get("bytes_per_binding"), "<= 1 KB", per is not None and per <= TARGETS["bytes"])
        alone = results["memory"].get("store_alone_bytes_per_binding")
        add("bytes per binding, LocationStore alone (bench/location_memory.py)", alone, None, "<= 1 KB",
            alone is not None and alone <= TARGETS["bytes"])
    return lines


def markdown(lines: list[dict[str, Any]], results: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return "-" if value is None else str(value)
    verdict = {True: "yes", False: "**no**", None: "-"}
    text = ["| measure | PartySIP | Kamailio | PartySIP / Kamailio | target | holds |",
            "|---|---:|---:|---:|---|---|"]
    text += [f"| {line['measure']} | {cell(line['partysip'])} | {cell(line['kamailio'])} | {cell(line['ratio'])} "
             f"| {line['target']} | {verdict[line['holds']]} |" for line in lines]
    text += ["", "| proxy | transport | share of clean rate | offered/s | INVITE->180 p50 / p95 / p99 (ms) "
             "| INVITE->200 p50 / p95 / p99 (ms) | CPU s / 1,000 calls |", "|---|---|---:|---:|---|---|---:|"]
    for found in results["calls"]["rows"]:
        for run in found["latency"]:
            spans = ["/".join(cell(run["latency"].get(rtd, {}).get(p)) for p in ("p50", "p95", "p99"))
                     for rtd in ("inv180", "inv200")]
            text.append(f"| {found['target']} | {found['transport']} | {run['fraction']:.0%} | {run['rate']:g} "
                        f"| {spans[0]} | {spans[1]} | {cell(run['cpu_per_1000'])} |")
    text += ["", f"Measured {time.strftime('%Y-%m-%d')} on {MACHINE_NOTE}."]
    return "\n".join(text) + "\n"


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Install what is missing, then run every benchmark; their JSON figures by name."""
    install_tools(args.kamailio)
    common = (["--kamailio"] if args.kamailio else []) + (["--quick"] if args.quick else [])
    results: dict[str, Any] = {"calls": calls.main(common)}
    results["registrations"] = registrations.main(common)
    results["memory"] = memory.main(common)
    udp = row(results["calls"]["rows"], "partysip", transport="udp")
    if not args.no_profile and udp and udp["best_rate"]:
        rate = str(round(udp["best_rate"] / 2))
        results["profile"] = pyspy.main(["--rate", rate] + (["--duration", "5"] if args.quick else []))
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--kamailio", action="store_true", help="install Kamailio if missing and run it too")
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke check, not figures to report")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--table-only", action="store_true",
                        help="measure nothing: the plot and the table from the JSON files in bench/results")
    args = parser.parse_args(argv)
    if args.table_only:
        results = {name: json.loads((RESULTS / f"{name}.json").read_text())
                   for name in ("calls", "registrations", "memory")}
    else:
        results = measure_all(args)
    plot.main([])
    lines = summary(results)
    table = markdown(lines, results)
    (RESULTS / "table.md").write_text(table)
    write_json(RESULTS / "summary.json", {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": MACHINE_NOTE,
                                          "quick": args.quick, "lines": lines})
    print("\n" + table)
    return results


if __name__ == "__main__":
    main()
