"""Helpers shared by the proxy tests (no tests here): a proxy on a fake clock, and its peers.

The proxy is built as the server builds it (settings from configuration text, the real
chain, location store and registrar), driven through a real Core; the network is
``test_transaction_fixtures.Net``: messages go through their wire form both ways.
"""

from __future__ import annotations

from test_plugins_support import make_services
from test_transaction_fixtures import Net

from psp.core import Core
from psp.events import Peer
from psp.location import Binding, LocationStore
from psp.message import Message
from psp.plugins.base import Plugin
from psp.plugins.chain import Chain
from psp.proxy import Proxy
from psp.rfc3263 import Blocklist
from psp.timers import TimerSettings

PROXY = "192.0.2.1"
UAC = Peer("udp", "192.0.2.10", 5060)
BOB1 = Peer("udp", "192.0.2.21", 5060)
BOB2 = Peer("udp", "192.0.2.22", 5060)
BOB = "sip:bob@example.com"
CHAIN = "syntax rgstrar ls_localdb ls_sfull"


def make_proxy(conf: str = "", *, plugins: str = CHAIN, store: LocationStore | None = None,
               timers: TimerSettings = TimerSettings(), blocklist: Blocklist | None = None,
               extra: tuple[type[Plugin], ...] = ()) -> tuple[Net, Proxy]:
    """A Core with our proxy as TU, for servername example.com on 192.0.2.1:5060.

    ``extra`` are plugin classes loaded after the configured ones (without a section).
    """
    services = make_services(f"serverip = {PROXY}\nplugins = {plugins}\n{conf}", store)
    chain = Chain.from_settings(services.settings, services)
    if extra:
        chain = Chain(chain.plugins + tuple(cls(None, services) for cls in extra))
    proxy = Proxy.from_settings(services.settings, chain, services, blocklist)
    return Net(Core(timers, proxy)), proxy


def bob_store(*contacts: tuple[str, float]) -> LocationStore:
    """Bindings of bob@example.com: (contact, q), all live until t=3600."""
    store = LocationStore()
    for number, (contact, q) in enumerate(contacts):
        store.add(Binding(BOB, contact, 3600.0, q=q, updated_at=float(number)))
    return store


def label(message: Message) -> int | str:
    return message.status if hasattr(message, "status") else message.method  # type: ignore[attr-defined]


def labels(sent: list) -> list[tuple[Peer, int | str]]:
    return [(peer, label(message)) for peer, message in sent]


def by_peer(sent: list) -> dict[Peer, list[Message]]:
    found: dict[Peer, list[Message]] = {}
    for peer, message in sent:
        found.setdefault(peer, []).append(message)
    return found


def only(sent: list) -> tuple[Peer, Message]:
    [(peer, message)] = sent
    return peer, message
