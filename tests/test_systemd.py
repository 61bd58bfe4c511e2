"""The systemd unit, and the server as systemd sees it: sd_notify, watchdog, SIGTERM.

The unit is checked by ``systemd-analyze`` itself (verify, and the sandbox exposure
score); its ExecStart command line is run as systemd would run it, with a unix datagram
socket of the test as ``$NOTIFY_SOCKET`` standing in for the service manager.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from psp.config import load_text
from psp.events import Peer, Received
from psp.metrics import Metrics
from psp.parser import parse
from psp.processor import Processor
from psp.sdnotify import Notifier
from tests.conftest import LOOPBACK, ROOT, NotifyListener, config_text, free_port

UNIT = ROOT / "systemd" / "partysip.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
TIMEOUT = 10.0


def unit_entries(text: str) -> dict[str, dict[str, list[str]]]:
    """``[Section] Key=Value`` lines; a key may repeat (ExecReload=, SystemCallFilter=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


SERVICE = unit_entries(UNIT.read_text())["Service"]


def installed_partysip() -> str:
    """The ``partysip`` console script of the interpreter running the tests."""
    beside = Path(sys.executable).with_name("partysip")
    found = str(beside) if beside.exists() else shutil.which("partysip")
    if found is None:
        pytest.skip("the partysip console script is not installed (pip install -e .)")
    return found


def exec_start(config: Path) -> list[str]:
    """The unit's ExecStart= with the installed command and ``config`` in place of its paths."""
    argv = shlex.split(SERVICE["ExecStart"][0])
    argv[0] = installed_partysip()
    argv[argv.index("-f") + 1] = str(config)
    return argv


# ---------------------------------------------------------------- the unit file


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # verify insists that the ExecStart binary exists: point it at the installed command.
    text = UNIT.read_text().replace("/usr/local/bin/partysip", installed_partysip())
    unit = tmp_path / "partysip.service"
    unit.write_text(text)
    done = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_sandbox_exposure_stays_low() -> None:
    # systemd's own score, 0 (locked down) .. 10 (unprotected); --threshold is in tenths.
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=20", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_unit_paths_agree_with_the_configuration_defaults() -> None:
    defaults = load_text("plugins = syntax\n")
    state = Path("/var/lib") / SERVICE["StateDirectory"][0]
    assert Path(defaults.recovery_file).parent == state
    config = Path(shlex.split(SERVICE["ExecStart"][0])[-1])
    assert config.parent == Path("/etc") / SERVICE["ConfigurationDirectory"][0]
    # the reload checks the very file the server reads, then signals the main process
    assert [shlex.split(line) for line in SERVICE["ExecReload"]] == [
        [*shlex.split(SERVICE["ExecStart"][0])[:1], "--check", "-f", str(config)],
        ["/bin/kill", "-HUP", "$MAINPID"],
    ]


# ---------------------------------------------------------------- the command under a fake systemd


def write_config(directory: Path, **extra: Any) -> Path:
    port = free_port()
    path = directory / "partysip.conf"
    path.write_text(config_text({
        "serverip": LOOPBACK, "serverport_udp": port, "serverport_tcp": port,
        "plugins": "syntax rgstrar ls_localdb", "recovery_file": directory / "location.sqlite",
        "drain_time": 0.5, "loglevel": 6, **extra,
    }))
    return path


def test_execstart_notifies_ready_watchdog_status_and_stopping(tmp_path: Path) -> None:
    listener = NotifyListener()
    env = {**os.environ, "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000",
           "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "out.log").open("wb")
    proc = subprocess.Popen(exec_start(write_config(tmp_path)), env=env, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        alive = lambda: proc.poll() is None  # noqa: E731
        assert listener.wait_for("READY=1", time.monotonic() + TIMEOUT, alive), (tmp_path / "out.log").read_text()
        ready = next(m for m in listener.messages if "READY=1" in m.split("\n"))
        assert re.search(r"^STATUS=serving on udp 127\.0\.0\.1:\d+", ready, re.M)
        # every 0.2 s (half of WATCHDOG_USEC): three beats well within a few seconds
        assert len(notifications(listener, "WATCHDOG=1", 3, TIMEOUT)) == 3
        # the load, for "systemctl status"
        assert notifications(listener, r"STATUS=serving: inbound FIFO \d+/10000, \d+ transactions, "
                             r"\d+ registrations", 1, TIMEOUT)
        proc.send_signal(signal.SIGTERM)
        assert listener.wait_for("STOPPING=1", time.monotonic() + TIMEOUT)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        listener.close()


class WedgingCore:
    """A core whose handling of a message blocks until the test lets it go."""

    def __init__(self) -> None:
        self.outbox: list[Any] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def on_received(self, message: Any, peer: Peer, now: float) -> None:
        self.entered.set()
        self.release.wait(TIMEOUT)

    def next_deadline(self) -> float | None:
        return None

    def pending(self) -> int:
        return 0


def notifications(listener: NotifyListener, pattern: str, wanted: int | None, seconds: float) -> list[str]:
    """The notification lines matching ``pattern`` within ``seconds`` (stops at ``wanted`` of them)."""
    found: list[str] = []
    deadline = time.monotonic() + seconds
    while len(found) != wanted and (left := deadline - time.monotonic()) > 0:
        listener.sock.settimeout(left)
        try:
            lines = listener.sock.recv(4096).decode().split("\n")
        except TimeoutError:
            break
        found += [line for line in lines if re.fullmatch(pattern, line)]
    return found


def beats(listener: NotifyListener, seconds: float) -> int:
    """How many WATCHDOG=1 arrive within ``seconds``."""
    return len(notifications(listener, "WATCHDOG=1", None, seconds))


def test_a_wedged_processor_stops_feeding_the_watchdog() -> None:
    listener = NotifyListener()
    notifier = Notifier({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000"})
    core = WedgingCore()
    inbound: queue.Queue[Any] = queue.Queue(10)
    processor = Processor(core, inbound, Metrics(), send=lambda _o: None, resolve=lambda _j: None,
                          heartbeat=notifier.watchdog, heartbeat_interval=notifier.watchdog_interval)
    processor.start()
    try:
        assert beats(listener, 0.5) >= 2  # idle: fed every 0.05 s
        options = parse(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-w\r\n"
                        b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: w\r\n"
                        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        inbound.put(Received(options, Peer("udp", LOOPBACK, 5060), time.monotonic()))
        assert core.entered.wait(TIMEOUT)
        beats(listener, 0.1)  # a beat already in flight when it wedged
        assert beats(listener, 0.5) == 0  # ten intervals without a turn: systemd would act
        core.release.set()
        assert beats(listener, 0.5) >= 2
    finally:
        core.release.set()
        processor.stop(0.0)
        processor.join(TIMEOUT)
        notifier.close()
        listener.close()


def test_the_filter_lets_the_server_pin_its_threads() -> None:
    # @resources (denied) holds sched_setaffinity; cpu_affinity = auto needs it back.
    filters = SERVICE["SystemCallFilter"]
    assert "~@privileged @resources" in filters
    assert filters.index("sched_setaffinity") > filters.index("~@privileged @resources")
