"""Quarantine store: schema, one record per content, content-addressed copies, reviews."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from breakfix_desktop.core import quarantine as Q
from breakfix_desktop.core.hashing import sha256_file

PROBS = {"glioma": 0.7, "meningioma": 0.1, "notumor": 0.1, "pituitary": 0.1}


@pytest.fixture
def store(tmp_path):
    with Q.QuarantineStore(tmp_path / "store") as s:
        yield s


@pytest.fixture
def scan(tmp_path):
    p = tmp_path / "in put" / "scän 1.png"
    p.parent.mkdir()
    p.write_bytes(os.urandom(5000))
    return p


def test_schema_wal_foreign_keys_version(store):
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "scans", "reviews", "audit_log"} <= tables
    conn.close()
    assert store.schema_version == Q.SCHEMA_VERSION
    assert store._query("PRAGMA foreign_keys")[0][0] == 1
    assert store.integrity_check() == "ok"
    with pytest.raises(sqlite3.IntegrityError):  # reviews need an existing scan
        with store._write() as c:
            c.execute("INSERT INTO reviews (scan_id, decision, reviewer, time) VALUES (999, 'release', 'x', 't')")


def test_newer_schema_refused(tmp_path):
    Q.QuarantineStore(tmp_path / "s").close()
    conn = sqlite3.connect(tmp_path / "s" / Q.DB_NAME)
    conn.execute("INSERT INTO schema_version VALUES (99, 'future')")
    conn.commit()
    conn.close()
    with pytest.raises(Q.StoreError, match="newer"):
        Q.QuarantineStore(tmp_path / "s")


def test_default_dir_from_env_or_platformdirs(monkeypatch, tmp_path):
    monkeypatch.setenv("BREAKFIX_STORE", str(tmp_path / "env-store"))
    assert Q.default_store_dir() == tmp_path / "env-store"
    monkeypatch.delenv("BREAKFIX_STORE")
    import platformdirs

    assert Q.default_store_dir() == Q.Path(platformdirs.user_data_dir("BreakFix Desktop", "BreakFix"))


def test_same_content_one_record(store, scan, tmp_path):
    sha = sha256_file(scan)
    a = store.record_scan(sha256=sha, path=scan, verdict="clear", label="glioma", probabilities=PROBS, models=["m 1"])
    twin = tmp_path / "twin.png"
    twin.write_bytes(scan.read_bytes())
    b = store.record_scan(sha256=sha, path=twin, verdict="clear", label="glioma", probabilities=PROBS, models=["m 2"])
    assert a.id == b.id and store.count() == 1
    assert b.path == str(scan) and b.last_path == str(twin) and b.times_seen == 2 and b.models == ["m 2"]
    # frames of one file are separate records
    store.record_scan(sha256=sha, frame=0, path=scan, verdict="clear", label="glioma", probabilities=PROBS)
    assert store.count() == 2 and store.find(sha, 0).frame == 0 and store.find(sha).frame is None
    with pytest.raises(sqlite3.IntegrityError):  # the UNIQUE constraint itself
        with store._write() as c:
            c.execute("INSERT INTO scans (sha256, frame, path, last_path, verdict, first_seen, last_seen) "
                      "VALUES (?, -1, 'x', 'x', 'clear', 't', 't')", (sha,))


def test_quarantine_copy_never_touches_the_original(store, scan):
    before_bytes, before_stat = scan.read_bytes(), scan.stat()
    sha = sha256_file(scan)
    dest = store.quarantine_copy(scan, sha)
    assert dest == store.folder / "quarantine" / sha[:2] / sha
    assert dest.read_bytes() == before_bytes and sha256_file(dest) == sha
    assert scan.read_bytes() == before_bytes
    after = scan.stat()
    assert after.st_mtime_ns == before_stat.st_mtime_ns and after.st_size == before_stat.st_size
    assert scan.exists() and list(store.tmp_dir.iterdir()) == []
    assert store.quarantine_copy(scan, sha) == dest  # idempotent


def test_quarantine_copy_refuses_changed_file(store, scan):
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(Q.StoreError, match="changed while it was being screened"):
        store.quarantine_copy(scan, wrong)
    assert store.quarantine_files() == [] and list(store.tmp_dir.iterdir()) == []


def test_stale_temp_files_removed_on_open(tmp_path):
    s = Q.QuarantineStore(tmp_path / "s")
    s.close()
    dead = s.tmp_dir / "abcdef.999999999.0123.part"  # a pid that cannot exist
    mine = s.tmp_dir / f"abcdef.{os.getpid()}.4567.part"
    dead.write_bytes(b"half a copy")
    mine.write_bytes(b"in progress")
    Q.QuarantineStore(tmp_path / "s").close()
    assert not dead.exists() and mine.exists()


def quarantined(store, scan):
    sha = sha256_file(scan)
    dest = store.quarantine_copy(scan, sha)
    return store.record_scan(sha256=sha, path=scan, verdict="quarantined", label="glioma", probabilities=PROBS,
                             pattern_score=0.97, scores={"trigger": 0.97}, quarantine_file=dest)


def test_quarantined_result_withheld_until_release(store, scan):
    rec = quarantined(store, scan)
    assert rec.withheld and rec.label is None and rec.probabilities is None and rec.review_status == "pending"
    assert rec.quarantine_file == f"quarantine/{rec.sha256[:2]}/{rec.sha256}"
    assert [r.id for r in store.review_queue()] == [rec.id]
    with pytest.raises(Q.ResultWithheldError):
        store.withheld_result(rec.id)
    with pytest.raises(Q.StoreError, match="reviewer"):
        store.release(rec.id, "   ")
    released = store.release(rec.id, "Dr. Öz", "artefact, not a trigger")
    assert released.review_status == "released" and released.label == "glioma" and released.probabilities == PROBS
    assert store.withheld_result(rec.id) == ("glioma", PROBS)
    assert store.review_queue() == []
    [review] = store.reviews(rec.id)
    assert (review.decision, review.reviewer, review.comment) == ("release", "Dr. Öz", "artefact, not a trigger")
    with pytest.raises(Q.StoreError, match="already reviewed"):
        store.confirm_tampering(rec.id, "Dr. B")
    events = [e.event for e in store.audit_entries()]
    assert events == ["screened", "quarantined", "released"]
    assert store.verify_audit_chain().ok


def test_confirm_tampering_keeps_it_withheld(store, scan):
    rec = quarantined(store, scan)
    done = store.confirm_tampering(rec.id, "Dr. A")
    assert done.review_status == "confirmed" and done.label is None
    with pytest.raises(Q.ResultWithheldError):
        store.withheld_result(rec.id)
    assert store.audit_entries()[-1].event == "confirmed"
    with pytest.raises(Q.StoreError, match="not quarantined"):
        clear = store.record_scan(sha256="cd" * 32, path="x.png", verdict="clear", label="notumor")
        store.release(clear.id, "Dr. A")


def test_quarantine_is_sticky_and_errors_do_not_overwrite(store, scan):
    rec = quarantined(store, scan)
    again = store.record_scan(sha256=rec.sha256, path=scan, verdict="clear", label="notumor", probabilities=PROBS)
    assert again.verdict == "quarantined" and again.withheld and again.times_seen == 2
    assert store.audit_entries()[-1].payload["computed_verdict"] == "clear"
    good = store.record_scan(sha256="ef" * 32, path="y.png", verdict="clear", label="notumor", probabilities=PROBS)
    after = store.record_scan(sha256="ef" * 32, path="y.png", verdict="error", error="y.png: boom")
    assert after.verdict == "clear" and after.label == "notumor" and after.id == good.id
    err = store.record_scan(sha256="aa" * 32, path="z.png", verdict="error", error="z.png: bad")
    fixed = store.record_scan(sha256="aa" * 32, path="z.png", verdict="clear", label="glioma", probabilities=PROBS)
    assert fixed.id == err.id and fixed.verdict == "clear" and fixed.error is None


def test_reviews_are_append_only(store, scan):
    rec = quarantined(store, scan)
    store.release(rec.id, "Dr. A")
    conn = sqlite3.connect(store.db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE reviews SET reviewer = 'someone else'")
    conn.close()
