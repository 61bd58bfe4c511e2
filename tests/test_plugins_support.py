"""Helpers shared by the plugin tests (no tests here): requests, services, contexts.

The services are the real ones (LocationStore, Registrar, Authenticator, settings from
psp.config), built from a few lines of configuration.
"""

from __future__ import annotations

from typing import Any

from psp.config import load_text
from psp.digest import Authenticator, make_user
from psp.events import Peer
from psp.location import LocationStore
from psp.message import Request
from psp.parser import parse
from psp.plugins.base import RequestContext, Services
from psp.registrar import Registrar
from psp.uri import URI

SECRET = b"plugin-tests"
CLIENT = Peer("udp", "192.0.2.7", 5060)


def make_request(uri: str = "sip:bob@example.com", method: str = "INVITE", extra: str = "",
                 via: str = "SIP/2.0/UDP client.example.net:5060;branch=z9hG4bKc1") -> Request:
    """A parsed request from alice@example.net; ``extra`` is more header lines (CRLF ended)."""
    text = (f"{method} {uri} SIP/2.0\r\nVia: {via}\r\n"
            "From: <sip:alice@example.net>;tag=f1\r\nTo: <sip:bob@example.com>\r\n"
            f"Call-ID: plugins-1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}"
            "Content-Length: 0\r\n\r\n")
    request = parse(text.encode())
    assert isinstance(request, Request)
    return request


def make_services(conf: str = "plugins = syntax", store: LocationStore | None = None) -> Services:
    """Services for servername example.com and the given configuration lines."""
    settings = load_text("servername = example.com\n" + conf)
    authenticator = None
    if settings.authentication:
        auth = settings.sections["auth"]
        users = [make_user(user.aor, user.login, settings.serverrealm, password=user.password)
                 for user in settings.users]
        authenticator = Authenticator(settings.serverrealm, "nonce-secret", users,
                                      algorithms=auth.algorithms, force_407=auth.force_use_of_407 == "on")
    return Services(store=store if store is not None else LocationStore(),
                    registrar=Registrar(settings.servername), authenticator=authenticator,
                    users=settings.users,
                    settings=settings, secret=SECRET)


DEFAULT_SERVICES = make_services()


def is_local(services: Services) -> Any:
    return lambda uri: isinstance(uri, URI) and services.registrar.is_local(uri.host)


def context(request: Request | None = None, services: Services | None = None, routed: bool = False,
            now: float = 100.0) -> RequestContext:
    """The context the proxy would give the chain for ``request``."""
    services = services or DEFAULT_SERVICES
    return RequestContext(request=request or make_request(), source=CLIENT, now=now, routed=routed,
                          is_local=is_local(services), services=services)
