"""SqliteJournal: round trips across close/reopen and kill -9, clock conversion, errors,
and commits the file refuses (the changes wait for the next commit, the server goes on)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from psp.location import Binding, LocationStore
from psp.store_sqlite import BUSY_TIMEOUT, SqliteJournal, StoreError, load_or_create_secret
from tests.conftest import LOOPBACK

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


# ---------------------------------------------------------------- commits the file refuses


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another process's write lock on ``path``, as a backup tool or a second server holds it."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def rows(path: Path) -> dict[str, str]:
    """contact -> call_id, read from the file by another connection."""
    with contextlib.closing(sqlite3.connect(path)) as reader:
        return dict(reader.execute("SELECT contact, call_id FROM bindings").fetchall())


def test_a_refused_commit_keeps_its_changes_for_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "reg.sqlite"
    journal = SqliteJournal(path)
    journal.load(0.0, 1000.0)
    with locked(path):
        journal.upsert(plain_binding(contact="sip:a@h"))
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"reg\.sqlite.*locked.*1 change"):
            journal.commit()
        # SQLite's default busy wait is 5 s of a stalled processor thread
        assert time.monotonic() - started < BUSY_TIMEOUT + 0.5
        assert journal.pending == 1
    assert rows(path) == {}
    assert journal.commit() == 1
    assert rows(path) == {"sip:a@h": "c1@x"}
    journal.close()


@pytest.mark.parametrize(("before", "after", "expected"), [
    # upsert, then delete of the same binding across the failed commit: deleted
    (["up a 1"], ["del a"], {"sip:b@h": "2"}),
    # delete, then a new registration of it: present, with the newer data
    (["del b"], ["up b 3"], {"sip:b@h": "3"}),
    # a newer upsert replaces the queued one
    (["up a 1"], ["up a 4"], {"sip:a@h": "4", "sip:b@h": "2"}),
    # Contact: * (delete_aor), then a new contact of the same AOR: only the new one
    (["up a 1"], ["all", "up c 5"], {"sip:c@h": "5"}),
    # a new contact, then Contact: *: none
    (["up c 5"], ["all"], {}),
])
def test_changes_queued_across_a_refused_commit_keep_their_order(
        tmp_path: Path, before: list[str], after: list[str], expected: dict[str, str]) -> None:
    path = tmp_path / "reg.sqlite"
    journal = SqliteJournal(path)
    journal.load(0.0, 1000.0)
    journal.upsert(plain_binding(contact="sip:b@h", call_id="2"))
    journal.commit()

    def apply(change: str) -> None:
        match change.split():
            case ["up", name, call_id]:
                journal.upsert(plain_binding(contact=f"sip:{name}@h", call_id=call_id))
            case ["del", name]:
                journal.delete(AOR, f"sip:{name}@h")
            case ["all"]:
                journal.delete_aor(AOR)

    with locked(path):
        journal.upsert(plain_binding(aor="sip:bob@example.com", contact="sip:bob@h", call_id="9"))
        for change in before:
            apply(change)
        with pytest.raises(StoreError):
            journal.commit()
    for change in after:
        apply(change)
    journal.commit()
    # bob's binding, queued only before the refused commit, is written too
    assert rows(path) == {**expected, "sip:bob@h": "9"}
    journal.close()


def test_the_queue_holds_one_change_per_binding_however_long_the_disk_refuses(tmp_path: Path) -> None:
    path = tmp_path / "reg.sqlite"
    journal = SqliteJournal(path)
    journal.load(0.0, 1000.0)
    with locked(path):
        for cseq in range(1, 4):  # three refreshes of one binding, each commit refused
            journal.upsert(plain_binding(contact="sip:a@h", cseq=cseq))
            with pytest.raises(StoreError):
                journal.commit()
        assert journal.pending == 1
    journal.close()  # commits what waited
    reopened = SqliteJournal(path)
    assert [b.cseq for b in reopened.load(0.0, 1000.0)] == [3]
    reopened.close()


REGISTER = (
    "REGISTER sip:localhost SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-locked-{n}\r\n"
    "From: <sip:alice@localhost>;tag=f1\r\n"
    "To: <sip:alice@localhost>\r\n"
    "Call-ID: locked@test\r\n"
    "CSeq: {n} REGISTER\r\n"
    "Contact: <sip:alice@{host}:{port}>\r\n"
    "Expires: 600\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_server_answers_while_the_file_is_locked_and_writes_once_it_is_released(partysip) -> None:
    server = partysip()
    path = server.config_path.parent / "location.sqlite"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind((LOOPBACK, 0))
        ua.settimeout(5.0)
        port = ua.getsockname()[1]
        with locked(path):
            started = time.monotonic()
            ua.sendto(REGISTER.format(host=LOOPBACK, port=port, n=1).encode(), (LOOPBACK, server.udp_port))
            answer = ua.recv(65535)
            # one busy wait, not SQLite's default 5 s
            assert time.monotonic() - started < BUSY_TIMEOUT + 1.0
            assert answer.startswith(b"SIP/2.0 200 ")
            assert rows(path) == {}
        # No further message: the processor retries by itself once the lock is gone.
        deadline = time.monotonic() + 5.0
        while rows(path) == {} and time.monotonic() < deadline:
            time.sleep(0.05)
    assert rows(path) == {f"sip:alice@{LOOPBACK}:{port}": "locked@test"}
    assert server.metrics()["psp_store_commit_failures_total"] >= 1
    assert "cannot write recovery file" in server.log()
    assert "recovery file written again" in server.log()
