"""ScreeningSession (Qt-free): items, events from a worker thread, cancel, refresh after review."""

from __future__ import annotations

import threading
import time

import pytest

from breakfix_desktop.core.model_registry import ModelCatalog
from breakfix_desktop.core.quarantine import QuarantineStore
from breakfix_desktop.core.screening import NO_DETECTOR_NOTE, ScreeningEngine
from breakfix_desktop.core.screening_session import Progress, ScreeningSession, format_eta
from conftest import scan_image


@pytest.fixture
def store(tmp_path):
    with QuarantineStore(tmp_path / "store") as s:
        yield s


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        scan_image(i).save(folder / f"clean {i}.png")
    scan_image(10, flagged=True).save(folder / "sub" / "stamped.png")
    (folder / "sub" / "broken.png").write_bytes(b"not an image")
    return folder


def session_for(models, store, **kw):
    return ScreeningSession(ModelCatalog(models, prefer_gpu=False), store, **kw)


def test_add_paths_recursive_dedup_and_events(make_screening_models, store, scans):
    session = session_for(make_screening_models(), store)
    events = []
    session.subscribe(lambda e, d: events.append((e, d)))
    found = session.add_paths([scans])
    assert len(found.items) == 5 and len(session) == 5
    assert events[0][0] == "items" and events[0][1][0] == 0 and len(events[0][1][1]) == 5
    session.add_paths([scans / "clean 0.png", scans / "nope.png"])  # already there / missing
    assert len(session) == 5 and [p.name for p in session.missing] == ["nope.png"]
    assert session.pending_indices() == list(range(5))
    assert session.unavailable_reason() is None


def test_run_on_a_worker_thread_reports_every_item(make_screening_models, store, scans):
    session = session_for(make_screening_models(), store, batch_size=2, workers=2)
    session.add_paths([scans])
    assert session.begin()  # on the calling (UI) thread: buttons change at once
    seen, threads = [], set()
    session.subscribe(lambda e, d: (seen.append(e), threads.add(threading.get_ident())))
    worker = threading.Thread(target=session.run)
    worker.start()
    worker.join(60)
    assert session.state == "finished" and not session.running
    assert threads == {worker.ident}  # events come from the thread that ran it
    counts = session.counts()
    assert counts == {"clear": 3, "quarantined": 1, "error": 1, "pending": 0,
                      "attention": counts["attention"]}
    assert seen.count("result") == 5 and seen[-1] == "state" and "summary" in seen
    assert session.progress == Progress(5, 5, None, False) and session.progress.text() == "5 of 5 screened"
    by_name = {r.display_name: r for r in session.results()}
    assert by_name["stamped.png"].withheld and by_name["stamped.png"].label is None
    assert "not an image" in by_name["broken.png"].error
    # everything has a result now: a second run screens them all again and reuses the records
    summary = session.run()
    assert summary.total == 5 and all(r.reused for r in summary.results if r.verdict != "error")


def test_release_in_store_is_picked_up_by_refresh(make_screening_models, store, scans):
    session = session_for(make_screening_models(), store)
    session.add_paths([scans / "sub" / "stamped.png"])
    session.run()
    result = session.result(0)
    assert result.withheld and result.review_status == "pending"
    store.release(result.scan_id, "Dr Test", "fine")
    changed = []
    session.subscribe(lambda e, d: changed.append(d) if e == "result" else None)
    assert session.refresh_from_store() == [0]
    new = session.result(0)
    assert not new.withheld and new.label is not None and new.review_status == "released"
    assert changed[0][1] is new and session.refresh_from_store() == []


def test_cancel_stops_promptly(make_screening_models, store, tmp_path, monkeypatch):
    for i in range(12):
        scan_image(i).save(tmp_path / f"s{i}.png")
    original = ScreeningEngine._process_batch

    def slow(self, batch, models):
        time.sleep(0.15)
        return original(self, batch, models)

    monkeypatch.setattr(ScreeningEngine, "_process_batch", slow)
    session = session_for(make_screening_models(), store, batch_size=1, workers=1)
    session.add_paths([tmp_path])
    session.begin()
    worker = threading.Thread(target=session.run)
    worker.start()
    deadline = time.monotonic() + 30
    while not session.results() and time.monotonic() < deadline:
        time.sleep(0.01)
    session.cancel()
    worker.join(30)
    assert session.state == "cancelled" and session.summary.cancelled
    assert 1 <= len(session.results()) < 12 and session.counts()["pending"] >= 1


def test_without_classifier_or_detector(make_screening_models, store, tmp_path, scans):
    empty = session_for(tmp_path / "no-models", store)
    assert "No verified classifier is installed" in empty.unavailable_reason()
    empty.add_paths([scans])
    failures = []
    empty.subscribe(lambda e, d: failures.append(d) if e == "failed" else None)
    assert empty.run() is None and empty.state == "failed" and "no verified classifier" in failures[0]
    assert "could not be opened" in ScreeningSession(ModelCatalog(tmp_path), None,
                                                     store_error="disk full").unavailable_reason()

    only_classifier = session_for(make_screening_models([("tiny-cnn", "classifier", "classifier")]), store)
    only_classifier.add_paths([scans / "clean 0.png"])
    only_classifier.run()
    assert only_classifier.notes == [NO_DETECTOR_NOTE]
    only_classifier.clear()
    assert len(only_classifier) == 0 and only_classifier.results() == []


def test_registry_reload_recreates_the_engine(make_screening_models, store, tmp_path):
    catalog = ModelCatalog(tmp_path / "none", prefer_gpu=False)
    session = ScreeningSession(catalog, store)
    notes = []
    session.subscribe(lambda e, d: notes.append(d) if e == "availability" else None)
    assert session.unavailable_reason()
    catalog.reload(make_screening_models())
    assert notes == [None] and session.unavailable_reason() is None
    first = session.engine()
    catalog.reload()
    assert session.engine() is not first
    session.close()


def test_format_eta():
    assert format_eta(None) == "" and format_eta(0.4) == "less than a second left"
    assert format_eta(12) == "about 12 s left" and format_eta(600) == "about 10 min left"
    assert Progress(3, 10, 7.0, True).text() == "3 of 10 screened - about 7 s left"
    assert Progress(3, 10, None, True).text().endswith("estimating time left...")
