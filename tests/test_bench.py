"""bench/: the scripts the README runs answer, and measure what they say they measure.

The full benchmark takes an hour (bench/run_all.py --kamailio); these check, in seconds,
that each script starts, that the in-process pipeline runs calls and registrations to
their 200s, and that a short SIPp sweep through the real proxy writes its JSON with a
clean, record-routed row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_sipp

SCRIPTS = ("calls", "flow", "location_memory", "memory", "parse", "plot", "pyspy",
           "registrations", "run_all", "tx_memory")


def bench(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help(script: str) -> None:
    done = bench(f"bench/{script}.py", "--help", timeout=30.0)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_flow_runs_calls_and_registrations_through_the_pipeline_in_process() -> None:
    # flow.py itself raises when a scripted call or REGISTER does not get its 200.
    done = bench("bench/flow.py", "--calls", "40", "--registers", "40", "--repeat", "1", "--warmup", "8")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("CPU us per call" in line for line in lines)
    assert any("CPU us per REGISTER" in line for line in lines)


@needs_sipp
def test_a_short_call_sweep_writes_a_clean_record_routed_row(tmp_path: Path) -> None:
    out = tmp_path / "calls.json"
    done = bench("bench/calls.py", "--quick", "--transport", "udp", "--no-latency", "--start-rate", "10",
                 "--max-rate", "20", "--duration", "3", "--workdir", str(tmp_path / "work"), "--out", str(out),
                 timeout=180.0)
    assert done.returncode == 0, done.stdout + done.stderr
    row, = json.loads(out.read_text())["rows"]
    assert (row["target"], row["transport"], row["best_rate"]) == ("partysip", "udp", 20)
    assert row["record_route"] is True
    assert all(run["failed"] == 0 for run in row["sweep"])
