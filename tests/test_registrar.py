"""Registrar: RFC 3261 10.3 with parsed REGISTER messages, RFC 3327 Path, RFC 4475 cases."""

from __future__ import annotations

import math

import pytest
from conftest import corpus

from psp.errors import SipError
from psp.location import LocationStore
from psp.message import Response
from psp.parser import parse
from psp.registrar import Registrar, aor_of
from psp.uri import parse_uri

CORPUS = corpus("rfc4475")
AOR = "sip:alice@example.com"


def register(*extra: str, to: str = AOR, ruri: str = "sip:example.com", call_id: str = "c1@ua",
             cseq: int = 1, contact: str | None = "<sip:alice@192.0.2.1:5060>"):
    lines = [
        f"REGISTER {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        f"To: <{to}>",
        f"From: <{to}>;tag=456248",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *([f"Contact: {contact}"] if contact is not None else []),
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return parse("\r\n".join(lines).encode())


def contacts_of(response: Response | None) -> list[str]:
    assert response is not None and response.status == 200
    return parse(response.to_bytes()).header_values("Contact")


@pytest.fixture
def registrar() -> Registrar:
    return Registrar(["Example.COM", "other.example.org."], default_expires=3600, min_expires=60,
                     max_expires=7200)


@pytest.fixture
def store() -> LocationStore:
    return LocationStore()


def error_of(call) -> SipError:  # noqa: ANN001 - any callable
    with pytest.raises(SipError) as info:
        call()
    return info.value


def test_register_creates_binding_and_answers_200(registrar: Registrar, store: LocationStore) -> None:
    response = registrar.handle(register(), store, now=100.0, source="udp:192.0.2.1:5060")
    assert contacts_of(response) == ["<sip:alice@192.0.2.1:5060>;expires=3600"]
    assert response is not None and response.to.tag
    (binding,) = store.lookup(AOR, 100.0)
    assert (binding.expires_at, binding.call_id, binding.cseq) == (3700.0, "c1@ua", 1)
    assert (binding.received_from, binding.updated_at, binding.q) == ("udp:192.0.2.1:5060", 100.0, 1.0)


def test_a_refresh_shares_the_stored_aor_string(registrar: Registrar, store: LocationStore) -> None:
    registrar.handle(register(), store, now=100.0)
    registrar.handle(register(cseq=2), store, now=200.0)
    registrar.handle(register(cseq=3, contact="<sip:alice@192.0.2.2>"), store, now=300.0)
    first, second = store.bindings(AOR)
    assert second.cseq == 3 and first.cseq == 2 and first.aor is second.aor  # one string per AOR


@pytest.mark.parametrize(
    ("extra", "contact", "granted"),
    [
        ((), "<sip:a@192.0.2.1>", 3600),
        (("Expires: 120",), "<sip:a@192.0.2.1>", 120),
        (("Expires: 120",), "<sip:a@192.0.2.1>;expires=300", 300),
        (("Expires: 99999",), "<sip:a@192.0.2.1>", 7200),
        ((), "<sip:a@192.0.2.1>;expires=60", 60),
    ],
)
def test_expiry_sources_and_clamping(registrar: Registrar, store: LocationStore, extra: tuple,
                                     contact: str, granted: int) -> None:
    response = registrar.handle(register(*extra, contact=contact), store, now=0.0)
    assert contacts_of(response) == [f"<sip:a@192.0.2.1>;expires={granted}"]


@pytest.mark.parametrize("contact", ["<sip:a@192.0.2.1>;expires=59", "<sip:a@192.0.2.1>;expires=1"])
def test_too_brief_gives_423_with_min_expires(registrar: Registrar, store: LocationStore, contact: str) -> None:
    err = error_of(lambda: registrar.handle(register(contact=contact), store, now=0.0))
    assert err.status == 423 and ("Min-Expires", "60") in err.headers
    assert store.count == 0


def test_423_only_below_one_hour(store: LocationStore) -> None:
    strict = Registrar(["example.com"], min_expires=7200, max_expires=86400)
    assert error_of(lambda: strict.handle(register("Expires: 3599"), store, 0.0)).status == 423
    assert contacts_of(strict.handle(register("Expires: 3600"), store, 0.0)) == [
        "<sip:alice@192.0.2.1:5060>;expires=3600"
    ]


def test_malformed_expires_or_q_is_400(registrar: Registrar, store: LocationStore) -> None:
    for request in (register(contact="<sip:a@h>;expires=soon"), register(contact="<sip:a@h>;q=2"),
                    register("Expires: never")):
        assert error_of(lambda: registrar.handle(request, store, 0.0)).status == 400
    assert store.count == 0


def test_domains_decide_what_is_ours(registrar: Registrar, store: LocationStore) -> None:
    assert registrar.handle(register(to="sip:bob@elsewhere.net", ruri="sip:elsewhere.net"), store, 0.0) is None
    foreign_to = register(to="sip:bob@elsewhere.net", ruri="sip:example.com")
    assert error_of(lambda: registrar.handle(foreign_to, store, 0.0)).status == 404
    no_user = register(to="sip:example.com")
    assert error_of(lambda: registrar.handle(no_user, store, 0.0)).status == 404
    upper = register(to="sip:carol@OTHER.example.ORG", ruri="sip:192.0.2.99")
    assert contacts_of(registrar.handle(upper, store, 0.0))
    assert store.aors() == ["sip:carol@other.example.org"]


def test_an_address_of_ours_is_compared_as_an_address(store: LocationStore) -> None:
    registrar = Registrar(["example.com", "192.0.2.1", "2001:DB8::0001"])
    at_v6 = register(to="sip:dan@[2001:db8::1]", ruri="sip:[2001:db8:0::1]:5060")
    assert contacts_of(registrar.handle(at_v6, store, 0.0))
    assert store.aors() == ["sip:dan@[2001:db8::1]"]


def test_non_sip_to_is_400_only_when_the_request_uri_is_ours(registrar: Registrar, store: LocationStore) -> None:
    unksm2 = parse((CORPUS / "unksm2.dat").read_bytes())
    assert error_of(lambda: registrar.handle(unksm2, store, 0.0)).status == 400
    foreign = register(to="tel:+15551234", ruri="sip:elsewhere.net")
    assert registrar.handle(foreign, store, 0.0) is None


def test_star_removes_all_bindings(registrar: Registrar, store: LocationStore) -> None:
    registrar.handle(register(contact="<sip:a@h1>, <sip:b@h2>"), store, 0.0)
    assert store.count == 2
    response = registrar.handle(register("Expires: 0", contact="*", cseq=2), store, 1.0)
    assert contacts_of(response) == [] and store.count == 0


@pytest.mark.parametrize(
    ("extra", "contact"),
    [((), "*"), (("Expires: 1",), "*"), (("Expires: 0",), "*, <sip:a@h1>")],
)
def test_star_misuse_is_400(registrar: Registrar, store: LocationStore, extra: tuple, contact: str) -> None:
    registrar.handle(register(contact="<sip:a@h1>"), store, 0.0)
    err = error_of(lambda: registrar.handle(register(*extra, contact=contact, cseq=2), store, 1.0))
    assert err.status == 400 and store.count == 1


def test_star_with_stale_cseq_fails_and_keeps_bindings(registrar: Registrar, store: LocationStore) -> None:
    registrar.handle(register(cseq=5), store, 0.0)
    err = error_of(lambda: registrar.handle(register("Expires: 0", contact="*", cseq=5), store, 1.0))
    assert err.status == 500 and store.count == 1


@pytest.mark.parametrize(("call_id", "cseq", "accepted"),
                         [("c1@ua", 9, False), ("c1@ua", 10, False), ("c1@ua", 11, True), ("c2@ua", 1, True)])
def test_call_id_and_cseq_ordering(registrar: Registrar, store: LocationStore, call_id: str, cseq: int,
                                   accepted: bool) -> None:
    registrar.handle(register(cseq=10, contact="<sip:alice@192.0.2.1:5060>;expires=100"), store, 0.0)
    later = register(call_id=call_id, cseq=cseq, contact="<sip:alice@192.0.2.1:5060>;expires=900")
    if accepted:
        registrar.handle(later, store, 1.0)
        assert store.lookup(AOR, 1.0)[0].expires_at == 901.0
    else:
        assert error_of(lambda: registrar.handle(later, store, 1.0)).status == 500
        assert store.lookup(AOR, 1.0)[0].expires_at == 100.0


def test_failed_request_changes_nothing(registrar: Registrar, store: LocationStore) -> None:
    registrar.handle(register(cseq=10, contact="<sip:b@h2>"), store, 0.0)
    both = register(cseq=3, contact="<sip:new@h1>, <sip:b@h2>;expires=0")
    assert error_of(lambda: registrar.handle(both, store, 1.0)).status == 500
    assert [b.contact for b in store.bindings(AOR)] == ["sip:b@h2"]
    brief = register(cseq=11, call_id="c9", contact="<sip:new@h1>, <sip:b@h2>;expires=5")
    assert error_of(lambda: registrar.handle(brief, store, 1.0)).status == 423
    assert [b.contact for b in store.bindings(AOR)] == ["sip:b@h2"]


def test_contact_identity_is_full_uri_comparison(registrar: Registrar, store: LocationStore) -> None:
    registrar.handle(register(contact="<sip:alice@pc.example.com;transport=udp>"), store, 0.0)
    registrar.handle(register(cseq=2, contact="<sip:alice@PC.EXAMPLE.COM;transport=UDP>"), store, 1.0)
    assert store.count == 1
    registrar.handle(register(cseq=3, contact="<sip:alice@pc.example.com:5070;transport=udp>"), store, 2.0)
    assert store.count == 2


def test_expires_zero_removes_one_binding_and_200_lists_the_rest(registrar: Registrar,
                                                                store: LocationStore) -> None:
    registrar.handle(register(contact="<sip:a@h1>, <sip:b@h2>"), store, 0.0)
    response = registrar.handle(register(cseq=2, contact="<sip:a@h1>;expires=0"), store, 600.0)
    assert contacts_of(response) == ["<sip:b@h2>;expires=3000"]


def test_query_without_contact_lists_bindings_with_remaining_time(registrar: Registrar,
                                                                 store: LocationStore) -> None:
    registrar.handle(register(contact="<sip:a@h1>;q=0.5, <sip:b@h2>;q=0.9, <sip:c@h3>;q=0"), store, 0.0)
    response = registrar.handle(register(cseq=2, contact=None), store, 1000.5)
    assert contacts_of(response) == [
        "<sip:b@h2>;expires=2600;q=0.9", "<sip:a@h1>;expires=2600;q=0.5", "<sip:c@h3>;expires=2600;q=0"
    ]
    assert [b.q for b in store.lookup(AOR, 1000.5)] == [0.9, 0.5, 0.0]


def test_path_is_stored_and_echoed_when_supported(registrar: Registrar, store: LocationStore) -> None:
    request = register("Supported: path", "Path: <sip:edge1.example.net;lr>",
                       "Path: <sip:edge2.example.net;lr>")
    response = registrar.handle(request, store, 0.0)
    assert response is not None
    assert parse(response.to_bytes()).header_values("Path") == [
        "<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"
    ]
    assert store.lookup(AOR, 0.0)[0].path == ("<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>")


def test_path_without_support_and_unknown_require_are_420(registrar: Registrar, store: LocationStore) -> None:
    err = error_of(lambda: registrar.handle(register("Path: <sip:edge.example.net;lr>"), store, 0.0))
    assert err.status == 420 and err.headers == (("Unsupported", "path"),)
    err = error_of(lambda: registrar.handle(register("Require: foo, path"), store, 0.0))
    assert err.status == 420 and err.headers == (("Unsupported", "foo"),)
    assert store.count == 0


def test_instance_and_reg_id_are_stored_and_echoed(registrar: Registrar, store: LocationStore) -> None:
    contact = '<sip:alice@192.0.2.1;ob>;+sip.instance="<urn:uuid:0001>";reg-id=1'
    registrar.handle(register(contact=contact), store, 0.0)
    moved = '<sip:alice@192.0.2.7;ob>;+sip.instance="<urn:uuid:0001>";reg-id=1'
    response = registrar.handle(register(cseq=2, call_id="other", contact=moved), store, 0.0)
    assert contacts_of(response) == [
        '<sip:alice@192.0.2.7;ob>;expires=3600;+sip.instance="<urn:uuid:0001>";reg-id=1'
    ]
    (binding,) = store.bindings(AOR)
    assert (binding.instance, binding.reg_id) == ("<urn:uuid:0001>", 1)


@pytest.mark.parametrize(
    ("name", "aor", "contacts"),
    [
        ("escnull", "sip:null-%00-null@example.com",
         ["<sip:%00@host5.example.com>;expires=3600", "<sip:%00%00@host5.example.com>;expires=3600"]),
        ("cparam01", "sip:watson@example.com", ["<sip:+19725552222@gw1.example.net>;expires=3600"]),
        ("cparam02", "sip:watson@example.com", ["<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"]),
        ("regescrt", "sip:user@example.com", ["<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600"]),
    ],
)
def test_rfc4475_registrations(registrar: Registrar, store: LocationStore, name: str, aor: str,
                               contacts: list[str]) -> None:
    request = parse((CORPUS / f"{name}.dat").read_bytes())
    assert contacts_of(registrar.handle(request, store, 0.0)) == contacts
    assert store.aors() == [aor] and store.count == len(contacts)


def test_add_static_is_permanent_and_not_journaled(registrar: Registrar) -> None:
    calls: list[str] = []

    class Journal:
        def upsert(self, binding: object) -> None:
            calls.append("upsert")

        def delete(self, aor: str, contact: str) -> None:
            calls.append("delete")

        def delete_aor(self, aor: str) -> None:
            calls.append("delete_aor")

    store = LocationStore(Journal())
    binding = registrar.add_static(store, "sip:Bob@EXAMPLE.com", "sip:bob@192.0.2.5:5062")
    assert binding.aor == "sip:Bob@example.com" and binding.expires_at == math.inf
    assert calls == [] and store.expire(1e12) == []
    response = registrar.handle(register(to="sip:Bob@example.com", contact=None), store, 5.0)
    assert contacts_of(response) == ["<sip:bob@192.0.2.5:5062>;expires=7200"]


@pytest.mark.parametrize(
    ("uri", "key"),
    [
        ("sip:alice@Example.COM", "sip:alice@example.com"),
        ("sips:alice@example.com:5061;transport=tls?subject=x", "sip:alice@example.com"),
        ("sip:%61lice@example.com", "sip:alice@example.com"),
        ("sip:Alice@example.com", "sip:Alice@example.com"),
        ("sip:a%2fb%20c@example.com", "sip:a/b%20c@example.com"),
        ("sip:bob@[2001:DB8::1]:5060", "sip:bob@[2001:db8::1]"),
        ("sip:example.com", "sip:example.com"),
    ],
)
def test_aor_of_is_canonical(uri: str, key: str) -> None:
    assert aor_of(parse_uri(uri)) == key


def test_aor_of_refuses_non_sip() -> None:
    assert error_of(lambda: aor_of(parse_uri("tel:+1555"))).status == 400
