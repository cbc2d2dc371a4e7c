"""Render the accuracy curves of drill reports as a publication-style figure (PNG or SVG).

    python -m breakfix_desktop.tools.drill_figure REPORT.json [REPORT2.json ...] --out FIG.png
        [--metric test_acc|train_acc|val_acc] [--title T] [--width 900 --height 540]

Reads the ``curves`` of one or more ``report.json`` files written by ``python -m training drill``
(e.g. Figure 5, the DrunkOptimizer scale-strength sweep; Figure 6, clean vs attacked vs
defended) and draws one accuracy-over-epochs plot: white background, axis labels, y from 0 to 1,
integer epoch ticks, a marker on every point and a legend with the series names.  Colours follow
the Drills page (:mod:`breakfix_desktop._qt.qt_curves`): clean blue, attacked orange, defended
green; a ``sweep`` family is coloured along the plasma colour map in the order of its numeric
``param`` value (evenly spaced, so close values stay apart).
Missing (null) values are skipped.  The format follows the suffix of ``--out``: .png or .svg.

Rendering is offscreen (pyqtgraph; no window, no display needed) and torch-free.  From other code:
:func:`render_figure`.  Exit status 2, with a message naming the file, for a report that cannot be
read, is not valid JSON or has no ``curves``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

METRICS = ("test_acc", "train_acc", "val_acc")
METRIC_LABELS = {"test_acc": "test accuracy", "train_acc": "training accuracy", "val_acc": "validation accuracy"}
ROLE_ORDER = ("clean", "attacked", "defended", "sweep")
#: Marker per role, so the roles stay apart in greyscale print too.
ROLE_SYMBOLS = {"clean": "o", "attacked": "t", "defended": "s", "sweep": "o"}

log = logging.getLogger(__name__)

ReportLike = Union[str, os.PathLike, Mapping[str, Any]]


class FigureError(ValueError):
    """A report that cannot be plotted (the message names the file)."""


@dataclass
class Series:
    name: str
    role: str
    sweep_value: Optional[float]
    x: List[float]
    y: List[float]


# --------------------------------------------------------------------------- reports
def load_report(path: Union[str, os.PathLike]) -> dict:
    """The report at ``path``; :class:`FigureError` naming the file when it is unreadable, not
    valid JSON, or without a ``curves`` list."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FigureError(f"{path}: cannot read the report ({exc.strerror or exc})") from exc
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise FigureError(f"{path}: not valid JSON ({exc})") from exc
    _check_report(report, str(path))
    return report


def _check_report(report: Any, source: str) -> None:
    if not isinstance(report, dict):
        raise FigureError(f"{source}: a drill report must be a JSON object")
    curves = report.get("curves")
    if not isinstance(curves, list) or not curves:
        drill = report.get("drill")
        what = f"drill {drill!r}" if drill else "this report"
        raise FigureError(f"{source}: no 'curves' to plot ({what} has no accuracy-over-epoch curves)")
    for i, curve in enumerate(curves):
        if not isinstance(curve, dict):
            raise FigureError(f"{source}: curves[{i}] is not an object")


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _sweep_value(param: Any) -> Optional[float]:
    """The numeric value of a sweep curve's ``param`` ({"scale_strength": 3.0} -> 3.0)."""
    if isinstance(param, Mapping):
        for value in param.values():
            if _number(value) is not None:
                return _number(value)
        return None
    return _number(param)


def _series(report: Mapping[str, Any], source: str, metric: str) -> List[Series]:
    out, missing = [], []
    for i, curve in enumerate(report["curves"]):
        ys = curve.get(metric)
        if ys is None:
            missing.append(str(curve.get("series") or f"curves[{i}]"))
            continue
        if not isinstance(ys, list):
            raise FigureError(f"{source}: curves[{i}].{metric} is not a list")
        xs = curve.get("epoch")
        if xs is None:
            xs = list(range(1, len(ys) + 1))
        if not isinstance(xs, list) or len(xs) != len(ys):
            raise FigureError(f"{source}: curves[{i}] has {len(ys)} {metric} values but "
                              f"{len(xs) if isinstance(xs, list) else 'no'} epochs")
        points = [(_number(x), _number(y)) for x, y in zip(xs, ys)]
        points = [(x, y) for x, y in points if x is not None and y is not None]  # null: skipped
        if not points:
            missing.append(str(curve.get("series") or f"curves[{i}]"))
            continue
        role = str(curve.get("role") or "")
        name = str(curve.get("series") or role or f"curve {i + 1}")
        out.append(Series(name, role, _sweep_value(curve.get("param")) if role == "sweep" else None,
                          [x for x, _ in points], [y for _, y in points]))
    if missing:
        log.warning("%s: no %s values in %s; left out", source, metric, ", ".join(missing))
    return out


def collect_series(reports: Sequence[ReportLike], metric: str = "test_acc") -> Tuple[List[Series], List[dict]]:
    """All plottable series of ``reports`` (paths or already-loaded dicts) and the loaded reports.
    With several reports, a series name used in more than one is prefixed with its drill's name."""
    if metric not in METRICS:
        raise FigureError(f"unknown metric {metric!r}; choose {', '.join(METRICS)}")
    if not reports:
        raise FigureError("no report given")
    loaded, per_report = [], []
    for n, item in enumerate(reports):
        if isinstance(item, Mapping):
            source = str(item.get("drill") or f"report {n + 1}")
            report = dict(item)
            _check_report(report, source)
        else:
            source, report = str(item), load_report(item)
        loaded.append(report)
        per_report.append((report, source, _series(report, source, metric)))
    counts: dict = {}
    for _, _, series in per_report:
        for s in series:
            counts[s.name] = counts.get(s.name, 0) + 1
    everything = []
    for report, source, series in per_report:
        for s in series:
            if len(per_report) > 1 and counts[s.name] > 1:
                s.name = f"{report.get('drill') or Path(source).parent.name}: {s.name}"
            everything.append(s)
    if not everything:
        names = ", ".join(source for _, source, _ in per_report)
        raise FigureError(f"{names}: no {metric} values to plot (all curves lack them or are null)")
    return everything, loaded


# --------------------------------------------------------------------------- rendering
def _ensure_app():
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        # a figure written to a file needs no screen; never flash a window on one
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QApplication([sys.argv[0] if sys.argv else "drill_figure"])
    return app


def _epoch_ticks(lo: float, hi: float) -> List[Tuple[float, str]]:
    first, last = math.floor(lo), math.ceil(hi)
    span = max(1, last - first)
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000) if span / s <= 12) \
        if span <= 12000 else math.ceil(span / 12)
    start = math.ceil(first / step) * step
    return [(float(v), str(v)) for v in range(int(start), int(last) + 1, step)]


def _colours(series: Sequence[Series]):
    from .._qt.qt_curves import role_colour, sweep_colour

    family = [s.sweep_value for s in series if s.sweep_value is not None]
    seen: dict = {}
    colours = []
    for s in series:
        if s.sweep_value is not None:
            colours.append(sweep_colour(s.sweep_value, family, by_rank=True))
        else:
            index = seen.get(s.role, 0)
            seen[s.role] = index + 1
            colours.append(role_colour(s.role, index))
    return colours


def _ordered(series: Sequence[Series]) -> List[Series]:
    """Legend order: clean, attacked, defended, then the sweep family by value, then the rest
    (stable within a group, so reports keep their own order)."""
    def key(item):
        n, s = item
        group = ROLE_ORDER.index(s.role) if s.role in ROLE_ORDER else len(ROLE_ORDER)
        return (group, s.sweep_value if s.sweep_value is not None else 0.0, n)

    return [s for _, s in sorted(enumerate(series), key=key)]


def build_figure(series: Sequence[Series], *, metric: str = "test_acc", title: str = "",
                 y_label: Optional[str] = None, x_label: str = "epoch", width: int = 900, height: int = 540):
    """The figure as a sized ``pyqtgraph.GraphicsLayoutWidget`` (not shown); export its ``ci``."""
    import pyqtgraph as pg
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFont

    app = _ensure_app()
    pg.setConfigOptions(antialias=True)
    series = _ordered(series)
    colours = _colours(series)
    ink, soft = "#222222", "#555555"

    glw = pg.GraphicsLayoutWidget()
    glw.setBackground("w")
    glw.setAttribute(Qt.WA_DontShowOnScreen, True)
    glw.ci.setContentsMargins(10, 10, 14, 8)
    if title:
        glw.ci.addLabel(title, row=0, col=0, colspan=2, color=ink, size="13pt")
    plot = glw.addPlot(row=1, col=0)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.showGrid(x=True, y=True, alpha=0.18)
    tick_font = QFont()
    tick_font.setPointSizeF(9.5)
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen("#444444", width=1))
        axis.setTextPen(pg.mkPen(ink))
        axis.setStyle(tickFont=tick_font, tickLength=-5, tickTextOffset=4)
    for name in ("top", "right"):  # a closed frame, without tick labels
        plot.showAxis(name)
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen("#444444", width=1))
        axis.setStyle(showValues=False, tickLength=0)
    label_style = {"color": ink, "font-size": "11pt"}
    plot.setLabel("left", y_label or METRIC_LABELS.get(metric, metric), **label_style)
    plot.setLabel("bottom", x_label, **label_style)

    xs = [x for s in series for x in s.x]
    lo, hi = min(xs), max(xs)
    pad = 0.35 if hi - lo <= 12 else (hi - lo) * 0.03
    plot.setXRange(lo - pad, hi + pad, padding=0)
    plot.setYRange(0.0, 1.0, padding=0.02)
    plot.getAxis("bottom").setTicks([_epoch_ticks(lo, hi)])
    plot.getAxis("left").setTicks([[(v / 10, f"{v / 10:.1f}") for v in range(0, 11, 2)],
                                   [(v / 10, "") for v in range(1, 10, 2)]])
    plot.getAxis("top").setTicks([[]])
    plot.getAxis("right").setTicks([[]])
    plot.vb.setMouseEnabled(False, False)
    plot.enableAutoRange(enable=False)

    many = max(len(s.x) for s in series) > 40
    legend = pg.LegendItem(labelTextColor=ink, labelTextSize="10pt", brush=pg.mkBrush(255, 255, 255, 0),
                           verSpacing=-2)
    for s, colour in zip(series, colours):
        item = plot.plot(s.x, s.y, pen=pg.mkPen(colour, width=2.2),
                         symbol=ROLE_SYMBOLS.get(s.role, "o"), symbolSize=5 if many else 8,
                         symbolPen=pg.mkPen("w", width=0.8), symbolBrush=pg.mkBrush(colour))
        legend.addItem(item, s.name)
    legend_cell = glw.addLayout(row=1, col=1)
    legend_cell.addItem(legend, row=0, col=0)
    legend_cell.addLabel("", row=1, col=0)  # pushes the legend to the top
    legend_cell.layout.setRowStretchFactor(1, 10)
    glw.ci.layout.setColumnStretchFactor(0, 5)
    glw.ci.layout.setColumnStretchFactor(1, 1)

    glw.resize(int(width), int(height))
    glw.ci.resize(int(width), int(height))
    for _ in range(3):
        app.processEvents()
    return glw


def render_figure(reports: Sequence[ReportLike], out_path: Union[str, os.PathLike], metric: str = "test_acc",
                  title: Optional[str] = None, width: int = 900, height: int = 540) -> Path:
    """Draw the ``metric`` curves of ``reports`` (report.json paths or loaded dicts) into
    ``out_path`` (.png or .svg, ``width`` x ``height`` pixels).  ``title`` defaults to the
    report's ``figure.title`` (one report) or its ``title``.  Raises :class:`FigureError`."""
    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".png", ".svg"):
        raise FigureError(f"{out_path}: the figure must be a .png or .svg file")
    if width < 200 or height < 150:
        raise FigureError(f"figure size {width}x{height} is too small (at least 200x150)")
    series, loaded = collect_series(reports, metric)
    figure = loaded[0].get("figure") if isinstance(loaded[0].get("figure"), dict) else {}
    if title is None:
        title = str(figure.get("title") or loaded[0].get("title") or "")
        if len(loaded) > 1:
            title = ""  # one report's title would mislabel the others
    y_label = figure.get("y_label") if figure.get("y", "test_acc") == metric and len(loaded) == 1 else None
    glw = build_figure(series, metric=metric, title=title, y_label=y_label,
                       x_label=str(figure.get("x") or "epoch"), width=width, height=height)
    from .._qt.qt_curves import export_graphics

    try:
        return export_graphics(glw.ci, out_path, title=title or "BreakFix drill figure")
    finally:
        glw.deleteLater()


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m breakfix_desktop.tools.drill_figure",
                                description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json", help="drill report(s) with 'curves'")
    p.add_argument("--out", type=Path, required=True, help="figure to write: FIG.png or FIG.svg")
    p.add_argument("--metric", choices=METRICS, default="test_acc", help="curve to plot (default test_acc)")
    p.add_argument("--title", help="figure title (default: the report's figure title; '' for none)")
    p.add_argument("--width", type=int, default=900, help="pixels (default 900)")
    p.add_argument("--height", type=int, default=540, help="pixels (default 540)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="drill_figure: %(message)s", level=logging.WARNING)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        path = render_figure(args.reports, args.out, metric=args.metric, title=args.title,
                             width=args.width, height=args.height)
    except FigureError as exc:
        print(f"drill_figure: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
