"""Hash-chained, append-only audit log: chain, triggers, tampering, verify-audit CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from breakfix_desktop.core import audit_log as A
from breakfix_desktop.core.quarantine import QuarantineStore


@pytest.fixture
def store(tmp_path):
    with QuarantineStore(tmp_path / "store") as s:
        yield s


def fill(store, n=5):
    for i in range(n):
        store.log_event("model_loaded", {"name": f"m{i}", "sha256": "ab" * 32, "score": 0.5 + i})


def test_chain_links_and_hashes(store):
    fill(store, 4)
    entries = store.audit_entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == A.GENESIS_HASH
    for prev, cur in zip(entries, entries[1:]):
        assert cur.prev_hash == prev.hash
    e = entries[2]
    assert e.hash == A.entry_hash(e.prev_hash, e.seq, e.time, e.event, e.payload)
    assert A.verify_audit(store) == (True, None, A.verify_audit(store.folder).message)
    ok, bad, msg = A.verify_audit(store.folder)
    assert ok and bad is None and "4 entries" in msg


def test_unknown_event_and_patient_identifiers_refused(store):
    with pytest.raises(ValueError, match="unknown audit event"):
        store.log_event("deleted_everything", {})
    with pytest.raises(ValueError, match="patient identifiers"):
        store.log_event("exported", {"rows": [{"patient_name": "Doe^Jane"}]})
    assert store.audit_entries() == []


def test_triggers_forbid_update_and_delete(store):
    fill(store, 2)
    conn = sqlite3.connect(store.db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET payload = '{}' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 2")
    conn.close()


def tamper(db, sql, *args):
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def test_tampered_payload_names_the_entry(store):
    fill(store, 6)
    store.close()
    payload = json.dumps({"name": "evil", "sha256": "ab" * 32, "score": 3.5})
    tamper(store.db_path, "UPDATE audit_log SET payload = ? WHERE seq = 4", payload)
    ok, bad, msg = A.verify_audit(store.folder)
    assert not ok and bad == 4 and "entry 4" in msg and "altered" in msg


def test_deleted_entry_is_named(store):
    fill(store, 6)
    store.close()
    tamper(store.db_path, "DELETE FROM audit_log WHERE seq = 3")
    ok, bad, msg = A.verify_audit(store.folder)
    assert not ok and bad == 3 and "missing" in msg


def test_rehashed_entry_breaks_the_next_link(store):
    fill(store, 5)
    store.close()
    conn = sqlite3.connect(store.db_path)
    seq, time, event, prev = conn.execute("SELECT seq, time, event, prev_hash FROM audit_log WHERE seq = 2").fetchone()
    conn.close()
    payload = {"name": "evil"}
    new_hash = A.entry_hash(prev, seq, time, event, payload)  # a careful forger recomputes the hash ...
    tamper(store.db_path, "UPDATE audit_log SET payload = ?, hash = ? WHERE seq = 2", A.canonical_json(payload), new_hash)
    ok, bad, msg = A.verify_audit(store.folder)
    assert not ok and bad == 3 and "does not link" in msg  # ... and is caught by the next entry


def cli(*args):
    return subprocess.run([sys.executable, "-m", "breakfix_desktop", "verify-audit", *args],
                          capture_output=True, text=True, timeout=120)


def test_verify_audit_cli(store):
    fill(store, 5)
    store.close()
    res = cli("--store", str(store.folder))
    assert res.returncode == 0 and "intact" in res.stdout
    tamper(store.db_path, "UPDATE audit_log SET event = 'released' WHERE seq = 2")
    res = cli("--store", str(store.folder))
    assert res.returncode == 1
    assert "entry 2" in res.stdout and "BROKEN" in res.stdout


def test_verify_audit_cli_without_store(tmp_path):
    res = cli("--store", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "no store database" in res.stderr
