"""Draw a detector's ROC and precision-recall curves (PNG or SVG) from its report.

    python -m breakfix_desktop.tools.detector_figure REPORT.json --out-dir DIR [--format png|svg]

Reads ``roc`` (``fpr``, ``tpr``, ``auc``), ``pr`` (``recall``, ``precision``,
``average_precision``, ``positive_rate``) and, when present, ``operating_point`` (``threshold``
and the ``test`` rates at it) of a report written by a pattern-detector drill
(``python -m training drill table7-detector-mixed-sizes ...``, paper §6.6) or of a second-check
export, and writes ``DIR/roc.png`` and ``DIR/pr.png``: white background, the chance line (ROC
diagonal; PR: the share of positives), the curve, and the calibrated operating point as a marked
dot with its threshold in the legend.

Offscreen (pyqtgraph, no window) and torch-free; the drill calls :func:`render_detector_figures`.
Exit status 2, with a message naming the file, for a report without curves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .drill_figure import FigureError, _ensure_app

CURVE_COLOUR = "#2ca02c"   # the Drills page's "defended" green: a detector is a defense
POINT_COLOUR = "#d62728"
CHANCE_COLOUR = "#888888"


def _floats(values: Any) -> List[float]:
    out = []
    for v in values or []:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            continue
        out.append(float(v))
    return out


def _curve(report: Mapping[str, Any], key: str, x: str, y: str, source: str):
    curve = report.get(key)
    if not isinstance(curve, Mapping):
        raise FigureError(f"{source}: no '{key}' curve in the report")
    xs, ys = _floats(curve.get(x)), _floats(curve.get(y))
    if not xs or len(xs) != len(ys):
        raise FigureError(f"{source}: the '{key}' curve has no points ({len(xs)} {x} / {len(ys)} {y} values)")
    return curve, xs, ys


def _plot(title: str, x_label: str, y_label: str, width: int, height: int):
    import pyqtgraph as pg
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFont

    _ensure_app()
    pg.setConfigOptions(antialias=True)
    glw = pg.GraphicsLayoutWidget()
    glw.setBackground("w")
    glw.setAttribute(Qt.WA_DontShowOnScreen, True)
    glw.ci.setContentsMargins(10, 10, 14, 8)
    if title:
        glw.ci.addLabel(title, row=0, col=0, color="#222222", size="12pt")
    plot = glw.addPlot(row=1, col=0)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.showGrid(x=True, y=True, alpha=0.18)
    font = QFont()
    font.setPointSizeF(9.5)
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen("#444444", width=1))
        axis.setTextPen(pg.mkPen("#222222"))
        axis.setStyle(tickFont=font, tickLength=-5, tickTextOffset=4)
    style = {"color": "#222222", "font-size": "11pt"}
    plot.setLabel("left", y_label, **style)
    plot.setLabel("bottom", x_label, **style)
    plot.setXRange(0.0, 1.0, padding=0.02)
    plot.setYRange(0.0, 1.0, padding=0.02)
    ticks = [[(v / 10, f"{v / 10:.1f}") for v in range(0, 11, 2)], [(v / 10, "") for v in range(1, 10, 2)]]
    plot.getAxis("left").setTicks(ticks)
    plot.getAxis("bottom").setTicks(ticks)
    plot.vb.setMouseEnabled(False, False)
    plot.enableAutoRange(enable=False)
    # ROC: lower right (the curve hugs the upper left); PR: lower left (the curve hugs the upper right)
    legend = plot.addLegend(offset=(-10, -10) if "ROC" in title else (10, -10), labelTextColor="#222222",
                            brush=pg.mkBrush(255, 255, 255, 220))
    glw.resize(int(width), int(height))
    glw.ci.resize(int(width), int(height))
    return glw, plot, legend


def _finish(glw, path: Path, title: str) -> Path:
    from .._qt.qt_curves import export_graphics

    app = _ensure_app()
    for _ in range(3):
        app.processEvents()
    try:
        return export_graphics(glw.ci, path, title=title)
    finally:
        glw.deleteLater()


def render_detector_figures(report: Union[Mapping[str, Any], str, os.PathLike], out_dir: Union[str, os.PathLike],
                            fmt: str = "png", width: int = 640, height: int = 560,
                            name: Optional[str] = None) -> Dict[str, Path]:
    """Write ``roc.<fmt>`` and ``pr.<fmt>`` for ``report`` (a dict or a report.json path) into
    ``out_dir``; returns ``{"roc": path, "pr": path}``.  Raises :class:`FigureError`."""
    import pyqtgraph as pg

    if not isinstance(report, Mapping):
        source = str(report)
        try:
            report = json.loads(Path(report).read_text(encoding="utf-8"))
        except OSError as exc:
            raise FigureError(f"{source}: cannot read the report ({exc.strerror or exc})") from exc
        except ValueError as exc:
            raise FigureError(f"{source}: not valid JSON ({exc})") from exc
        if not isinstance(report, Mapping):
            raise FigureError(f"{source}: a report must be a JSON object")
    else:
        source = str(report.get("drill") or report.get("name") or "report")
    if fmt not in ("png", "svg"):
        raise FigureError(f"format must be png or svg (got {fmt!r})")
    name = name or str(report.get("title") or report.get("drill") or report.get("name") or "detector")
    op = report.get("operating_point") if isinstance(report.get("operating_point"), Mapping) else {}
    op_test = op.get("test") if isinstance(op.get("test"), Mapping) else {}
    threshold = op.get("threshold")
    out_dir = Path(out_dir)
    written: Dict[str, Path] = {}

    roc, fpr, tpr = _curve(report, "roc", "fpr", "tpr", source)
    auc = roc.get("auc")
    glw, plot, legend = _plot(f"ROC - {name}", "false-positive rate", "true-positive rate (recall)", width, height)
    plot.plot([0, 1], [0, 1], pen=pg.mkPen(CHANCE_COLOUR, width=1.2, style=pg.QtCore.Qt.DashLine), name="chance")
    label = "ROC" + (f" (AUC {auc:.3f})" if isinstance(auc, (int, float)) else "")
    plot.plot(fpr, tpr, pen=pg.mkPen(CURVE_COLOUR, width=2.4), name=label)
    if isinstance(op_test.get("false_positive_rate"), (int, float)) and isinstance(op_test.get("recall"), (int, float)):
        plot.plot([op_test["false_positive_rate"]], [op_test["recall"]], pen=None, symbol="o", symbolSize=11,
                  symbolBrush=pg.mkBrush(POINT_COLOUR), symbolPen=pg.mkPen("w", width=1),
                  name=f"operating point (threshold {threshold:.4g})" if isinstance(threshold, (int, float))
                  else "operating point")
    written["roc"] = _finish(glw, out_dir / f"roc.{fmt}", f"ROC - {name}")

    pr, recall, precision = _curve(report, "pr", "recall", "precision", source)
    ap = pr.get("average_precision")
    glw, plot, legend = _plot(f"Precision-recall - {name}", "recall", "precision", width, height)
    base = pr.get("positive_rate")
    if isinstance(base, (int, float)):
        plot.plot([0, 1], [base, base], pen=pg.mkPen(CHANCE_COLOUR, width=1.2, style=pg.QtCore.Qt.DashLine),
                  name=f"chance ({base:.2f} positives)")
    label = "precision-recall" + (f" (AP {ap:.3f})" if isinstance(ap, (int, float)) else "")
    few = {"symbol": "s", "symbolSize": 7, "symbolBrush": pg.mkBrush(CURVE_COLOUR)} if len(recall) < 3 else {}
    plot.plot(recall, precision, pen=pg.mkPen(CURVE_COLOUR, width=2.4), name=label, **few)  # 1-2 points: markers
    if isinstance(op_test.get("recall"), (int, float)) and isinstance(op_test.get("precision"), (int, float)):
        plot.plot([op_test["recall"]], [op_test["precision"]], pen=None, symbol="o", symbolSize=11,
                  symbolBrush=pg.mkBrush(POINT_COLOUR), symbolPen=pg.mkPen("w", width=1),
                  name=f"operating point (threshold {threshold:.4g})" if isinstance(threshold, (int, float))
                  else "operating point")
    written["pr"] = _finish(glw, out_dir / f"pr.{fmt}", f"Precision-recall - {name}")
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m breakfix_desktop.tools.detector_figure",
                                description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, metavar="REPORT.json", help="a detector drill report (roc, pr)")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for roc.png and pr.png")
    p.add_argument("--format", choices=("png", "svg"), default="png")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=560)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        paths = render_detector_figures(args.report, args.out_dir, fmt=args.format, width=args.width,
                                        height=args.height)
    except FigureError as exc:
        print(f"detector_figure: {exc}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
