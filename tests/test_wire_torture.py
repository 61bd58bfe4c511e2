"""Wire tests: every RFC 4475 torture message, exact bytes over UDP, to a running partysip.

Each message is sent from a raw socket; the proxy must give the answer its row below
accepts (or none), and then still answer an OPTIONS to itself with 200.  The table
states, row by row, which final statuses are accepted and why, from EXPECT.tsv
(../shared/corpus/rfc4475) and RFC 4475.  To keep every request inside this proxy (no
DNS, no forwarding to the RFC's example hosts), ``servername`` lists the RFC's example
domains: well-formed requests to them are answered by the location service (404 for
their unknown users, 200 for REGISTERs), which is "accept" in EXPECT's terms.  Two
messages carry a Route and are forwarded: wsinv to services.example.com (a dnsmasq on
loopback gives it an SRV record pointing at a UDP socket of the test) and mpart01 to
127.0.0.1:5080 (the test listens there).  A Route is no dialog of ours, so the proxy
relays them only because their Request-URIs name domains that are not ours
(chair-dnrc.example.com, example.org: left out of ``servername``) and ``ls_sfull`` is in
the chain; the Route stays their next hop.  That "UA" checks what arrives (wsinv's
unknown header unchanged, mpart01's binary body byte for byte) and answers 200.

Several messages share a Via branch and sent-by (cparam01/cparam02, escnull/regescrt):
by RFC 3261 17.2.3 the second is a retransmission of the first's transaction, so each
such row goes to a second server (a "batch"), started only for them.

Where responses go: a torture message keeps its own Via, so the proxy answers to the
source address with the Via's port (RFC 3261 18.2.2), over the Via's transport.  Each row
therefore gets a fresh 127.0.0.x, a UDP socket bound to the Via's port (5060 by default),
which sends the message, and a TCP listener on that port for Vias that say TCP or TLS.
"""

from __future__ import annotations

import random
import re
import secrets
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from conftest import corpus, free_port, start_server
from dnsfixture import dnsmasq, host, srv
from sipp_helpers import proxy_config, status_of

CORPUS = corpus("rfc4475")
SERVERNAMES = ("localhost, example.com, example.net, registrar.example.com, "
               "services.example.com, company.com, jasomi.com")
# wsinv's and mpart01's domains are foreign: ls_sfull relays them (see the module doc).
PLUGINS = "syntax auth rgstrar ls_localdb ls_sfull"
MPART01_ROUTE = ("127.0.0.1", 5080)  # mpart01's Route: a UA there answers 200
ANY = "any"  # no expectation at all: only the OPTIONS afterwards must succeed

# name -> (accepted final statuses, None meaning "no answer"; why).  Order: REGISTERs last,
# because escnull, regescrt, regbadct... create bindings (sip:user@example.com among them)
# that would change where later requests to those users go.
ACCEPT: dict[str, tuple[frozenset[int | None] | str, str]] = {
    "wsinv": (frozenset({200}), "valid INVITE: forwarded along its Route, unknown header unchanged; 200 relayed"),
    "intmeth": (frozenset({404}), "valid unknown method, odd user of ours: 404 (proxies do not 501 methods)"),
    "esc01": (frozenset({404}), "valid: user sips%3Auser%40example.com unknown: 404"),
    "esc02": (frozenset({404, 405, 484, 501}), "valid unknown method to the proxy's own domain, no user: "
              "rejected as its target (501/405) or by the location service (484/404); never 400"),
    "lwsdisp": (frozenset({404}), "valid OPTIONS to an unknown user: 404"),
    "longreq": (frozenset({404}), "valid (long) INVITE to an unknown user: 404 (Via TCP: over TCP)"),
    "semiuri": (frozenset({404}), "valid: user 'user;par=u@example.net' unknown: 404"),
    "transports": (frozenset({404}), "valid OPTIONS: 404"),
    "mpart01": (frozenset({200}), "valid MESSAGE: forwarded along its Route, body intact; the 200 relayed"),
    "unreason": (frozenset({None}), "a response to nothing of ours: parsed and dropped, never answered"),
    "noreason": (frozenset({None}), "a response to nothing of ours: parsed and dropped, never answered"),
    "badinv01": (frozenset({400}), "empty Via/Contact params: 400"),
    "clerr": (frozenset({400}), "Content-Length larger than the datagram: 400 over UDP"),
    "ncl": (frozenset({400}), "negative Content-Length: an error, 400"),
    "scalarlg": (frozenset({None}), "a response with out-of-range values: discarded"),
    "quotbal": (frozenset({400}), "unterminated quote: 400 (answered to the Via's port 5050)"),
    "ltgtruri": (frozenset({400}), "Request-URI in <>: 400"),
    "lwsruri": (frozenset({400}), "LWS inside the Request-URI: 400"),
    "lwsstart": (frozenset({400, 404}), "extra SP in the start line: 400, or accepted and normalised (404)"),
    "trws": (frozenset({400, 404}), "trailing SP after the version: 400, or accepted (404) (Via TCP)"),
    "escruri": (frozenset({400, 404}), "escaped headers in the Request-URI: 400, or stripped (404)"),
    "baddate": (frozenset({400, 404}), "non-GMT Date: accepted (404) or rejected (400)"),
    "badaspec": (frozenset({400, 404}), "spaces in the To addr-spec: 400, or ignored (404)"),
    "baddn": (frozenset({400}), "unquoted display names with commas: 400"),
    "badvers": (frozenset({505}), "SIP/7.0: 505 Version Not Supported"),
    "mismatch01": (frozenset({400}), "start-line method and CSeq method differ: 400"),
    "mismatch02": (frozenset({501, 400}), "unknown method with another CSeq method: 501 (400 acceptable)"),
    "bigcode": (frozenset({None}), "a response with a status above 699: dropped"),
    "badbranch": (frozenset({400, 404}), "branch is the bare magic cookie: 400, or RFC 2543 matching (404)"),
    "insuf": (frozenset({400, None}), "no Call-ID/From/To: 400 if a response can be built, else dropped"),
    "unkscm": (frozenset({416}), "unknown Request-URI scheme: 416 (Via TCP)"),
    "novelsc": (frozenset({416}), "soap.beep Request-URI: 416 (Via TCP)"),
    "bext01": (frozenset({420}), "Proxy-Require of unknown options: 420 with Unsupported (Via TLS)"),
    "invut": (frozenset({404}), "unknown Content-Type is no business of a proxy: 404"),
    "multi01": (frozenset({400}), "several Call-ID/To/From/Max-Forwards/CSeq: 400"),
    "mcl01": (frozenset({400}), "two Content-Lengths: 400"),
    "bcast": (frozenset({None}), "a 200 whose next Via is broadcast: dropped, not forwarded"),
    "zeromf": (frozenset({483, 200}), "OPTIONS with Max-Forwards 0: 483, or answered by the proxy (200)"),
    "sdp01": (frozenset({404}), "Accept without SDP is the UAS's business: 404"),
    "inv2543": (frozenset({404}), "RFC 2543 INVITE (no branch, no tags): accepted, 404"),
    "test": (ANY, "in the RFC archive without any expectation (no SIP version, no Via)"),
    "escnull": (frozenset({200}), "REGISTER with %00 in user parts: 200, two contacts bound"),
    "dblreq": (frozenset({200}), "REGISTER 200; the INVITE after it in the datagram is ignored"),
    "cparam01": (frozenset({200}), "REGISTER 200 (;unknownparam is a contact param)"),
    "cparam02": (frozenset({200}), "REGISTER 200 (;unknownparam is a URI param)"),
    "regescrt": (frozenset({200}), "REGISTER 200 (escaped Route header kept in the contact URI)"),
    "regaut01": (frozenset({200, 401}), "Authorization of an unknown scheme: ignored (200) or challenged (401)"),
    "regbadct": (frozenset({400, 200}), "Contact with ?headers but no <>: 400, or brackets inferred (200)"),
    "scalar02": (frozenset({400}), "CSeq above 2**32-1: 400 (Via TCP)"),
    "unksm2": (frozenset({400}), "REGISTER whose To is isbn: a registrar answers 400"),
}


def expect_rows() -> dict[str, dict[str, str]]:
    lines = (CORPUS / "EXPECT.tsv").read_text().splitlines()
    names = lines[0].split("\t")
    return {row[0]: dict(zip(names, row)) for row in (line.split("\t") for line in lines[1:] if line)}


def unfolded_head(data: bytes) -> bytes:
    return re.sub(rb"\r\n[ \t]+", b" ", data.split(b"\r\n\r\n", 1)[0])


def header(data: bytes, *names: bytes) -> bytes | None:
    """The first value of a header (any of ``names``, e.g. full and compact form) in raw bytes."""
    match = re.search(rb"^(?:" + b"|".join(names) + rb")\s*:\s*(.*?)\s*$", unfolded_head(data), re.I | re.M)
    return match.group(1) if match else None


def call_id(data: bytes) -> bytes | None:
    return header(data, b"call-id", b"i")


def top_via(data: bytes) -> tuple[str, int, bytes | None]:
    """(transport, port, branch) of the first Via of a raw message; ('UDP', 5060, None) if none."""
    via = header(data, b"via", b"v") or b""
    match = re.match(rb"SIP\s*/\s*[\d.]+\s*/\s*(\w+)\s+([^;,\s:]+)\s*(?::\s*(\d+))?([^,]*)", via, re.I)
    if not match:
        return "UDP", 5060, None
    branch = re.search(rb"branch\s*=\s*([^;,\s]+)", match.group(4), re.I)
    port = int(match.group(3) or 5060)
    return match.group(1).decode().upper(), port, (match.group(2).lower() + b":%d;" % port
                                                    + branch.group(1) if branch else None)


def batches() -> dict[str, int]:
    """Row -> server number: rows whose (branch, sent-by, method) an earlier row of the same
    server already used would match its transaction (17.2.3), so they move to the next one."""
    used: list[set[bytes]] = []
    placed = {}
    for name in ACCEPT:
        path = CORPUS / f"{name}.dat"
        data = path.read_bytes() if path.exists() else b""
        key = None if data.startswith(b"SIP/") else top_via(data)[2]  # responses make no transaction
        key = key and key + b" " + data.split(b" ", 1)[0]
        index = next((i for i, keys in enumerate(used) if not key or key not in keys), len(used))
        if index == len(used):
            used.append(set())
        if key:
            used[index].add(key)
        placed[name] = index
    return placed


class Catcher:
    """A fresh 127.0.0.x with a UDP socket and a TCP listener on one port."""

    def __init__(self, port: int) -> None:
        for octet in random.sample(range(2, 255), 60):
            host = f"127.0.0.{octet}"
            udp, tcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket()
            try:
                udp.bind((host, port))
                tcp.bind((host, port))
            except OSError:
                udp.close(), tcp.close()
                continue
            tcp.listen(4)
            self.host, self.port, self.udp, self.tcp = host, port, udp, tcp
            return
        raise RuntimeError(f"no free 127.0.0.x for port {port}")

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()

    def messages(self, deadline: float, *extra: socket.socket) -> Iterator[tuple[socket.socket, bytes]]:
        """(socket, message) for every datagram or TCP message received until ``deadline``,
        on our UDP socket, our TCP listener's connections and the ``extra`` UDP sockets."""
        selector = selectors.DefaultSelector()
        for sock in (self.udp, self.tcp, *extra):
            selector.register(sock, selectors.EVENT_READ)
        buffers: dict[socket.socket, bytes] = {}
        try:
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    sock = key.fileobj
                    if sock is self.tcp:
                        conn, _ = self.tcp.accept()
                        selector.register(conn, selectors.EVENT_READ)
                        buffers[conn] = b""
                    elif sock not in buffers:
                        yield sock, sock.recv(65535)
                    else:
                        yield from self._stream(selector, sock, buffers)
        finally:
            for conn in buffers:
                conn.close()
            selector.close()

    @staticmethod
    def _stream(selector, sock, buffers) -> Iterator[tuple[socket.socket, bytes]]:
        chunk = sock.recv(65535)
        if not chunk:
            selector.unregister(sock)
            return
        buffers[sock] += chunk
        while b"\r\n\r\n" in buffers[sock]:
            head, _, rest = buffers[sock].partition(b"\r\n\r\n")
            length = re.search(rb"^(?:content-length|l)\s*:\s*(\d+)", head, re.I | re.M)
            size = int(length.group(1)) if length else 0
            if len(rest) < size:
                break
            buffers[sock] = rest[size:]
            yield sock, head + b"\r\n\r\n" + rest[:size]


def answer_200(request: bytes) -> bytes:
    """What a UA answers: 200 with the request's Vias, From, To (tagged), Call-ID, CSeq."""
    keep = [line for line in unfolded_head(request).split(b"\r\n")[1:]
            if re.match(rb"(via|v|from|f|call-id|i|cseq)\s*:", line, re.I)]
    to = header(request, b"to", b"t")
    return b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"To: " + to + b";tag=downstream", b"Content-Length: 0", b"", b""])


def probe_for(host: str, port: int, server_port: int, probe_id: str) -> bytes:
    """An OPTIONS to the proxy itself from host:port."""
    return (f"OPTIONS sip:127.0.0.1:{server_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            f"From: <sip:probe@localhost>;tag={secrets.token_hex(4)}\r\nTo: <sip:127.0.0.1:{server_port}>\r\n"
            f"Call-ID: {probe_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def udp_socket(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        pytest.fail(f"cannot listen on {address} for a forwarded torture message: {error}")
    return sock


@pytest.fixture(scope="module")
def wsinv_target():
    """The UDP socket services.example.com resolves to (SRV), for wsinv's Route."""
    sock = udp_socket(("127.0.0.1", free_port()))
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, wsinv_target):
    """servers(n): the n-th torture server, started on first use (all share one dnsmasq)."""
    # dnsmasq is made authoritative for services.example.com too, so that its NAPTR query
    # gets an empty answer (RFC 3263 4.1: then SRV) rather than a refusal.
    records = ("--auth-zone=services.example.com",
               srv("_sip._udp.services.example.com", "wsinv-target.test", wsinv_target.getsockname()[1], 10, 0),
               host("wsinv-target.test", "127.0.0.1"))
    running = {}
    with dnsmasq(records) as dns:
        resolver = {"nameservers": "127.0.0.1", "port": dns.port, "timeout": 1.0}

        def get(index: int):
            if index not in running:
                directory = tmp_path_factory.mktemp(f"torture{index}")
                running[index] = start_server(directory, **proxy_config(
                    "statefull", plugins=PLUGINS, servername=SERVERNAMES, sections={"resolver": resolver}))
            return running[index]
        yield get
        for server in running.values():
            server.stop()
            server.notify.close()


@pytest.fixture
def forward_target(request, wsinv_target):
    """Where the row's message is forwarded to, if anywhere, and what must arrive there."""
    name = request.getfixturevalue("name")
    if name == "wsinv":
        yield wsinv_target, b"\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    elif name == "mpart01":
        sock = udp_socket(MPART01_ROUTE)
        yield sock, (CORPUS / "mpart01.dat").read_bytes().split(b"\r\n\r\n", 1)[1]
        sock.close()
    else:
        yield None, b""


def test_the_table_covers_every_message_and_drops_only_responses():
    rows = expect_rows()
    files = {path.stem for path in CORPUS.glob("*.dat")}
    assert set(ACCEPT) == set(rows) == files
    for name, (accepted, _) in ACCEPT.items():
        if rows[name]["kind"] == "response":
            assert accepted == frozenset({None}), f"{name}: a response is never answered"


@pytest.mark.parametrize("name", list(ACCEPT))
def test_torture_message(servers, name, forward_target):
    accepted, why = ACCEPT[name]
    server = servers(batches()[name])
    data = (CORPUS / f"{name}.dat").read_bytes()
    transport, port, _ = top_via(data)
    target, must_arrive = forward_target
    extra = [target] if target else []
    catcher = Catcher(port)
    probe_id = f"probe-{secrets.token_hex(6)}"
    finals: list[bytes] = []
    forwarded: list[bytes] = []
    probe_answer = None
    wants_answer = accepted != ANY and None not in accepted
    try:
        catcher.udp.sendto(data, ("127.0.0.1", server.udp_port))
        catcher.udp.sendto(probe_for(catcher.host, port, server.udp_port, probe_id), ("127.0.0.1", server.udp_port))
        # The proxy handles messages in order: once the probe is answered, every answer it
        # made itself over UDP was sent.  An answer over TCP may still be connecting, and a
        # forwarded request's answer comes from downstream: for those, wait (3 s at most).
        settled_by_probe = not wants_answer or (transport == "UDP" and not target)
        for sock, message in catcher.messages(time.monotonic() + 3.0, *extra):
            if extra and sock is extra[0]:
                forwarded.append(message)
                sock.sendto(answer_200(message), ("127.0.0.1", server.udp_port))
            elif call_id(message) == probe_id.encode():
                probe_answer = probe_answer or message
            elif not re.match(rb"SIP/2\.0 1\d\d ", message):
                finals.append(message)
            if probe_answer and (finals or settled_by_probe):
                break
    finally:
        catcher.close()
    statuses = sorted({status_of(m) for m in finals})
    shown = "\n".join(m.decode(errors="replace") for m in finals[:2])
    assert status_of(probe_answer) == 200, f"OPTIONS after {name} got {probe_answer!r}\n{server.log()[-2000:]}"
    # One request, one answer (dblreq: the INVITE glued after the REGISTER is noise).
    assert len({(call_id(m), header(m, b"cseq")) for m in finals}) <= 1, shown
    if accepted != ANY:
        got = statuses[0] if statuses else None
        assert got in accepted, (f"{name} (via {transport}, answers to {catcher.host}:{port}): got {got}, "
                                 f"accepted {sorted(accepted, key=str)}: {why}\n{shown}\n{server.log()[-1500:]}")
    if name == "bext01":  # 420 lists the Proxy-Require options (RFC 3261 16.3 item 5)
        unsupported = {o.strip() for o in (header(finals[0], b"unsupported") or b"").decode().split(",")}
        assert unsupported == {"noProxiesSupportThis", "norDoAnyProxiesSupportThis"}, shown
    if target:  # forwarded, with what RFC 4475 says a proxy must leave untouched
        assert forwarded, f"{name} was not forwarded"
        assert must_arrive in forwarded[0], forwarded[0].decode(errors="replace")
