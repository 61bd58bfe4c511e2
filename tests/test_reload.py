"""SIGHUP reloads the configuration file: what changes, what is refused, what needs a restart.

The real server on loopback; the test edits its file, sends SIGHUP and waits for the
end of the reload as systemd would (``RELOADING=1``, then ``READY=1`` with a STATUS),
then checks behaviour on the wire.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from psp import __version__
from psp.message import Request, make_response
from psp.parser import parse
from tests.conftest import LOOPBACK, ROOT, free_port
from tests.test_server import options, register

TIMEOUT = 10.0
ALICE = {"aor": "sip:alice@localhost", "password": "alice-secret"}
BOB = {"aor": "sip:bob@localhost", "password": "bob-secret"}


def reload(server: Any) -> str:
    """SIGHUP, then the STATUS sent with the READY=1 that ends the reload."""
    server.proc.send_signal(signal.SIGHUP)
    listener, deadline, reloading = server.notify, time.monotonic() + TIMEOUT, False
    while True:
        listener.sock.settimeout(max(0.01, deadline - time.monotonic()))
        lines = listener.sock.recv(4096).decode().split("\n")  # TimeoutError fails the test
        reloading = reloading or "RELOADING=1" in lines
        if reloading and "READY=1" in lines:
            return next((line[7:] for line in lines if line.startswith("STATUS=")), "")


def edit(server: Any, old: str, new: str) -> None:
    text = server.config_path.read_text()
    assert old in text, text
    server.config_path.write_text(text.replace(old, new))


def ask(sock: socket.socket, server: Any, uri: str, method: str = "OPTIONS") -> Any:
    """A final response to a fresh request for ``uri``."""
    branch = "z9hG4bK-" + secrets.token_hex(6)
    sock.sendto(options(sock.getsockname()[1], branch, uri=uri, method=method), (LOOPBACK, server.udp_port))
    while (response := parse(sock.recv(65535))).status < 200:
        pass
    return response


def sample(server: Any, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", server.scrape(), re.M)
    return float(found.group(1)) if found else 0.0


def static(partysip: Any, **keys: Any) -> Any:
    return partysip(plugins="syntax ls_static", sections={"static": {"reject": "blocked.example 403"}}, **keys)


# ---------------------------------------------------------------- applied


def test_sighup_applies_new_routes_and_log_level_to_new_requests(partysip, udp) -> None:
    server = static(partysip)
    assert ask(udp, server, "sip:bob@blocked.example").status == 403
    edit(server, "reject = blocked.example 403", "reject = blocked.example 486")
    edit(server, "loglevel = 6", "loglevel = 8")
    assert reload(server).startswith("reloaded")
    assert ask(udp, server, "sip:bob@blocked.example").status == 486
    log = server.log()
    assert re.search(r"INFO psp.server: reloaded .*partysip.conf: loglevel, \[static\]$", log, re.M), log
    assert "DEBUG psp.transport: received from UDP" in log  # the new level traces messages
    assert sample(server, 'psp_reloads_total{result="ok"}') == 1


def test_users_and_auth_settings_take_effect(partysip, udp) -> None:
    server = partysip(plugins="syntax auth rgstrar ls_localdb", authentication=True,
                      sections={"auth": {"algorithms": "MD5"}, "userinfo": {}, "[alice]": ALICE})
    challenge = register(udp, server, "bob")
    assert challenge.status == 401
    assert register(udp, server, "bob", BOB["password"], challenge).status == 401  # bob is unknown
    edit(server, "[auth]\nalgorithms = MD5", "[auth]\nalgorithms = MD5\nforce_use_of_407 = on")
    server.config_path.write_text(server.config_path.read_text() + "[[bob]]\n" + "".join(
        f"{key} = {value}\n" for key, value in BOB.items()))
    assert reload(server).startswith("reloaded")
    challenge = register(udp, server, "bob")
    assert challenge.status == 407  # force_use_of_407 = on
    assert register(udp, server, "bob", BOB["password"], challenge).status == 200


def test_a_new_banner_names_the_proxy_and_the_transport_in_their_own_responses(partysip, udp) -> None:
    server = static(partysip)
    assert ask(udp, server, "sip:bob@blocked.example").header("Server") == f"PartySIP/{__version__}"
    server.config_path.write_text("banner = Edited\n" + server.config_path.read_text())
    assert reload(server).startswith("reloaded")
    assert ask(udp, server, "sip:bob@blocked.example").header("Server") == f"Edited/{__version__}"
    unparsable = options(udp.getsockname()[1], "z9hG4bK-bad").replace(b"Max-Forwards: 70", b"Max-Forwards: x")
    udp.sendto(unparsable, (LOOPBACK, server.udp_port))
    answer = parse(udp.recv(65535))  # the transport's stateless 400
    assert (answer.status, answer.header("Server")) == (400, f"Edited/{__version__}")


def test_transactions_in_flight_finish_with_the_decision_already_taken(partysip, udp) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        callee.bind((LOOPBACK, 0))
        callee.settimeout(TIMEOUT)
        route = f"callee.test {LOOPBACK}:{callee.getsockname()[1]}"
        server = partysip(plugins="syntax ls_static", sections={"static": {"forward": route}})
        uri = "sip:bob@callee.test"
        udp.sendto(options(udp.getsockname()[1], "z9hG4bK-inflight", uri=uri, method="INVITE"),
                   (LOOPBACK, server.udp_port))
        assert parse(udp.recv(65535)).status == 100
        invite, proxy = callee.recvfrom(65535)
        edit(server, f"forward = {route}", "reject = callee.test 403")
        assert reload(server).startswith("reloaded")
        request = parse(invite)
        assert isinstance(request, Request)
        callee.sendto(make_response(request, 200, to_tag="callee").to_bytes(), proxy)
        answer = parse(udp.recv(65535))
        assert (answer.status, answer.top_via.branch) == (200, "z9hG4bK-inflight")
        assert ask(udp, server, uri, "INVITE").status == 403  # a new transaction: the new table


# ---------------------------------------------------------------- refused, or needs a restart


def test_a_broken_file_is_refused_by_check_and_by_reload_and_the_old_settings_stay(partysip, udp) -> None:
    server = static(partysip)
    edit(server, "reject = blocked.example 403", "reject = blocked.example 99")
    check = subprocess.run([sys.executable, "-m", "psp", "--check", "-f", str(server.config_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert check.returncode == 78
    assert re.search(rf"^{re.escape(str(server.config_path))}:\d+: \[static\] reject: ", check.stderr, re.M)
    assert reload(server).startswith("reload refused")
    assert re.search(rf"WARNING psp.server: reload refused: {re.escape(str(server.config_path))}:\d+: "
                     r"\[static\] reject: .*; the running settings stay", server.log()), server.log()
    assert ask(udp, server, "sip:bob@blocked.example").status == 403
    assert sample(server, 'psp_reloads_total{result="refused"}') == 1


def test_settings_a_plugin_refuses_are_refused_whole_and_the_plugins_before_it_restored(partysip, udp) -> None:
    server = static(partysip)
    assert ask(udp, server, "sips:bob@blocked.example").status == 403
    # syntax reloads first and would drop sips; then ls_static refuses its forward rule
    server.config_path.write_text(server.config_path.read_text()
                                  + "forward = callee.test not-a-host:port\n[syntax]\nallowed_schemes = sip\n")
    assert reload(server).startswith("reload refused")
    assert "WARNING psp.server: reload refused: [static] forward: 'not-a-host:port'" in server.log()
    assert ask(udp, server, "sips:bob@blocked.example").status == 403  # not 416: syntax has sips again


def test_keys_that_need_a_restart_are_logged_and_keep_their_running_values(partysip, udp) -> None:
    server = static(partysip)
    edit(server, f"serverport_udp = {server.udp_port}", f"serverport_udp = {free_port()}")
    edit(server, "reject = blocked.example 403", "reject = blocked.example 486")
    assert reload(server).startswith("reloaded")
    assert re.search(r"WARNING psp.server: reload: serverport_udp changed: needs a restart; "
                     "the running values stay", server.log()), server.log()
    assert ask(udp, server, "sip:bob@blocked.example").status == 486  # the rest of the file applies
