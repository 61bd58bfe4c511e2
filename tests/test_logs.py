"""The server's log as an operator reads it: one line per event, text or JSON, traces at debug.

The real server on loopback, its stderr captured to a file by the ``partysip`` fixture.
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

from tests.conftest import LOOPBACK
from tests.test_server import options, udp_exchange

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S.*$")


def exchange_and_stop(server: Any, sock: socket.socket) -> list[str]:
    """One OPTIONS to the proxy, SIGTERM, and the log's lines."""
    assert udp_exchange(sock, server.udp_port, options(sock.getsockname()[1], "z9hG4bK-log")).status == 200
    assert server.stop() == 0
    return server.log().splitlines()


def test_text_log_has_one_line_per_lifecycle_event_and_no_sip_trace_at_info(partysip, udp) -> None:
    lines = exchange_and_stop(partysip(loglevel=6), udp)
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    events = [line.split(": ", 1)[1] for line in lines]
    assert any(event.startswith("starting partysip") for event in events), events
    assert any(event.startswith("serving on udp 127.0.0.1:") for event in events), events
    assert events[-1] == "stopped"
    assert not any("OPTIONS sip:" in line for line in lines)  # SIP tracing is for debug only


def test_debug_level_traces_every_message_in_and_out_one_line_each(partysip, udp) -> None:
    server = partysip(loglevel=8)
    port = udp.getsockname()[1]
    lines = exchange_and_stop(server, udp)
    assert all(TEXT_LINE.match(line) for line in lines), [line for line in lines if not TEXT_LINE.match(line)]
    received = [line for line in lines if f"received from UDP {LOOPBACK}:{port} " in line]
    sent = [line for line in lines if f"sent to UDP {LOOPBACK}:{port} " in line]
    assert len(received) == 1 and "\\nOPTIONS sip:127.0.0.1 SIP/2.0\\nVia: " in received[0]
    assert len(sent) == 1 and "\\nSIP/2.0 200 OK\\n" in sent[0]


def test_json_log_is_one_object_per_line_with_the_same_events(partysip, udp) -> None:
    lines = exchange_and_stop(partysip(loglevel=8, log_format="json"), udp)
    events = [json.loads(line) for line in lines]
    assert all(set(event) >= {"time", "level", "logger", "message"} for event in events)
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", event["time"]) for event in events)
    messages = [event["message"] for event in events]
    assert any(message.startswith("serving on udp") for message in messages)
    trace = next(event for event in events if event["message"].startswith("received from UDP"))
    assert trace["level"] == "DEBUG" and "\nOPTIONS sip:127.0.0.1 SIP/2.0\nVia: " in trace["message"]
    assert messages[-1] == "stopped"
