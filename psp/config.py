"""Configuration: partysip.conf (configobj) in, frozen typed Settings out.

This is the only module that imports configobj.  The file keeps the original PartySIP
key names at the top level and has one ``[section]`` per plugin.  Loading takes two
passes: the first reads ``plugins``/``plugins_config`` to learn which section each plugin
uses (one plugin type may run twice with two sections), the second validates the whole
file against a configspec built for that chain.  Every problem is collected and reported
at once, one line each: ``FILE:LINE: [section] key: what is wrong``.  Unknown keys and
sections are problems too (a typo must not pass silently), except inside the section of
a third-party plugin, whose keys only that plugin knows.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from configobj import ConfigObj, ConfigObjError, get_extra_values
from configobj.validate import ValidateError, Validator

from psp.settings import (AuthSettings, FilterRule, FilterSettings, Group, GroupsSettings,
                          LocationSettings, MetricsSettings, PluginSection, RegistrarSettings,
                          ResolverSettings, Settings, StaticForward, StaticReject, StaticSettings,
                          SyntaxSettings, User)

# The records are re-exported: callers of load() find everything they need here.
__all__ = [
    "AuthSettings", "BUILTIN_PLUGINS", "ConfigError", "FilterRule", "FilterSettings", "Group",
    "GroupsSettings", "LocationSettings", "MetricsSettings", "PLUGIN_SECTIONS", "PluginSection",
    "RegistrarSettings", "ResolverSettings", "Settings", "StaticForward", "StaticReject",
    "StaticSettings", "SyntaxSettings", "User", "load", "load_text",
]

# Built-in plugin -> its default section, which is also the kind of section it reads.
PLUGIN_SECTIONS: Mapping[str, str] = MappingProxyType({
    "syntax": "syntax", "auth": "auth", "rgstrar": "rgstrar", "ls_localdb": "localdb",
    "ls_sfull": "sfull", "ls_static": "static", "filter": "filter", "groups": "groups",
})
# Transports are plugins in the original too, but they read only top-level keys.
SECTIONLESS_PLUGINS = frozenset({"udp", "tcp"})
BUILTIN_PLUGINS = frozenset(PLUGIN_SECTIONS) | SECTIONLESS_PLUGINS
_DOTTED_PLUGIN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_SECTION_NAME = re.compile(r"^[\w.-]+$")
_SIP_URI = re.compile(r"^sips?:\S+$", re.IGNORECASE)
_URI_USER = re.compile(r"^sips?:([^@:;]+)(?::[^@]*)?@", re.IGNORECASE)
_HEX_HA1 = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{64})$", re.IGNORECASE)
_MODE_STATEFULL = "choice(statefull, redirect, default=statefull)"
# RFC 3261 16.6 item 11: Timer C MUST be greater than 3 minutes.
TIMER_C_FLOOR = 180.0


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------- value checks
# Each check gets the raw configobj value (a string, or a list for comma lists) and the
# configspec's arguments as strings, and returns the typed value or raises ValidateError.

def _single(value: Any) -> str:
    if isinstance(value, list):
        raise ValidateError("expected one value, got a list (quote values that contain commas)")
    return value


def _items(value: Any) -> list[str]:
    """A list value as its elements: a lone string is a list of one ('' of none)."""
    if isinstance(value, list):
        return value
    return [value] if value else []


def _words(value: Any, min_count: str = "0") -> list[str]:
    """Comma lists and the original's whitespace-separated lists alike."""
    words = [word for item in _items(value) for word in item.split()]
    if len(words) < int(min_count):
        raise ValidateError(f"needs at least {min_count} value(s)")
    return words


def _check_int(value: Any, low: str, high: str | None = None) -> int:
    text = _single(value)
    try:
        number = int(text)
    except ValueError:
        raise ValidateError(f"{text!r} is not an integer") from None
    if number < int(low) or (high is not None and number > int(high)):
        limits = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValidateError(f"must be {limits}, got {number}")
    return number


def _check_float(value: Any, low: str) -> float:
    text = _single(value)
    try:
        number = float(text)
    except ValueError:
        raise ValidateError(f"{text!r} is not a number") from None
    if not number >= float(low):  # also rejects nan
        raise ValidateError(f"must be at least {low}, got {text}")
    return number


def _check_bool(value: Any) -> bool:
    text = _single(value).lower()
    if text in ("on", "yes", "true", "1"):
        return True
    if text in ("off", "no", "false", "0"):
        return False
    raise ValidateError(f"must be on or off, got {text!r}")


def _check_choice(value: Any, *options: str) -> str:
    text = _single(value)
    if text not in options:
        raise ValidateError(f"must be one of {'|'.join(options)}, got {text!r}")
    return text


def _check_cpu(value: Any) -> str:
    """cpu_affinity: auto, off, or the number of a CPU this process may run on."""
    text = _single(value).lower()
    if text in ("auto", "off"):
        return text
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not text.isdigit() or int(text) not in allowed:
        choices = ", ".join(map(str, allowed)) or "none: this system cannot pin threads"
        raise ValidateError(f"must be auto, off or a CPU this process may run on ({choices}), got {text!r}")
    return str(int(text))


def _check_choices(value: Any, *options: str) -> tuple[str, ...]:
    """A non-empty list of options, matched case-insensitively, kept in the options' spelling."""
    spelling = {option.lower(): option for option in options}
    words = _words(value, "1")
    unknown = [word for word in words if word.lower() not in spelling]
    if unknown:
        raise ValidateError(f"unknown value(s) {', '.join(unknown)}: use {'|'.join(options)}")
    return tuple(spelling[word.lower()] for word in words)


def _check_text(value: Any) -> str:
    return _single(value)


def _check_word_list(value: Any, min_count: str = "0") -> tuple[str, ...]:
    return tuple(_words(value, min_count))


def _check_ip_list(value: Any, family: str, min_count: str) -> tuple[str, ...]:
    addresses = _words(value, min_count)
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ValidateError(f"{text!r} is not an IP address") from None
        if family != "any" and address.version != int(family):
            raise ValidateError(f"{text!r} is not an IPv{family} address")
    return tuple(addresses)


def _check_plugins(value: Any) -> tuple[str, ...]:
    names = _words(value, "1")
    for name in names:
        if name not in BUILTIN_PLUGINS and not _DOTTED_PLUGIN.match(name):
            raise ValidateError(f"{name!r} is neither a built-in plugin "
                                f"({' '.join(sorted(BUILTIN_PLUGINS))}) nor a dotted path pkg.mod:Class")
    return tuple(names)


def _check_uri(value: Any) -> str:
    text = _single(value)
    if not _SIP_URI.match(text):
        raise ValidateError(f"{text!r} is not a sip: or sips: URI")
    return text


def _check_uri_list(value: Any, min_count: str) -> tuple[str, ...]:
    # the original separated group members with '|'
    uris = [uri for word in _words(value, min_count) for uri in word.split("|") if uri]
    return tuple(_check_uri(uri) for uri in uris)


def _check_ha1(value: Any) -> str:
    text = _single(value)
    if not _HEX_HA1.match(text):
        raise ValidateError("must be 32 (MD5) or 64 (SHA-256) hexadecimal digits")
    return text.lower()


def _fields(item: str, count: int, form: str) -> list[str]:
    parts = item.split(None, count - 1)
    if len(parts) != count:
        raise ValidateError(f"{item!r} is not of the form '{form}'")
    return parts


def _check_forwards(value: Any) -> tuple[StaticForward, ...]:
    pairs = (_fields(item, 2, "host newhost") for item in _items(value))
    return tuple(StaticForward(host.lower(), newhost) for host, newhost in pairs)


def _check_rejects(value: Any) -> tuple[StaticReject, ...]:
    rejects = []
    for item in _items(value):
        host, code = _fields(item, 2, "host|* code")
        rejects.append(StaticReject(host.lower(), _check_int(code, "300", "699")))
    return tuple(rejects)


def _check_rules(value: Any) -> tuple[FilterRule, ...]:
    rules = []
    for item in _items(value):
        pattern, replacement = _fields(item, 2, "regex sip:replacement")
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as error:
            raise ValidateError(f"bad regex {pattern!r}: {error}") from None
        rules.append(FilterRule(regex, _check_uri(replacement)))
    return tuple(rules)


_VALIDATOR = Validator({
    "int_range": _check_int, "float_range": _check_float, "on_off": _check_bool,
    "choice": _check_choice, "choices": _check_choices, "cpu": _check_cpu, "text": _check_text,
    "word_list": _check_word_list, "ip_list": _check_ip_list, "plugin_list": _check_plugins,
    "uri": _check_uri, "uri_list": _check_uri_list, "ha1": _check_ha1,
    "forwards": _check_forwards, "rejects": _check_rejects, "rules": _check_rules,
})

# ---------------------------------------------------------------- the configspec

_TOP_SPEC = """
serverip = ip_list(4, 1, default=list("127.0.0.1"))
serverip6 = ip_list(6, 0, default=list())
servername = word_list(1, default=list("localhost"))
serverrealm = text(default=None)
serverport_udp = int_range(0, 65535, default=5060)
serverport_tcp = int_range(0, 65535, default=5060)
plugins = plugin_list()
plugins_config = word_list(default=list())
loglevel = int_range(0, 8, default=4)
log = text(default=None)
log_format = choice(text, json, default=text)
banner = text(default="PartySIP")
authentication = on_off(default=off)
recovery_file = text(default="/var/lib/partysip/location.sqlite")
magicstring = text(default="")
rfc3327 = on_off(default=off)
ipv6_enable = on_off(default=off)
disable_check_for_osip_to_tag_in_cancel = on_off(default=off)
t1 = float_range(0.001, default=0.5)
t2 = float_range(0.001, default=4.0)
t4 = float_range(0.001, default=5.0)
timer_c = float_range(1, default=185.0)
fifo_size = int_range(1, default=10000)
batch_linger = float_range(0, default=0.0)
cpu_affinity = cpu(default=auto)
retry_after = int_range(0, default=5)
drain_time = float_range(0, default=5.0)
max_message_size = int_range(1024, default=65535)
tcp_max_connections = int_range(1, default=1024)
tcp_idle_timeout = float_range(1, default=300)
tcp_max_buffer = int_range(1024, default=262144)
"""

_SECTION_SPECS: Mapping[str, str] = MappingProxyType({
    "metrics": """enabled = on_off(default=off)
        address = text(default="127.0.0.1")
        port = int_range(0, 65535, default=9090)""",
    "resolver": """nameservers = ip_list(any, 0, default=list())
        port = int_range(0, 65535, default=53)
        timeout = float_range(0.01, default=2.0)
        threads = int_range(1, 64, default=1)
        cache_size = int_range(0, default=10000)
        blocklist_time = float_range(0, default=30.0)""",
    "syntax": 'allowed_schemes = word_list(1, default=list("sip", "sips"))',
    "auth": """force_use_of_407 = choice(on, detect, off, default=off)
        nonce_lifetime = int_range(1, default=300)
        algorithms = choices(SHA-256, MD5, default=list("SHA-256", "MD5"))""",
    "rgstrar": """default_expires = int_range(1, default=3600)
        min_expires = int_range(1, default=60)
        max_expires = int_range(1, default=86400)""",
    "localdb": """mode = choice(sf_forking, sf_sequential, statefull, redirect, default=statefull)
        record-route = on_off(default=off)""",
    "sfull": f"mode = {_MODE_STATEFULL}\nrecord-route = on_off(default=off)",
    "static": f"""mode = {_MODE_STATEFULL}
        record-route = on_off(default=off)
        forward = forwards(default=list())
        reject = rejects(default=list())""",
    "filter": f"""mode = {_MODE_STATEFULL}
        record-route = on_off(default=off)
        filter_scope = choice(internal, external, both, default=both)
        forward = rules(default=list())""",
    "groups": f"""mode = {_MODE_STATEFULL}
        record-route = on_off(default=off)
        [[__many__]]
        members = uri_list(1)
        mode = choice(sf_forking, sf_sequential, default=sf_forking)
        domain = text(default=None)""",
    "userinfo": """[[__many__]]
        aor = uri()
        login = text(default=None)
        password = text(default=None)
        ha1 = ha1(default=None)
        contact = uri(default=None)""",
})
_FIXED_SECTIONS = ("metrics", "resolver", "userinfo")


# ---------------------------------------------------------------- problems and where they are

_SECTION_LINE = re.compile(r"^\s*(\[+)\s*(['\"]?)(.*?)\2\s*\]+")
_KEY_LINE = re.compile(r"^\s*(['\"]?)([^'\"=\[#\s][^=]*?)\1\s*=")
_AT_LINE = re.compile(r"\s*at line \d+\.?$")


def _line_index(lines: list[str]) -> dict[tuple[str, ...], int]:
    """Where each section and key is, by path: configobj itself keeps no line numbers."""
    index: dict[tuple[str, ...], int] = {}
    path: tuple[str, ...] = ()
    for number, line in enumerate(lines, 1):
        if match := _SECTION_LINE.match(line):
            path = path[:len(match.group(1)) - 1] + (match.group(3),)
            index.setdefault(path, number)
        elif match := _KEY_LINE.match(line):
            index.setdefault(path + (match.group(2),), number)
    return index


class _Report:
    """Collects problems as ``FILE[:LINE]: [section] key: message`` lines."""

    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self._found: list[tuple[int, str]] = []
        self._index = _line_index(lines)

    def add(self, section: tuple[str, ...], key: str | None, message: str) -> None:
        line = self._index.get(section + (key,)) if key else None
        line = line or self._index.get(section)
        subject = " ".join(part for part in ("".join(f"[{s}]" for s in section), key) if part)
        self.add_line(line, ": ".join(part for part in (subject, message) if part))

    def add_line(self, line: int | None, message: str) -> None:
        location = f"{self.path}:{line}" if line else self.path
        self._found.append((line or 0, f"{location}: {message}"))

    def complainer(self, section: tuple[str, ...]) -> Callable[[str, str], None]:
        return lambda key, message: self.add(section, key, message)

    def error(self) -> ConfigError:
        """Every problem found so far, in the order of the file."""
        return ConfigError([problem for _, problem in sorted(self._found, key=lambda p: p[0])])

    def check(self) -> None:
        if self._found:
            raise self.error()


def _parse(lines: list[str], report: _Report, configspec: ConfigObj | None = None) -> ConfigObj:
    try:
        return ConfigObj(lines, configspec=configspec, interpolation=False, list_values=True)
    except ConfigObjError as failure:
        errors = getattr(failure, "errors", None) or [failure]
    for error in errors:
        message = _AT_LINE.sub("", str(error))
        text = getattr(error, "line", "").strip()
        if text and text not in message:
            message = f"{message}: {text}"
        report.add_line(getattr(error, "line_number", None), message)
    raise report.error()


# ---------------------------------------------------------------- which plugin reads which section

def _default_section(plugin: str) -> str:
    if plugin in PLUGIN_SECTIONS:
        return PLUGIN_SECTIONS[plugin]
    return plugin.rpartition(":")[2].lower()  # 'pkg.mod:Class' -> 'class'; 'udp' -> 'udp'


def _plugin_chain(raw: ConfigObj, report: _Report) -> tuple[tuple[str, str], ...]:
    try:
        plugins = _check_plugins(raw.get("plugins", ""))
        names = _check_word_list(raw.get("plugins_config", ""))
    except ValidateError:
        return ()  # the second pass reports it against its key
    if names and len(names) != len(plugins):
        report.add((), "plugins_config", f"has {len(names)} section name(s) but plugins has "
                   f"{len(plugins)} plugin(s): give one section per plugin, by position")
        names = ()
    for name in names:
        if not _SECTION_NAME.match(name):
            report.add((), "plugins_config", f"{name!r} is not a usable section name")
            names = ()  # the configspec is built from these names: keep bad ones out of it
    sections = names or tuple(_default_section(plugin) for plugin in plugins)
    return tuple(zip(plugins, sections))


def _section_kinds(chain: tuple[tuple[str, str], ...], report: _Report) -> dict[str, str | None]:
    """Section name -> kind of spec it is validated with (None: a third-party plugin's)."""
    kinds: dict[str, str | None] = {}
    for plugin, section in chain:
        if plugin in SECTIONLESS_PLUGINS:
            continue
        kind = PLUGIN_SECTIONS.get(plugin)
        if section in _FIXED_SECTIONS or kinds.get(section, kind) != kind:
            report.add((), "plugins_config", f"section [{section}] cannot be used by {plugin}: "
                       "another plugin or the server reads it")
            continue
        kinds[section] = kind
    for kind in (*_FIXED_SECTIONS, *PLUGIN_SECTIONS.values()):
        kinds.setdefault(kind, kind)
    return kinds


def _configspec(kinds: Mapping[str, str | None]) -> ConfigObj:
    lines = _TOP_SPEC.splitlines()
    for section, kind in kinds.items():
        if kind is not None:
            lines.append(f"[{section}]")
            lines.extend(line.strip() for line in _SECTION_SPECS[kind].splitlines())
    return ConfigObj(lines, list_values=False, _inspec=True)


# ---------------------------------------------------------------- validation

def _failures(result: Any, trail: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if result is True:
        return []
    if not isinstance(result, dict):
        return [(trail, result)]
    return [failure for key, sub in result.items() for failure in _failures(sub, trail + (key,))]


def _validate(cfg: ConfigObj, kinds: Mapping[str, str | None], report: _Report) -> None:
    for trail, error in _failures(cfg.validate(_VALIDATOR, preserve_errors=True)):
        report.add(trail[:-1], trail[-1], "required, but missing" if error is False else str(error))
    for section, name in get_extra_values(cfg):
        node = cfg
        for part in section:
            node = node[part]
        if isinstance(node[name], dict):
            if not section and kinds.get(name, "") is None:
                continue  # a third-party plugin's section: only the plugin knows its keys
            report.add(section + (name,), None, "unknown section" + _hint(name, node.configspec.sections))
        else:
            report.add(section, name, "unknown key" + _hint(name, node.configspec.scalars))


def _hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, [key for key in known if key != "__many__"], 1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------- typed records from valid values

def _mode_rr(values: Mapping[str, Any]) -> tuple[str, bool]:
    return values["mode"], values["record-route"]


def _build_rgstrar(values: Mapping[str, Any], complain: Callable[[str, str], None]) -> RegistrarSettings:
    settings = RegistrarSettings(values["default_expires"], values["min_expires"], values["max_expires"])
    if not settings.min_expires <= settings.default_expires <= settings.max_expires:
        complain("default_expires", "must lie between min_expires and max_expires")
    return settings


def _build_group(name: str, values: Mapping[str, Any]) -> Group:
    domain = values["domain"]
    return Group(name, values["members"], values["mode"], domain.lower() if domain else None)


def _build_groups(values: Any, _complain: Callable[[str, str], None]) -> GroupsSettings:
    groups = tuple(_build_group(name, values[name]) for name in values.sections)
    return GroupsSettings(*_mode_rr(values), groups)


_BUILDERS: Mapping[str, Callable[[Any, Callable[[str, str], None]], Any]] = MappingProxyType({
    "metrics": lambda v, _: MetricsSettings(v["enabled"], v["address"], v["port"]),
    "resolver": lambda v, _: ResolverSettings(
        v["nameservers"], v["port"], v["timeout"], v["threads"], v["cache_size"], v["blocklist_time"]),
    "syntax": lambda v, _: SyntaxSettings(tuple(scheme.lower() for scheme in v["allowed_schemes"])),
    "auth": lambda v, _: AuthSettings(v["force_use_of_407"], v["nonce_lifetime"], v["algorithms"]),
    "rgstrar": _build_rgstrar,
    "localdb": lambda v, _: LocationSettings(*_mode_rr(v)),
    "sfull": lambda v, _: LocationSettings(*_mode_rr(v)),
    "static": lambda v, _: StaticSettings(*_mode_rr(v), v["forward"], v["reject"]),
    "filter": lambda v, _: FilterSettings(*_mode_rr(v), v["filter_scope"], v["forward"]),
    "groups": _build_groups,
})


def _build_user(name: str, values: Mapping[str, Any], complain: Callable[[str, str], None]) -> User:
    password, ha1, login = values["password"], values["ha1"], values["login"]
    if (password is None) == (ha1 is None):
        complain("password", "give exactly one of password and ha1")
    if login is None:
        match = _URI_USER.match(values["aor"])
        if match is None:
            complain("login", "the aor has no user part: give a login")
        login = match.group(1) if match else ""
    return User(name, values["aor"], login, password, ha1, values["contact"])


def _build_users(userinfo: Any, report: _Report) -> tuple[User, ...]:
    users: list[User] = []
    by_login: dict[str, User] = {}  # a dict, not a scan: deployments list 100,000 users
    for name in userinfo.sections:
        user = _build_user(name, userinfo[name], report.complainer(("userinfo", name)))
        other = by_login.setdefault(user.login.lower(), user)
        if other is not user:
            report.add(("userinfo", name), "login", f"{user.login!r} is also the login of [{other.name}]")
        users.append(user)
    return tuple(users)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({key.replace("-", "_"): _freeze(sub) for key, sub in value.items()})
    return tuple(value) if isinstance(value, list) else value


def _build_sections(cfg: ConfigObj, kinds: Mapping[str, str | None], report: _Report) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for name, kind in kinds.items():
        if kind is None:
            sections[name] = PluginSection(_freeze(cfg.get(name, {})))
        elif kind in _BUILDERS:
            sections[name] = _BUILDERS[kind](cfg[name], report.complainer((name,)))
    return sections


_DERIVED = frozenset({"path", "servername", "serverrealm", "log", "plugin_chain", "sections", "users"})
_PLAIN_KEYS = tuple(field.name for field in dataclasses.fields(Settings) if field.name not in _DERIVED)


def _build_settings(cfg: ConfigObj, path: str, chain: tuple[tuple[str, str], ...],
                    kinds: Mapping[str, str | None], report: _Report) -> Settings:
    if cfg["t2"] < cfg["t1"]:
        report.add((), "t2", "must not be smaller than t1")
    if cfg["timer_c"] <= TIMER_C_FLOOR:
        report.add((), "timer_c", f"must be greater than {TIMER_C_FLOOR:g} s (RFC 3261 16.6 item 11: "
                                  f"Timer C is more than 3 minutes), got {cfg['timer_c']:g}")
    if cfg["tcp_max_buffer"] < cfg["max_message_size"]:
        report.add((), "tcp_max_buffer", "must not be smaller than max_message_size")
    servername = tuple(name.rstrip(".").lower() for name in cfg["servername"])
    return Settings(
        path=path, servername=servername, serverrealm=cfg["serverrealm"] or servername[0],
        log=cfg["log"] or None,
        plugin_chain=chain, sections=MappingProxyType(_build_sections(cfg, kinds, report)),
        users=_build_users(cfg["userinfo"], report), **{key: cfg[key] for key in _PLAIN_KEYS})


# ---------------------------------------------------------------- entry points

def load_text(text: str, path: str = "<string>") -> Settings:
    """Validate configuration text; ``path`` is only used to name the file in problems."""
    lines = text.splitlines()
    report = _Report(path, lines)
    chain = _plugin_chain(_parse(lines, report), report)
    kinds = _section_kinds(chain, report)
    cfg = _parse(lines, report, _configspec(kinds))
    _validate(cfg, kinds, report)
    report.check()  # the records below need every value to have been converted
    settings = _build_settings(cfg, path, chain, kinds, report)
    report.check()
    return settings


def load(path: str) -> Settings:
    """Read and validate a partysip.conf; raises ConfigError listing every problem."""
    try:
        with open(path, encoding="utf-8-sig") as stream:  # -sig: editors that write a BOM
            text = stream.read()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the configuration: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text (byte {error.start})"]) from None
    return load_text(text, path)
