"""What every benchmark script shares: tools, ports, processes, SIPp runs and their figures.

* :func:`require` finds a command, installing its Debian package when asked (``sipp`` is
  in ``sip-tester``, ``kamailio`` in ``kamailio``).
* :class:`Processes` starts processes and stops exactly those it started, by PID.
* :func:`cpu_seconds` and :func:`memory` read ``/proc`` for a process and its children
  (Kamailio is one main process and its forked workers).
* :class:`Sipp` runs SIPp bounded in calls and time, in a directory of its own, and
  :class:`SippResult` reads back its ``-trace_stat`` counters and ``-trace_rtt`` samples.
* :func:`percentiles`, :func:`wait_sip` (an OPTIONS probe), :func:`write_json` and the
  command-line options every script has (:func:`add_common_arguments`).

Network: 127.0.0.1 only, on ports the kernel says are free.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIOS = BENCH / "scenarios"
RESULTS = BENCH / "results"
LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MACHINE_NOTE = (f"{os.cpu_count()} cores shared by the proxy, the SIPp UAC and UAS and other "
                "engineers' test suites: absolute figures are noisy, ratios are what we report")


# ---------------------------------------------------------------- tools and ports


def require(command: str, package: str, install: bool) -> str:
    """The path of ``command``; with ``install``, apt-get installs ``package`` when missing."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin")
    if found:
        return found
    if not install:
        raise SystemExit(f"{command} is not installed (Debian package {package}); "
                         f"install it or pass the option that installs it")
    print(f"installing {package} (apt-get update; apt-get install -y {package})", flush=True)
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL, timeout=600)
    subprocess.run(["apt-get", "install", "-y", package], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin")
    if not found:
        raise SystemExit(f"{package} installed but {command} is still not found")
    return found


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def wait_sip(port: int, timeout: float) -> bool:
    """True once something on 127.0.0.1:port answers an OPTIONS over UDP (any status)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        local = sock.getsockname()[1]
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            sock.sendto(_options(port, local, attempt), (LOOPBACK, port))
            sock.settimeout(0.3)
            try:
                if sock.recv(65535).startswith(b"SIP/2.0 "):
                    return True
            except OSError:  # timeout, or ICMP port unreachable while it starts
                time.sleep(0.2)
    return False


def _options(port: int, local: int, attempt: int) -> bytes:
    return (
        f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{local};branch=z9hG4bKbench{os.getpid()}x{attempt};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:bench@{LOOPBACK}>;tag=b{attempt}\r\n"
        f"To: <sip:{LOOPBACK}:{port}>\r\nCall-ID: bench-probe-{os.getpid()}-{attempt}\r\n"
        f"CSeq: {attempt} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


# ---------------------------------------------------------------- processes


class Processes:
    """The processes a script started; :meth:`stop_all` ends each of them by its PID."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, command: Sequence[str], *, cwd: Path, log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal ``proc`` (by its PID), wait up to ``timeout``, then SIGKILL it."""
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc, timeout=5.0)
        self.started.clear()


def children(pid: int) -> list[int]:
    """``pid`` and every process descended from it (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_times(pids: Iterable[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of these processes so far (/proc/PID/stat utime, stime)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # fields 14 and 15 of stat(5)
        system += int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    return sum(cpu_times(pids))


def memory(pids: Iterable[int]) -> dict[str, int]:
    """Resident (Rss) and proportional (Pss) bytes of these processes, summed."""
    totals = {"rss": 0, "pss": 0}
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                totals[key.lower()] += int(value.split()[0]) * 1024
    return totals


# ---------------------------------------------------------------- SIPp


@dataclass
class SippResult:
    """One finished SIPp run: exit code, last -trace_stat row, -trace_rtt samples (ms)."""

    returncode: int
    stats: dict[str, str]
    rtd: dict[str, list[float]]
    wall: float
    directory: Path
    errors: str = ""

    def counter(self, name: str) -> int:
        return int(self.stats.get(f"{name}(C)", "0") or 0)

    @property
    def elapsed(self) -> float:
        """Seconds from SIPp's start to its last statistics line."""
        text = self.stats.get("ElapsedTime(C)", "")  # hh:mm:ss:microseconds
        try:
            hours, minutes, seconds, micros = (int(part) for part in text.split(":"))
        except ValueError:
            return self.wall
        return hours * 3600 + minutes * 60 + seconds + micros / 1e6


@dataclass
class Sipp:
    """Runs SIPp scenarios of bench/scenarios; each run in a new directory under ``workdir``."""

    binary: str
    workdir: Path
    processes: Processes
    count: int = field(default=0)

    def start(self, scenario: str, *args: str, port: int, transport: str, calls: int,
              timeout: float, remote: str | None = None, rtt: bool = False) -> tuple[subprocess.Popen[bytes], Path]:
        """Start SIPp; it stops by itself after ``calls`` calls or ``timeout`` seconds."""
        self.count += 1
        directory = self.workdir / f"{Path(scenario).stem}-{self.count}"
        directory.mkdir(parents=True)
        command = [
            self.binary, "-sf", str(SCENARIOS / scenario), "-i", LOOPBACK, "-p", str(port),
            "-t", transport, "-m", str(calls), "-timeout", f"{timeout:.0f}s", "-nostdin",
            "-buff_size", str(4 << 20), "-trace_stat", "-stf", "stat.csv", "-fd", "1",
            "-trace_err", "-error_file", "errors.log", *args,
        ]
        if rtt:
            command += ["-trace_rtt", "-rtt_freq", "50"]
        if remote:
            command.append(remote)
        return self.processes.start(command, cwd=directory, log=directory / "screen.txt"), directory

    def finish(self, started: tuple[subprocess.Popen[bytes], Path], timeout: float,
               began: float | None = None) -> SippResult:
        """Wait for SIPp to end (SIGUSR1, SIPp's own quit, past ``timeout``) and read its files."""
        proc, directory = started
        try:
            code = proc.wait(max(0.1, timeout))
        except subprocess.TimeoutExpired:
            code = Processes.stop(proc, signal.SIGUSR1, timeout=5.0)
        wall = time.monotonic() - began if began is not None else 0.0
        return SippResult(code, read_stats(directory / "stat.csv"), read_rtt(directory), wall,
                          directory, _tail(directory / "errors.log"))

    def run(self, scenario: str, *args: str, timeout: float, **options: Any) -> SippResult:
        began = time.monotonic()
        started = self.start(scenario, *args, timeout=timeout, **options)
        return self.finish(started, timeout + 10.0, began)


def read_stats(path: Path) -> dict[str, str]:
    """The last row of a -trace_stat file, by column name."""
    try:
        rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    except OSError:
        return {}
    return dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}


def read_rtt(directory: Path) -> dict[str, list[float]]:
    """Response times in ms by rtd name, from every *_rtt.csv of a run's directory."""
    samples: dict[str, list[float]] = {}
    for path in directory.glob("*_rtt.csv"):
        for row in csv.reader(path.read_text(errors="replace").splitlines()[1:], delimiter=";"):
            if len(row) >= 3:
                samples.setdefault(row[2], []).append(float(row[1]))
    return samples


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- figures and files


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float | int]:
    """Nearest-rank percentiles ``p50`` ... of ``values`` (ms), and their count ``n``."""
    ordered = sorted(values)
    result: dict[str, float | int] = {"n": len(ordered)}
    for point in points:
        if ordered:
            rank = max(1, -(-point * len(ordered) // 100))
            result[f"p{point}"] = ordered[rank - 1]
    return result


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--quick, --duration, --kamailio, --install-sipp, --workdir, --out."""
    parser.add_argument("--quick", action="store_true",
                        help="a smoke check: 5 s runs and a short sweep (figures not for reporting)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of load per run (default 20, or 5 with --quick)")
    parser.add_argument("--kamailio", action="store_true",
                        help="also run the same load against Kamailio (apt-get installs it if missing)")
    parser.add_argument("--install-sipp", action="store_true",
                        help="apt-get install sip-tester when sipp is missing")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where SIPp and the servers write their files (default: a new /tmp dir)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file of the raw figures")


def duration_of(args: argparse.Namespace) -> float:
    if args.duration is not None:
        return float(args.duration)
    return 5.0 if args.quick else 20.0


def note(*parts: Any) -> None:
    """A progress line on stderr, flushed."""
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)
