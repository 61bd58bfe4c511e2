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

Expiry uses a heap of ``(expires_at, aor, contact)`` with lazy deletion: a refresh pushes
a new entry and the old one is recognised as stale when it surfaces, so neither refresh nor
``expire(now)`` scans all bindings.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from psp.uri import URI, AbsoluteURI, parse_uri

# Rebuild the expiry heap when stale entries outnumber live ones by this much.
_HEAP_SLACK = 1024


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact bound to an AOR.

    ``aor`` is the canonical key (see psp.registrar.aor_of); ``contact`` is the Contact
    URI as text; ``expires_at`` is on the caller's clock (``math.inf``: permanent).
    """

    aor: str
    contact: str
    expires_at: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    path: tuple[str, ...] = ()
    instance: str | None = None
    reg_id: int | None = None
    received_from: str | None = None
    updated_at: float = 0.0


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
        self._by_aor: dict[str, list[Binding]] = {}
        self._heap: list[tuple[float, str, str]] = []
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
        return tuple(self._by_aor.get(aor, ()))

    def find(
        self, aor: str, contact: ContactRef, instance: str | None = None, reg_id: int | None = None
    ) -> Binding | None:
        """The binding of ``aor`` that ``contact`` (or its instance and reg-id) identifies."""
        index = self._index(aor, contact, instance, reg_id)
        return None if index is None else self._by_aor[aor][index]

    def add(self, binding: Binding, uri: URI | AbsoluteURI | None = None) -> Binding | None:
        """Insert or refresh ``binding``; returns the binding it replaced, if any.

        ``uri`` is the parsed contact when the caller already has it (saves a parse).
        """
        entries = self._by_aor.setdefault(binding.aor, [])
        ref = uri if uri is not None else binding.contact
        index = self._index(binding.aor, ref, binding.instance, binding.reg_id)
        replaced = None
        if index is None:
            entries.append(binding)
            self._count += 1
        else:
            replaced = entries[index]
            entries[index] = binding
        if binding.expires_at != math.inf:
            heapq.heappush(self._heap, (binding.expires_at, binding.aor, binding.contact))
            self._maybe_compact()
        if self._journal is not None:
            if replaced is not None and replaced.contact != binding.contact:
                self._journal.delete(replaced.aor, replaced.contact)
            self._journal.upsert(binding)
        return replaced

    def remove(self, aor: str, contact: ContactRef) -> Binding | None:
        """Remove the binding of ``aor`` equivalent to ``contact``; returns it, if any."""
        index = self._index(aor, contact, None, None)
        if index is None:
            return None
        return self._remove_at(aor, index)

    def remove_all(self, aor: str) -> list[Binding]:
        """Remove every binding of ``aor`` (Contact: *); returns them."""
        removed = self._by_aor.pop(aor, [])
        if removed:
            self._count -= len(removed)
            if self._journal is not None:
                self._journal.delete_aor(aor)
        return removed

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``: q descending, then the most recently updated first."""
        live = [b for b in self._by_aor.get(aor, ()) if b.expires_at > now]
        live.sort(key=lambda b: (-b.q, -b.updated_at))
        return live

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose expiry is at or before ``now``."""
        removed: list[Binding] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires_at, aor, contact = heapq.heappop(heap)
            entries = self._by_aor.get(aor, ())
            for index, binding in enumerate(entries):
                if binding.contact == contact and binding.expires_at == expires_at:
                    removed.append(self._remove_at(aor, index))
                    break
        return removed

    def next_expiry(self) -> float | None:
        """The earliest expiry on the heap (possibly stale), for the processor's timer."""
        return self._heap[0][0] if self._heap else None

    def _index(
        self, aor: str, contact: ContactRef, instance: str | None, reg_id: int | None
    ) -> int | None:
        entries = self._by_aor.get(aor)
        if not entries:
            return None
        if instance is not None and reg_id is not None:
            for index, binding in enumerate(entries):
                if binding.instance == instance and binding.reg_id == reg_id:
                    return index
        for index, binding in enumerate(entries):
            if same_contact(binding.contact, contact):
                return index
        return None

    def _remove_at(self, aor: str, index: int) -> Binding:
        entries = self._by_aor[aor]
        binding = entries.pop(index)
        if not entries:
            del self._by_aor[aor]
        self._count -= 1
        if self._journal is not None:
            self._journal.delete(aor, binding.contact)
        return binding

    def _maybe_compact(self) -> None:
        # Refreshes leave stale heap entries behind; rebuild before they dominate memory.
        if len(self._heap) <= 2 * self._count + _HEAP_SLACK:
            return
        self._heap = [
            (b.expires_at, b.aor, b.contact)
            for entries in self._by_aor.values()
            for b in entries
            if b.expires_at != math.inf
        ]
        heapq.heapify(self._heap)
