"""The settings records: frozen, typed, and free of configobj.

``psp.config`` builds them from partysip.conf; every other module reads them.  They live
apart from the loader so that the pure core (plugins, proxy, core) can import and type
against them without importing configobj.  Section keys keep their names, except that
'-' becomes '_' (``record-route`` -> ``record_route``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    nameservers: tuple[str, ...]     # empty: the system's resolv.conf
    port: int
    timeout: float
    threads: int
    cache_size: int
    blocklist_time: float


@dataclass(frozen=True, slots=True)
class SyntaxSettings:
    allowed_schemes: tuple[str, ...]  # lowercase


@dataclass(frozen=True, slots=True)
class AuthSettings:
    force_use_of_407: str             # 'on' | 'detect' | 'off'
    nonce_lifetime: int
    algorithms: tuple[str, ...]       # 'SHA-256' and/or 'MD5', in order of preference


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    default_expires: int
    min_expires: int
    max_expires: int


@dataclass(frozen=True, slots=True)
class LocationSettings:
    """[localdb] and [sfull]."""
    mode: str
    record_route: bool


@dataclass(frozen=True, slots=True)
class StaticForward:
    host: str                         # lowercase, matched exactly against the R-URI host
    newhost: str


@dataclass(frozen=True, slots=True)
class StaticReject:
    host: str                         # lowercase host, or '*' for any
    code: int


@dataclass(frozen=True, slots=True)
class StaticSettings:
    mode: str
    record_route: bool
    forward: tuple[StaticForward, ...]
    reject: tuple[StaticReject, ...]


@dataclass(frozen=True, slots=True)
class FilterRule:
    regex: re.Pattern[str]            # compiled case-insensitive, like the original
    replacement: str                  # a sip:/sips: URI that may use %1 and %2


@dataclass(frozen=True, slots=True)
class FilterSettings:
    mode: str
    record_route: bool
    filter_scope: str                 # 'internal' | 'external' | 'both'
    forward: tuple[FilterRule, ...]


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    members: tuple[str, ...]
    mode: str                         # 'sf_forking' | 'sf_sequential'
    domain: str | None


@dataclass(frozen=True, slots=True)
class GroupsSettings:
    mode: str
    record_route: bool
    groups: tuple[Group, ...]


@dataclass(frozen=True, slots=True)
class PluginSection:
    """A third-party plugin's section, unvalidated: values by attribute ('-' becomes '_')."""
    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        if name == "values":  # not yet set while the instance is being built
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True, slots=True)
class User:
    """One [userinfo] subsection: a static user (and optionally a permanent contact)."""
    name: str
    aor: str
    login: str
    password: str | None
    ha1: str | None                   # lowercase hex, when given instead of a password
    contact: str | None


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration: the top-level keys under their original names, the plugin
    chain, every section's record by section name, and the static users."""
    path: str                         # the file loaded
    serverip: tuple[str, ...]
    serverip6: tuple[str, ...]
    servername: tuple[str, ...]       # lowercase, trailing dots stripped
    serverrealm: str
    serverport_udp: int
    serverport_tcp: int               # 0: no TCP
    plugins: tuple[str, ...]
    plugin_chain: tuple[tuple[str, str], ...]   # (plugin name, section name), in order
    loglevel: int
    log: str | None
    log_format: str
    banner: str
    authentication: bool
    recovery_file: str
    magicstring: str
    rfc3327: bool
    ipv6_enable: bool
    disable_check_for_osip_to_tag_in_cancel: bool
    t1: float
    t2: float
    t4: float
    timer_c: float
    fifo_size: int
    batch_linger: float
    cpu_affinity: str                # auto | off | a CPU number
    retry_after: int
    drain_time: float
    max_message_size: int
    tcp_max_connections: int
    tcp_idle_timeout: float
    tcp_max_buffer: int
    sections: Mapping[str, Any]       # section name -> one of the records above
    users: tuple[User, ...]

    @property
    def metrics(self) -> MetricsSettings:
        return self.sections["metrics"]

    @property
    def resolver(self) -> ResolverSettings:
        return self.sections["resolver"]
