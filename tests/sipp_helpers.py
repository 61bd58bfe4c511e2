"""Helpers for the services wire tests (test_wire_*.py): SIPp peers around a real partysip.

The scenarios live in ``tests/sipp/services``; their header comments say which ``-key``
and ``-set`` values each needs.  Every SIPp run here writes, next to the test's other
files, its ``-trace_msg`` log (parsed by :func:`read_messages`) and its ``<log>`` lines,
so a failure message shows what crossed the wire.  The server itself is started with the
``partysip`` fixture of conftest.py; :func:`proxy_config` builds its keyword arguments.
"""

from __future__ import annotations

import itertools
import re
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import LOOPBACK, SIPP_DIR, ServerProcess, Sipp, SippRun, free_port, udp_bound

DOMAIN = "localhost"          # the domain the test servers serve (conftest's servername)
_names = itertools.count(1)


# ---------------------------------------------------------------- configuration

def proxy_config(mode: str = "statefull", *, record_route: bool = True,
                 users: Mapping[str, Mapping[str, Any]] | None = None,
                 sections: Mapping[str, Mapping[str, Any]] | None = None, **keys: Any) -> dict[str, Any]:
    """Keyword arguments for the ``partysip`` fixture: metrics off, [localdb] ``mode`` and
    ``record-route``, one [userinfo] subsection per user, more sections and top-level keys.

    conftest's ``config_text`` writes one ``[name]`` line per section; a section named
    ``"[alice]"`` therefore becomes the subsection ``[[alice]]`` of the [userinfo] before it.
    """
    all_sections: dict[str, Mapping[str, Any]] = {
        "metrics": {"enabled": False},
        "localdb": {"mode": mode, "record-route": record_route},
    }
    all_sections.update(sections or {})
    if users:
        all_sections["userinfo"] = {}
        all_sections.update({f"[{name}]": values for name, values in users.items()})
    return {"plugins": "syntax auth rgstrar ls_localdb", "sections": all_sections, **keys}


def hostport(server: ServerProcess) -> str:
    """The proxy's UDP address as it appears in its Via and Record-Route."""
    return f"{LOOPBACK}:{server.udp_port}"


# ---------------------------------------------------------------- SIPp message logs

@dataclass
class Traced:
    """One SIP message of a SIPp -trace_msg log."""

    sent: bool
    text: str
    at: float = 0.0   # when SIPp logged it (seconds since the epoch)

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0]

    @property
    def status(self) -> int | None:
        match = re.match(r"SIP/2\.0 (\d{3}) ", self.first_line + " ")
        return int(match.group(1)) if match else None

    @property
    def method(self) -> str | None:
        return None if self.status else self.first_line.split(" ", 1)[0]

    def headers(self, name: str) -> list[str]:
        """Values of every header line called ``name`` (case-insensitive), in order."""
        head = self.text.split("\r\n\r\n", 1)[0]
        prefix = name.lower() + ":"
        return [line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]
                if line.lower().startswith(prefix)]

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None


def read_messages(path: Path) -> list[Traced]:
    """The messages of a SIPp -trace_msg log, in order."""
    if not path.exists():
        return []
    parts = re.split(r"^-{20,} (\S+ \S+)\n", path.read_bytes().decode(errors="replace"), flags=re.M)
    found = []
    for stamp, chunk in zip(parts[1::2], parts[2::2]):
        intro, _, text = chunk.partition("\n\n")
        if "message sent" in intro or "message received" in intro:
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
            text = text[:-1] if text.endswith("\n") else text  # SIPp adds one "\n" to each
            found.append(Traced("message sent" in intro, text, at))
    return found


def bindings(response: Traced) -> dict[str, int | None]:
    """The Contacts of a registrar's 200: URI -> its ``expires`` parameter (None if absent)."""
    found: dict[str, int | None] = {}
    for uri, params in re.findall(r"<([^>]+)>([^,]*)", ",".join(response.headers("Contact"))):
        expires = re.search(r";\s*expires\s*=\s*(\d+)", params, re.I)
        found[uri] = int(expires.group(1)) if expires else None
    return found


def summary(messages: Iterable[Traced]) -> str:
    """One line per message: direction and start line."""
    return "\n".join(f"{'>>' if m.sent else '<<'} {m.first_line}" for m in messages)


# ---------------------------------------------------------------- SIPp runs

@dataclass
class Peer:
    """A SIPp run with its logs: ``run`` is set once it finished."""

    name: str
    directory: Path
    run: SippRun | None = None
    started: Any = None
    port: int = 0

    @property
    def messages(self) -> list[Traced]:
        return read_messages(self.directory / f"{self.name}.msg")

    @property
    def logs(self) -> str:
        path = self.directory / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def received(self, status: int | None = None, method: str | None = None) -> list[Traced]:
        return [m for m in self.messages if not m.sent
                and (status is None or m.status == status) and (method is None or m.method == method)]

    def describe(self) -> str:
        """Everything useful in a failure message: exit code, errors, logs, message flow."""
        code = self.run.returncode if self.run else "still running"
        errors = self.run.errors.strip()[-1500:] if self.run else ""
        return (f"--- sipp {self.name}: exit {code}\nerrors: {errors}\nlog lines:\n{self.logs.strip()}"
                f"\nmessages:\n{summary(self.messages)}")

    @property
    def ok(self) -> bool:
        return self.run is not None and self.run.returncode == 0


def contact_uri(user: str, port: int) -> str:
    """The Contact URI register.xml sends for ``user`` at 127.0.0.1:``port``."""
    return f"sip:{user}@{LOOPBACK}:{port}"


def listed(reg: Peer) -> dict[str, int | None]:
    """The bindings the registrar's 200 listed (fails unless the REGISTER run got its 200)."""
    assert reg.ok, reg.describe()
    answers = reg.received(200)
    assert answers, reg.describe()
    return bindings(answers[-1])


def _globals(scenario: str) -> set[str]:
    """The names of a scenario's <Global variables="..."/> (set with -set)."""
    text = (SIPP_DIR / "services" / scenario).read_text()
    return {name.strip() for names in re.findall(r'<Global variables="([^"]*)"', text) for name in names.split(",")}


def _proxy_var(scenario: str, server: ServerProcess) -> list[str]:
    return ["-set", "proxy", hostport(server)] if "proxy" in _globals(scenario) else []


def _trace_args(directory: Path, name: str) -> list[str]:
    return ["-trace_msg", "-message_file", str(directory / f"{name}.msg"),
            "-trace_logs", "-log_file", str(directory / f"{name}.log")]


def uac(sipp: Sipp, scenario: str, server: ServerProcess, *args: str, timeout: float = 15.0,
        **options: Any) -> Peer:
    """Run a client scenario against the proxy to completion."""
    peer = Peer(f"{Path(scenario).stem}-{next(_names)}", sipp.directory)
    peer.run = sipp.run(f"services/{scenario}", hostport(server), *_proxy_var(scenario, server),
                        *_trace_args(sipp.directory, peer.name), *args, timeout=timeout, **options)
    return peer


def uas(sipp: Sipp, scenario: str, server: ServerProcess, *args: str, timeout: float = 15.0,
        port: int | None = None) -> Peer:
    """Start a server scenario on ``port`` (default: a free one); returns once SIPp listens."""
    peer = Peer(f"{Path(scenario).stem}-{next(_names)}", sipp.directory, port=port or free_port())
    peer.started = sipp.start(f"services/{scenario}", *_proxy_var(scenario, server),
                              *_trace_args(sipp.directory, peer.name), *args,
                              timeout=timeout, port=peer.port)
    wait_listening(peer.port, peer.started[0])
    return peer


def finish(sipp: Sipp, *peers: Peer, timeout: float = 20.0) -> None:
    """Wait for started SIPp peers to end."""
    for peer in peers:
        if peer.run is None:
            peer.run = sipp.wait(peer.started, timeout)


def register(sipp: Sipp, server: ServerProcess, user: str, contact: str, *args: str, expires: int = 600,
             cparams: str = "", scenario: str = "register.xml", domain: str = DOMAIN) -> Peer:
    """REGISTER sip:user@domain with one Contact ``sip:user@HOST:PORT`` through SIPp."""
    return uac(sipp, scenario, server, "-s", user, "-key", "domain", domain, "-key", "contact", contact,
               "-key", "expires", str(expires), "-key", "cparams", cparams, *args)


def wait_listening(port: int, proc: Any, timeout: float = 10.0) -> None:
    """Wait until a UDP socket is bound to ``port`` (SIPp started), or fail."""
    deadline = time.monotonic() + timeout
    while not udp_bound(LOOPBACK, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"sipp did not start listening on UDP port {port} (exit {proc.poll()})")
        time.sleep(0.02)


# ---------------------------------------------------------------- raw UDP

@dataclass
class UdpClient:
    """A UDP socket on loopback to talk raw SIP to the proxy."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    def __post_init__(self) -> None:
        self.sock.bind((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (LOOPBACK, port))

    def receive(self, timeout: float) -> bytes | None:
        """The next datagram, or None after ``timeout`` seconds of silence."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except socket.timeout:
            return None

    def final(self, timeout: float = 3.0) -> bytes | None:
        """The next response that is not a 1xx, or None if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            data = self.receive(left)
            if data is None:
                return None
            if not re.match(rb"SIP/2\.0 1\d\d ", data):
                return data
        return None


def status_of(data: bytes | None) -> int | None:
    match = re.match(rb"SIP/2\.0 (\d{3}) ", data or b"")
    return int(match.group(1)) if match else None


def header_values(data: bytes, name: str) -> list[str]:
    """Values of the header lines called ``name`` in a raw message (no compact forms)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    prefix = name.lower() + ":"
    return [line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:] if line.lower().startswith(prefix)]


def raw_request(client: UdpClient, method: str, target: str, *, to: str | None = None,
                headers: str = "") -> bytes:
    """A minimal ``method`` from ``client`` to ``target`` (a SIP URI), a new transaction and
    Call-ID each time; ``to`` is the To value (default ``<target>``), ``headers`` more
    header lines, each CRLF-ended."""
    tag = secrets.token_hex(6)
    return (f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{client.port};branch=z9hG4bK{tag};rport\r\n"
            f"From: <sip:tester@{DOMAIN}>;tag={tag}\r\nTo: {to or f'<{target}>'}\r\n"
            f"Call-ID: {tag}@{LOOPBACK}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{headers}"
            "Content-Length: 0\r\n\r\n").encode()
