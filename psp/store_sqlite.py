"""SQLite persistence for the location store: the default ``recovery_file`` backend.

The rim side of the location service (psp/location.py is the pure side).  PartySIP kept
bindings in a dbm file flushed every ``recovery_delay`` seconds and could lose the last
ones; here every change is journaled and ``commit()`` writes the batch in one transaction
before the processor sends the batch's responses, so no 200 (RFC 3261 10.3 step 8) leaves
before its binding is on disk.  WAL mode with ``synchronous=NORMAL``: a committed
transaction survives a crash (kill -9) of the process; only an OS crash may lose the last
ones.

A commit that fails (the file locked by another process, a full or read-only disk) writes
nothing and keeps every change queued, in order, for the next commit; a newer change to
the same binding replaces the queued one, so the queue never holds more than one change per
binding however long the disk refuses.  SQLite's busy wait is kept short (``BUSY_TIMEOUT``)
because the processor thread commits, and every SIP message waits while it does.

Expiry is stored as absolute UNIX time, because the store's monotonic clock restarts with
the process: ``load(now_mono, now_wall)`` converts with the offset between the two clocks
and drops what expired while the server was down.

``load_or_create_secret`` keeps the generated ``magicstring`` secret (nonces, Record-Route
tags) across restarts when the configuration gives none.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sqlite3
import time
from pathlib import Path

from psp.location import Binding

#: Seconds a commit waits for another connection's lock before it fails (SQLite's default
#: is 5 s, all of it lost by the processor thread).  Below T1: one wait costs no retransmission.
BUSY_TIMEOUT = 0.2
#: Seconds ``load`` waits: at start nothing else waits for us, and giving up means not starting.
LOAD_BUSY_TIMEOUT = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires REAL,
    q REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    path TEXT NOT NULL,
    instance TEXT,
    reg_id INTEGER,
    received_from TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (aor, contact)
) WITHOUT ROWID
"""
_UPSERT = "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DELETE = "DELETE FROM bindings WHERE aor = ? AND contact = ?"
_DELETE_AOR = "DELETE FROM bindings WHERE aor = ?"
_SELECT = (
    "SELECT aor, contact, expires, q, call_id, cseq, path, instance, reg_id, received_from,"
    " updated FROM bindings WHERE expires IS NULL OR expires > ?"
)


class StoreError(Exception):
    """The recovery file cannot be opened, read or written; the message names file and cause."""


class SqliteJournal:
    """A write-through journal of location-store changes in an SQLite file.

    Used by one thread at a time (the processor); changes are queued by ``upsert``,
    ``delete`` and ``delete_aor`` and written by ``commit``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # (statement, arguments) by what it changes: (aor, contact) for one binding, (aor,)
        # for all of an AOR's.  A newer change to a key replaces the older one in its place;
        # that keeps the order right because delete_aor removes its AOR's binding keys, so
        # an (aor,) key always comes before the binding keys of that AOR.
        self._pending: dict[tuple[str, ...], tuple[str, tuple[object, ...]]] = {}
        # Wall minus monotonic; replaced by load() with the caller's own reading.
        self._offset = time.time() - time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open recovery file {self.path}: {exc}") from exc

    def load(self, now_mono: float, now_wall: float) -> list[Binding]:
        """The bindings still live at ``now_wall``, with times on the monotonic clock."""
        self._offset = now_wall - now_mono
        try:
            self._busy_timeout(LOAD_BUSY_TIMEOUT)
            self._db.execute("DELETE FROM bindings WHERE expires <= ?", (now_wall,))
            rows = self._db.execute(_SELECT, (now_wall,)).fetchall()
            self._busy_timeout(BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read recovery file {self.path}: {exc}") from exc
        return [self._binding(row) for row in rows]

    def _busy_timeout(self, seconds: float) -> None:
        self._db.execute(f"PRAGMA busy_timeout = {round(seconds * 1000)}")

    def upsert(self, binding: Binding) -> None:
        """Queue the insertion or replacement of ``binding``."""
        self._pending[binding.aor, binding.contact] = (_UPSERT, self._row(binding))

    def delete(self, aor: str, contact: str) -> None:
        """Queue the removal of one binding."""
        self._pending[aor, contact] = (_DELETE, (aor, contact))

    def delete_aor(self, aor: str) -> None:
        """Queue the removal of every binding of ``aor``."""
        for key in [key for key in self._pending if key[0] == aor]:
            del self._pending[key]
        self._pending[aor,] = (_DELETE_AOR, (aor,))

    @property
    def pending(self) -> int:
        """How many changes wait for ``commit``."""
        return len(self._pending)

    def commit(self) -> int:
        """Write every queued change in one transaction; returns how many were written.

        Raises StoreError when the file refuses them (after at most ``BUSY_TIMEOUT`` for a
        lock): nothing is written and every change stays queued for the next commit.
        """
        if not self._pending:
            return 0
        try:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock now, or the error
            for statement, args in self._pending.values():
                self._db.execute(statement, args)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot write recovery file {self.path}: {exc} "
                             f"({len(self._pending)} change(s) not written)") from exc
        written = len(self._pending)
        self._pending.clear()
        return written

    def _rollback(self) -> None:
        """End a failed transaction, so that the next commit can begin one."""
        if self._db.in_transaction:  # SQLite itself rolls back on some errors (disk full, I/O)
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        """Commit what is pending and close the file (StoreError: the changes are lost)."""
        try:
            self.commit()
        finally:
            self._db.close()

    def _row(self, b: Binding) -> tuple[object, ...]:
        expires = None if b.expires_at == math.inf else b.expires_at + self._offset
        path = json.dumps(list(b.path)) if b.path else ""
        return (
            b.aor, b.contact, expires, b.q, b.call_id, b.cseq, path, b.instance, b.reg_id,
            b.received_from, b.updated_at + self._offset,
        )

    def _binding(self, row: tuple) -> Binding:
        aor, contact, expires, q, call_id, cseq, path, instance, reg_id, received, updated = row
        return Binding(
            aor=aor,
            contact=contact,
            expires_at=math.inf if expires is None else expires - self._offset,
            q=q,
            call_id=call_id,
            cseq=cseq,
            path=tuple(json.loads(path)) if path else (),
            instance=instance,
            reg_id=reg_id,
            received_from=received,
            updated_at=updated - self._offset,
        )


def load_or_create_secret(path: str | os.PathLike[str]) -> str:
    """The secret kept in ``path``; a new random one is written there (mode 0600) if absent."""
    target = Path(path)
    try:
        existing = target.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read secret file {target}: {exc}") from exc
    if existing == "":
        raise StoreError(f"secret file {target} is empty: remove it or set magicstring")
    if existing is not None:
        return existing
    secret = secrets.token_hex(32)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it between our read and our create: use theirs.
        return target.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise StoreError(f"cannot create secret file {target}: {exc}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret + "\n")
    return secret
