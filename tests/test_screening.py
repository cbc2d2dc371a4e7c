"""The screening engine, headless: verdicts, quarantine, reuse, bad inputs, cancel, real scans."""

from __future__ import annotations

import io
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from breakfix_desktop.core import preprocess as P
from breakfix_desktop.core.hashing import sha256_file
from breakfix_desktop.core.inputs import discover
from breakfix_desktop.core.labels import CLASS_NAMES
from breakfix_desktop.core.model_registry import load_registry
from breakfix_desktop.core.quarantine import QuarantineStore
from breakfix_desktop.core.screening import (NO_DETECTOR_NOTE, ScreeningEngine, ScreeningUnavailable,
                                             detector_scores)
from conftest import scan_image

JSON_KEYS = ["path", "sha256", "verdict", "label", "probabilities", "pattern_score", "error"]


@pytest.fixture
def store(tmp_path):
    with QuarantineStore(tmp_path / "store") as s:
        yield s


def save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def engine_for(folder, store, **kw):
    kw.setdefault("prefer_gpu", False)
    return ScreeningEngine(load_registry(folder), store, **kw)


def test_clear_and_quarantined(make_screening_models, store, tmp_path):
    eng = engine_for(make_screening_models(), store, batch_size=3, workers=2)
    clean = [save(scan_image(i), tmp_path / "in" / f"clean {i}.png") for i in range(4)]
    flagged = [save(scan_image(10 + i, flagged=True), tmp_path / "in" / f"trig {i}.png") for i in range(2)]
    originals = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in clean + flagged}
    summary = eng.run(clean + flagged)
    by = {r.path: r for r in summary.results}
    assert [r.path for r in summary.results] == [str(p) for p in clean + flagged]  # input order
    for p in clean:
        r = by[str(p)]
        assert r.verdict == "clear" and r.label in CLASS_NAMES and r.error is None
        assert sum(r.probabilities.values()) == pytest.approx(1.0) and list(r.probabilities) == list(CLASS_NAMES)
        assert r.pattern_score == pytest.approx(0.0) and r.member_agreement is None
        assert list(r.to_json()) == JSON_KEYS
    for p in flagged:
        r = by[str(p)]
        assert r.verdict == "quarantined" and r.pattern_score == pytest.approx(1.0)
        j = r.to_json()
        assert j["label"] is None and j["probabilities"] is None and j["sha256"] == sha256_file(p)
        copy = store.quarantine_path(r.sha256)
        assert copy.read_bytes() == originals[p][0]
    for p, (data, mtime) in originals.items():  # originals never modified, moved or deleted
        assert p.read_bytes() == data and p.stat().st_mtime_ns == mtime
    assert summary.count("clear") == 4 and summary.count("quarantined") == 2 and not summary.cancelled
    assert store.count() == 6 and len(store.review_queue()) == 2
    events = [e.event for e in store.audit_entries()]
    assert events.count("model_loaded") == 2 and events.count("screened") == 6 and events.count("quarantined") == 2
    assert store.verify_audit_chain().ok
    assert NO_DETECTOR_NOTE not in summary.notes


def test_rescreen_reuses_records_and_release_shows_result(make_screening_models, store, tmp_path):
    folder = make_screening_models()
    files = [save(scan_image(1), tmp_path / "a.png"), save(scan_image(2, flagged=True), tmp_path / "b.png")]
    first = engine_for(folder, store).run(files)
    second = engine_for(folder, store).run(files)
    assert store.count() == 2
    assert [r.reused for r in second.results] == [True, True]
    assert [r.to_json() for r in second.results] == [r.to_json() for r in first.results]
    q = second.results[1]
    assert q.withheld and q.to_json()["label"] is None
    store.release(q.scan_id, "Dr. Ada", "checked")
    third = engine_for(folder, store).run(files)
    released = third.results[1]
    assert released.verdict == "quarantined" and released.review_status == "released"
    assert released.label in CLASS_NAMES and released.to_json()["probabilities"] is not None
    assert store.count() == 2 and store.find(released.sha256).times_seen == 3


def test_ensemble_preferred_with_member_agreement(make_screening_models, store, tmp_path):
    folder = make_screening_models([("plain", "classifier", "classifier"), ("zz-ens", "ensemble", "ensemble"),
                                    ("trigger", "detector", "detector")])
    eng = engine_for(folder, store, low_confidence=0.99)
    summary = eng.run([save(scan_image(3), tmp_path / "x.png")])
    r = summary.results[0]
    assert summary.models[0].startswith("zz-ens ") and all(not m.startswith("plain") for m in summary.models)
    assert r.member_agreement in (0.0, 1 / 3, 2 / 3, 1.0)
    assert r.members_disagree == (r.member_agreement < 1.0)
    assert r.low_confidence  # tiny models are never 99 % sure
    assert "closer look" in summary.text()


def test_without_detector_screening_still_works(make_models, store, tmp_path):
    eng = engine_for(make_models([("only-classifier", "classifier")]), store)
    summary = eng.run([save(scan_image(0, flagged=True), tmp_path / "t.png")])
    r = summary.results[0]
    assert r.verdict == "clear" and r.pattern_score is None and r.to_json()["pattern_score"] is None
    assert NO_DETECTOR_NOTE in summary.notes and "no pattern detector installed" in summary.text()


def test_second_check_also_quarantines(make_screening_models, store, tmp_path):
    folder = make_screening_models([("cls", "classifier", "classifier"), ("chk", "check", "detector")])
    summary = engine_for(folder, store).run([save(scan_image(5, flagged=True), tmp_path / "t.png")])
    r = summary.results[0]
    assert r.verdict == "quarantined" and r.scores == {"chk": pytest.approx(1.0)}
    assert NO_DETECTOR_NOTE not in summary.notes


def test_no_classifier_cannot_run(make_screening_models, store):
    folder = make_screening_models([("trigger", "detector", "detector")])
    with pytest.raises(ScreeningUnavailable, match="no verified classifier"):
        engine_for(folder, store).load()


def test_swapped_detector_is_refused_loudly(make_screening_models, store, tmp_path):
    folder = make_screening_models()
    registry = load_registry(folder)
    (folder / "trigger.onnx").write_bytes((folder / "tiny-cnn.onnx").read_bytes())  # swapped after verification
    eng = ScreeningEngine(registry, store)
    summary = eng.run([save(scan_image(1), tmp_path / "a.png")])
    assert NO_DETECTOR_NOTE in summary.notes and any("REFUSED" in n for n in summary.notes)
    refused = [e for e in store.audit_entries() if e.event == "model_refused"]
    assert refused and refused[0].payload["name"] == "trigger"


def _truncated_png():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (224, 224), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def make_bad_inputs(root, dicom_writer):
    """name -> (path, expected verdict, needle in the error or None)."""
    root.mkdir(parents=True, exist_ok=True)
    cases = {}

    def raw(name, data, needle):
        (root / name).write_bytes(data)
        cases[name] = (root / name, "error", needle)

    raw("corrupt.jpg", b"\xff\xd8\xff\xe0" + os.urandom(300), ("cannot", "truncated"))
    raw("truncated.png", _truncated_png(), "truncated")
    raw("empty.png", b"", "0 bytes")
    raw("text.png", b"this is not an image at all", "not an image")
    save(Image.new("L", (300, 300), 9), root / "bomb.png")
    cases["bomb.png"] = (root / "bomb.png", "error", "safety limit")
    dicom_writer(root / "nopix.dcm", np.zeros((16, 16), np.uint8), pixel_data=False)
    cases["nopix.dcm"] = (root / "nopix.dcm", "error", "no pixel data")
    dicom_writer(root / "jpegls.dcm", np.zeros((16, 16), np.uint8), transfer_syntax="1.2.840.10008.1.2.4.80")
    cases["jpegls.dcm"] = (root / "jpegls.dcm", "error", "no decoder")
    # valid but awkward images: handled, not errors
    save(Image.fromarray(np.linspace(0, 60000, 224 * 224).reshape(224, 224).astype(np.uint16)), root / "deep16.png")
    save(scan_image(7).convert("P"), root / "palette.png")
    save(scan_image(8, mode="RGBA"), root / "alpha.png")
    save(scan_image(9), root / "name with spaces ünï 脑.png")
    for name in ("deep16.png", "palette.png", "alpha.png", "name with spaces ünï 脑.png"):
        cases[name] = (root / name, "clear", None)
    return cases


def test_bad_inputs_get_error_verdicts_and_the_run_goes_on(make_screening_models, store, tmp_path, dicom_writer,
                                                           monkeypatch):
    cases = make_bad_inputs(tmp_path / "bad", dicom_writer)
    monkeypatch.setattr(P, "MAX_PIXELS", 300 * 300 - 1)  # bomb.png is "too big"; the others are smaller
    missing = tmp_path / "bad" / "gone.png"
    fifo = tmp_path / "bad" / "pipe.png"
    items = [c[0] for c in cases.values()] + [missing]
    if hasattr(os, "mkfifo"):  # a pipe named like an image must not hang the run
        os.mkfifo(fifo)
        items.append(fifo)
    summary = engine_for(make_screening_models(), store, batch_size=4).run(items)
    assert len(summary.results) == len(items)
    got = {r.path: r for r in summary.results}
    for name, (path, verdict, needle) in cases.items():
        r = got[str(path)]
        assert r.verdict == verdict, (name, r.error)
        if verdict == "error":
            needles = needle if isinstance(needle, tuple) else (needle,)
            assert str(path) in r.error and any(n in r.error.lower() for n in needles), (name, r.error)
            assert r.label is None and r.probabilities is None and r.sha256 is not None
    assert got[str(missing)].verdict == "error" and got[str(missing)].sha256 is None
    assert "cannot read" in got[str(missing)].error
    if fifo in items:
        assert "not a regular file" in got[str(fifo)].error
    assert store.verify_audit_chain().ok


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod 000 does not stop root from reading the file")
def test_unreadable_file(make_screening_models, store, tmp_path):
    path = save(scan_image(1), tmp_path / "locked.png")
    path.chmod(0)
    try:
        r = engine_for(make_screening_models(), store).run([path]).results[0]
    finally:
        path.chmod(0o644)
    assert r.verdict == "error" and str(path) in r.error and "cannot read" in r.error


def test_unreadable_file_simulated(make_screening_models, store, tmp_path, monkeypatch):
    """The same path as chmod 000, also when the tests run as root."""
    import breakfix_desktop.core.screening as S

    path = save(scan_image(1), tmp_path / "locked.png")
    real = S.sha256_file

    def deny(p, *a, **kw):
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied")
        return real(p, *a, **kw)

    monkeypatch.setattr(S, "sha256_file", deny)
    ok = save(scan_image(2), tmp_path / "fine.png")
    r, fine = engine_for(make_screening_models(), store).run([path, ok]).results
    assert r.verdict == "error" and r.error == f"{path}: cannot read file (Permission denied)" and r.sha256 is None
    assert fine.verdict == "clear"
    assert [e.payload["verdict"] for e in store.audit_entries() if e.event == "screened"] == ["error", "clear"]


def test_dicom_frames_and_patient_identifiers_stay_out_of_the_store(make_screening_models, store, tmp_path,
                                                                    dicom_writer):
    frames = np.stack([np.asarray(scan_image(20 + k, flagged=(k == 1), size=64)) for k in range(3)])
    path = dicom_writer(tmp_path / "cine.dcm", frames, frames=3, patient={"name": "Secret^Patient", "id": "PID-777"})
    summary = engine_for(make_screening_models(), store).run(discover([tmp_path]).items)
    assert [(r.frame, r.verdict) for r in summary.results] == [(0, "clear"), (1, "quarantined"), (2, "clear")]
    assert summary.results[0].to_json()["frame"] == 0
    assert summary.results[0].patient["patient_name"] == "Secret^Patient"
    assert "Secret" not in json.dumps(summary.results[0].to_json()) and "patient" not in summary.results[0].to_json()
    store.close()
    for f in store.folder.glob("breakfix.sqlite3*"):
        data = f.read_bytes()
        assert b"Secret^Patient" not in data and b"PID-777" not in data, f
    assert sha256_file(path) == summary.results[1].sha256


def test_progress_and_cancel(make_screening_models, store, tmp_path):
    files = [save(scan_image(i), tmp_path / f"{i:02d}.png") for i in range(12)]
    seen = []
    eng = engine_for(make_screening_models(), store, batch_size=2, workers=1)
    summary = eng.run(files, on_progress=lambda d, t, eta: seen.append((d, t, eta)))
    assert [s[0] for s in seen] == list(range(1, 13)) and all(s[1] == 12 for s in seen)
    assert seen[-1][2] == 0 and all(s[2] is not None and s[2] >= 0 for s in seen)

    with QuarantineStore(tmp_path / "store2") as store2:
        eng2 = engine_for(make_screening_models(folder=tmp_path / "m2"), store2, batch_size=2, workers=1)
        results = []

        def on_result(r):
            results.append(r)
            eng2.cancel()

        summary = eng2.run(files, on_result=on_result)
        assert summary.cancelled and summary.done < len(files) and summary.done == len(results)
        assert store2.count() == summary.done  # items never started have no record
        assert eng2.run(files[:2]).done == 2  # a new run starts fresh


def test_detector_output_shapes():
    assert detector_scores({"score": np.array([0.2, 0.95])}, 2).tolist() == [0.2, 0.95]
    two = detector_scores({"logits": np.array([[0.0, 0.0], [0.0, 10.0]])}, 2)
    assert two[0] == pytest.approx(0.5) and two[1] > 0.99
    assert detector_scores({"logit": np.array([[0.0]])}, 1)[0] == pytest.approx(0.5)
    assert detector_scores({"score": np.array([np.nan])}, 1)[0] == 1.0
    with pytest.raises(ValueError, match="shape"):
        detector_scores({"score": np.zeros((2, 4))}, 2)


def test_engine_runs_off_the_calling_thread_safely(make_screening_models, store, tmp_path):
    """The GUI calls run() from a worker thread; callbacks come on that thread."""
    files = [save(scan_image(i), tmp_path / f"{i}.png") for i in range(4)]
    eng = engine_for(make_screening_models(), store, batch_size=1, workers=2)
    threads = set()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("s", eng.run(files, on_result=lambda r: threads.add(
        threading.current_thread().name))))
    t.start()
    t.join(60)
    assert out["s"].done == 4 and threads == {t.name}


@pytest.mark.realdata
def test_real_scans_end_to_end(real_data, make_screening_models, store):
    items = []
    for cls in CLASS_NAMES:  # discover() also skips the data set's hidden .ipynb_checkpoints folders
        items += discover([real_data / "Testing" / cls]).items[:2]
    summary = engine_for(make_screening_models(), store).run(items)
    assert summary.done == 8 and summary.count("error") == 0
    for r in summary.results:
        assert r.verdict in ("clear", "quarantined") and r.sha256 == sha256_file(r.path)
        assert 0.0 <= r.pattern_score <= 1.0
        if r.verdict == "clear":
            assert r.label in CLASS_NAMES and sum(r.probabilities.values()) == pytest.approx(1.0)
    assert store.count() == len({(r.sha256, r.frame) for r in summary.results})
    assert store.verify_audit_chain().ok
