"""The plot of the benchmarks: response time against offered rate, PartySIP and Kamailio.

Reads bench/results/calls.json (and registrations.json when present) and draws, per
transport, the p50 and p99 of INVITE->180 and the p99 of INVITE->200 of every run (the
sweep's, the 25/50/90 % runs and the same-rate run), and for registrations the p50 and
p99 of REGISTER->200 without authentication.  Runs that were not clean are drawn as
crosses.  SIPp's response times come in steps of a few milliseconds, so 0 means "under one
step"; the y axis is linear up to 1 ms and logarithmic above.

Needs matplotlib (pip install matplotlib, or the project's "bench" extra).

    python3 bench/plot.py            # writes bench/results/latency.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the package "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MACHINE_NOTE, RESULTS

COLOURS = {"partysip": "tab:blue", "kamailio": "tab:orange"}
SERIES = (("inv180", "p50", "INVITE->180 p50", "-"), ("inv180", "p99", "INVITE->180 p99", "--"),
          ("inv200", "p99", "INVITE->200 p99", ":"))
REGISTER_SERIES = (("register", "p50", "REGISTER->200 p50", "-"), ("register", "p99", "REGISTER->200 p99", "--"))


def runs_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of a row, by offered rate."""
    runs = list(row.get("sweep", [])) + list(row.get("latency", []))
    if row.get("same_rate"):
        runs.append(row["same_rate"])
    return sorted(runs, key=lambda run: run["rate"])


def draw(axis: Any, rows: list[dict[str, Any]], series: tuple[tuple[str, str, str, str], ...], title: str) -> None:
    for row in rows:
        runs = runs_of(row)
        colour = COLOURS.get(row["target"], "tab:grey")
        for rtd, point, label, style in series:
            points = [(run["rate"], run["latency"][rtd][point], run["clean"]) for run in runs
                      if point in run.get("latency", {}).get(rtd, {})]
            if not points:
                continue
            axis.plot([p[0] for p in points], [p[1] for p in points], style, color=colour,
                      label=f"{row['target']} {label}")
            dirty = [p for p in points if not p[2]]
            axis.plot([p[0] for p in dirty], [p[1] for p in dirty], "x", color=colour)
    axis.set_title(title)
    axis.set_xlabel("offered rate (per second)")
    axis.set_ylabel("response time (ms)")
    axis.set_yscale("symlog", linthresh=1.0)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)


def plot(results: Path, output: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    calls = json.loads((results / "calls.json").read_text())
    panels: list[tuple[str, list[dict[str, Any]], Any]] = []
    for transport in ("udp", "tcp"):
        rows = [row for row in calls["rows"] if row["transport"] == transport]
        if rows:
            panels.append((f"calls over {transport.upper()} (Record-Route, stateful)", rows, SERIES))
    registrations = results / "registrations.json"
    if registrations.exists():
        rows = [row for row in json.loads(registrations.read_text())["rows"] if not row["auth"]]
        if rows:
            panels.append(("registrations (no authentication)", rows, REGISTER_SERIES))
    figure, axes = pyplot.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for axis, (title, rows, series) in zip(axes[0], panels):
        draw(axis, rows, series, title)
    figure.suptitle(f"PartySIP and Kamailio, SIPp on loopback; x: run not clean.\n{MACHINE_NOTE}", fontsize=9)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    pyplot.close(figure)
    print(f"wrote {output}")
    return output


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory of calls.json (default bench/results)")
    parser.add_argument("--out", type=Path, default=None, help="PNG file (default RESULTS/latency.png)")
    args = parser.parse_args(argv)
    return plot(args.results, args.out or args.results / "latency.png")


if __name__ == "__main__":
    main()
