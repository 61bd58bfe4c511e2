"""The server's lifecycle: the real process on loopback, signals, drain, sd_notify, metrics."""

from __future__ import annotations

import hashlib
import re
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from psp.config import load_text
from psp.headers import parse_challenge
from psp.parser import parse
from psp.message import make_response
from psp.sdnotify import Notifier
from psp.server import EX_SOFTWARE, Server, Wiring, pin_threads
from psp.transaction import derived_request
from tests.conftest import LOOPBACK, ROOT, NotifyListener, Sampler, config_text, free_port

TIMEOUT = 5.0
CSEQ = itertools.count(1)  # REGISTERs of one Call-ID must have growing CSeqs (RFC 3261 10.3 step 7)


def options(port: int, branch: str, transport: str = "UDP", uri: str | None = None,
            method: str = "OPTIONS") -> bytes:
    target = uri or f"sip:{LOOPBACK}"
    return (
        f"{method} {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {LOOPBACK}:{port};branch={branch};rport\r\n"
        f"From: <sip:alice@example.org>;tag=f{branch}\r\nTo: <{target}>\r\n"
        f"Call-ID: {branch}@example.org\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:alice@{LOOPBACK}:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def udp_exchange(sock: socket.socket, port: int, data: bytes) -> Any:
    sock.sendto(data, (LOOPBACK, port))
    return parse(sock.recv(65535))


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorization(challenge: Any, user: str, password: str, method: str, uri: str) -> str:
    """The header line that answers ``challenge`` (401 or 407) with MD5 and qop=auth."""
    header = "Proxy" if challenge.status == 407 else "WWW"
    params = parse_challenge(challenge.header(f"{header}-Authenticate")).params
    realm, nonce, cnonce = params["realm"], params["nonce"], secrets.token_hex(4)
    ha1 = md5(f"{user}:{realm}:{password}")
    response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{md5(f'{method}:{uri}')}")
    field = "Proxy-Authorization" if header == "Proxy" else "Authorization"
    return (f'{field}: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="{cnonce}"\r\n')


def register(sock: socket.socket, server: Any, user: str, password: str | None = None,
             challenge: Any = None, extra: str = "") -> Any:
    """REGISTER ``user``'s AOR (its final response); with a ``challenge``, answered."""
    port, uri = sock.getsockname()[1], "sip:localhost"
    branch = "z9hG4bK-" + secrets.token_hex(6)
    if challenge is not None:
        assert password is not None
        extra += authorization(challenge, user, password, "REGISTER", uri)
    data = (f"REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{port};branch={branch};rport\r\n"
            f"From: <sip:{user}@localhost>;tag=r{branch}\r\nTo: <sip:{user}@localhost>\r\n"
            f"Call-ID: reg-{user}@test\r\nCSeq: {next(CSEQ)} REGISTER\r\n"
            f"Contact: <sip:{user}@{LOOPBACK}:{port}>\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n")
    return final(sock, server, data.encode())


def final(sock: socket.socket, server: Any, data: bytes) -> Any:
    """Send ``data`` to the server; its final response."""
    sock.sendto(data, (LOOPBACK, server.udp_port))
    while (answer := parse(sock.recv(65535))).status < 200:
        pass
    return answer


def wait_for_line(path: Path, text: str, deadline: float) -> bool:
    """Poll a log file for ``text`` (the log is the only signal a child gives for this)."""
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- sd_notify


def test_notifier_writes_to_an_abstract_socket() -> None:
    listener = NotifyListener()
    try:
        notifier = Notifier({"NOTIFY_SOCKET": listener.address})
        assert notifier.notify(READY=1, STATUS="serving")
        assert listener.wait_for("READY=1", time.monotonic() + TIMEOUT)
        assert listener.messages == ["READY=1\nSTATUS=serving"]
    finally:
        listener.close()


def test_notifier_writes_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(TIMEOUT)
        assert Notifier({"NOTIFY_SOCKET": str(path)}).notify(STOPPING=1)
        assert sock.recv(100) == b"STOPPING=1"


def test_notifier_outside_systemd_is_a_no_op_and_reads_the_watchdog() -> None:
    assert not Notifier({}).notify(READY=1)
    assert Notifier({"WATCHDOG_USEC": "3000000"}).watchdog_interval == 1.5
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_interval is None


# ---------------------------------------------------------------- in process


def settings_for(**extra: Any) -> Any:
    port = free_port()
    return load_text(config_text({"plugins": "syntax", "serverport_udp": port, "serverport_tcp": port,
                                  "drain_time": 0.5, **extra}))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_watchdog_is_fed_from_the_processor_and_a_dead_thread_stops_the_server() -> None:
    class DyingCore:
        """Lets the processor run a few turns, then raises what no handler catches."""

        outbox: list[Any] = []

        def __init__(self) -> None:
            self.alive = threading.Event()

        def next_deadline(self) -> float | None:
            if self.alive.is_set():
                raise SystemExit("the processor thread dies")
            return None

    core = DyingCore()
    listener = NotifyListener()
    notifier = Notifier({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000"})
    server = Server(settings_for(), notifier, build=lambda _s: Wiring(core, stats=dict))
    server.start()
    try:
        assert listener.wait_for("WATCHDOG=1", time.monotonic() + TIMEOUT)
        core.alive.set()
        server.inbound.put(None)  # wake the processor so that it meets its end
        started = time.monotonic()
        assert server.wait() == EX_SOFTWARE
        assert time.monotonic() - started < 3.0
    finally:
        listener.close()
    assert not server.transport.thread.is_alive()


# ---------------------------------------------------------------- the real process


def test_options_over_udp_and_tcp_then_sigterm_exits_zero(partysip, udp) -> None:
    server = partysip()
    response = udp_exchange(udp, server.udp_port, options(udp.getsockname()[1], "z9hG4bK-udp"))
    assert (response.status, response.top_via.branch) == (200, "z9hG4bK-udp")
    with socket.create_connection((LOOPBACK, server.tcp_port), timeout=TIMEOUT) as tcp:
        tcp.sendall(options(tcp.getsockname()[1], "z9hG4bK-tcp", "TCP"))
        response = parse(tcp.recv(65535))
    assert (response.status, response.top_via.branch) == (200, "z9hG4bK-tcp")
    assert server.stop() == 0
    assert server.notify.wait_for("STOPPING=1", time.monotonic() + TIMEOUT)


def test_sigterm_mid_call_drains_and_exits_zero_within_the_drain_time(partysip, udp) -> None:
    drain_time = 1.5
    server = partysip(drain_time=drain_time)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:  # rings forever
        callee.bind((LOOPBACK, 0))
        callee.settimeout(TIMEOUT)
        uri = f"sip:bob@{LOOPBACK}:{callee.getsockname()[1]}"
        trying = udp_exchange(udp, server.udp_port, options(udp.getsockname()[1], "z9hG4bK-call", uri=uri,
                                                            method="INVITE"))
        assert trying.status == 100
        assert parse(callee.recv(65535)).method == "INVITE"  # the call is in progress downstream
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.stop(timeout=drain_time + 30) == 0
    elapsed = time.monotonic() - started
    # The INVITE's transactions still wait for a final response: the drain waits for them,
    # but only drain_time; waiting for the transactions themselves would take Timer B
    # (64 * T1 = 32 s) or more.  The slack covers a loaded machine's start-up and exit.
    assert drain_time <= elapsed < drain_time + 8.0, f"exit took {elapsed:.2f} s"
    assert "draining" in server.log()


def test_sigterm_with_registrations_but_no_call_exits_without_waiting_for_the_drain_time(
        partysip, udp) -> None:
    drain_time = 20.0
    server = partysip(drain_time=drain_time)
    assert register(udp, server, "alice").status == 200  # its expiry is a timer that stays armed
    assert "psp_registrations_active 1.0" in server.scrape()
    started = time.monotonic()
    assert server.stop(timeout=drain_time + 10) == 0
    elapsed = time.monotonic() - started
    assert elapsed < drain_time / 2, f"exit took {elapsed:.2f} s"


def test_sighup_is_logged_and_the_server_keeps_serving(partysip, udp) -> None:
    server = partysip()
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for_line(server.log_path, "reload requested", time.monotonic() + TIMEOUT)
    assert udp_exchange(udp, server.udp_port, options(udp.getsockname()[1], "z9hG4bK-hup")).status == 200


def test_a_port_in_use_is_one_clear_line_and_a_non_zero_exit(tmp_path: Path, udp) -> None:
    port = udp.getsockname()[1]
    config = tmp_path / "partysip.conf"
    config.write_text(config_text({"serverip": LOOPBACK, "serverport_udp": port, "serverport_tcp": 0,
                                   "plugins": "syntax", "recovery_file": tmp_path / "loc.sqlite"}))
    done = subprocess.run([sys.executable, "-m", "psp", "-f", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"cannot bind UDP {LOOPBACK}:{port}: Address already in use")


def test_metrics_scraped_under_load_show_queues_and_transactions(partysip) -> None:
    server = partysip(fifo_size=20000)
    stop = threading.Event()

    def load(n: int) -> None:
        """Bursts of 50 OPTIONS, then their answers; until told to stop, 2000 at most."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.settimeout(TIMEOUT)
            port, count = sock.getsockname()[1], 0
            while not stop.is_set() and count < 2000:
                for _ in range(50):
                    sock.sendto(options(port, f"z9hG4bK-{n}-{count}"), (LOOPBACK, server.udp_port))
                    count += 1
                for _ in range(50):
                    try:
                        sock.recv(65535)
                    except socket.timeout:
                        break

    workers = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    with Sampler(server) as sampler:
        for worker in workers:
            worker.start()
        try:  # until a scrape saw the inbound FIFO hold something, or the load is over
            while not sampler.busy.wait(0.05) and any(worker.is_alive() for worker in workers):
                pass
            during = server.metrics()
        finally:
            stop.set()
            for worker in workers:
                worker.join(30)
    # Each burst of 50 lands faster than the processor serves it: a scrape during the load
    # sees a queue, which an idle or a one-message server never shows.
    assert sampler.highest > 0, "no scrape saw the inbound FIFO hold anything during the load"
    assert during['psp_transactions_active{kind="NIST"}'] > 0
    assert during['psp_messages_received_total{method="OPTIONS",status_class="none",transport="udp"}'] > 0


def test_metrics_count_registrations_auth_failures_completed_transactions_and_strays(partysip, udp) -> None:
    password = "alice-secret"
    server = partysip(plugins="syntax auth rgstrar ls_localdb ls_sfull", authentication=True,
                      sections={"auth": {"algorithms": "MD5"}, "userinfo": {},
                                "[alice]": {"aor": "sip:alice@localhost", "password": password}})
    assert register(udp, server, "alice", password, register(udp, server, "alice")).status == 200
    assert register(udp, server, "alice", "wrong", register(udp, server, "alice")).status == 401
    too_brief = register(udp, server, "alice", password, register(udp, server, "alice"), "Expires: 1\r\n")
    assert too_brief.status == 423  # the registrar's own refusal
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        for sock in (callee, caller):
            sock.bind((LOOPBACK, 0))
            sock.settimeout(TIMEOUT)
        uri = f"sip:bob@{LOOPBACK}:{callee.getsockname()[1]}"
        invite = options(udp.getsockname()[1], "z9hG4bK-call1", uri=uri, method="INVITE")
        challenge = final(udp, server, invite)
        assert challenge.status == 407
        udp.sendto(derived_request(parse(invite), "ACK", challenge.header("To")).to_bytes(),
                   (LOOPBACK, server.udp_port))
        line = authorization(challenge, "alice", password, "INVITE", uri).encode()
        invite = options(caller.getsockname()[1], "z9hG4bK-call2", uri=uri, method="INVITE")
        caller.sendto(invite.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + line),
                      (LOOPBACK, server.udp_port))
        forwarded, proxy = callee.recvfrom(65535)
        callee.sendto(make_response(parse(forwarded), 200, to_tag="callee").to_bytes(), proxy)
        while (answer := parse(caller.recv(65535))).status < 200:
            pass
        assert answer.status == 200
        stray = make_response(parse(forwarded), 200, to_tag="callee")
        stray.pop_via()  # what is left is the caller's Via: not ours, so not relayed
        callee.sendto(stray.to_bytes(), proxy)
    # Handled in order: once this is answered, the stray response has been dropped.
    assert final(udp, server, options(udp.getsockname()[1], "z9hG4bK-last")).status == 200
    expected = {
        'psp_registrations_total{result="accepted"}': 1.0,
        'psp_registrations_total{result="rejected"}': 1.0,
        'psp_auth_failures_total{reason="bad"}': 1.0,  # not the four first challenges
        'psp_auth_failures_total{reason="stale"}': 0.0,
        'psp_transactions_completed_total{class="2xx"}': 3.0,  # REGISTER, INVITE, OPTIONS
        'psp_transactions_completed_total{class="4xx"}': 6.0,  # four 401, the 423, the 407
        "psp_stray_responses_dropped_total": 1.0,
    }
    values = server.metrics()
    assert {name: values.get(name) for name in expected} == expected


def test_the_shipped_config_starts_serves_and_stops_on_sigterm_with_exit_zero(tmp_path, udp) -> None:
    """Issue 2's "partysip -f etc/partysip.conf starts and stops on SIGTERM with exit 0".

    The shipped file as it is, but for what a test machine cannot give it: port 5060 and
    /var/lib/partysip (both need root and may be taken).
    """
    port = free_port()
    text = (ROOT / "etc" / "partysip.conf").read_text()
    for key, value in (("serverport_udp", port), ("serverport_tcp", port),
                       ("recovery_file", tmp_path / "location.sqlite")):
        text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert count == 1, key
    config = tmp_path / "partysip.conf"
    config.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "psp", "-f", str(config)], cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20.0
        udp.settimeout(0.5)
        answer = None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = udp_exchange(udp, port, options(port, "z9hG4bK-shipped"))
            except TimeoutError:
                continue
        assert answer is not None and answer.status == 200, proc.poll()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets the threads of process ``pid`` may run on (one entry when all agree)."""
    return {frozenset(os.sched_getaffinity(int(task.name))) for task in Path(f"/proc/{pid}/task").iterdir()}


def test_every_thread_of_the_server_runs_on_the_one_cpu_cpu_affinity_names(partysip) -> None:
    cpu = max(os.sched_getaffinity(0))
    server = partysip(cpu_affinity="auto")
    assert thread_cpus(server.proc.pid) == {frozenset({cpu})}
    assert f"threads pinned to CPU {cpu} (cpu_affinity = auto)" in server.log()


def test_cpu_affinity_off_leaves_the_threads_to_the_scheduler(partysip) -> None:
    server = partysip(cpu_affinity="off")
    assert thread_cpus(server.proc.pid) == {frozenset(os.sched_getaffinity(0))}
    assert "threads pinned" not in server.log()


def test_a_refused_pin_is_a_warning_and_the_threads_run_anywhere(monkeypatch, caplog) -> None:
    def refuse(pid: int, cpus: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    with caplog.at_level("WARNING", logger="psp.server"):
        assert pin_threads("auto") is None
    assert "cannot pin the threads" in caplog.text and "Operation not permitted" in caplog.text
