"""LocationStore: upsert by RFC 3261 19.1.4 identity, ordering, expiry and journaling."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError

import pytest

from psp.location import Binding, LocationStore, same_contact
from psp.uri import parse_uri

AOR = "sip:alice@example.com"


class RecordingJournal:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def upsert(self, binding: Binding) -> None:
        self.calls.append(("upsert", binding.aor, binding.contact))

    def delete(self, aor: str, contact: str) -> None:
        self.calls.append(("delete", aor, contact))

    def delete_aor(self, aor: str) -> None:
        self.calls.append(("delete_aor", aor))


def b(contact: str, expires_at: float = 100.0, aor: str = AOR, **kw: object) -> Binding:
    return Binding(aor=aor, contact=contact, expires_at=expires_at, **kw)


@pytest.mark.parametrize(
    ("stored", "wanted", "same"),
    [
        ("sip:a@h.example.com", "sip:a@H.EXAMPLE.com", True),
        ("sip:a@h.example.com;transport=udp", "sip:a@h.example.com;transport=UDP", True),
        ("sip:%61@h.example.com", "sip:a@h.example.com", True),
        ("sip:a@h.example.com", "sip:A@h.example.com", False),
        ("sip:a@h.example.com", "sip:a@h.example.com:5060", False),
        ("sip:a@h.example.com", "sip:a@h.example.com;transport=tcp", False),
        ("sip:%00@h.example.com", "sip:%00%00@h.example.com", False),
        ("tel:+1234", "tel:+1234", True),
        ("tel:+1234", "sip:+1234@h.example.com", False),
    ],
)
def test_same_contact_follows_uri_comparison(stored: str, wanted: str, same: bool) -> None:
    assert same_contact(stored, wanted) is same
    assert same_contact(stored, parse_uri(wanted)) is same


def test_add_upserts_equivalent_contact_and_journals_text_change() -> None:
    journal = RecordingJournal()
    store = LocationStore(journal)
    assert store.add(b("sip:a@h.example.com", cseq=1)) is None
    replaced = store.add(b("sip:a@H.example.com", cseq=2))
    assert replaced is not None and replaced.cseq == 1
    assert store.count == 1
    assert [x.cseq for x in store.bindings(AOR)] == [2]
    assert journal.calls == [
        ("upsert", AOR, "sip:a@h.example.com"),
        ("delete", AOR, "sip:a@h.example.com"),
        ("upsert", AOR, "sip:a@H.example.com"),
    ]


def test_distinct_ports_are_distinct_bindings() -> None:
    store = LocationStore()
    store.add(b("sip:a@h.example.com"))
    store.add(b("sip:a@h.example.com:5070"))
    assert store.count == 2


def test_instance_and_reg_id_replace_a_changed_contact() -> None:
    store = LocationStore()
    store.add(b("sip:a@192.0.2.1", instance="<urn:uuid:1>", reg_id=1))
    store.add(b("sip:a@192.0.2.1", instance="<urn:uuid:1>", reg_id=2))
    store.add(b("sip:a@192.0.2.9", instance="<urn:uuid:1>", reg_id=1))
    contacts = sorted((x.contact, x.reg_id) for x in store.bindings(AOR))
    assert contacts == [("sip:a@192.0.2.1", 2), ("sip:a@192.0.2.9", 1)]


def test_lookup_orders_by_q_then_most_recent_and_skips_expired() -> None:
    store = LocationStore()
    store.add(b("sip:old@h", q=0.5, updated_at=1.0))
    store.add(b("sip:new@h", q=0.5, updated_at=2.0))
    store.add(b("sip:top@h", q=0.9, updated_at=0.0))
    store.add(b("sip:gone@h", expires_at=10.0, q=1.0))
    store.add(b("sip:static@h", expires_at=math.inf, q=0.1))
    assert [x.contact for x in store.lookup(AOR, now=50.0)] == [
        "sip:top@h", "sip:new@h", "sip:old@h", "sip:static@h",
    ]
    assert store.lookup("sip:nobody@example.com", now=0.0) == []


def test_expire_removes_due_bindings_once_and_journals_them() -> None:
    journal = RecordingJournal()
    store = LocationStore(journal)
    store.add(b("sip:a@h", expires_at=10.0))
    store.add(b("sip:b@h", expires_at=20.0, aor="sip:bob@example.com"))
    store.add(b("sip:c@h", expires_at=math.inf))
    journal.calls.clear()
    assert [x.contact for x in store.expire(15.0)] == ["sip:a@h"]
    assert journal.calls == [("delete", AOR, "sip:a@h")]
    assert store.expire(15.0) == []
    assert [x.contact for x in store.expire(1e9)] == ["sip:b@h"]
    assert store.count == 1 and store.aors() == [AOR]


def test_refresh_makes_the_old_deadline_stale() -> None:
    store = LocationStore()
    store.add(b("sip:a@h", expires_at=10.0))
    store.add(b("sip:a@h", expires_at=100.0))
    assert store.expire(50.0) == []
    assert [x.expires_at for x in store.lookup(AOR, 50.0)] == [100.0]
    assert store.next_expiry() == 100.0


def test_heap_stays_bounded_under_many_refreshes() -> None:
    store = LocationStore()
    for i in range(5000):
        store.add(b("sip:a@h", expires_at=100.0 + i))
    assert len(store._heap) <= 2 * store.count + 1024 + 1
    assert [x.contact for x in store.expire(5100.0)] == ["sip:a@h"]


def test_remove_and_remove_all() -> None:
    journal = RecordingJournal()
    store = LocationStore(journal)
    store.add(b("sip:a@h.example.com"))
    store.add(b("sip:b@h.example.com"))
    journal.calls.clear()
    removed = store.remove(AOR, "sip:a@H.EXAMPLE.COM")
    assert removed is not None and removed.contact == "sip:a@h.example.com"
    assert store.remove(AOR, "sip:zzz@h.example.com") is None
    assert [x.contact for x in store.remove_all(AOR)] == ["sip:b@h.example.com"]
    assert store.remove_all(AOR) == []
    assert journal.calls == [("delete", AOR, "sip:a@h.example.com"), ("delete_aor", AOR)]
    assert store.count == 0 and store.aors() == []


def test_loaded_bindings_are_not_journaled_but_later_changes_are() -> None:
    journal = RecordingJournal()
    store = LocationStore(journal, [b("sip:a@h"), b("sip:b@h")])
    assert store.count == 2 and journal.calls == []
    store.add(b("sip:c@h"))
    assert journal.calls == [("upsert", AOR, "sip:c@h")]


def test_binding_is_a_frozen_value_with_every_field_kept() -> None:
    full = b("sip:a@h", q=0.5, call_id="c1@h", cseq=7, path=("<sip:edge;lr>",), instance="<urn:uuid:1>",
             reg_id=2, received_from="udp:192.0.2.1:5060", updated_at=3.0)
    assert (full.aor, full.contact, full.expires_at, full.q, full.call_id, full.cseq, full.path,
            full.instance, full.reg_id, full.received_from, full.updated_at) == (
        AOR, "sip:a@h", 100.0, 0.5, "c1@h", 7, ("<sip:edge;lr>",), "<urn:uuid:1>", 2,
        "udp:192.0.2.1:5060", 3.0)
    plain = b("sip:a@h", call_id="c1@h")
    assert (plain.path, plain.instance, plain.reg_id, plain.received_from) == ((), None, None, None)
    assert plain == b("sip:a@h", call_id="c1@h") and hash(plain) == hash(b("sip:a@h", call_id="c1@h"))
    assert plain != b("sip:a@h", call_id="c2@h") and plain != b("sip:a@h", call_id="c1@h", cseq=1)
    assert "contact='sip:a@h'" in repr(plain) and "call_id='c1@h'" in repr(plain)
    with pytest.raises(FrozenInstanceError):
        plain.cseq = 2  # type: ignore[misc]
    with pytest.raises(ValueError):
        b("sip:a@h\nx")  # a URI never holds one: the contact and Call-ID share a string


def test_several_bindings_of_one_aor_keep_their_order_through_changes() -> None:
    store = LocationStore()
    for name in ("a", "b", "c"):
        store.add(b(f"sip:{name}@h", cseq=1))
    store.add(b("sip:b@h", cseq=2))
    assert [(x.contact, x.cseq) for x in store.bindings(AOR)] == [("sip:a@h", 1), ("sip:b@h", 2), ("sip:c@h", 1)]
    store.remove(AOR, "sip:a@h")
    store.remove(AOR, "sip:c@h")
    assert [x.contact for x in store.bindings(AOR)] == ["sip:b@h"] and store.count == 1


def test_expire_returns_bindings_in_the_order_they_expired_across_aors() -> None:
    store = LocationStore()
    store.add(b("sip:a1@h", expires_at=10.0))
    store.add(b("sip:b@h", expires_at=20.0, aor="sip:bob@example.com"))
    store.add(b("sip:a2@h", expires_at=30.0))
    store.add(b("sip:a3@h", expires_at=40.0))
    assert [x.contact for x in store.expire(35.0)] == ["sip:a1@h", "sip:b@h", "sip:a2@h"]
    assert [x.contact for x in store.bindings(AOR)] == ["sip:a3@h"] and store.next_expiry() == 40.0
