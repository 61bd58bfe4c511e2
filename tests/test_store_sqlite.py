"""SqliteJournal: round trips across close/reopen and kill -9, clock conversion, errors."""

from __future__ import annotations

import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from psp.location import Binding, LocationStore
from psp.store_sqlite import SqliteJournal, StoreError, load_or_create_secret

AOR = "sip:alice@example.com"


def full_binding(**kw: object) -> Binding:
    values: dict = dict(
        aor=AOR, contact="sip:alice@192.0.2.1:5070;transport=tcp", expires_at=1100.0, q=0.7,
        call_id="c1@x", cseq=42, path=("<sip:edge.example.com;lr>", "<sip:p2.example.com;lr>"),
        instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>", reg_id=1,
        received_from="udp:192.0.2.1:5070", updated_at=1000.0,
    )
    values.update(kw)
    return Binding(**values)


def plain_binding(**kw: object) -> Binding:
    return full_binding(instance=None, reg_id=None, **kw)


def test_round_trip_across_close_and_reopen_converts_clocks(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "reg.sqlite"
    journal = SqliteJournal(path)
    assert journal.load(now_mono=1000.0, now_wall=5000.0) == []
    store = LocationStore(journal)
    store.add(full_binding())
    store.add(full_binding(contact="sip:perm@192.0.2.2", expires_at=math.inf, path=(), instance=None,
                           reg_id=None, received_from=None))
    assert journal.pending == 2
    assert journal.commit() == 2
    assert journal.commit() == 0
    journal.close()
    # Restarted 50 s later on a monotonic clock that began again at 10.
    again = SqliteJournal(path)
    loaded = {b.contact: b for b in again.load(now_mono=10.0, now_wall=5050.0)}
    assert loaded["sip:alice@192.0.2.1:5070;transport=tcp"] == full_binding(
        expires_at=pytest.approx(60.0), updated_at=pytest.approx(-40.0)
    )
    assert loaded["sip:perm@192.0.2.2"].expires_at == math.inf
    again.close()


def test_load_drops_expired_and_deletes_are_persisted(tmp_path: Path) -> None:
    path = tmp_path / "reg.sqlite"
    journal = SqliteJournal(path)
    journal.load(0.0, 1000.0)
    store = LocationStore(journal)
    # No instance/reg-id here: those would make the four one binding (RFC 5626).
    store.add(plain_binding(contact="sip:short@h", expires_at=10.0))
    store.add(plain_binding(contact="sip:long@h", expires_at=500.0))
    store.add(plain_binding(contact="sip:gone@h", expires_at=500.0))
    store.add(plain_binding(aor="sip:bob@example.com", contact="sip:bob@h", expires_at=500.0))
    store.remove(AOR, "sip:gone@h")
    store.remove_all("sip:bob@example.com")
    journal.close()
    reopened = SqliteJournal(path)
    assert [b.contact for b in reopened.load(100.0, 1100.0)] == ["sip:long@h"]
    reopened.close()


def test_committed_bindings_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "reg.sqlite"
    child = textwrap.dedent(f"""
        import sys, time
        from psp.location import Binding
        from psp.store_sqlite import SqliteJournal
        j = SqliteJournal({str(path)!r})
        j.load(0.0, 1000.0)
        j.upsert(Binding(aor={AOR!r}, contact="sip:committed@h", expires_at=3600.0))
        j.commit()
        j.upsert(Binding(aor={AOR!r}, contact="sip:pending@h", expires_at=3600.0))
        print("committed", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "committed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    journal = SqliteJournal(path)
    assert [b.contact for b in journal.load(0.0, 1000.0)] == ["sip:committed@h"]
    journal.close()


def test_unopenable_file_names_file_and_cause(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"not-a-dir.*reg\.sqlite"):
        SqliteJournal(blocker / "reg.sqlite")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="garbage.sqlite"):
        SqliteJournal(garbage)


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    first = load_or_create_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    other = tmp_path / "other"
    assert load_or_create_secret(other) != first
    path.write_text("")
    with pytest.raises(StoreError, match="empty"):
        load_or_create_secret(path)
