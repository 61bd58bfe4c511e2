"""psp.config: the shipped file, defaults, the plugin chain, and every kind of problem."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

import pytest

from psp.config import ConfigError, load, load_text
from psp.settings import FilterSettings, LocationSettings, PluginSection

SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "partysip.conf"
MINIMAL = "plugins = syntax auth rgstrar ls_localdb\n"


def problems(text: str, path: str = "bad.conf") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def only_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_shipped_file_validates_with_the_documented_choices() -> None:
    settings = load(str(SHIPPED))
    assert settings.path == str(SHIPPED)
    assert settings.plugins == ("syntax", "auth", "rgstrar", "ls_localdb")
    assert settings.plugin_chain[-1] == ("ls_localdb", "localdb")
    assert settings.authentication is False
    assert settings.serverip == ("127.0.0.1",) and settings.servername == ("localhost",)
    assert (settings.serverport_udp, settings.serverport_tcp) == (5060, 5060)
    assert settings.recovery_file == "/var/lib/partysip/location.sqlite"
    assert settings.metrics.enabled is False
    assert settings.users == ()


def test_defaults_of_a_minimal_file() -> None:
    settings = load_text(MINIMAL)
    assert settings.serverrealm == "localhost"
    assert (settings.loglevel, settings.log, settings.log_format, settings.banner) == (4, None, "text", "PartySIP")
    assert (settings.t1, settings.t2, settings.t4, settings.timer_c) == (0.5, 4.0, 5.0, 185.0)
    assert (settings.fifo_size, settings.retry_after, settings.tcp_max_buffer) == (10000, 5, 262144)
    assert settings.magicstring == "" and settings.rfc3327 is False
    assert settings.sections["localdb"] == LocationSettings(mode="statefull", record_route=False)
    assert settings.sections["auth"].algorithms == ("SHA-256", "MD5")
    assert settings.sections["syntax"].allowed_schemes == ("sip", "sips")
    assert (settings.resolver.port, settings.resolver.nameservers) == (53, ())


def test_values_are_typed_and_normalised() -> None:
    settings = load_text(MINIMAL + "servername = Example.ORG., b.example\nserverport_tcp = 0\n"
                         "ipv6_enable = on\nserverip6 = ::1\nt1 = 0.25\n"
                         "[localdb]\nmode = redirect\nrecord-route = on\n[auth]\nalgorithms = md5\n")
    assert settings.servername == ("example.org", "b.example")
    assert settings.serverrealm == "example.org"
    assert settings.serverport_tcp == 0 and settings.ipv6_enable is True and settings.t1 == 0.25
    assert settings.sections["localdb"] == LocationSettings(mode="redirect", record_route=True)
    assert settings.sections["auth"].algorithms == ("MD5",)


def test_settings_are_frozen() -> None:
    settings = load_text(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.loglevel = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.sections["localdb"] = None  # type: ignore[index]


def test_plugins_whitespace_and_comma_lists_are_the_same() -> None:
    spaced = load_text("plugins = syntax  auth\trgstrar\n")
    commas = load_text("plugins = syntax, auth, rgstrar\n")
    assert spaced.plugins == commas.plugins == ("syntax", "auth", "rgstrar")


def test_plugins_config_pairs_sections_by_position() -> None:
    settings = load_text("plugins = syntax filter filter\nplugins_config = syntax f_in f_out\n"
                         "[f_in]\nfilter_scope = internal\nforward = ^sip:(.*)@a$ sip:%1@b\n[f_out]\nmode = redirect\n")
    assert settings.plugin_chain == (("syntax", "syntax"), ("filter", "f_in"), ("filter", "f_out"))
    f_in, f_out = settings.sections["f_in"], settings.sections["f_out"]
    assert isinstance(f_in, FilterSettings) and f_in.filter_scope == "internal"
    assert f_in.forward[0].regex.match("SIP:bob@A") and f_in.forward[0].replacement == "sip:%1@b"
    assert f_out.mode == "redirect" and f_out.forward == ()


def test_plugins_config_sections_are_validated_with_their_plugin_spec() -> None:
    problem = only_problem("plugins = filter\nplugins_config = f_out\n[f_out]\nfilter_scope = sideways\n")
    assert problem.startswith("bad.conf:4: [f_out] filter_scope: ")


def test_plugins_config_length_mismatch() -> None:
    problem = only_problem("plugins = syntax auth rgstrar\nplugins_config = syntax auth\n")
    assert problem.startswith("bad.conf:2: plugins_config: ")
    assert "2" in problem and "3" in problem


def test_plugins_config_rejects_names_that_cannot_be_sections() -> None:
    problem = only_problem("plugins = syntax filter\nplugins_config = syntax, f[1]\n")
    assert problem.startswith("bad.conf:2: plugins_config: 'f[1]'")


def test_one_section_cannot_serve_two_kinds_of_plugin() -> None:
    problem = only_problem("plugins = ls_static filter\nplugins_config = shared shared\n")
    assert problem.startswith("bad.conf:2: plugins_config: ") and "[shared]" in problem


def test_third_party_plugin_section_is_free_form() -> None:
    settings = load_text("plugins = syntax acme.sip:AclPlugin\n[aclplugin]\nallow = 10.0.0.0/8, 192.168.0.0/16\n"
                         "record-route = on\n[[nested]]\nx = 1\n")
    assert settings.plugin_chain[1] == ("acme.sip:AclPlugin", "aclplugin")
    section = settings.sections["aclplugin"]
    assert isinstance(section, PluginSection)
    assert section.allow == ("10.0.0.0/8", "192.168.0.0/16") and section.record_route == "on"
    assert section.nested["x"] == "1"
    with pytest.raises(AttributeError):
        section.missing


def test_section_of_a_plugin_not_in_the_chain_is_allowed() -> None:
    settings = load_text("plugins = syntax\n[static]\nreject = * 404\n")
    assert settings.sections["static"].reject[0].code == 404


@pytest.mark.parametrize(("text", "where"), [
    ("plugins = syntax bogus\n", "bad.conf:1: plugins: "),
    ("plugins = syntax\nserverport_udp = 70000\n", "bad.conf:2: serverport_udp: "),
    ("plugins = syntax\nloglevel = 9\n", "bad.conf:2: loglevel: "),
    ("plugins = syntax\nloglevel = loud\n", "bad.conf:2: loglevel: "),
    ("plugins = syntax\nserverip = 10.0.0.1, ::1\n", "bad.conf:2: serverip: "),
    ("plugins = syntax\nlog_format = xml\n", "bad.conf:2: log_format: "),
    ("plugins = syntax\nauthentication = maybe\n", "bad.conf:2: authentication: "),
    ("plugins = syntax\nbanner = a, b\n", "bad.conf:2: banner: "),
    ("plugins = syntax\nt1 = 0\n", "bad.conf:2: t1: "),
    ("plugins = syntax\n[metrics]\nport = -1\n", "bad.conf:3: [metrics] port: "),
    ("plugins = syntax\n[resolver]\nnameservers = dns.example\n", "bad.conf:3: [resolver] nameservers: "),
    ("plugins = syntax\n[auth]\nforce_use_of_407 = always\n", "bad.conf:3: [auth] force_use_of_407: "),
    ("plugins = syntax\n[auth]\nalgorithms = SHA-1\n", "bad.conf:3: [auth] algorithms: "),
    ("plugins = syntax\n[localdb]\nmode = forking\n", "bad.conf:3: [localdb] mode: "),
    ("plugins = syntax\n[sfull]\nrecord-route = sometimes\n", "bad.conf:3: [sfull] record-route: "),
    ("plugins = syntax\n[static]\nforward = a.example\n", "bad.conf:3: [static] forward: "),
    ("plugins = syntax\n[static]\nreject = * 200\n", "bad.conf:3: [static] reject: "),
    ("plugins = syntax\n[static]\nreject = * 700\n", "bad.conf:3: [static] reject: "),
    ("plugins = syntax\n[filter]\nforward = ^(a sip:b\n", "bad.conf:3: [filter] forward: "),
    ("plugins = syntax\n[filter]\nforward = ^a http://b\n", "bad.conf:3: [filter] forward: "),
    ("plugins = syntax\n[groups]\n[[sales]]\nmembers = tel:123\n", "bad.conf:4: [groups][sales] members: "),
    ("plugins = syntax\n[groups]\n[[sales]]\nmode = random\nmembers = sip:a@b\n", "bad.conf:4: [groups][sales] mode: "),
    ("plugins = syntax\n[userinfo]\n[[al]]\naor = alice@example.org\npassword = x\n", "bad.conf:4: [userinfo][al] aor: "),
])
def test_bad_values_name_file_line_section_and_key(text: str, where: str) -> None:
    assert only_problem(text).startswith(where)


@pytest.mark.parametrize(("text", "expected"), [
    ("loglevel = 4\n", "bad.conf: plugins: required, but missing"),
    ("plugins = syntax\nplugin = auth\n", "bad.conf:2: plugin: unknown key (did you mean 'plugins'?)"),
    ("plugins = syntax\n[localdb]\nrecord_route = on\n",
     "bad.conf:3: [localdb] record_route: unknown key (did you mean 'record-route'?)"),
    ("plugins = syntax\n[locadb]\nmode = statefull\n", "bad.conf:2: [locadb]: unknown section (did you mean 'localdb'?)"),
    ("plugins = syntax\n[groups]\n[[sales]]\nmembers = sip:a@b\ncolour = red\n", "bad.conf:5: [groups][sales] colour: unknown key"),
    ("plugins = syntax\n[groups]\n[[sales]]\n", "bad.conf:3: [groups][sales] members: required, but missing"),
])
def test_missing_and_unknown_keys_and_sections(text: str, expected: str) -> None:
    assert only_problem(text) == expected


@pytest.mark.parametrize(("text", "line", "words"), [
    ("plugins = syntax\nserverport_udp\n", 2, "Invalid line"),
    ("plugins = syntax\nloglevel = 3\nloglevel = 5\n", 3, "Duplicate keyword"),
    ("plugins = syntax\n[metrics\n", 2, "Invalid line"),
    ("plugins = syntax\nbanner = \"unterminated\n", 2, "Parse error"),
])
def test_syntax_errors_give_the_line(text: str, line: int, words: str) -> None:
    problem = only_problem(text)
    assert problem.startswith(f"bad.conf:{line}: {words}")


def test_all_problems_are_reported_at_once_in_file_order() -> None:
    found = problems("plugins = syntax\n[localdb]\nmode = y\n[metrics]\nport = x\n[auth]\nloglevel = 9\n")
    assert [int(re.match(r"bad\.conf:(\d+):", p).group(1)) for p in found] == [3, 5, 7]
    assert found[2].endswith("[auth] loglevel: unknown key")
    assert len(problems("plugins = syntax\nfoo\n[a\n")) == 2


@pytest.mark.parametrize("text", [
    "plugins = rgstrar\n[rgstrar]\nmin_expires = 600\ndefault_expires = 300\n",
    "plugins = rgstrar\nt1 = 5\nt2 = 1\n",
    "plugins = rgstrar\nmax_message_size = 65535\ntcp_max_buffer = 4096\n",
])
def test_inconsistent_values(text: str) -> None:
    assert ": must" in only_problem(text)


def test_timer_c_must_be_over_three_minutes() -> None:
    # RFC 3261 16.6 item 11: "greater than 3 minutes"; 180 itself is refused.
    for value in ("180", "120.5"):
        assert only_problem(f"plugins = syntax\nt1 = 0.5\ntimer_c = {value}\n") == (
            f"bad.conf:3: timer_c: must be greater than 180 s (RFC 3261 16.6 item 11: "
            f"Timer C is more than 3 minutes), got {float(value):g}")
    assert load_text("plugins = syntax\ntimer_c = 180.5\n").timer_c == 180.5


USER = "plugins = auth\n[userinfo]\n[[alice]]\naor = sip:alice@example.org\n"
HA1 = hashlib.md5(b"alice:localhost:secret").hexdigest()


def test_userinfo_login_defaults_to_the_user_part() -> None:
    settings = load_text(USER + "password = secret\ncontact = sip:alice@192.0.2.1\n")
    (user,) = settings.users
    assert (user.name, user.login, user.password, user.ha1) == ("alice", "alice", "secret", None)
    assert user.contact == "sip:alice@192.0.2.1"


def test_userinfo_ha1_instead_of_password() -> None:
    (user,) = load_text(USER + f"ha1 = {HA1.upper()}\nlogin = al\n").users
    assert (user.login, user.password, user.ha1) == ("al", None, HA1)


@pytest.mark.parametrize("extra", [f"password = secret\nha1 = {HA1}\n", ""])
def test_userinfo_needs_exactly_one_of_password_and_ha1(extra: str) -> None:
    problem = only_problem(USER + extra)
    assert problem.startswith("bad.conf:") and "[userinfo][alice] password: " in problem


def test_userinfo_rejects_a_bad_ha1_and_an_aor_without_user() -> None:
    assert "[userinfo][alice] ha1: " in only_problem(USER + "ha1 = 1234\n")
    assert "[userinfo][bob] login: " in only_problem("plugins = auth\n[userinfo]\n[[bob]]\naor = sip:example.org\n"
                                                     "password = x\n")


def test_userinfo_logins_are_unique() -> None:
    problem = only_problem(USER + "password = a\n[[alice2]]\naor = sip:ALICE@other.example\npassword = b\n")
    assert "[userinfo][alice2] login: " in problem


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert caught.value.problems == [f"{path}: cannot read the configuration: No such file or directory"]


def test_load_names_the_file_in_problems(tmp_path: Path) -> None:
    path = tmp_path / "p.conf"
    path.write_text("plugins = syntax\nloglevel = 12\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(caught.value).startswith(f"{path}:2: loglevel: ")


def test_cpu_affinity_is_auto_off_or_an_allowed_cpu() -> None:
    assert load_text("plugins = syntax\n").cpu_affinity == "auto"
    assert load_text("plugins = syntax\ncpu_affinity = OFF\n").cpu_affinity == "off"
    allowed = min(os.sched_getaffinity(0))
    assert load_text(f"plugins = syntax\ncpu_affinity = {allowed}\n").cpu_affinity == str(allowed)
    problem = only_problem("plugins = syntax\ncpu_affinity = 4096\n")
    assert "cpu_affinity" in problem and "4096" in problem and "a CPU this process may run on" in problem
