"""The systems under test: PartySIP (``python -m psp``) and Kamailio (bench/kamailio.cfg).

Both are started the same way for a benchmark run: on a free 127.0.0.1 port for UDP and
TCP, in a directory of their own, and considered up when they answer an OPTIONS.  Both
offer the same things to the scripts: ``port``, ``pids()`` (every process whose CPU and
memory count) and ``stop()``.

PartySIP runs with record-route on in [localdb] and [sfull], persistence on (its SQLite
``recovery_file``), logging at errors only, and, for the authentication runs, the
``auth`` plugin with MD5 (SIPp 3.6 answers MD5 challenges only) and one [userinfo] user
per line of the injection file.  Kamailio runs bench/kamailio.cfg with children=2,
usrloc in memory, and ``-A WITH_AUTH`` for the authentication runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from bench.common import BENCH, LOOPBACK, ROOT, Processes, children, free_port, note, require, wait_sip

NAMES = ("partysip", "kamailio")
PASSWORD_PREFIX = "secret-"  # the password of user U is secret-U (kamailio.cfg knows it too)


@dataclass
class Target:
    """A running proxy: where it listens and the processes that make it."""

    name: str
    port: int
    proc: Popen[bytes]
    directory: Path
    processes: Processes
    metrics_port: int | None = field(default=None)

    def pids(self) -> list[int]:
        return children(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        code = self.processes.stop(self.proc, signal.SIGTERM, timeout=15.0)
        if code not in (0, -signal.SIGTERM):
            note(f"{self.name} exited with {code}; its log: {self.directory / 'server.log'}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.directory / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start(name: str, directory: Path, processes: Processes, *, users: Sequence[str] = (),
          auth: bool = False, ready_timeout: float = 60.0) -> Target:
    """Start ``name`` ('partysip' or 'kamailio') in ``directory``; wait until it answers."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if name == "partysip":
        metrics_port = free_port()
        config = directory / "partysip.conf"
        config.write_text(partysip_config(port, metrics_port, directory, users if auth else (), auth))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("NOTIFY_SOCKET", None)
        proc = processes.start([sys.executable, "-m", "psp", "-f", str(config)], cwd=directory,
                               log=directory / "server.log", env=env)
        target = Target(name, port, proc, directory, processes, metrics_port)
    elif name == "kamailio":
        binary = require("kamailio", "kamailio", install=False)
        command = [binary, "-f", str(BENCH / "kamailio.cfg"), "-DD", "-E", "-m", "512", "-M", "16",
                   "-Y", str(directory), "-w", str(directory),
                   "-l", f"udp:{LOOPBACK}:{port}", "-l", f"tcp:{LOOPBACK}:{port}"]
        if auth:
            command += ["-A", "WITH_AUTH"]
        proc = processes.start(command, cwd=directory, log=directory / "server.log")
        target = Target(name, port, proc, directory, processes)
    else:
        raise ValueError(f"unknown target {name!r}; choose from {NAMES}")
    if not wait_sip(port, ready_timeout) or not target.alive():
        tail = target.log_tail()
        target.stop()
        raise RuntimeError(f"{name} did not answer OPTIONS on {LOOPBACK}:{port} within "
                           f"{ready_timeout:.0f} s; its log ends with:\n{tail}")
    return target


def partysip_config(port: int, metrics_port: int, directory: Path, users: Sequence[str], auth: bool) -> str:
    """partysip.conf for a benchmark run: record-route on, persistence on, quiet logs."""
    plugins = "syntax auth rgstrar ls_localdb ls_sfull" if auth else "syntax rgstrar ls_localdb ls_sfull"
    lines = [
        f"serverip = {LOOPBACK}",
        "servername = localhost",
        f"serverport_udp = {port}",
        f"serverport_tcp = {port}",
        f"plugins = {plugins}",
        f"authentication = {'on' if auth else 'off'}",
        "loglevel = 2",
        f"recovery_file = {directory / 'location.sqlite'}",
        "drain_time = 1.0",
        "[metrics]", "enabled = on", f"address = {LOOPBACK}", f"port = {metrics_port}",
        "[auth]", "algorithms = MD5",
        "[localdb]", "record-route = on",
        "[sfull]", "record-route = on",
        "[userinfo]",
    ]
    for user in users:
        lines += [f"  [[{user}]]", f"  aor = sip:{user}@localhost", f"  password = {PASSWORD_PREFIX}{user}"]
    return "\n".join(lines) + "\n"
