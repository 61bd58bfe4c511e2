"""The plugin chain: ordering, MANDATE/PROPOSE/STOP, settling, loading and reloading."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from test_plugins_support import context, make_request, make_services

from psp.config import load_text
from psp.errors import SipError
from psp.plugins.base import Decision, Level, Location, Mode, Plugin, PluginError, RequestContext, State
from psp.plugins.chain import BUILTINS, Chain, plugin_class
from psp.plugins.filter import Filter
from psp.uri import parse_uri

DOCS = Path(__file__).resolve().parent.parent / "docs"
SERVICES = make_services()


def recorder(label: str, level: Level = Level.MIDDLE, action: Any = None,
             log: list[str] | None = None, retargets: bool = False) -> Plugin:
    """A plugin that logs ``label`` when its incoming hook runs, then does ``action``."""
    calls = log if log is not None else []
    picks_targets = retargets

    class Recorder(Plugin):
        name = label
        levels = {"on_request": level}
        retargets = picks_targets

        def on_request(self, ctx: RequestContext, decision: Decision) -> None:
            calls.append(label)
            if action is not None:
                action(decision)

    return Recorder(None, SERVICES)


def to(uri: str) -> list[Location]:
    return [Location(parse_uri(uri))]


def test_hooks_run_by_level_then_load_order() -> None:
    log: list[str] = []
    plugins = [recorder("last", Level.LAST, log=log), recorder("middle-a", log=log),
               recorder("first", Level.FIRST, log=log), recorder("final", Level.FINAL, log=log),
               recorder("really-first", Level.REALLY_FIRST, log=log), recorder("middle-b", log=log),
               recorder("really-last", Level.REALLY_LAST, log=log)]
    Chain(plugins).run_request(context())
    assert log == ["really-first", "first", "middle-a", "middle-b", "last", "really-last", "final"]


def test_mandate_stops_the_chain_but_final_hooks_run() -> None:
    log: list[str] = []
    mandate = recorder("mandate", Level.FIRST, lambda d: d.forward(to("sip:b@h1")), log)
    chain = Chain([mandate, recorder("later", Level.LAST, lambda d: d.answer(404), log),
                   recorder("final", Level.FINAL, log=log)])
    decision = chain.run_request(context())
    assert log == ["mandate", "final"]
    assert decision.mode is Mode.FORK and decision.state is State.MANDATE


def test_last_proposal_wins_without_mandate() -> None:
    chain = Chain([recorder("a", Level.FIRST, lambda d: d.answer(404, State.PROPOSE)),
                   recorder("b", Level.MIDDLE, lambda d: d.forward(to("sip:b@h1"), State.PROPOSE)),
                   recorder("c", Level.LAST)])
    decision = chain.run_request(context())
    assert decision.mode is Mode.FORK and decision.status is None
    assert [str(loc.uri) for loc in decision.locations] == ["sip:b@h1"]


def test_a_later_write_replaces_the_whole_decision() -> None:
    first = recorder("a", Level.FIRST, lambda d: d.forward(to("sip:b@h1"), State.PROPOSE, record_route=True))
    later = recorder("b", Level.LAST, lambda d: d.answer(486, State.PROPOSE, "Busy", [("Retry-After", "5")]))
    chain = Chain([first, later])
    decision = chain.run_request(context())
    assert (decision.mode, decision.status, decision.reason) == (Mode.UAS, 486, "Busy")
    assert decision.locations == () and decision.record_route is False
    assert decision.headers == (("Retry-After", "5"),)


def test_stop_discards_and_skips_final_hooks() -> None:
    log: list[str] = []
    chain = Chain([recorder("stop", Level.FIRST, lambda d: d.stop(), log),
                   recorder("later", Level.LAST, log=log), recorder("final", Level.FINAL, log=log)])
    assert chain.run_request(context()).state is State.STOP
    assert log == ["stop"]


def test_sip_error_becomes_a_mandated_local_answer() -> None:
    def refuse(decision: Decision) -> None:
        raise SipError("no", status=420, headers=[("Unsupported", "foo")])
    log: list[str] = []
    chain = Chain([recorder("refuse", Level.FIRST, refuse, log), recorder("later", Level.LAST, log=log)])
    decision = chain.run_request(context())
    assert (decision.mode, decision.state, decision.status) == (Mode.UAS, State.MANDATE, 420)
    assert decision.headers == (("Unsupported", "foo"),)
    assert log == ["refuse"]


def test_other_exceptions_propagate() -> None:
    def crash(decision: Decision) -> None:
        raise RuntimeError("bug")
    with pytest.raises(RuntimeError):
        Chain([recorder("crash", action=crash)]).run_request(context())


def test_settle_forwards_an_undecided_routed_request_to_its_r_uri() -> None:
    request = make_request("sip:bob@elsewhere.net", extra="Route: <sip:next.example.org;lr>\r\n")
    decision = Chain([]).run_request(context(request, routed=True))
    assert decision.mode is Mode.FORK
    assert [str(loc.uri) for loc in decision.locations] == ["sip:bob@elsewhere.net"]


def test_a_routed_request_is_never_shown_to_the_plugins_that_pick_targets() -> None:
    log: list[str] = []
    chain = Chain([recorder("locate", log=log, retargets=True), recorder("check", log=log),
                   recorder("final-locate", Level.FINAL, log=log, retargets=True)])
    routed = chain.run_request(context(routed=True))
    assert log == ["check"] and routed.mode is Mode.FORK  # to its R-URI
    log.clear()
    chain.run_request(context())
    assert log == ["locate", "check", "final-locate"]


def test_the_built_in_location_plugins_and_the_registrar_pick_targets() -> None:
    assert {name for name, cls in BUILTINS.items() if cls.retargets} == {
        "rgstrar", "ls_localdb", "ls_sfull", "ls_static", "filter", "groups"}


def test_settle_denies_relaying_what_no_plugin_forwarded() -> None:
    decision = Chain([]).run_request(context(make_request("sip:+4412345@pstn.example.net")))
    assert (decision.mode, decision.status, decision.reason) == (Mode.UAS, 403, "Relaying Denied")
    with_route = make_request("sip:bob@elsewhere.net", extra="Route: <sip:next.example.org;lr>\r\n")
    assert Chain([]).run_request(context(with_route)).status == 403  # a Route alone is no dialog


def test_settle_answers_404_when_nobody_decided_or_no_location() -> None:
    assert Chain([]).run_request(context()).status == 404
    empty = Chain([recorder("empty", action=lambda d: d.redirect([]))]).run_request(context())
    assert (empty.mode, empty.status) == (Mode.UAS, 404)


def test_settle_orders_sequential_locations_by_q() -> None:
    locations = [Location(parse_uri(f"sip:{name}@h"), q)
                 for name, q in (("a", 0.5), ("b", 1.0), ("c", 0.5))]
    chain = Chain([recorder("seq", action=lambda d: d.forward(locations, sequential=True))])
    decision = chain.run_request(context())
    assert [loc.uri.user for loc in decision.locations] == ["b", "a", "c"]


def test_settle_never_answers_an_ack() -> None:
    ack = make_request(method="ACK")
    refused = Chain([recorder("no", action=lambda d: d.answer(403))]).run_request(context(ack))
    assert refused.state is State.STOP
    forwarded = Chain([recorder("go", action=lambda d: d.forward(to("sip:b@h1")))]).run_request(context(ack))
    assert forwarded.mode is Mode.FORK and forwarded.state is State.MANDATE


def test_redirect_contacts_carry_q_and_expires() -> None:
    decision = Decision()
    decision.redirect([Location(parse_uri("sip:b@h1"), 0.5, expires=30), Location(parse_uri("sip:b@h2"))])
    assert decision.local_headers() == (
        ("Contact", "<sip:b@h1>;q=0.5;expires=30"), ("Contact", "<sip:b@h2>;q=1"))


class Marker(Plugin):
    """Adds a header to forwarded requests and stops the chain for responses it dislikes."""

    name = "marker"

    def on_forward(self, ctx: RequestContext, request: Any) -> State | None:
        request.add_header("X-Mark", self.section)
        return State.STOP if self.section == "stop" else None

    def on_response(self, ctx: RequestContext, response: Any) -> State | None:
        return State.STOP


def test_forward_chain_runs_in_order_and_stops_only_on_stop() -> None:
    chain = Chain([Marker("one", SERVICES), Marker("stop", SERVICES), Marker("never", SERVICES)])
    branch = make_request()
    assert chain.run_forward(context(), branch) is False
    assert branch.header_values("X-Mark") == ["one", "stop"]
    assert Chain([Marker("one", SERVICES)]).run_forward(context(), make_request()) is True
    assert chain.run_response(context(), object()) is False
    assert chain.run_send_response(context(), object()) is True  # nobody hooks it


def test_final_is_only_a_level_for_incoming_hooks() -> None:
    class Bad(Marker):
        levels = {"on_forward": Level.FINAL}
    with pytest.raises(PluginError):
        Chain([Bad(None, SERVICES)])


def test_one_plugin_runs_twice_with_two_sections() -> None:
    conf = ('plugins = udp syntax filter filter tcp\nplugins_config = udp syntax internal external tcp\n'
            '[internal]\nfilter_scope = internal\n'
            'forward = "^sip:(.*)@example.com$ sip:%1@pbx.example.com"\n'
            '[external]\nfilter_scope = external\nforward = "^tel:([0-9]+)$ sip:%1@gw.example.net"\n')
    services = make_services(conf)
    chain = Chain.from_settings(services.settings, services)
    assert [type(p).__name__ for p in chain.plugins] == ["Syntax", "Filter", "Filter"]
    local = chain.run_request(context(make_request("sip:bob@example.com"), services=services))
    foreign = chain.run_request(context(make_request("tel:1234"), services=services))
    assert [str(loc.uri) for loc in local.locations] == ["sip:bob@pbx.example.com"]
    assert foreign.status == 416  # tel: is not allowed by [syntax]: the syntax plugin runs first


def test_dotted_path_loads_the_documented_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DOCS))
    conf = ("plugins = syntax example_plugin:RejectUserAgent\nplugins_config = syntax screening\n"
            "[screening]\nuser_agents = Friendly-Scanner, sipvicious\nmark = X-Screened\n")
    services = make_services(conf)
    chain = Chain.from_settings(services.settings, services)
    scanner = make_request(extra="User-Agent: friendly-scanner 1.0\r\n")
    assert chain.run_request(context(scanner, services=services)).status == 403
    branch = make_request()
    assert chain.run_forward(context(services=services), branch)
    assert branch.header("X-Screened") == "yes"
    sys.modules.pop("example_plugin", None)


@pytest.mark.parametrize("name", ["nosuch", "psp.nosuchmodule:Thing", "psp.errors:SipError",
                                  "psp.errors:Nothing"])
def test_unloadable_plugins_are_plugin_errors(name: str) -> None:
    with pytest.raises(PluginError):
        plugin_class(name)


def test_a_plugin_refusing_its_section_names_the_section_it_was_given() -> None:
    good = "plugins = ls_static\nplugins_config = routes\n[routes]\nforward = a.example b.example\n"
    bad = good.replace("b.example", "not-a-host:port")
    with pytest.raises(PluginError, match=r"^\[routes\] forward: 'not-a-host:port' is not host\[:port\]$"):
        Chain.from_settings(make_services(bad).settings, make_services(bad))
    services = make_services(good)
    chain = Chain.from_settings(services.settings, services)
    with pytest.raises(PluginError, match=r"^\[routes\] forward: "):
        chain.reload(load_text("servername = example.com\n" + bad))


def test_reload_gives_new_sections_and_refuses_a_new_plugin_list() -> None:
    base = "plugins = filter\n[filter]\nforward = \"^sip:a@ sip:x@h1\"\n"
    services = make_services(base)
    chain = Chain.from_settings(services.settings, services)
    chain.reload(load_text("servername = example.com\n" + base.replace("x@h1", "y@h2")))
    plugin = chain.plugins[0]
    assert isinstance(plugin, Filter) and plugin.rules[0].replacement == "sip:y@h2"
    with pytest.raises(PluginError):
        chain.reload(load_text("servername = example.com\nplugins = filter syntax\n"))
