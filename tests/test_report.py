"""Reports: CSV rows (identifiers only on opt-in, withheld results stay empty), PDF, exported events."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from breakfix_desktop.core.model_registry import ModelCatalog, load_registry
from breakfix_desktop.core.quarantine import QuarantineStore
from breakfix_desktop.core.report import (PATIENT_COLUMNS, ReportInfo, csv_text, report_columns, report_html,
                                          short_error, write_csv)
from breakfix_desktop.core.screening import ScreeningEngine
from breakfix_desktop.core.screening_session import ScreeningSession
from conftest import CLASSES, scan_image, write_dicom

PATIENT = {"name": "Doe^Jane", "id": "PID-0001", "birth_date": "19700101"}


@pytest.fixture
def store(tmp_path):
    with QuarantineStore(tmp_path / "store") as s:
        yield s


@pytest.fixture
def results(make_screening_models, store, tmp_path):
    """A clear DICOM scan with patient tags, a quarantined PNG, a broken file - screened for real."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(30, 180, (64, 64)).astype(np.uint8)
    pixels[:8, :8] = 0
    write_dicom(folder / "a patient.dcm", pixels, patient=PATIENT)
    scan_image(3, flagged=True).save(folder / "stamped.png")
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    engine = ScreeningEngine(load_registry(make_screening_models()), store, prefer_gpu=False)
    summary = engine.run(sorted(folder.iterdir()))
    by = {r.display_name: r for r in summary.results}
    assert by["a patient.dcm"].verdict == "clear" and by["stamped.png"].verdict == "quarantined"
    assert by["a patient.dcm"].patient["patient_name"] == "Doe^Jane"
    return summary.results


def rows_of(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_leaves_patient_identifiers_out_by_default(results, store, tmp_path):
    out = write_csv(tmp_path / "report.csv", results, store=store)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: spreadsheets read UTF-8 right
    text = raw.decode("utf-8-sig")
    for secret in PATIENT.values():
        assert secret not in text
    rows = {r["file"]: r for r in rows_of(text)}
    assert not set(PATIENT_COLUMNS) & set(rows_of(text)[0])
    clear = rows["a patient.dcm"]
    assert clear["verdict"] == "clear" and clear["class"] in CLASSES
    assert float(clear["confidence"]) == pytest.approx(max(float(clear[f"p_{c}"]) for c in CLASSES))
    withheld = rows["stamped.png"]
    assert withheld["verdict"] == "quarantined" and withheld["class"] == "" and withheld["confidence"] == ""
    assert all(withheld[f"p_{c}"] == "" for c in CLASSES) and withheld["result"].startswith("WITHHELD")
    assert withheld["review_status"] == "pending" and float(withheld["pattern_score"]) == pytest.approx(1.0)
    assert rows["broken.png"]["verdict"] == "error" and rows["broken.png"]["error"]

    event = store.audit_entries()[-1]
    assert event.event == "exported" and event.payload["kind"] == "csv"
    assert event.payload["patient_identifiers_included"] is False and event.payload["items"] == 3
    assert "Doe^Jane" not in str(event.payload) and store.verify_audit_chain().ok
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_csv_with_opt_in_and_after_release(results, store):
    text = csv_text(results, include_patient=True)
    row = {r["file"]: r for r in rows_of(text)}["a patient.dcm"]
    assert (row["patient_name"], row["patient_id"], row["patient_birth_date"]) == ("Doe^Jane", "PID-0001", "19700101")
    assert report_columns(results, True)[-3:] == list(PATIENT_COLUMNS)



def test_released_result_appears_in_the_session_report(make_screening_models, store, tmp_path):
    scan_image(3, flagged=True).save(tmp_path / "stamped.png")
    session = ScreeningSession(ModelCatalog(make_screening_models(), prefer_gpu=False), store)
    session.add_paths([tmp_path / "stamped.png"])
    session.run()
    assert {r["file"]: r for r in rows_of(csv_text(session.results()))}["stamped.png"]["class"] == ""
    store.release(session.result(0).scan_id, "Dr Test")
    session.refresh_from_store()
    row = {r["file"]: r for r in rows_of(csv_text(session.results()))}["stamped.png"]
    assert row["class"] in CLASSES and row["review_status"] == "released" and "released" in row["result"]


def test_html_has_counts_notes_and_no_identifiers(results):
    html = report_html(results, ReportInfo(models=["m 123"], notes=["no pattern detector installed"]))
    assert "3 scan(s):" in html and "1 quarantined" in html and "NOTE:" in html
    assert "Doe^Jane" not in html and "left out" in html
    assert "Doe^Jane" in report_html(results, include_patient=True)
    assert short_error("/x/y.png: image file is truncated") == "image file is truncated"


def test_pdf_written_and_audited(qapp, results, store, tmp_path):
    from breakfix_desktop._qt.qt_report import QtExportDialog, write_pdf

    out = write_pdf(tmp_path / "report.pdf", results, ReportInfo(run_id="r1"), store=store, run_id="r1")
    data = out.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 1000 and b"%%EOF" in data[-64:]
    event = store.audit_entries()[-1]
    assert event.event == "exported" and event.payload["kind"] == "pdf" and event.payload["run"] == "r1"
    assert not list(tmp_path.glob(".report.pdf.*"))  # no temp file left

    dialog = QtExportDialog("pdf", str(tmp_path))
    assert dialog.format() == "pdf" and dialog.path().suffix == ".pdf"
    assert not dialog.include_patient()  # opt-in, never the default
    dialog.format_box.setCurrentIndex(0)
    assert dialog.path().suffix == ".csv"
    dialog.deleteLater()
