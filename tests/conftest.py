"""Shared helpers for tests that run the real server on loopback.

* :func:`free_port` picks a port that is free for both UDP and TCP on 127.0.0.1.
* :func:`config_text` writes a partysip.conf from keyword arguments.
* The ``partysip`` fixture starts ``python -m psp -f FILE`` as a subprocess on free ports,
  waits for its systemd READY=1 (the fixture is its ``$NOTIFY_SOCKET``), and stops it with
  SIGTERM at the end of the test::

      server = partysip(plugins="syntax ls_sfull", t1=0.2, sections={"sfull": {"mode": "statefull"}})
      server.udp_port, server.tcp_port, server.metrics_port, server.scrape(), server.stop()

* The ``sipp`` fixture runs SIPp scenarios from ``tests/sipp/`` (see :class:`Sipp`);
  tests that need it are marked :data:`needs_sipp` and skipped only when ``sipp`` is
  not installed.
* :func:`corpus` is the one way to find the shared test corpus, ``../shared/corpus``
  beside the repository (where CI puts it); a missing corpus fails the run, never skips.
* The ``udp`` fixture is a UDP socket bound on 127.0.0.1 with a 5 s timeout;
  :func:`metric_values` reads a /metrics page and :class:`Sampler` watches the inbound
  FIFO's depth while a load runs.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
LOOPBACK = "127.0.0.1"
#: The project's shared corpus: ``shared/`` sits beside the repository (CI copies it there).
CORPUS = ROOT.parent / "shared" / "corpus"
SIPP = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp (Debian package sip-tester) is not installed")

# Defaults for a test server: loopback only, no authentication, files under tmp_path.
BASE_CONFIG: dict[str, Any] = {
    "serverip": LOOPBACK,
    "servername": "localhost",
    "plugins": "syntax rgstrar ls_localdb ls_sfull",
    "loglevel": 6,
    "drain_time": 0.5,
}


def corpus(name: str) -> Path:
    """The directory of one corpus (``rfc4475``, ``rfc5118``, ``external``) under :data:`CORPUS`.

    A missing one fails the run (a collection error when called at import), so that "every
    RFC 4475 case exercised" can never pass by exercising none.
    """
    path = CORPUS / name
    if not path.is_dir():
        pytest.fail(f"../shared/corpus not found: the RFC 4475/5118 tests need it (no {path})",
                    pytrace=False)
    return path


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A UDP socket bound to a free port on 127.0.0.1, with a 5 s timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def udp_bound(host: str, port: int) -> bool:
    """True when some process has a UDP socket bound to ``host:port`` (IPv4, /proc/net/udp)."""
    wanted = f"{int(ipaddress.IPv4Address(host)).to_bytes(4, 'little').hex().upper()}:{port:04X}"
    with open("/proc/net/udp") as rows:
        return any(row.split()[1] == wanted for row in list(rows)[1:])


def free_port(host: str = LOOPBACK) -> int:
    """A port number free for both TCP and UDP on ``host`` right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        return int(port)
    raise RuntimeError("no free port found")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def config_text(top: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """A partysip.conf: ``key = value`` lines, then one ``[section]`` per mapping."""
    lines = [f"{key} = {_value(value)}" for key, value in top.items()]
    for name, keys in (sections or {}).items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_value(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


class NotifyListener:
    """A stand-in for systemd: an abstract unix datagram socket that collects sd_notify lines."""

    def __init__(self) -> None:
        self.address = f"@psp-test-{secrets.token_hex(8)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.messages: list[str] = []

    def wait_for(self, line: str, deadline: float, alive: Callable[[], bool] = lambda: True) -> bool:
        """Collect notifications until one contains ``line``; False at the deadline or on death."""
        while not any(line in message.split("\n") for message in self.messages):
            if time.monotonic() >= deadline or not alive():
                return False
            self.sock.settimeout(min(0.2, max(0.01, deadline - time.monotonic())))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
        return True

    def close(self) -> None:
        self.sock.close()


@dataclass
class ServerProcess:
    """A running ``python -m psp`` and where it listens."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    udp_port: int
    tcp_port: int
    metrics_port: int
    notify: NotifyListener
    exit_code: int | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def scrape(self) -> str:
        """The /metrics page."""
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    def metrics(self) -> dict[str, float]:
        """The /metrics page as :func:`metric_values`."""
        return metric_values(self.scrape())

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; kills and fails the test if it does not exit in ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"partysip did not stop within {timeout} s:\n{self.log()}")
        return self.exit_code


def start_server(
    directory: Path, *, sections: Mapping[str, Mapping[str, Any]] | None = None,
    ready_timeout: float = 15.0, **keys: Any,
) -> ServerProcess:
    """Write a config under ``directory`` and start the server on free loopback ports."""
    port, metrics_port = free_port(), free_port()
    top = {**BASE_CONFIG, "serverport_udp": port, "serverport_tcp": port,
           "recovery_file": directory / "location.sqlite", **keys}
    all_sections = {"metrics": {"enabled": True, "address": LOOPBACK, "port": metrics_port}}
    all_sections.update(sections or {})
    config_path = directory / "partysip.conf"
    config_path.write_text(config_text(top, all_sections))
    log_path = directory / "partysip.log"
    notify = NotifyListener()
    env = {**os.environ, "NOTIFY_SOCKET": notify.address, "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_USEC", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "psp", "-f", str(config_path)], cwd=directory, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, config_path, log_path, int(top["serverport_udp"]),
                           int(top["serverport_tcp"]), metrics_port, notify)
    if not notify.wait_for("READY=1", time.monotonic() + ready_timeout, lambda: proc.poll() is None):
        server.stop()
        pytest.fail(f"partysip did not become ready (exit {proc.returncode}):\n{server.log()}")
    return server


def metric_values(page: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample of a /metrics page."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in page.splitlines() if line and not line.startswith("#")}


class Sampler:
    """Scrapes /metrics every 20 ms in a thread while a load runs (``with Sampler(server):``).

    ``highest`` is the deepest inbound FIFO seen; ``busy`` is set once it held anything.
    """

    def __init__(self, server: ServerProcess) -> None:
        self.server, self.highest = server, 0.0
        self.busy, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.highest = max(self.highest, self.server.metrics()['psp_fifo_depth{fifo="inbound"}'])
            if self.highest > 0:
                self.busy.set()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def partysip(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with ``partysip(**config)``; each is stopped with SIGTERM at teardown."""
    started: list[ServerProcess] = []

    def start(**keys: Any) -> ServerProcess:
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        server = start_server(directory, **keys)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.notify.close()


# ---------------------------------------------------------------- SIPp


@dataclass
class SippRun:
    """One SIPp run: its exit code, output and the final statistics line."""

    returncode: int
    output: str
    errors: str
    stats: dict[str, str]

    def counter(self, name: str) -> int:
        """A cumulative counter of -trace_stat, e.g. ``SuccessfulCall``."""
        return int(self.stats.get(f"{name}(C)", "0"))

    def describe(self) -> str:
        return f"sipp exit {self.returncode}\n{self.output}\nerrors:\n{self.errors}"


class Sipp:
    """Runs SIPp with a scenario of tests/sipp; files go to the test's directory.

    SIPp exit codes: 0 every call succeeded, 1 at least one failed, 97 exit on an internal
    command, 99 normal exit without any call processed, 255/254 fatal errors.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._running: list[subprocess.Popen[bytes]] = []
        self._count = 0

    def command(self, scenario: str, *args: str, calls: int = 1, timeout: float = 20.0,
                transport: str = "u1", port: int | None = None) -> tuple[list[str], str]:
        self._count += 1
        name = f"{Path(scenario).stem}-{self._count}"
        cmd = [
            str(SIPP), "-sf", str(SIPP_DIR / scenario), "-i", LOOPBACK,
            "-p", str(port or free_port()), "-t", transport, "-m", str(calls),
            "-timeout", f"{timeout}s", "-timeout_error", "-nostdin",
            "-trace_err", "-error_file", str(self.directory / f"{name}.errors"),
            "-trace_stat", "-stf", str(self.directory / f"{name}.csv"), *args,
        ]
        return cmd, name

    def start(self, scenario: str, *args: str, **options: Any) -> tuple[subprocess.Popen[bytes], str]:
        """Start SIPp in the background (a UAS); finish it with :meth:`wait`."""
        cmd, name = self.command(scenario, *args, **options)
        with open(self.directory / f"{name}.out", "wb") as out:
            proc = subprocess.Popen(cmd, cwd=self.directory, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self._running.append(proc)
        return proc, name

    def wait(self, started: tuple[subprocess.Popen[bytes], str], timeout: float = 30.0) -> SippRun:
        proc, name = started
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        return self._result(code, name)

    def run(self, scenario: str, *args: str, **options: Any) -> SippRun:
        """Run SIPp to completion (a UAC): SIPp ends itself at its ``timeout``, so wait a
        little longer than that before killing it."""
        return self.wait(self.start(scenario, *args, **options), options.get("timeout", 20.0) + 15.0)

    def _result(self, code: int, name: str) -> SippRun:
        def text(suffix: str) -> str:
            path = self.directory / f"{name}.{suffix}"
            return path.read_text(errors="replace") if path.exists() else ""

        rows = list(csv.reader(text("csv").splitlines(), delimiter=";"))
        stats = dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}
        return SippRun(code, text("out"), text("errors"), stats)

    def close(self) -> None:
        for proc in self._running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    if SIPP is None:
        pytest.skip("sipp (Debian package sip-tester) is not installed")
    runner = Sipp(tmp_path)
    yield runner
    runner.close()
