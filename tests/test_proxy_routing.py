"""Validation (RFC 3261 16.3), Route pre-processing (16.4), the forwarded copy (16.6), local
answers, ACK relaying, loop detection through our branch, and the registrar path."""

from __future__ import annotations

import pytest
from test_proxy_support import BOB1, PROXY, UAC, bob_store, labels, make_proxy, only
from test_transaction_fixtures import request, response

from psp import __version__
from psp.events import Peer, ResolveJob
from psp.location import Binding
from psp.parser import parse
from psp.plugins.base import Plugin, State
from psp.routing import psp_tag

HOP = Peer("udp", "192.0.2.30", 5070)
NONE = {"ICT": 0, "NICT": 0, "IST": 0, "NIST": 0}
SERVER = f"PartySIP/{__version__}"  # the banner's default
RR_ON = "[localdb]\nmode = sf_forking\nrecord-route = on\n"
SHIPPED = "syntax auth rgstrar ls_localdb"  # etc/partysip.conf's chain: no ls_sfull
PRELOADED = f"Route: <sip:{PROXY}:5060;lr>\r\nRoute: <sip:192.0.2.30:5070;lr>\r\n"


def our_route(proxy) -> str:
    """The Route header a UA sends in a dialog we record-routed."""
    return f"Route: {proxy.local.route_uri('udp')}\r\n"


def with_max_forwards(message, value: str | None):
    line = b"" if value is None else f"Max-Forwards: {value}\r\n".encode()
    return parse(message.to_bytes().replace(b"Max-Forwards: 70\r\n", line))


# ---------------------------------------------------------------- 16.3 and local answers

def test_max_forwards_zero_is_483_but_an_options_for_us_is_answered() -> None:
    net, _ = make_proxy()
    net.deliver(with_max_forwards(request(uri="sip:bob@example.com"), "0"), UAC)
    assert labels(net.take()) == [(UAC, 100), (UAC, 483)]
    # The proxy's own check: no chain, however configured, forwards such a request.
    net, _ = make_proxy(plugins="ls_sfull")
    net.deliver(with_max_forwards(request("MESSAGE", uri="sip:bob@192.0.2.21"), "0"), UAC)
    assert labels(net.take()) == [(UAC, 483)]
    net.deliver(with_max_forwards(request("OPTIONS", uri=f"sip:{PROXY}", branch="z9hG4bK-o"), "0"), UAC)
    peer, ok = only(net.take())
    assert (peer, ok.status) == (UAC, 200) and "REGISTER" in ok.header_values("Allow")


def test_max_forwards_is_decremented_or_set_to_70() -> None:
    net, _ = make_proxy()
    net.deliver(with_max_forwards(request("MESSAGE", uri="sip:bob@192.0.2.21"), "7"), UAC)
    assert only(net.take())[1].max_forwards == 6
    net.deliver(with_max_forwards(request("MESSAGE", uri="sip:bob@192.0.2.21", branch="z9hG4bK-2"), None), UAC)
    assert only(net.take())[1].max_forwards == 70


def test_options_for_our_domain_is_answered_and_for_a_user_goes_to_the_chain() -> None:
    net, _ = make_proxy()
    net.deliver(request("OPTIONS", uri="sip:example.com"), UAC)
    assert only(net.take())[1].status == 200
    net.deliver(request("OPTIONS", uri="sip:carol@example.com", branch="z9hG4bK-c"), UAC)
    assert only(net.take())[1].status == 404  # ls_localdb: nobody of that name


def test_redirect_answers_302_with_the_contacts() -> None:
    net, _ = make_proxy("[localdb]\nmode = redirect\n", store=bob_store(("sip:bob@192.0.2.21", 0.5)))
    net.deliver(request(uri="sip:bob@example.com"), UAC)
    [(_, trying), (_, moved)] = net.take()
    assert (trying.status, moved.status) == (100, 302)
    assert moved.header_values("Contact") == ["<sip:bob@192.0.2.21>;q=0.5;expires=3600"]
    assert moved.header("Server") == SERVER


def test_every_response_we_make_carries_the_banner() -> None:
    net, _ = make_proxy()
    net.deliver(request("OPTIONS", uri=f"sip:{PROXY}"), UAC)
    net.deliver(request("MESSAGE", uri="sip:nobody@example.com", branch="z9hG4bK-2"), UAC)
    net.deliver(with_max_forwards(request(uri="sip:bob@example.com", branch="z9hG4bK-3"), "0"), UAC)
    net.deliver(request("CANCEL", uri="sip:bob@example.com", branch="z9hG4bK-3"), UAC)
    net.deliver(request("REGISTER", uri="sip:example.com", branch="z9hG4bK-4",
                        headers="Contact: <sip:bob@192.0.2.21>\r\n"), UAC)
    answers = [(message.status, message.header("Server")) for _, message in net.take()]
    assert answers == [(200, SERVER), (404, SERVER), (100, SERVER), (483, SERVER), (200, SERVER),
                       (200, SERVER)]


def test_an_empty_banner_means_no_server_header() -> None:
    net, _ = make_proxy('banner = ""\n')
    net.deliver(request("MESSAGE", uri="sip:nobody@example.com"), UAC)
    assert not only(net.take())[1].has("Server")


def test_forwarded_requests_and_relayed_responses_get_no_banner() -> None:
    net, _ = make_proxy()
    net.deliver(request(uri="sip:bob@192.0.2.21"), UAC)
    [_, (_, invite)] = net.take()
    assert not invite.has("User-Agent") and not invite.has("Server")
    net.deliver(response(invite, 180), BOB1)
    assert not only(net.take())[1].has("Server")


@pytest.mark.parametrize(("method", "sent"), [("MESSAGE", []), ("INVITE", [(UAC, 100)])])
def test_a_stopped_request_is_dropped_silently_counted_and_forgotten(method, sent) -> None:
    class Discard(Plugin):
        name = "discard"

        def on_request(self, ctx, decision):
            decision.stop()

    net, proxy = make_proxy(extra=(Discard,))
    net.deliver(request(method, uri="sip:bob@192.0.2.21"), UAC)
    assert labels(net.take()) == sent and proxy.stats["stopped"] == 1
    assert net.core.stats.transactions == NONE and net.core.pending() == 0


class Mute(Plugin):
    """Refuses to send any response upstream."""

    name = "mute"

    def on_send_response(self, ctx, response):
        return State.STOP


def test_a_local_answer_a_plugin_refuses_to_send_leaves_no_transaction() -> None:
    net, _ = make_proxy(extra=(Mute,))
    net.deliver(request("MESSAGE", uri="sip:nobody@example.com"), UAC)
    assert net.take() == [] and net.core.stats.transactions == NONE


def test_a_final_response_a_plugin_refuses_to_relay_ends_the_server_transaction() -> None:
    net, _ = make_proxy(extra=(Mute,))
    net.deliver(request("MESSAGE", uri="sip:bob@192.0.2.21"), UAC)
    _, out = only(net.take())
    net.deliver(response(out, 404), BOB1)
    assert net.take() == []
    assert net.core.stats.transactions["NIST"] == 0 and net.core.pending() == 0


def test_hooks_see_local_answers_and_forwarded_copies() -> None:
    class Mark(Plugin):
        name = "mark"

        def on_forward(self, ctx, request):
            request.add_header("X-Forwarded-By", "mark")

        def on_send_response(self, ctx, response):
            response.add_header("X-Answered-By", "mark")

    net, _ = make_proxy(extra=(Mark,))
    net.deliver(request("MESSAGE", uri="sip:nobody@example.com"), UAC)
    assert only(net.take())[1].header("X-Answered-By") == "mark"
    net.deliver(request("MESSAGE", uri="sip:bob@192.0.2.21", branch="z9hG4bK-2"), UAC)
    assert only(net.take())[1].header("X-Forwarded-By") == "mark"


def test_a_branch_a_plugin_refuses_to_send_leaves_the_uac_with_408() -> None:
    class Refuse(Plugin):
        name = "refuse"

        def on_forward(self, ctx, request):
            return State.STOP

    net, _ = make_proxy(extra=(Refuse,))
    net.deliver(request("MESSAGE", uri="sip:bob@192.0.2.21"), UAC)
    assert labels(net.take()) == [(UAC, 408)]


# ---------------------------------------------------------------- 16.4 and 16.6

def test_loose_routing_removes_our_route_and_follows_the_next() -> None:
    net, proxy = make_proxy(plugins="syntax")
    routes = our_route(proxy) + "Route: <sip:192.0.2.30:5070;lr>\r\n"
    net.deliver(request("BYE", uri="sip:bob@192.0.2.21", to_tag="t", headers=routes), UAC)
    peer, bye = only(net.take())
    assert peer == HOP
    assert bye.header_values("Route") == ["<sip:192.0.2.30:5070;lr>"] and str(bye.uri) == "sip:bob@192.0.2.21"


def test_a_dialog_we_record_routed_follows_its_remote_target_without_a_location_plugin() -> None:
    net, proxy = make_proxy(plugins=SHIPPED)
    net.deliver(request("BYE", uri="sip:bob@192.0.2.21", to_tag="t", headers=our_route(proxy)), UAC)
    peer, bye = only(net.take())
    assert peer == BOB1 and not bye.has("Route")


@pytest.mark.parametrize(("uri", "headers", "to_tag"), [
    ("sip:+4412345@pstn.example.com", PRELOADED, None),   # a Route to us, without our psp= tag
    ("sip:bob@192.0.2.21", "", "forged"),                   # a To tag of no dialog of ours
    ("sip:bob@192.0.2.21", "Route: <sip:192.0.2.30:5070;lr>\r\n", None),  # a Route elsewhere
], ids=["preloaded-route-to-us", "forged-to-tag", "route-elsewhere"])
def test_no_open_relay_a_foreign_target_nobody_chose_gets_403(uri, headers, to_tag) -> None:
    net, _ = make_proxy(plugins=SHIPPED)
    net.deliver(request(uri=uri, to_tag=to_tag, headers=headers), UAC)
    [(_, trying), (peer, refused)] = net.take()
    assert (trying.status, peer, refused.status, refused.reason) == (100, UAC, 403, "Relaying Denied")
    net.deliver(request("ACK", uri=uri, to_tag="t", headers=headers, branch="z9hG4bK-a"), UAC)
    assert net.take() == []  # nor is an ACK relayed there, statelessly or not


def test_a_route_set_left_after_ours_stays_the_next_hop_of_the_location() -> None:
    net, _ = make_proxy(store=bob_store(("sip:bob@192.0.2.21", 1.0)))
    net.deliver(request("MESSAGE", uri="sip:bob@example.com", headers=PRELOADED), UAC)
    peer, message = only(net.take())
    assert (peer, str(message.uri)) == (HOP, "sip:bob@192.0.2.21")
    assert message.header_values("Route") == ["<sip:192.0.2.30:5070;lr>"]
    net.deliver(request("MESSAGE", uri="sip:carol@elsewhere.example", headers=PRELOADED,
                        branch="z9hG4bK-2"), UAC)  # ls_sfull forwards: through the Route
    peer, message = only(net.take())
    assert (peer, str(message.uri)) == (HOP, "sip:carol@elsewhere.example")


def test_strict_router_upstream_gets_the_real_request_uri_back() -> None:
    net, proxy = make_proxy()
    our_uri = proxy.local.route_uri("udp")[1:-1]
    net.deliver(request("BYE", uri=our_uri, to_tag="t", headers="Route: <sip:bob@192.0.2.21:5062>\r\n"), UAC)
    peer, bye = only(net.take())
    assert peer == Peer("udp", "192.0.2.21", 5062)
    assert str(bye.uri) == "sip:bob@192.0.2.21:5062" and not bye.has("Route")


def test_strict_router_downstream_gets_the_request_uri_in_its_route() -> None:
    net, _ = make_proxy()
    net.deliver(request("BYE", uri="sip:bob@192.0.2.21", to_tag="t",
                        headers="Route: <sip:192.0.2.30:5070>\r\n"), UAC)
    peer, bye = only(net.take())
    assert peer == HOP and str(bye.uri) == "sip:192.0.2.30:5070"
    assert bye.header_values("Route") == ["<sip:bob@192.0.2.21>"]


def test_a_route_that_is_not_sip_cannot_be_followed() -> None:
    net, _ = make_proxy()
    net.deliver(request("BYE", uri="sip:bob@192.0.2.21", to_tag="t", headers="Route: <tel:+15551234>\r\n"), UAC)
    assert labels(net.take()) == [(UAC, 416)]


def test_with_udp_disabled_a_target_that_names_no_transport_is_reached_over_tcp() -> None:
    net, _ = make_proxy("serverport_udp = 0\nserverport_tcp = 5070\n")
    tcp_uac = Peer("tcp", UAC.host, UAC.port)
    net.deliver(request("MESSAGE", uri="sip:bob@192.0.2.21", transport="TCP"), tcp_uac)
    peer, message = only(net.take())
    assert peer == Peer("tcp", "192.0.2.21", 5060)
    assert (message.top_via.transport, message.top_via.port) == ("TCP", 5070)  # never port 0
    net.deliver(request("MESSAGE", uri="sip:bob@uas.example.com", transport="TCP", branch="z9hG4bK-n"),
                tcp_uac)
    [job] = [item for item in net.core.outbox if isinstance(item, ResolveJob)]
    assert (job.host, job.transport) == ("uas.example.com", "tcp")  # RFC 3263: TCP records only


def test_record_route_for_dialog_creating_requests_only() -> None:
    net, proxy = make_proxy(RR_ON, store=bob_store(("sip:bob@192.0.2.21", 1.0)))
    net.deliver(request(uri="sip:bob@example.com"), UAC)
    invite = only([item for item in net.take() if item[0] == BOB1])[1]
    rr = f"<sip:{PROXY}:5060;transport=udp;lr;psp={proxy.local.tag}>"
    assert invite.header_values("Record-Route") == [rr]
    net.deliver(request("MESSAGE", uri="sip:bob@example.com", branch="z9hG4bK-m"), UAC)
    assert not only(net.take())[1].has("Record-Route")
    restarted = make_proxy(RR_ON)[1]
    assert restarted.local.tag == proxy.local.tag  # same secret: the tag survives a restart
    assert psp_tag(b"another secret", PROXY, 5060) != proxy.local.tag


def test_the_path_of_a_binding_becomes_the_route_set() -> None:
    store = bob_store()
    store.add(Binding("sip:bob@example.com", "sip:bob@10.0.0.5", 3600.0, path=("<sip:192.0.2.30:5070;lr>",)))
    net, _ = make_proxy(store=store)
    net.deliver(request("MESSAGE", uri="sip:bob@example.com"), UAC)
    peer, message = only(net.take())
    assert peer == HOP and str(message.uri) == "sip:bob@10.0.0.5"
    assert message.header_values("Route") == ["<sip:192.0.2.30:5070;lr>"]


def test_path_is_added_to_a_relayed_register_of_a_ua_that_supports_it() -> None:
    net, proxy = make_proxy("rfc3327 = on\n")
    register = request("REGISTER", uri="sip:192.0.2.21", headers="Supported: path\r\nContact: <sip:a@192.0.2.10>\r\n")
    register.set_header("To", "<sip:alice@elsewhere.example>")
    net.deliver(register, UAC)
    assert only(net.take())[1].header_values("Path") == [proxy.local.route_uri("udp")]
    plain = request("REGISTER", uri="sip:192.0.2.21", branch="z9hG4bK-p", headers="Contact: <sip:a@192.0.2.10>\r\n")
    plain.set_header("To", "<sip:alice@elsewhere.example>")
    net.deliver(plain, UAC)
    assert not only(net.take())[1].has("Path")


def test_a_forwarded_request_that_comes_back_unchanged_is_a_loop() -> None:
    net, _ = make_proxy()
    net.deliver(request("MESSAGE", uri="sip:bob@192.0.2.21"), UAC)
    _, out = only(net.take())
    net.deliver(out, BOB1)  # sent back to us as it left
    peer, looped = only(net.take())
    assert (peer, looped.status) == (Peer("udp", PROXY, 5060), 482)


def test_a_spiral_is_not_a_loop() -> None:
    net, _ = make_proxy(store=bob_store(("sip:bob@192.0.2.21", 1.0)))
    net.deliver(request("MESSAGE", uri="sip:bob@example.com"), UAC)
    _, out = only(net.take())
    net.deliver(out, UAC)  # back to us, but retargeted to the contact
    peer, again = only(net.take())
    assert (peer, again.method, len(again.vias)) == (BOB1, "MESSAGE", 3)


# ---------------------------------------------------------------- ACK for 2xx

def test_ack_for_2xx_is_relayed_statelessly_along_its_route() -> None:
    net, proxy = make_proxy(plugins=SHIPPED)
    routes = our_route(proxy) + "Route: <sip:192.0.2.30:5070;lr>\r\n"
    ack = request("ACK", uri="sip:bob@192.0.2.21", to_tag="t", headers=routes)
    net.deliver(ack, UAC)
    net.deliver(ack, UAC)  # a retransmission gets the same branch
    [(peer, first), (_, second)] = net.take()
    assert peer == HOP and first.max_forwards == 69 and first.top_via.host == PROXY
    assert first.top_via.branch == second.top_via.branch
    net.deliver(request("ACK", uri=f"sip:{PROXY}", to_tag="t", branch="z9hG4bK-x"), UAC)
    assert net.take() == []  # an ACK for us ends here


# ---------------------------------------------------------------- registrar

def test_register_then_invite_reaches_the_binding_until_it_expires() -> None:
    net, proxy = make_proxy()
    register = request("REGISTER", uri="sip:example.com",
                       headers="Contact: <sip:bob@192.0.2.21:5062>\r\nExpires: 60\r\n")
    net.deliver(register, UAC)
    peer, ok = only(net.take())
    assert (peer, ok.status) == (UAC, 200)
    net.deliver(request(uri="sip:bob@example.com", branch="z9hG4bK-i"), UAC)
    sent = net.take()
    assert labels(sent) == [(UAC, 100), (Peer("udp", "192.0.2.21", 5062), "INVITE")]
    net.deliver(response(sent[1][1], 486), Peer("udp", "192.0.2.21", 5062))
    net.take()
    net.advance(60.5)  # the binding expires on the core's timer, with no request
    assert proxy.services.store.count == 0
