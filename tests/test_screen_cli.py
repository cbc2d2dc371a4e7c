"""`breakfix-desktop screen` headless: the report, exit codes, and crash consistency under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from breakfix_desktop.core.audit_log import verify_audit
from breakfix_desktop.core.hashing import sha256_file
from breakfix_desktop.core.quarantine import QuarantineStore
from conftest import REPO, scan_image

KEYS = ["path", "sha256", "verdict", "label", "probabilities", "pattern_score", "error"]


def cli_args(*args):
    return [sys.executable, "-m", "breakfix_desktop", *args]


def screen(*args, timeout=180):
    return subprocess.run(cli_args("screen", "--cpu", "--quiet", *map(str, args)), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def test_screen_writes_the_report(make_screening_models, tmp_path):
    models = make_screening_models()
    scans = tmp_path / "scans ünï"
    clean = save(scan_image(1), scans / "clean one.png")
    flagged = save(scan_image(2, flagged=True), scans / "sub" / "trig.png")
    (scans / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    report, store = tmp_path / "out.json", tmp_path / "store"
    res = screen(scans, tmp_path / "nope.png", "--report", report, "--store", store, "--models", models)
    assert res.returncode == 0, res.stderr
    data = json.loads(report.read_text(encoding="utf-8"))
    assert isinstance(data, list) and all(list(o) == KEYS for o in data)
    by = {o["path"]: o for o in data}
    assert set(by) == {str(clean), str(flagged), str(scans / "broken.jpg"), str(tmp_path / "nope.png")}
    assert by[str(clean)]["verdict"] == "clear" and by[str(clean)]["label"] and by[str(clean)]["error"] is None
    assert by[str(clean)]["sha256"] == sha256_file(clean)
    q = by[str(flagged)]
    assert q["verdict"] == "quarantined" and q["label"] is None and q["probabilities"] is None
    assert q["pattern_score"] == pytest.approx(1.0)
    bad = by[str(scans / "broken.jpg")]
    assert bad["verdict"] == "error" and str(scans / "broken.jpg") in bad["error"] and bad["label"] is None
    assert by[str(tmp_path / "nope.png")]["verdict"] == "error"
    assert "1 clear, 1 quarantined, 1 error" in res.stdout and "no such file" in res.stderr
    # the same scans again: the existing records are found, not duplicated
    res = screen(scans, "--report", report, "--store", store, "--models", models)
    assert res.returncode == 0, res.stderr
    with QuarantineStore(store) as s:
        assert s.count() == 3
        assert [e.event for e in s.audit_entries()].count("exported") == 2
    ok = subprocess.run(cli_args("verify-audit", "--store", str(store)), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "intact" in ok.stdout


def test_screen_without_detector_says_so(make_models, tmp_path):
    save(scan_image(1), tmp_path / "in" / "a.png")
    res = screen(tmp_path / "in", "--report", tmp_path / "r.json", "--store", tmp_path / "s",
                 "--models", make_models([("only", "classifier")]))
    assert res.returncode == 0, res.stderr
    assert "no pattern detector installed" in res.stdout
    [obj] = json.loads((tmp_path / "r.json").read_text())
    assert obj["verdict"] == "clear" and obj["pattern_score"] is None


@pytest.mark.parametrize("case", ["no classifier", "no inputs", "report folder missing", "report is a folder"])
def test_screen_cannot_run(case, make_screening_models, tmp_path):
    inputs = tmp_path / "in"
    save(scan_image(1), inputs / "a.png")
    models = make_screening_models()
    report = tmp_path / "r.json"
    needle = {"no classifier": "no verified classifier", "no inputs": "no inputs found",
              "report folder missing": "does not exist", "report is a folder": "is a folder"}[case]
    if case == "no classifier":
        models = make_screening_models([("trigger", "detector", "detector")], folder=tmp_path / "det-only")
    elif case == "no inputs":
        inputs = tmp_path / "empty"
        inputs.mkdir()
    elif case == "report folder missing":
        report = tmp_path / "no" / "such" / "r.json"
    else:
        report = tmp_path
    res = screen(inputs, "--report", report, "--store", tmp_path / "s", "--models", models)
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert case == "report is a folder" or not report.exists()


def _rows(db):
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM scans").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_batch_leaves_a_consistent_store(make_screening_models, tmp_path):
    models = make_screening_models()
    scans = tmp_path / "scans"
    files = [save(scan_image(i, flagged=i % 2 == 0, size=1024), scans / f"scan {i:02d}.png") for i in range(30)]
    originals = {f: f.read_bytes() for f in files}
    store = tmp_path / "store"
    proc = subprocess.Popen(cli_args("screen", "--cpu", "--quiet", str(scans), "--report", str(tmp_path / "r.json"),
                                     "--store", str(store), "--models", str(models), "--batch-size", "2",
                                     "--workers", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    db = store / "breakfix.sqlite3"
    deadline = time.monotonic() + 120
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        rows = _rows(db) if db.exists() else 0
        if rows >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"screen finished before it could be killed ({rows} rows); {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_rows = _rows(db)
    assert 4 <= killed_rows < 30, killed_rows

    with QuarantineStore(store) as s:  # reopening recovers the WAL and removes dead temp files
        assert s.integrity_check() == "ok"
        for f in s.quarantine_files():  # only complete content-addressed copies
            assert sha256_file(f) == f.name and f.parent.name == f.name[:2], f
        assert list(s.tmp_dir.iterdir()) == []
        for rec in s.scans("quarantined"):
            assert (store / rec.quarantine_file).is_file()
        assert s.verify_audit_chain().ok
    assert verify_audit(store).ok
    assert not (tmp_path / "r.json").exists()  # the report is written atomically at the end, or not at all

    res = screen(scans, "--report", tmp_path / "r.json", "--store", store, "--models", models)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report) == 30 and {o["verdict"] for o in report} == {"clear", "quarantined"}
    with QuarantineStore(store) as s:
        assert s.count() == 30
        recs = s.scans()
        assert sorted(r.sha256 for r in recs) == sorted(sha256_file(f) for f in files)  # exactly one record each
        assert sum(r.times_seen for r in recs) == 30 + killed_rows
        assert s.verify_audit_chain().ok and s.integrity_check() == "ok"
        assert len(s.quarantine_files()) == 15
    for f, data in originals.items():
        assert f.read_bytes() == data
