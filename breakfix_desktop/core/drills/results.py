"""A run's results against a baseline run (:func:`compare_reports`), exported as HTML + JSON
(:func:`report_html`, :func:`report_json`, :func:`export_report`)."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from ..labels import CLASS_NAMES
from .run import DrillRun

__all__ = ["compare_reports", "report_json", "confusion_html", "report_html", "export_report", "paper_table"]

_METRICS = ("precision", "recall", "f1")


def compare_reports(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> Dict[str, Any]:
    """Per-class and overall (value, baseline, delta) for precision, recall, F1 and accuracy."""
    def triple(a: Optional[float], b: Optional[float]) -> Dict[str, Optional[float]]:
        return {"value": a, "baseline": b, "delta": None if a is None or b is None else a - b}

    classes = list(report.get("classes") or CLASS_NAMES)
    per_class = {}
    for cls in classes:
        mine = report.get("per_class", {}).get(cls, {})
        base = baseline.get("per_class", {}).get(cls, {})
        per_class[cls] = {m: triple(mine.get(m), base.get(m)) for m in _METRICS}
    return {
        "accuracy": triple(report.get("accuracy"), baseline.get("accuracy")),
        "macro_f1": triple(report.get("macro_avg", {}).get("f1"), baseline.get("macro_avg", {}).get("f1")),
        "per_class": per_class,
    }


def paper_table(run: DrillRun) -> Optional[str]:
    """The paper's table with our numbers beside it, as the drill printed it (``table`` of the
    ``report.json`` in the run's folder), or None: not a drill, not finished, or no such file."""
    if not run.out_dir or not run.is_final:
        return None
    path = Path(run.out_dir) / "report.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8")).get("table")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return table if isinstance(table, str) and table.strip() else None


def report_json(run: DrillRun, baseline: Optional[DrillRun] = None) -> Dict[str, Any]:
    """The exported JSON: run record, reports, per-epoch history and the comparison if any."""
    out = {"format": "breakfix-drill-report/1", "run": run.to_record(), "report": run.report}
    if baseline is not None and baseline.report is not None and run.report is not None:
        out["baseline"] = {"id": baseline.id, "label": baseline.label, "report": baseline.report}
        out["comparison"] = compare_reports(run.report, baseline.report)
    return out


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _delta(d: Optional[float]) -> str:
    if d is None:
        return ""
    colour = "#1e6b3a" if d > 0.0005 else "#9b1c1c" if d < -0.0005 else "#555"
    return f'<span style="color:{colour}">{100 * d:+.1f}</span>'


def _cell_colour(fraction: float) -> str:
    """White -> the clean blue, for confusion-matrix cells."""
    r0, g0, b0 = 0xFF, 0xFF, 0xFF
    r1, g1, b1 = 0x1F, 0x5F, 0xA0
    f = max(0.0, min(1.0, fraction))
    return "#%02x%02x%02x" % (round(r0 + (r1 - r0) * f), round(g0 + (g1 - g0) * f), round(b0 + (b1 - b0) * f))


def confusion_html(report: Mapping[str, Any]) -> str:
    cm = report.get("confusion_matrix") or []
    classes = report.get("classes") or list(CLASS_NAMES)
    if not cm:
        return "<p>No confusion matrix.</p>"
    rows = ['<table class="cm"><tr><th>true \\ predicted</th>'
            + "".join(f"<th>{html.escape(c)}</th>" for c in classes) + "</tr>"]
    for i, row in enumerate(cm):
        total = max(sum(row), 1)
        cells = []
        for v in row:
            frac = v / total
            fg = "white" if frac > 0.55 else "black"
            cells.append(f'<td style="background:{_cell_colour(frac)};color:{fg}">{v}</td>')
        rows.append(f"<tr><th>{html.escape(classes[i])}</th>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "".join(rows)


def report_html(run: DrillRun, baseline: Optional[DrillRun] = None, images: Optional[Mapping[str, str]] = None) -> str:
    """A self-contained HTML report (``images``: caption -> data URI or file name, e.g. the curves)."""
    rep = run.report
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(run.label)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;color:#222} table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right} th{background:#f0f3f7}"
        " .cm td{min-width:48px;text-align:center} .meta td{text-align:left}</style></head><body>",
        f"<h1>BreakFix drill report: {esc(run.label)}</h1>",
        "<table class='meta'>",
    ]
    meta = [("Run", run.id), ("Recipe", run.recipe), ("Role", run.role_title), ("Status", run.status),
            ("Data", run.config.get("data", "")), ("Device", run.device),
            ("Started", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started)) if run.started else "-"),
            ("Duration", f"{run.duration():.1f} s" if run.duration() is not None else "-")]
    if run.message:
        meta.append(("Message", run.message))
    parts += [f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in meta]
    parts.append("</table>")
    table = paper_table(run)
    if table:
        parts.append(f"<h2>Our numbers beside the paper's</h2><pre>{esc(table)}</pre>")
    parts.append(f"<h2>Configuration</h2><pre>{esc(json.dumps(run.config, indent=2))}</pre>")
    comp = compare_reports(rep, baseline.report) if rep and baseline is not None and baseline.report else None
    if rep:
        split = run.report_key or ""
        parts.append(f"<h2>Classification report ({esc(split)}, {rep.get('n', '?')} images)</h2>")
        if comp:
            parts.append(f"<p>Deltas (percentage points) against baseline {esc(baseline.label)}.</p>")
        head = "<tr><th>class</th>" + "".join(
            f"<th>{m}</th>" + ("<th>&Delta;</th>" if comp else "") for m in _METRICS) + "<th>support</th></tr>"
        parts.append("<table>" + head)
        for cls, vals in rep.get("per_class", {}).items():
            cells = "".join(
                f"<td>{_pct(vals.get(m))}</td>" + (f"<td>{_delta(comp['per_class'][cls][m]['delta'])}</td>" if comp else "")
                for m in _METRICS)
            parts.append(f"<tr><th>{esc(cls)}</th>{cells}<td>{vals.get('support', '')}</td></tr>")
        acc = f"<td>{_pct(rep.get('accuracy'))}</td>"
        if comp:
            acc += f"<td>{_delta(comp['accuracy']['delta'])}</td>"
        parts.append(f"<tr><th>accuracy</th>{acc}<td colspan='{5 if comp else 2}'></td><td>{rep.get('n', '')}</td></tr>")
        parts.append("</table>")
        parts.append("<h2>Confusion matrix</h2>" + confusion_html(rep))
    else:
        parts.append("<p>This run produced no classification report.</p>")
        if run.summary:
            parts.append(f"<h2>Summary</h2><pre>{esc(json.dumps(run.summary, indent=2))}</pre>")
    with_epochs = [d for d in run.series_data.values() if d.epochs]
    if with_epochs:
        named = any(d.name for d in with_epochs)  # a multi-run drill: one block of rows per series
        parts.append("<h2>Per-epoch history</h2><table><tr>" + ("<th>series</th><th>role</th>" if named else "")
                     + "<th>epoch</th><th>train loss</th><th>train acc</th><th>test loss</th><th>test acc</th>"
                     "<th>lr</th></tr>")
        for data in with_epochs:
            for row in data.epochs:
                def num(k: str, pct: bool = False) -> str:
                    v = row.get(k)
                    return "-" if v is None else (_pct(v) if pct else f"{v:.4f}")
                lead = (f"<th>{esc(data.name or '(main)')}</th><td>{esc(data.role or run.role)}</td>" if named else "")
                parts.append(f"<tr>{lead}<td>{row['epoch']}</td><td>{num('train_loss')}</td>"
                             f"<td>{num('train_acc', True)}</td><td>{num('test_loss')}</td>"
                             f"<td>{num('test_acc', True)}</td><td>{row.get('lr') or 0:.2e}</td></tr>")
        parts.append("</table>")
    for caption, src in (images or {}).items():
        parts.append(f"<h2>{esc(caption)}</h2><img src='{esc(src)}' style='max-width:100%'>")
    if run.warnings or run.errors or run.stderr_tail:
        parts.append("<h2>Messages</h2><pre>" + esc("\n".join(run.errors + run.warnings[-20:]))
                     + ("\n--- stderr (tail) ---\n" + esc(run.stderr_tail) if run.stderr_tail else "") + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def export_report(run: DrillRun, path: Path, baseline: Optional[DrillRun] = None,
                  images: Optional[Mapping[str, str]] = None) -> Tuple[Path, Path]:
    """Write ``path`` (.html) and the same name with .json; returns both paths."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path.with_suffix(".html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(run, baseline, images), encoding="utf-8")
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(report_json(run, baseline), indent=2), encoding="utf-8")
    return path, json_path
