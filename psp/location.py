"""The location service: bindings from an address-of-record to contact addresses.

This is the in-memory store the registrar writes and the location plugins read (RFC 3261
10.3, 16.5; RFC 3327 Path; RFC 5626 +sip.instance / reg-id).  It is owned by the processor
thread, so it has no locks; time enters as ``now`` (the caller's monotonic clock).

Binding identity within an AOR follows RFC 3261 19.1.4 (``URI.equivalent``: port and
parameters included), with RFC 5626 section 6 on top: a contact carrying the same
+sip.instance and reg-id as a stored binding replaces it even when the URI changed.

Every change is handed to an optional *journal* (``upsert(binding)``, ``delete(aor,
contact)``, ``delete_aor(aor)``) so that a persistence backend (psp/store_sqlite.py) sees
it; bindings loaded at start-up are not journaled again.

Expiry uses a heap of ``(expires_at, aor)`` with lazy deletion: a refresh pushes a new
entry and the old one is recognised as stale when it surfaces (no binding of that AOR is
due at its time any more), so neither refresh nor ``expire(now)`` scans all bindings.

Memory (docs/registrar.md, bench/location_memory.py): an AOR with one binding, the common
case, maps to that binding itself, not to a container of one; several are a tuple.  The
heap entry and the dict key share the binding's own strings.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import FrozenInstanceError
from typing import Protocol

from psp.uri import URI, AbsoluteURI, parse_uri

# Rebuild the expiry heap when stale entries outnumber live ones by this much.
_HEAP_SLACK = 1024


class Binding:
    """One contact bound to an AOR: frozen, compared and hashed by its fields.

    ``aor`` is the canonical key (see psp.registrar.aor_of); ``contact`` is the Contact
    URI as text; ``expires_at`` is on the caller's clock (``math.inf``: permanent).

    A server holds one per registration, so the layout is compact (bench/location_memory.py):
    the contact and the Call-ID share one string (a URI holds no line feed, so the first
    one splits them), and the rarely used Path, +sip.instance and reg-id one tuple, None
    without them.  Eight slots and three strings where eleven slots and four strings cost
    about 75 bytes more.
    """

    __slots__ = ("aor", "_ids", "expires_at", "q", "cseq", "_extra", "received_from", "updated_at")
    aor: str
    _ids: str
    expires_at: float
    q: float
    cseq: int
    _extra: tuple[tuple[str, ...], str | None, int | None] | None
    received_from: str | None
    updated_at: float

    def __init__(
        self, aor: str, contact: str, expires_at: float, q: float = 1.0, call_id: str = "",
        cseq: int = 0, path: tuple[str, ...] = (), instance: str | None = None,
        reg_id: int | None = None, received_from: str | None = None, updated_at: float = 0.0,
    ) -> None:
        if "\n" in contact:
            raise ValueError(f"a contact URI holds no line feed: {contact!r}")
        extra = (path, instance, reg_id) if path or instance is not None or reg_id is not None else None
        for name, value in (
            ("aor", aor), ("_ids", f"{contact}\n{call_id}"), ("expires_at", expires_at), ("q", q),
            ("cseq", cseq), ("_extra", extra), ("received_from", received_from),
            ("updated_at", updated_at),
        ):
            object.__setattr__(self, name, value)

    @property
    def contact(self) -> str:
        return self._ids.partition("\n")[0]

    @property
    def call_id(self) -> str:
        return self._ids.partition("\n")[2]

    @property
    def path(self) -> tuple[str, ...]:
        return () if self._extra is None else self._extra[0]

    @property
    def instance(self) -> str | None:
        return None if self._extra is None else self._extra[1]

    @property
    def reg_id(self) -> int | None:
        return None if self._extra is None else self._extra[2]

    def _fields(self) -> tuple[object, ...]:
        return (self.aor, self._ids, self.expires_at, self.q, self.cseq, self.path, self.instance,
                self.reg_id, self.received_from, self.updated_at)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Binding):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"Binding(aor={self.aor!r}, contact={self.contact!r}, expires_at={self.expires_at!r}, "
                f"q={self.q!r}, call_id={self.call_id!r}, cseq={self.cseq!r}, path={self.path!r}, "
                f"instance={self.instance!r}, reg_id={self.reg_id!r}, "
                f"received_from={self.received_from!r}, updated_at={self.updated_at!r})")

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


class Journal(Protocol):
    """What a persistence backend offers the store (psp/store_sqlite.py implements it)."""

    def upsert(self, binding: Binding) -> None: ...

    def delete(self, aor: str, contact: str) -> None: ...

    def delete_aor(self, aor: str) -> None: ...


ContactRef = str | URI | AbsoluteURI


def same_contact(stored: str, wanted: ContactRef) -> bool:
    """True when the stored contact text and ``wanted`` name the same URI (RFC 3261 19.1.4).

    Identical text is the common case (a refresh) and needs no parsing.
    """
    if isinstance(wanted, str):
        if stored == wanted:
            return True
        wanted = parse_uri(wanted)
    elif stored == str(wanted):
        return True
    return parse_uri(stored).equivalent(wanted)


class LocationStore:
    """Bindings per AOR, with expiry on the caller's clock and an optional journal."""

    __slots__ = ("_by_aor", "_heap", "_journal", "_count")

    def __init__(self, journal: Journal | None = None, bindings: Iterable[Binding] = ()) -> None:
        # AOR -> its binding, or a tuple of them when it has several (see _entries)
        self._by_aor: dict[str, Binding | tuple[Binding, ...]] = {}
        self._heap: list[tuple[float, str]] = []
        self._journal = journal
        self._count = 0
        self.load(bindings)

    def load(self, bindings: Iterable[Binding]) -> int:
        """Add bindings read from a backend without journaling them; returns how many."""
        journal, self._journal = self._journal, None
        try:
            before = self._count
            for binding in bindings:
                self.add(binding)
            return self._count - before
        finally:
            self._journal = journal

    @property
    def count(self) -> int:
        """The number of stored bindings (expired ones not yet purged included)."""
        return self._count

    def __len__(self) -> int:
        return self._count

    def aors(self) -> list[str]:
        """Every AOR that has at least one stored binding."""
        return list(self._by_aor)

    def bindings(self, aor: str) -> tuple[Binding, ...]:
        """All stored bindings of ``aor``, live or not yet purged, in insertion order."""
        return self._entries(aor)

    def find(
        self, aor: str, contact: ContactRef, instance: str | None = None, reg_id: int | None = None
    ) -> Binding | None:
        """The binding of ``aor`` that ``contact`` (or its instance and reg-id) identifies."""
        entries = self._entries(aor)
        index = _index(entries, contact, instance, reg_id)
        return None if index is None else entries[index]

    def add(self, binding: Binding, uri: URI | AbsoluteURI | None = None) -> Binding | None:
        """Insert or refresh ``binding``; returns the binding it replaced, if any.

        ``uri`` is the parsed contact when the caller already has it (saves a parse).
        """
        entries = self._entries(binding.aor)
        ref = uri if uri is not None else binding.contact
        index = _index(entries, ref, binding.instance, binding.reg_id)
        replaced = None
        if index is None:
            entries += (binding,)
            self._count += 1
        else:
            replaced = entries[index]
            entries = (*entries[:index], binding, *entries[index + 1:])
        self._put(binding.aor, entries)
        if binding.expires_at != math.inf:
            heapq.heappush(self._heap, (binding.expires_at, binding.aor))
            self._maybe_compact()
        if self._journal is not None:
            if replaced is not None and replaced.contact != binding.contact:
                self._journal.delete(replaced.aor, replaced.contact)
            self._journal.upsert(binding)
        return replaced

    def remove(self, aor: str, contact: ContactRef) -> Binding | None:
        """Remove the binding of ``aor`` equivalent to ``contact``; returns it, if any."""
        entries = self._entries(aor)
        index = _index(entries, contact, None, None)
        if index is None:
            return None
        binding = entries[index]
        self._drop(aor, entries, (binding,))
        return binding

    def remove_all(self, aor: str) -> list[Binding]:
        """Remove every binding of ``aor`` (Contact: *); returns them."""
        removed = list(self._entries(aor))
        if removed:
            del self._by_aor[aor]
            self._count -= len(removed)
            if self._journal is not None:
                self._journal.delete_aor(aor)
        return removed

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``: q descending, then the most recently updated first."""
        live = [b for b in self._entries(aor) if b.expires_at > now]
        live.sort(key=lambda b: (-b.q, -b.updated_at))
        return live

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose expiry is at or before ``now``."""
        removed: list[Binding] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires_at, aor = heapq.heappop(heap)
            # each binding has an entry at its own expiry: the AOR's bindings due by this
            # one's time end now, in the order they were added; an entry a refresh left
            # behind finds none
            entries = self._entries(aor)
            due = tuple(binding for binding in entries if binding.expires_at <= expires_at)
            if due:
                self._drop(aor, entries, due)
                removed += due
        return removed

    def next_expiry(self) -> float | None:
        """The earliest expiry on the heap (possibly stale), for the processor's timer."""
        return self._heap[0][0] if self._heap else None

    def _entries(self, aor: str) -> tuple[Binding, ...]:
        found = self._by_aor.get(aor)
        if found is None:
            return ()
        return found if isinstance(found, tuple) else (found,)

    def _put(self, aor: str, entries: tuple[Binding, ...]) -> None:
        """Store ``entries`` of ``aor``: a lone binding as itself (a 1-tuple costs 48 bytes more)."""
        if not entries:
            self._by_aor.pop(aor, None)
        else:
            self._by_aor[aor] = entries[0] if len(entries) == 1 else entries

    def _drop(self, aor: str, entries: tuple[Binding, ...], gone: tuple[Binding, ...]) -> None:
        """Remove the bindings ``gone`` (some of ``entries``, those of ``aor``) and journal it."""
        self._put(aor, tuple(binding for binding in entries if all(binding is not g for g in gone)))
        self._count -= len(gone)
        if self._journal is not None:
            for binding in gone:
                self._journal.delete(aor, binding.contact)

    def _maybe_compact(self) -> None:
        # Refreshes leave stale heap entries behind; rebuild before they dominate memory.
        if len(self._heap) <= 2 * self._count + _HEAP_SLACK:
            return
        self._heap = [
            (b.expires_at, b.aor)
            for aor in self._by_aor
            for b in self._entries(aor)
            if b.expires_at != math.inf
        ]
        heapq.heapify(self._heap)


def _index(
    entries: tuple[Binding, ...], contact: ContactRef, instance: str | None, reg_id: int | None
) -> int | None:
    """Where in ``entries`` the binding for ``contact`` (or its instance and reg-id) is."""
    if instance is not None and reg_id is not None:
        for index, binding in enumerate(entries):
            if binding.instance == instance and binding.reg_id == reg_id:
                return index
    for index, binding in enumerate(entries):
        if same_contact(binding.contact, contact):
            return index
    return None
