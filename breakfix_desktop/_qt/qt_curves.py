"""Live training curves (pyqtgraph): accuracy and loss per epoch, loss per batch, many runs at once.

``QtCurvesView`` plots :class:`~breakfix_desktop.core.drills.DrillRun` objects.  Each run's
curves are created once (:meth:`QtCurvesView.show_runs`) and refreshed with ``setData`` by a
~10 Hz timer, only when the run changed (``run.version``) - never per event, so a backend
streaming hundreds of events a second costs the GUI one cheap update per tick; a tick that only
brought batches leaves the epoch curves alone.  The per-batch loss, the one curve whose history
grows long (100k points and more), is not handed to pyqtgraph whole: a
:class:`~breakfix_desktop.core.decimate.PeakDecimator` per curve keeps its min/max envelope
incrementally (O(new points) per tick) and ``setData`` gets only that envelope - at most
~2 x :data:`DECIMATE_CAP` points, exactly the data while the history is shorter than that - so
the cost of an update does not depend on the history's length (``benchmarks/bench_drill_ui.py``).
Every plot then uses pyqtgraph's peak downsampling (about three points per pixel column,
:data:`SAMPLES_PER_PIXEL`; on the bounded envelope this is cheap) and clip-to-view, and the
per-batch loss is drawn without antialiasing.  The axes follow the data in steps (:func:`stepped_range`)
instead of pyqtgraph's auto-range, which moved them - relayout, label repaint, a second frame - at
every tick; between range changes the axes are drawn from a pixmap cache.  Panning or zooming a
plot by hand stops its following; its "A" button resumes it.  Hosts that have their own timer
(the Drills page) stop :attr:`QtCurvesView.timer` and call :meth:`QtCurvesView.refresh` from it.

Two colour modes:

* ``overlay`` - colour by the run's role, as in the paper's Figure 6: clean blue, attacked orange,
  defended green (further runs of the same role in lighter/darker shades);
* ``family`` - a parameter sweep (the paper's Figure 5, DrunkOptimizer scale strength): runs are
  coloured along a colour map by their sweep value and the legend names the value.

A drill that trains several models in one run (``series``-tagged events, e.g. Figure 6's clean,
attacked and defended models or Figure 5's scale strengths) gets one set of curves per series,
created when the series' first event arrives: coloured by the series' role, or along the sweep
colour map when the run's series form a parameter sweep
(:meth:`~breakfix_desktop.core.drills.DrillRun.sweep_families`), each named in the legend
(``#run series``) and marked per role (clean circles, attacked triangles, defended squares).

Solid lines are test (or held-out) curves, dashed lines training curves.  :meth:`export` writes
the figure as PNG or SVG (``pyqtgraph.exporters``).

The colour rules (:func:`role_colour`, :func:`sweep_colour`) and the PNG/SVG writer
(:func:`export_graphics`) are module functions, shared with the offline figure tool
(:mod:`breakfix_desktop.tools.drill_figure`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import math
from contextlib import contextmanager

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QFileDialog, QGraphicsItem, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from ..core.decimate import PeakDecimator
from ..core.drills import MAIN_SERIES, ROLE_COLORS, DrillRun, SeriesData

MODES = {"overlay": "Overlay: colour by role (Figure 6)", "family": "Sweep family: colour by parameter (Figure 5)"}
#: Shade factors for the 2nd, 3rd, ... run of the same role (QColor.lighter/darker percentages).
_SHADES = (100, 145, 65, 185, 45)
#: Colour map of a sweep family (low values dark purple, high values yellow-orange).
SWEEP_COLORMAP = "plasma"
FALLBACK_COLOUR = "#555555"
#: pyqtgraph's ``autoDownsampleFactor`` for every curve: with peak downsampling each bin gives its
#: minimum and maximum, so 1.5 bins per pixel column keep the drawn envelope exact (~2,400 points
#: for a 800 px plot, however long the history; benchmarks/bench_drill_ui.py).
SAMPLES_PER_PIXEL = 1.5
#: Blocks a per-batch loss curve's :class:`PeakDecimator` keeps: the envelope handed to setData has
#: 2k-8k points (a few per pixel column), however long the history.
DECIMATE_CAP = 4096
#: Test-curve marker, marker size and line width per series role in a multi-series run, so curves
#: that coincide (e.g. a defence that keeps the clean run's exact numbers) stay visible: the clean
#: curve, drawn first, is the widest and shows around the ones drawn over it.
SERIES_STYLES = {"clean": ("o", 10, 4.0), "attacked": ("t", 8, 2.5), "defended": ("s", 6, 2.0),
                 "sweep": ("o", 7, 2.0)}


def nice_step(span: float) -> float:
    """A 1, 2 or 5 times a power of ten step of about a quarter of ``span``."""
    raw = max(span, 1e-9) / 4.0
    base = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * base:
            return m * base
    return 10.0 * base


def stepped_range(lo: float, hi: float, current: Optional[Sequence[float]] = None,
                  min_span: float = 0.0) -> Optional[tuple]:
    """The axis range to show data from ``lo`` to ``hi``: None (keep ``current``) while the current
    range still holds the data and is not more than four times too wide, else the data's range
    rounded outwards to :func:`nice_step` steps plus one step of headroom.  So a growing curve
    moves its axes in steps - every few seconds - instead of every frame (each change relayouts and
    repaints the axis labels, and a range change after setData costs a second frame)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if hi - lo < min_span:
        mid = (lo + hi) / 2.0
        lo, hi = mid - min_span / 2.0, mid + min_span / 2.0
    span = max(hi - lo, 1e-9)
    if current is not None:
        c0, c1 = current
        if c0 <= lo and hi <= c1 and (c1 - c0) <= 4.0 * span:
            return None
    step = nice_step(span)
    new_lo = math.floor(lo / step) * step
    new_hi = math.ceil(hi / step) * step
    if new_hi <= hi:
        new_hi += step
    if new_lo >= lo and lo != 0.0:
        new_lo -= step
    return (new_lo, new_hi)


def role_colour(role: str, index: int = 0) -> QColor:
    """Colour of the ``index``-th (0-based) run of ``role``: the role's colour (clean blue, attacked
    orange, defended green, else grey), later runs of the same role in lighter/darker shades."""
    shade = _SHADES[index % len(_SHADES)]
    base = QColor(ROLE_COLORS.get(role, FALLBACK_COLOUR))
    return base.lighter(shade) if shade >= 100 else base.darker(int(10000 / shade))


def sweep_colour(value: float, values: Iterable[float], by_rank: bool = False) -> QColor:
    """Colour of sweep value ``value`` within the family ``values``, along :data:`SWEEP_COLORMAP`
    (the lowest value darkest; the map's pale end is left out, it vanishes on white).  Positions
    are proportional to the value, or with ``by_rank`` evenly spaced in value order (so close or
    log-spaced values stay apart)."""
    if by_rank:
        ranks = sorted(set(values) | {value})
        pos = 0.0 if len(ranks) == 1 else ranks.index(value) / (len(ranks) - 1)
        return pg.colormap.get(SWEEP_COLORMAP).map(0.05 + 0.8 * pos, mode="qcolor")
    values = list(values)
    lo, hi = min(values), max(values)
    pos = 0.0 if hi == lo else (value - lo) / (hi - lo)
    return pg.colormap.get(SWEEP_COLORMAP).map(0.05 + 0.8 * pos, mode="qcolor")


def export_graphics(item, path, title: str = "BreakFix drill curves") -> Path:
    """Write a graphics item (e.g. a ``GraphicsLayoutWidget``'s ``ci``) as shown - same size and
    layout as on screen - to ``path``; the format follows the suffix, .png or .svg."""
    import pyqtgraph.exporters as exporters

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"export: {path.name} must end in .png or .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        # on-screen size: pyqtgraph scales a larger export's plots but not the legend's text
        exporters.ImageExporter(item).export(str(path))
    else:
        try:
            exporters.SVGExporter(item).export(str(path))
        except ValueError:
            # pyqtgraph's SVG post-processing fails on the path syntax of current Qt releases
            # (pyqtgraph issue #3485); Qt's own SVG generator renders the same scene.
            _export_svg_qt(item, path, title)
    return path


def _export_svg_qt(item, path: Path, title: str) -> None:
    from PySide6.QtCore import QRectF, QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    scene = item.scene()
    rect = item.sceneBoundingRect()
    gen = QSvgGenerator()
    gen.setFileName(str(path))
    gen.setSize(QSize(int(rect.width()), int(rect.height())))
    gen.setViewBox(QRectF(0, 0, rect.width(), rect.height()))
    gen.setTitle(title)
    views = scene.views()
    if views:  # as on screen, so text and plots keep their proportions
        gen.setResolution(views[0].logicalDpiX())
    painter = QPainter(gen)
    try:
        scene.render(painter, QRectF(0, 0, rect.width(), rect.height()), rect)
    finally:
        painter.end()


@dataclass
class _Track:
    run: DrillRun
    #: the main series' curves (key -> item); the same dict as ``parts[MAIN_SERIES]``
    curves: Dict[str, pg.PlotDataItem] = field(default_factory=dict)
    #: series name -> its curves, created once when the series appears
    parts: Dict[str, Dict[str, pg.PlotDataItem]] = field(default_factory=dict)
    #: names of the series drawn at the last restyle (a new one triggers a restyle)
    shown: tuple = ()
    #: series name -> (epochs, batch points) at its last setData: unchanged series are skipped
    sizes: Dict[str, tuple] = field(default_factory=dict)
    version: int = -1
    #: (series, key) -> (points seen, min, max) of the y values: bounds grow incrementally
    bounds: Dict[tuple, tuple] = field(default_factory=dict)
    #: series name -> (its per-batch loss Series, the min/max envelope of it), grown from the new
    #: points only
    decimators: Dict[str, tuple] = field(default_factory=dict)


class QtCurvesView(QWidget):
    """Accuracy / loss per epoch and loss per batch for the runs given to :meth:`show_runs`."""

    exported = Signal(str)

    def __init__(self, parent: Optional[QWidget] = None, refresh_ms: int = 100):
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground("w")
        self.glw.setMinimumHeight(220)
        self.acc_plot = self.glw.addPlot(row=0, col=0)
        self.loss_plot = self.glw.addPlot(row=0, col=1)
        self.batch_plot = self.glw.addPlot(row=1, col=0, colspan=2)
        self.plots = (self.acc_plot, self.loss_plot, self.batch_plot)
        for plot, title, ylabel in ((self.acc_plot, "Accuracy per epoch", "accuracy"),
                                    (self.loss_plot, "Loss per epoch", "cross-entropy"),
                                    (self.batch_plot, "Training loss per batch", "batch loss")):
            plot.setTitle(title, color="#222", size="9pt")
            plot.setLabel("left", ylabel, color="#333")
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            for axis in ("left", "bottom"):
                plot.getAxis(axis).setPen(pg.mkPen("#666"))
                plot.getAxis(axis).setTextPen(pg.mkPen("#333"))
        self.batch_plot.setLabel("bottom", "epoch (fractional for batches)", color="#333")
        self.acc_plot.setYRange(0.0, 1.0, padding=0.06)  # room for the 0 and 1 tick labels
        self.acc_plot.getAxis("left").setTickSpacing(0.5, 0.1)  # stays legible in a short plot
        self.acc_plot.enableAutoRange(axis="y", enable=False)
        # Ranges follow the data in steps (stepped_range), not pyqtgraph's auto-range: auto-range
        # recomputed the bounds and moved the axes on every setData, which relaid out and repainted
        # the axis labels and cost a second frame per tick.  Panning or zooming by hand stops the
        # following for that plot; the plot's "A" button resumes it.
        self._follow: Dict[int, bool] = {}
        for plot in self.plots:
            plot.disableAutoRange()
            self._follow[id(plot)] = True
            plot.getViewBox().sigRangeChangedManually.connect(
                lambda *_, p=plot: self._follow.__setitem__(id(p), False))
            for axis in ("left", "bottom"):
                # the axis (labels and grid) is drawn from a pixmap cache between range changes
                plot.getAxis(axis).setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        # the legend has its own cell right of the plots: it never hides a curve, and is exported
        self.legend = pg.LegendItem(labelTextColor="#222", brush=pg.mkBrush(255, 255, 255, 0), verSpacing=-4)
        self.legend.setMinimumWidth(150)
        legend_cell = self.glw.addLayout(row=0, col=2, rowspan=2)
        legend_cell.addItem(self.legend, row=0, col=0)
        legend_cell.addLabel("solid: test split<br>dashed: training", row=1, col=0, color="#555", size="8pt",
                             justify="left")
        legend_cell.layout.setRowStretchFactor(1, 10)
        for col, stretch in ((0, 4), (1, 4), (2, 2)):
            self.glw.ci.layout.setColumnStretchFactor(col, stretch)
        self.mode_box = QComboBox()
        for key, text in MODES.items():
            self.mode_box.addItem(text, key)
        self.mode_box.currentIndexChanged.connect(lambda *_: self.set_mode(self.mode_box.currentData()))
        self.export_button = QPushButton("Export plot...")
        self.export_button.setToolTip("Save the curves as PNG or SVG")
        self.export_button.clicked.connect(lambda: self.export())
        #: the row above the plots; hosts may insert their own widgets at the left (e.g. progress)
        # (a layout kept as an attribute must live in a widget: a parentless QLayout handed to
        # addLayout() was deleted twice when the view went away, seen with PySide6 6.12.0)
        toolbar = QWidget()
        self.toolbar = QHBoxLayout(toolbar)
        self.toolbar.setContentsMargins(0, 0, 0, 0)
        self.toolbar.addStretch(1)
        self.toolbar.addWidget(self.mode_box)
        self.toolbar.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(toolbar)
        layout.addWidget(self.glw, 1)

        self.mode = "overlay"
        self.tracks: Dict[str, _Track] = {}
        self.updates = 0  # setData rounds done (tests, benchmarks)
        #: hand the per-batch loss to setData as its PeakDecimator envelope (False: the whole
        #: history, as the benchmark's "naive" arm does for contrast)
        self.decimate = True
        self.timer = QTimer(self)
        self.timer.setInterval(refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    # ------------------------------------------------------------------ runs
    def runs(self) -> List[DrillRun]:
        return [t.run for t in self.tracks.values()]

    def show_runs(self, runs: Sequence[DrillRun]) -> None:
        """Plot exactly ``runs`` (curves of new runs are created, those of dropped runs removed)."""
        wanted = {r.id: r for r in runs}
        if list(wanted) == list(self.tracks) and all(self.tracks[k].run is r for k, r in wanted.items()):
            self.refresh()  # the same runs: only new data (no restyle, no full setData)
            return
        for run_id in [k for k in self.tracks if k not in wanted]:
            self._remove(self.tracks.pop(run_id))
        for run in runs:
            if run.id not in self.tracks:
                self.tracks[run.id] = self._create(run)
        self.tracks = {r.id: self.tracks[r.id] for r in runs}  # legend and shades in the given order
        self._restyle()
        self.refresh(force=True)

    def add_run(self, run: DrillRun) -> None:
        if run.id not in self.tracks:
            self.show_runs(self.runs() + [run])

    def clear(self) -> None:
        self.show_runs([])

    def _create(self, run: DrillRun) -> _Track:
        track = _Track(run)
        track.curves = track.parts[MAIN_SERIES] = self._create_curves()
        self._add_parts(track)
        return track

    def _create_curves(self) -> Dict[str, pg.PlotDataItem]:
        c = {"acc_test": self.acc_plot.plot([], [], symbol="o", symbolSize=6),
             "acc_train": self.acc_plot.plot([], []),
             "loss_test": self.loss_plot.plot([], [], symbol="o", symbolSize=6),
             "loss_train": self.loss_plot.plot([], []),
             # the per-batch loss is long and noisy: drawn without antialiasing (Qt's antialiased
             # stroke of a pen wider than 1 px costs ~0.3 ms per point of a zig-zag line)
             "batch": self.batch_plot.plot([], [], antialias=False)}
        for curve in c.values():
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)
            # peak downsampling to ~SAMPLES_PER_PIXEL x 2 points per pixel column (pyqtgraph's
            # default, 5, still draws ~10 points per pixel): the min/max envelope is exact at 1
            curve.opts["autoDownsampleFactor"] = SAMPLES_PER_PIXEL
        return c

    def _add_parts(self, track: _Track) -> bool:
        """Create the curves of series that appeared since the last call; True if the set of drawn
        series changed (colours and legend need a restyle)."""
        shown = tuple(d.name for d in track.run.plot_series())
        for name in shown:
            if name not in track.parts:
                track.parts[name] = self._create_curves()
        changed = shown != track.shown
        track.shown = shown
        return changed

    def _remove(self, track: _Track) -> None:
        for part in track.parts.values():
            self.legend.removeItem(part["acc_test"])
            for key, curve in part.items():
                self._plot_of(key).removeItem(curve)
        track.parts.clear()
        track.curves = {}

    def _plot_of(self, key: str) -> pg.PlotItem:
        return {"acc": self.acc_plot, "loss": self.loss_plot, "batch": self.batch_plot}[key.split("_")[0]]

    # ------------------------------------------------------------------ colours
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown curves mode {mode!r}; choose {', '.join(MODES)}")
        self.mode = mode
        index = self.mode_box.findData(mode)
        if self.mode_box.currentIndex() != index:
            self.mode_box.setCurrentIndex(index)
        self._restyle()

    def colour_of(self, run: DrillRun) -> QColor:
        if self.mode == "family" and run.sweep is not None:
            values = {t.run.sweep["value"] for t in self.tracks.values() if t.run.sweep is not None}
            return sweep_colour(run.sweep["value"], values | {run.sweep["value"]})
        same = [t.run.id for t in self.tracks.values() if t.run.role == run.role]
        return role_colour(run.role, same.index(run.id) if run.id in same else 0)

    def legend_name(self, run: DrillRun) -> str:
        if self.mode == "family" and run.sweep is not None:
            return f"{run.sweep['param']} = {run.sweep['value']:g}"
        return run.label

    def series_styles(self) -> List[tuple]:
        """(track, series, colour, legend name, (symbol, symbol size, line width)) for every drawn
        series, in drawing order.  A run without ``series`` tags is coloured and named as a run (as
        :meth:`colour_of`); tagged series (the models a drill trained) by their role, several of one
        role in shades (counted over all shown runs), or for a sweep family along the colour map by
        their parameter value, and named ``#run series``."""
        out, seen = [], {}
        for track in self.tracks.values():
            run = track.run
            series = run.plot_series()
            if len(series) == 1 and series[0].name == MAIN_SERIES:
                if self.mode == "family" and run.sweep is not None:
                    colour = self.colour_of(run)
                else:
                    index = seen.get(run.role, 0)
                    seen[run.role] = index + 1
                    colour = role_colour(run.role, index)
                out.append((track, series[0], colour, self.legend_name(run), ("o", 6, 2.0)))
                continue
            families = run.sweep_families()
            for data in series:
                role = data.role or run.role
                style = SERIES_STYLES.get(role, SERIES_STYLES["sweep"])
                if data.name in families:
                    _, value, values = families[data.name]
                    colour = sweep_colour(value, values, by_rank=True)
                    style = SERIES_STYLES["sweep"]
                else:
                    index = seen.get(role, 0)
                    seen[role] = index + 1
                    colour = role_colour(role, index)
                name = f"#{run.number} {data.name or run.role_title}"
                out.append((track, data, colour, name, style))
        return out

    def _restyle(self) -> None:
        self.legend.clear()
        for track, data, colour, name, (symbol, size, width) in self.series_styles():
            solid = pg.mkPen(colour, width=width)
            dashed = pg.mkPen(colour, width=0.75 * width, style=Qt.DashLine)
            c = track.parts[data.name]
            for key in ("acc_test", "loss_test"):
                c[key].setPen(solid)
                c[key].setSymbol(symbol)
                c[key].setSymbolSize(size)
                c[key].setSymbolPen(pg.mkPen(colour))
                c[key].setSymbolBrush(pg.mkBrush(colour))
            c["acc_train"].setPen(dashed)
            c["loss_train"].setPen(dashed)
            c["batch"].setPen(pg.mkPen(colour, width=width / 2))
            self.legend.addItem(c["acc_test"], name)

    # ------------------------------------------------------------------ data
    def refresh(self, force: bool = False) -> int:
        """setData for every run whose data changed since the last refresh; returns how many."""
        changed, restyle = 0, False
        for track in self.tracks.values():
            run = track.run
            if not force and run.version == track.version:
                continue
            track.version = run.version
            restyle |= self._add_parts(track)
            for name, c in track.parts.items():
                data = run.series_data.get(name)
                if data is None:
                    continue
                size = (len(data.epochs), len(data.batch_loss))
                before = (-1, -1) if force else track.sizes.get(name, (-1, -1))
                if size != before:
                    track.sizes[name] = size
                    # only the curves whose data grew: a new batch leaves the epoch plots alone
                    self._set_data(track, name, c, data, epochs=size[0] != before[0],
                                   batches=size[1] != before[1])
            changed += 1
        if restyle:
            self._restyle()
        if changed:
            self.updates += 1
            self._update_ranges(force)
        return changed

    # ------------------------------------------------------------------ ranges
    def _bounds(self, track: _Track, name: str, key: str, y: np.ndarray) -> tuple:
        """(min, max) of ``y``, updated from the points added since the last call."""
        seen, lo, hi = track.bounds.get((name, key), (0, math.inf, -math.inf))
        if len(y) < seen:
            seen, lo, hi = 0, math.inf, -math.inf
        if len(y) > seen:
            fresh = y[seen:]
            fresh = fresh[np.isfinite(fresh)]
            if len(fresh):
                lo, hi = min(lo, float(fresh.min())), max(hi, float(fresh.max()))
            track.bounds[(name, key)] = (len(y), lo, hi)
        return lo, hi

    def data_bounds(self) -> Dict[str, List[float]]:
        """Plot name (acc, loss, batch) -> [xmin, xmax, ymin, ymax] over the plotted curves."""
        out = {k: [math.inf, -math.inf, math.inf, -math.inf] for k in ("acc", "loss", "batch")}
        for track in self.tracks.values():
            for name, c in track.parts.items():
                data = track.run.series_data.get(name)
                if data is None:
                    continue
                s = data.curves
                pairs = (("acc", "train_acc", s["train_acc"]), ("acc", "test_acc", s["test_acc"] if len(s["test_acc"]) else s["val_acc"]),
                         ("loss", "train_loss", s["train_loss"]), ("loss", "test_loss", s["test_loss"] if len(s["test_loss"]) else s["val_loss"]),
                         ("batch", "batch", data.batch_loss))
                for plot, key, series in pairs:
                    if not len(series):
                        continue
                    b = out[plot]
                    x = series.x  # epochs and fractional epochs only grow
                    b[0], b[1] = min(b[0], float(x[0])), max(b[1], float(x[-1]))
                    lo, hi = self._bounds(track, name, key, series.y)
                    b[2], b[3] = min(b[2], lo), max(b[3], hi)
        return out

    def _update_ranges(self, force: bool = False) -> None:
        bounds = self.data_bounds()
        for plot, key in ((self.acc_plot, "acc"), (self.loss_plot, "loss"), (self.batch_plot, "batch")):
            vb = plot.getViewBox()
            if any(vb.state["autoRange"]):  # the "A" button: follow the data again, in steps
                vb.disableAutoRange()
                self._follow[id(plot)] = True
                force = True
            if not self._follow[id(plot)]:
                continue
            x0, x1, y0, y1 = bounds[key]
            (cx, cy) = vb.viewRange()
            if key == "batch":
                x0 = min(x0, 0.0)
            else:
                x0, x1 = x0 - 0.25, x1 + 0.25
            xr = stepped_range(x0, x1, None if force else cx, min_span=1.0)
            yr = None if key == "acc" else stepped_range(y0, y1, None if force else cy, min_span=0.05)
            if key != "acc" and yr is not None and y0 >= 0.0:
                yr = (max(yr[0], 0.0), yr[1])  # losses are not negative
            if xr is not None or yr is not None:
                vb.setRange(xRange=xr, yRange=yr, padding=0.0, update=True)

    def _set_data(self, track: _Track, name: str, c: Dict[str, pg.PlotDataItem], data: SeriesData,
                  epochs: bool = True, batches: bool = True) -> None:
        if epochs:
            s = data.curves
            test_acc = s["test_acc"] if len(s["test_acc"]) else s["val_acc"]
            test_loss = s["test_loss"] if len(s["test_loss"]) else s["val_loss"]
            c["acc_test"].setData(test_acc.x, test_acc.y)
            c["acc_train"].setData(s["train_acc"].x, s["train_acc"].y)
            c["loss_test"].setData(test_loss.x, test_loss.y)
            c["loss_train"].setData(s["train_loss"].x, s["train_loss"].y)
        if batches:
            series = data.batch_loss
            if not self.decimate:
                c["batch"].setData(series.x, series.y)
                return
            source, dec = track.decimators.get(name, (None, None))
            if source is not series:  # first data, or the run's series object was replaced
                dec = PeakDecimator(DECIMATE_CAP)
                track.decimators[name] = (series, dec)
            dec.sync(series.x, series.y)  # only the points added since the last tick
            c["batch"].setData(*dec.view())

    @contextmanager
    def _uncached_axes(self):
        axes = [plot.getAxis(a) for plot in self.plots for a in ("left", "bottom")]
        for axis in axes:
            axis.setCacheMode(QGraphicsItem.NoCache)
        try:
            yield
        finally:
            for axis in axes:
                axis.setCacheMode(QGraphicsItem.DeviceCoordinateCache)

    def curve_data(self, run_id: str, key: str, series: str = MAIN_SERIES):
        """(x, y) arrays currently shown for one of a run's curves (tests); ``series`` names the
        model of a multi-series run."""
        return self.tracks[run_id].parts[series][key].getData()

    # ------------------------------------------------------------------ export
    def export(self, path: Optional[str] = None) -> Optional[Path]:
        """Save the figure as shown (same size and layout as on screen); the format follows the
        suffix, .png or .svg.  Asks for a file name when ``path`` is None."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export plot", "drill-curves.png", "PNG image (*.png);;SVG (*.svg)")
            if not path:
                return None
        self.refresh(force=True)
        with self._uncached_axes():  # exports draw the axes as vectors, not cached pixmaps
            path = export_graphics(self.glw.ci, path)
        self.exported.emit(str(path))
        return path
