"""Screening reports: the rows, the CSV file, the HTML the PDF is printed from, the audit event.

Qt-free.  The PDF itself is printed by Qt (``_qt/qt_report.py``: ``QTextDocument`` +
``QPdfWriter``) from :func:`report_html`, so both formats show the same rows.

Privacy: DICOM patient identifiers (PatientName, PatientID, PatientBirthDate) are left out unless
the caller passes ``include_patient=True`` (the user ticked the box).  The ``exported`` audit
event records *whether* they were included, never the identifiers themselves.

Withheld results: a quarantined scan's class and probabilities stay empty until a reviewer
releases it (the results carry ``None`` there already; nothing here reads the store's withheld
values).
"""

from __future__ import annotations

import csv
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .audit_log import utc_now
from .display import format_score
from .fsutil import DOCUMENT_MODE, atomic_write_bytes
from .preprocess import PATIENT_TAGS
from .quarantine import QuarantineStore
from .screening import ScreeningResult

__all__ = [
    "PATIENT_COLUMNS",
    "BASE_COLUMNS",
    "DISCLAIMER",
    "ReportInfo",
    "verdict_text",
    "short_error",
    "attention_text",
    "report_rows",
    "report_columns",
    "csv_text",
    "write_csv",
    "report_html",
    "log_export",
    "atomic_write_bytes",
]

PathLike = Union[str, os.PathLike]
#: Permissions of written reports (rw-r--r--).
REPORT_MODE = DOCUMENT_MODE

#: Columns added only when the user opts in to patient identifiers.
PATIENT_COLUMNS = tuple(PATIENT_TAGS)  # patient_name, patient_id, patient_birth_date
BASE_COLUMNS = ("file", "frame", "path", "sha256", "verdict", "result", "class", "confidence",
                "pattern_score", "detector_scores", "member_agreement", "attention", "review_status", "error",
                "models")
DISCLAIMER = ("BreakFix Desktop is a screening aid for trained staff, not a diagnosis. Quarantined scans carry a "
              "pattern that may have been planted to mislead the classifier; their result is withheld until a "
              "reviewer releases it.")


@dataclass
class ReportInfo:
    """What the report header says about the session."""

    title: str = "BreakFix Desktop \u2014 screening report"
    created: str = field(default_factory=utc_now)
    run_id: Optional[str] = None
    models: List[str] = field(default_factory=list)
    device: str = ""
    notes: List[str] = field(default_factory=list)
    audit_head: Optional[str] = None
    store: Optional[str] = None


def verdict_text(r: ScreeningResult) -> str:
    """How a result reads in a report: ``glioma``, ``WITHHELD - quarantined, pending review`` ..."""
    if r.verdict == "clear":
        return r.label or "-"
    if r.verdict == "quarantined":
        if r.review_status == "released":
            return f"{r.label or '-'} (released after review)"
        if r.review_status == "confirmed":
            return "WITHHELD \u2014 tampering confirmed by reviewer"
        return "WITHHELD \u2014 quarantined, pending review"
    return "ERROR \u2014 no result"


def short_error(error: Optional[str]) -> str:
    """An error message without its leading file path (where the file is already named)."""
    if not error:
        return "unknown error"
    head, sep, tail = error.partition(": ")
    return tail if sep and ("/" in head or "\\" in head) else error


def attention_text(r: ScreeningResult) -> str:
    """``low confidence; members disagree`` for results that need a closer look."""
    if r.withheld or r.verdict == "error":
        return ""
    parts = []
    if r.low_confidence:
        parts.append("low confidence")
    if r.members_disagree:
        parts.append("members disagree")
    return "; ".join(parts)


def _fmt(value: Optional[float], digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _classes(results: Sequence[ScreeningResult]) -> List[str]:
    out: List[str] = []
    for r in results:
        for c in (r.probabilities or {}) if not r.withheld else ():
            if c not in out:
                out.append(c)
    return out


def report_columns(results: Sequence[ScreeningResult], include_patient: bool = False) -> List[str]:
    """Column names: :data:`BASE_COLUMNS`, one ``p_<class>`` per class, then patient columns if asked."""
    cols = list(BASE_COLUMNS)
    at = cols.index("confidence") + 1
    cols[at:at] = [f"p_{c}" for c in _classes(results)]
    if include_patient:
        cols += list(PATIENT_COLUMNS)
    return cols


def report_rows(results: Iterable[ScreeningResult], include_patient: bool = False) -> List[Dict[str, str]]:
    """One dict of strings per result (keys: :func:`report_columns`)."""
    results = list(results)
    classes = _classes(results)
    rows = []
    for r in results:
        probs = None if r.withheld else r.probabilities
        row = {
            "file": Path(r.path).name,
            "frame": "" if r.frame is None else str(r.frame),
            "path": r.path,
            "sha256": r.sha256 or "",
            "verdict": r.verdict,
            "result": verdict_text(r),
            "class": "" if r.withheld else (r.label or ""),
            "confidence": _fmt(max(probs.values())) if probs else "",
        }
        for c in classes:
            row[f"p_{c}"] = _fmt(probs.get(c)) if probs else ""
        row.update({
            "pattern_score": format_score(r.pattern_score, 4),
            "detector_scores": "; ".join(f"{k}={format_score(v, 4)}" for k, v in sorted(r.scores.items())),
            "member_agreement": _fmt(r.member_agreement, 2),
            "attention": attention_text(r),
            "review_status": r.review_status or "",
            "error": r.error or "",
            "models": "; ".join(r.models),
        })
        if include_patient:
            for key in PATIENT_COLUMNS:
                row[key] = (r.patient or {}).get(key) or ""
        rows.append(row)
    return rows


def csv_text(results: Iterable[ScreeningResult], include_patient: bool = False) -> str:
    """The CSV report as text (header row, then one row per result)."""
    results = list(results)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=report_columns(results, include_patient), lineterminator="\n")
    writer.writeheader()
    writer.writerows(report_rows(results, include_patient))
    return out.getvalue()


def log_export(store: Optional[QuarantineStore], kind: str, path: PathLike, results: Sequence[ScreeningResult],
               include_patient: bool, run_id: Optional[str] = None):
    """The ``exported`` audit event (identifiers themselves are never logged)."""
    if store is None:
        return None
    head = store.audit_head()
    return store.log_event("exported", {
        "kind": kind, "report": str(Path(path).absolute()), "items": len(results),
        "patient_identifiers_included": bool(include_patient), "run": run_id,
        "audit_head": head.hash if head else None,
        "scan_ids": [r.scan_id for r in results if r.scan_id is not None],
    })


def write_csv(path: PathLike, results: Iterable[ScreeningResult], *, include_patient: bool = False,
              store: Optional[QuarantineStore] = None, run_id: Optional[str] = None) -> Path:
    """Write the CSV report (UTF-8 with BOM, so spreadsheet programs get the accents right) and
    log an ``exported`` event in ``store``."""
    results = list(results)
    out = atomic_write_bytes(path, csv_text(results, include_patient).encode("utf-8-sig"))
    log_export(store, "csv", out, results, include_patient, run_id)
    return out


# --------------------------------------------------------------------------- HTML (for the PDF)
_VERDICT_COLOURS = {"clear": ("#e6f4ea", "#1e6b3a"), "quarantined": ("#fde8e8", "#9b1c1c"),
                    "error": ("#eef0f3", "#4a5568")}


def _counts(results: Sequence[ScreeningResult]) -> Dict[str, int]:
    out = {v: sum(1 for r in results if r.verdict == v) for v in ("clear", "quarantined", "error")}
    out["attention"] = sum(1 for r in results if attention_text(r))
    return out


def report_html(results: Iterable[ScreeningResult], info: Optional[ReportInfo] = None, *,
                include_patient: bool = False) -> str:
    """The report as simple HTML (the subset ``QTextDocument`` renders): header, counts, table."""
    results = list(results)
    info = info or ReportInfo()
    e = html.escape
    counts = _counts(results)
    meta: List[Any] = [("Created (UTC)", info.created[:19].replace("T", " ")),
                       ("Models", ", ".join(info.models) or "-"), ("Inference device", info.device or "-")]
    if info.run_id:
        meta.append(("Run", info.run_id))
    if info.audit_head:
        meta.append(("Audit log head", info.audit_head))
    meta.append(("Patient identifiers", "included (user opted in)" if include_patient else "left out"))
    parts = [
        "<html><body style='font-family: sans-serif; font-size: 9pt; color: #1a202c;'>",
        f"<h2 style='color: #1f3550; margin-bottom: 2px;'>{e(info.title)}</h2>",
        f"<p style='color: #4a5568; margin-top: 0;'>{e(DISCLAIMER)}</p>",
        "<table cellspacing='0' cellpadding='2'>",
    ]
    parts += [f"<tr><td style='color: #4a5568; padding-right: 12px;'>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in meta]
    parts.append("</table>")
    parts.append(
        f"<p><b>{len(results)} scan(s):</b> {counts['clear']} clear, "
        f"<span style='color: #9b1c1c;'><b>{counts['quarantined']} quarantined</b></span>, "
        f"{counts['error']} error; {counts['attention']} clear result(s) need a closer look.</p>")
    for note in info.notes:
        parts.append(f"<p style='color: #9b1c1c;'><b>NOTE:</b> {e(note)}</p>")
    head = ["#", "File", "Verdict", "Result", "Confidence", "Pattern score", "Needs attention / error"]
    if include_patient:
        head += ["Patient name", "Patient ID", "Birth date"]
    parts.append("<table width='100%' border='1' cellspacing='0' cellpadding='3' "
                 "style='border-collapse: collapse; border-color: #cbd5e0;'>")
    parts.append("<tr style='background-color: #1f3550; color: white;'>" +
                 "".join(f"<th align='left'>{e(h)}</th>" for h in head) + "</tr>")
    for i, (r, row) in enumerate(zip(results, report_rows(results, include_patient)), 1):
        bg, fg = _VERDICT_COLOURS.get(r.verdict, ("#ffffff", "#1a202c"))
        name = row["file"] + (f" [frame {row['frame']}]" if row["frame"] else "")
        notes = short_error(r.error) if r.verdict == "error" else row["attention"]
        cells = [str(i), e(name), f"<span style='color: {fg};'><b>{e(r.verdict.upper())}</b></span>",
                 e(row["result"]), e(f"{float(row['confidence']) * 100:.1f} %" if row["confidence"] else "-"),
                 e(row["pattern_score"] or "-"), e(notes or "")]
        if include_patient:
            cells += [e(row[k]) for k in PATIENT_COLUMNS]
        parts.append(f"<tr style='background-color: {bg};'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    if info.store:
        parts.append(f"<p style='color: #718096;'>Quarantine store: {e(info.store)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
