"""The routing plugins: rgstrar, ls_localdb, ls_sfull, ls_static, filter and groups."""

from __future__ import annotations

import math

import pytest

from test_plugins_support import context, make_request, make_services

from psp.events import Peer
from psp.location import Binding, LocationStore
from psp.message import Request
from psp.plugins.base import Decision, Mode, PluginError, State
from psp.plugins.chain import Chain
from psp.plugins.groups import Groups
from psp.plugins.ls_localdb import LocalDb
from psp.plugins.ls_static import new_host
from psp.plugins.rgstrar import source_text

BOB = "sip:bob@example.com"


def decide(conf: str, request: Request, routed: bool = False, store: LocationStore | None = None,
           now: float = 100.0) -> Decision:
    services = make_services(conf, store)
    chain = Chain.from_settings(services.settings, services)
    return chain.run_request(context(request, services, routed, now))


def uris(decision: Decision) -> list[str]:
    return [str(location.uri) for location in decision.locations]


# ---------------------------------------------------------------- rgstrar

def test_register_for_our_domain_is_answered_by_the_registrar() -> None:
    store = LocationStore()
    register = make_request("sip:example.com", "REGISTER", "Contact: <sip:bob@192.0.2.9:5062>\r\n")
    register.set_header("To", "<sip:bob@example.com>")
    decision = decide("plugins = syntax rgstrar ls_localdb", register, store=store)
    assert (decision.mode, decision.state, decision.status) == (Mode.UAS, State.MANDATE, 200)
    assert decision.response is not None
    assert (decision.response.header("Contact") or "").startswith("<sip:bob@192.0.2.9:5062>")
    assert [b.contact for b in store.lookup("sip:bob@example.com", 101.0)] == ["sip:bob@192.0.2.9:5062"]
    assert store.lookup("sip:bob@example.com", 101.0)[0].received_from == "udp:192.0.2.7:5060"


def test_the_source_of_bindings_from_one_address_is_one_string() -> None:
    first, second = (source_text(Peer("udp", "192.0.2.7", 5060)) for _ in range(2))
    assert first == "udp:192.0.2.7:5060" and first is second


def test_a_register_for_us_the_registrar_does_not_take_is_404_never_484() -> None:
    register = make_request("sip:example.com", "REGISTER", "Contact: <sip:bob@192.0.2.9>\r\n")
    register.set_header("To", "<sip:bob@example.com>")
    decision = decide("plugins = syntax ls_localdb", register)  # no rgstrar in the chain
    assert (decision.mode, decision.status) == (Mode.UAS, 404)  # RFC 3261 10.3


def test_register_for_another_domain_is_forwarded() -> None:
    register = make_request("sip:elsewhere.net", "REGISTER", "Contact: <sip:bob@192.0.2.9>\r\n")
    register.set_header("To", "<sip:bob@elsewhere.net>")
    decision = decide("plugins = syntax rgstrar ls_localdb ls_sfull", register)
    assert decision.mode is Mode.FORK and uris(decision) == ["sip:elsewhere.net"]


# ---------------------------------------------------------------- ls_localdb

def bob_store() -> LocationStore:
    store = LocationStore()
    store.add(Binding("sip:bob@example.com", "sip:bob@192.0.2.1", 400.0, q=0.5, updated_at=1.0))
    store.add(Binding("sip:bob@example.com", "sip:bob@192.0.2.2", 3700.0, q=1.0,
                      path=("<sip:edge.example.com;lr>",), updated_at=2.0))
    store.add(Binding("sip:bob@example.com", "sip:bob@192.0.2.3", 50.0, q=1.0))  # expired at 100
    return store


@pytest.mark.parametrize(("mode", "expected_mode", "expected"), [
    ("sf_forking", Mode.FORK, ["sip:bob@192.0.2.2", "sip:bob@192.0.2.1"]),
    ("sf_sequential", Mode.SEQ, ["sip:bob@192.0.2.2", "sip:bob@192.0.2.1"]),
    ("statefull", Mode.FORK, ["sip:bob@192.0.2.2"]),
    ("redirect", Mode.REDIRECT, ["sip:bob@192.0.2.2", "sip:bob@192.0.2.1"]),
])
def test_localdb_modes(mode: str, expected_mode: Mode, expected: list[str]) -> None:
    conf = f"plugins = syntax ls_localdb\n[localdb]\nmode = {mode}\nrecord-route = on\n"
    decision = decide(conf, make_request(BOB), store=bob_store())
    assert (decision.mode, decision.state) == (expected_mode, State.MANDATE)
    assert uris(decision) == expected
    assert decision.locations[0].path == ("<sip:edge.example.com;lr>",)
    assert decision.record_route is (expected_mode is not Mode.REDIRECT)


def test_localdb_redirect_contacts_carry_the_remaining_lifetime() -> None:
    conf = "plugins = ls_localdb\n[localdb]\nmode = redirect\n"
    decision = decide(conf, make_request(BOB), store=bob_store())
    assert (decision.status, decision.local_headers()) == (302, (
        ("Contact", "<sip:bob@192.0.2.2>;q=1;expires=3600"),
        ("Contact", "<sip:bob@192.0.2.1>;q=0.5;expires=300")))


USERS = ("[userinfo]\n[[carol]]\naor = sip:carol@example.com\npassword = x\n"
         "[[dave]]\naor = sip:dave@example.com\npassword = y\ncontact = sip:dave@192.0.2.44\n")


@pytest.mark.parametrize(("uri", "status"), [
    ("sip:carol@example.com", 480),   # a static user, not registered
    ("sip:bob@example.com", 480),     # registered before, every binding expired
    ("sip:nobody@example.com", 404),
    ("sip:example.com", 484),
])
def test_localdb_answers_when_nobody_is_reachable(uri: str, status: int) -> None:
    store = LocationStore()
    store.add(Binding("sip:bob@example.com", "sip:bob@192.0.2.1", 50.0))
    decision = decide("plugins = ls_localdb\n" + USERS, make_request(uri), store=store)
    assert (decision.mode, decision.state, decision.status) == (Mode.UAS, State.PROPOSE, status)


def test_localdb_adds_a_static_users_permanent_contact_once() -> None:
    store = LocationStore()
    store.add(Binding("sip:dave@example.com", "sip:dave@192.0.2.44", math.inf))
    store.add(Binding("sip:dave@example.com", "sip:dave@192.0.2.45", 500.0, q=0.2))
    conf = "plugins = ls_localdb\n[localdb]\nmode = sf_forking\n" + USERS
    assert uris(decide(conf, make_request("sip:dave@example.com"))) == ["sip:dave@192.0.2.44"]
    assert uris(decide(conf, make_request("sip:dave@example.com"), store=store)) == [
        "sip:dave@192.0.2.44", "sip:dave@192.0.2.45"]


def test_a_routed_request_follows_its_r_uri_whatever_the_location_plugins_hold() -> None:
    # Each of these would retarget bob, reject him or answer for him, were he not routed.
    conf = ("plugins = rgstrar groups ls_static filter ls_localdb ls_sfull\n"
            "[static]\nreject = * 403\n[filter]\nforward = \"^sip:bob@ sip:carol@192.0.2.9\"\n"
            "[groups]\n[[bob]]\nmembers = sip:ann@example.com\n")
    decision = decide(conf, make_request(BOB), routed=True, store=bob_store())
    assert (decision.mode, uris(decision)) == (Mode.FORK, [BOB])


def test_localdb_leaves_foreign_requests_alone() -> None:
    services = make_services("plugins = ls_localdb", bob_store())
    plugin = LocalDb(services.settings.sections["localdb"], services)
    decision = Decision()
    plugin.on_request(context(make_request("sip:bob@elsewhere.net"), services), decision)
    assert decision.mode is None


# ---------------------------------------------------------------- ls_sfull

def test_sfull_forwards_foreign_requests_to_their_r_uri() -> None:
    foreign = make_request("sip:bob@elsewhere.net")
    decision = decide("plugins = ls_sfull\n[sfull]\nrecord-route = on\n", foreign)
    assert (decision.mode, uris(decision), decision.record_route) == (Mode.FORK, [str(foreign.uri)], True)
    assert decide("plugins = ls_sfull", make_request(BOB)).status == 404


def test_sfull_never_redirects_to_the_r_uri_itself() -> None:
    foreign = make_request("sip:bob@elsewhere.net")
    decision = decide("plugins = ls_sfull\n[sfull]\nmode = redirect\n", foreign)
    assert (decision.mode, decision.status) == (Mode.UAS, 404)


# ---------------------------------------------------------------- ls_static

STATIC = ("plugins = ls_static ls_localdb\n[static]\n"
          "forward = PSTN.example.org gw.example.net:5070, v6.example.org [2001:db8::1]\n"
          "reject = spam.example.net 403\n")


def test_static_forward_rewrites_the_host() -> None:
    decision = decide(STATIC, make_request("sip:123@pstn.EXAMPLE.org;user=phone"))
    assert decision.mode is Mode.FORK and uris(decision) == ["sip:123@gw.example.net:5070;user=phone"]
    assert uris(decide(STATIC, make_request("sip:1@v6.example.org:5080"))) == ["sip:1@[2001:db8::1]:5080"]


def test_static_rejects_and_proposes_404_for_our_domains() -> None:
    assert decide(STATIC, make_request("sip:x@spam.example.net")).status == 403
    local = decide(STATIC + "[localdb]\nmode = sf_forking\n", make_request(BOB), store=bob_store())
    assert local.mode is Mode.FORK
    foreign = decide(STATIC.replace("ls_localdb", "ls_sfull"), make_request("sip:x@other.net"))
    assert foreign.mode is Mode.FORK


def test_static_wildcard_rejects_everything_not_forwarded() -> None:
    conf = STATIC.replace("spam.example.net 403", "* 503")
    assert decide(conf, make_request(BOB), store=bob_store()).status == 503
    assert decide(conf, make_request("sip:1@pstn.example.org")).mode is Mode.FORK


def test_static_newhost_must_be_a_host() -> None:
    assert new_host("[::1]:5060") == ("::1", 5060)
    with pytest.raises(PluginError):
        new_host("user@host")


# ---------------------------------------------------------------- filter

FILTER = ('plugins = syntax filter ls_localdb ls_sfull\n[syntax]\nallowed_schemes = sip, tel\n'
          '[filter]\nfilter_scope = {scope}\nmode = {mode}\n'
          'forward = "^tel:\\+?(00|\\+)?([0-9]+)$ sip:%2@gw.example.net", '
          '"^sip:([a-z]+)\\.([a-z]+)@ sip:%2-%1@example.com"\n')


def test_filter_rewrites_with_groups_case_insensitively() -> None:
    decision = decide(FILTER.format(scope="both", mode="statefull"), make_request("tel:+4930123"))
    assert uris(decision) == ["sip:4930123@gw.example.net"]
    renaming = FILTER.format(scope="both", mode="redirect")
    renamed = decide(renaming, make_request("sip:Bob.Smith@example.com"))
    assert (renamed.mode, uris(renamed)) == (Mode.REDIRECT, ["sip:Smith-Bob@example.com"])


def test_filter_scope_and_the_default_404() -> None:
    internal = FILTER.format(scope="internal", mode="statefull")
    assert decide(internal, make_request("tel:4930123")).status == 403  # out of scope, not ours
    assert uris(decide(internal, make_request("sip:a.b@example.com"))) == ["sip:b-a@example.com"]
    external = FILTER.format(scope="external", mode="statefull")
    assert decide(external, make_request("sip:a.b@example.com")).status == 404  # localdb: nobody
    unmatched = decide(FILTER.format(scope="both", mode="statefull").replace("ls_localdb ls_sfull", ""),
                       make_request("sip:42@other.net"))
    assert (unmatched.status, unmatched.state) == (404, State.PROPOSE)


# ---------------------------------------------------------------- groups

GROUPS = ("plugins = groups ls_localdb ls_sfull\n[groups]\n"
          "[[sales]]\nmembers = sip:ann@example.com, sip:ben@192.0.2.5\nmode = sf_sequential\n"
          "[[support]]\nmembers = sip:cy@example.com|sip:di@example.com\ndomain = help.example.org\n")


def test_groups_fork_or_hunt_their_members() -> None:
    sales = decide(GROUPS, make_request("sip:sales@example.com"))
    assert (sales.mode, uris(sales)) == (Mode.SEQ, ["sip:ann@example.com", "sip:ben@192.0.2.5"])
    support = decide(GROUPS, make_request("sip:support@HELP.example.org"))
    assert (support.mode, uris(support)) == (Mode.FORK, ["sip:cy@example.com", "sip:di@example.com"])


def test_groups_match_user_exactly_and_the_right_domain() -> None:
    services = make_services(GROUPS)
    plugin = Groups(services.settings.sections["groups"], services)
    for uri in ("sip:Sales@example.com", "sip:sales@elsewhere.net", "sip:support@example.com"):
        decision = Decision()
        plugin.on_request(context(make_request(uri), services), decision)
        assert decision.mode is None, uri


def test_groups_redirect_mode() -> None:
    conf = GROUPS.replace("[groups]\n", "[groups]\nmode = redirect\n")
    decision = decide(conf, make_request("sip:sales@example.com"))
    assert (decision.mode, decision.status, len(decision.locations)) == (Mode.REDIRECT, 302, 2)
