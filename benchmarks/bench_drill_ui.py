#!/usr/bin/env python3
"""Drill studio responsiveness: UI event-loop stalls under a streaming backend, and plot update cost.

Two measurements, in one offscreen Qt process (``QT_QPA_PLATFORM=offscreen``, set before Qt loads):

**(a) Event-loop stalls** (goal: longest stall <= 50 ms).  The real Drills page
(``QtDrillsView`` over a ``DrillStudio`` in a throw-away folder, 1280 x 860, shown) with a
heartbeat: a ``Qt.PreciseTimer`` every ``--heartbeat-ms`` (1 ms) records the time of each tick; a
gap between ticks is the time the event loop could not serve the timer.  Two arms, interleaved
(``--reps`` each, baseline first):

* ``baseline`` - the page shown, nothing running, for ``--seconds``;
* ``backend``  - a drill launched from the page as a user would (the paper's ``fig6-drunk-curves``
  recipe, as ``drill --list`` lists it), run by the page's real ``QtDrillRunner`` /
  ``QtBackendJob`` (QProcess, same interpreter) - with the fake backend
  ``benchmarks/_fake_drill_backend.py`` in place of ``-m training``: ``--rate`` (100) events per
  second for ``--seconds``, three models (clean / attacked / defended) side by side, a
  ``progress`` event per batch and ``epoch_end`` + ``artifact_written`` per epoch, modelled on the
  recording ``tests/fixtures/drill_fig6_quick.jsonl``.  Every event goes through the real path:
  line buffer, protocol validation, ``DrillRun.apply``, the curves' 10 Hz ``setData`` timer, the
  page's 10 Hz progress tick, then the run's end (history saved to SQLite, results shown).
  The heartbeat runs from just before Launch until 1 s after the run has finished.

Reported per arm: heartbeat gaps (median, p99, p99.9, max, how many over 16.7 and 50 ms), the
largest gap while events stream and around the run's end, events received per second, curve
updates, GUI-process CPU seconds.

**(b) Plot update cost vs history size** (goal: flat; reported: ratio of the medians largest / 1k,
and largest / the smallest size that draws as many points - the history's own cost).
One ``QtCurvesView`` (the real curves widget, 1180 x 470, shown, its own timer stopped) per size,
each plotting a three-model run (clean / attacked / defended, as Figure 6) whose per-batch loss
history holds ``--sizes`` points *per model* (1k, 10k, 30k, 100k, 1M) over ``--plot-epochs`` (20)
epochs, so only the per-batch history grows.  One measured update = what one 10 Hz tick costs at
100 events/s: a few new batches per model (``--new-points`` 4, applied as protocol events), then
``QtCurvesView.refresh()`` (the per-batch curves' incremental min/max envelope,
``core.decimate.PeakDecimator``, handed to ``setData``; pyqtgraph's peak downsampling and clip to
view on that bounded envelope) and the event processing that follows it, which paints the frame
(one paint per update, counted).
Sizes are interleaved per repetition (``--repeats`` 30, after ``--warmup`` 3); medians reported,
with the ``setData`` part, the points handed to ``setData`` and the number of points actually
drawn per batch curve.  The arm ``naive`` (``--no-naive`` to skip) plots the same runs with the
envelope, downsampling and clip-to-view switched off (the whole history to ``setData``), for
contrast.

    python benchmarks/bench_drill_ui.py                 # full: about 3-4 minutes
    python benchmarks/bench_drill_ui.py --quick         # seconds-long smoke run; numbers meaningless

Results: ``benchmarks/results/drill_ui.json`` (``drill_ui_quick.json`` with ``--quick``); a
markdown table on stdout, progress on stderr.  A run of one part only (``--skip-stalls`` or
``--skip-plot``) keeps the other part's results already in that file (moved over with the
environment and config of the run that measured them, under ``kept_from_previous``).
``--check``: exit status 1 when a goal is missed (of the parts this run measured).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchutil as U  # noqa: E402

U.setup_paths()

NAME = "drill_ui"
FAKE_BACKEND = Path(__file__).resolve().parent / "_fake_drill_backend.py"
TEMPLATE = U.REPO / "tests" / "fixtures" / "drill_fig6_quick.jsonl"
DRILL = "fig6-drunk-curves"
SERIES = (("clean", "clean"), ("attacked", "attacked"), ("defended", "defended"))
STALL_GOAL_MS = 50.0
FLAT_GOAL = 2.0  # "flat": the largest size's update costs at most this many times the smallest's


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (numbers meaningless)")
    p.add_argument("--rate", type=float, default=100.0, help="backend events per second (default %(default)s)")
    p.add_argument("--seconds", type=float, help="streaming seconds per arm (default 25; quick 3)")
    p.add_argument("--batches", type=int, default=50, help="batches per epoch in the stream (default %(default)s)")
    p.add_argument("--reps", type=int, help="repetitions of each stall arm (default 2; quick 1)")
    p.add_argument("--heartbeat-ms", type=int, default=1, help="heartbeat timer interval (default %(default)s)")
    p.add_argument("--sizes", help="batch points per model for (b), comma separated "
                                   "(default 1000,10000,30000,100000,1000000; quick 1000,10000)")
    p.add_argument("--repeats", type=int, help="timed updates per size (default 30; quick 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates per size first (default %(default)s)")
    p.add_argument("--new-points", type=int, default=4, help="new batches per model per update (default %(default)s)")
    p.add_argument("--plot-epochs", type=int, default=20, help="epochs per model in (b) (default %(default)s)")
    p.add_argument("--no-naive", action="store_true", help="skip the arm without downsampling / clip to view")
    p.add_argument("--skip-stalls", action="store_true", help="only (b)")
    p.add_argument("--skip-plot", action="store_true", help="only (a)")
    p.add_argument("--check", action="store_true", help="exit status 1 when a goal is missed")
    p.add_argument("--out", type=Path, help=f"JSON results (default benchmarks/results/{NAME}.json)")
    a = p.parse_args(argv)
    a.seconds = a.seconds if a.seconds is not None else (3.0 if a.quick else 25.0)
    a.reps = a.reps if a.reps is not None else (1 if a.quick else 2)
    a.repeats = a.repeats if a.repeats is not None else (3 if a.quick else 30)
    a.sizes = [int(s) for s in (a.sizes or ("1000,10000" if a.quick else "1000,10000,30000,100000,1000000")).split(",")]
    a.out = a.out or (U.RESULTS / f"{NAME}{'_quick' if a.quick else ''}.json")
    for name in ("rate", "seconds", "reps", "repeats", "batches", "plot_epochs", "heartbeat_ms"):
        if getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return a


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def environment() -> Dict[str, Any]:
    import numpy as np
    import pyqtgraph
    import PySide6
    from PySide6.QtCore import qVersion

    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(), "platform": platform.platform(), "cpu": U.cpu_model(),
        "logical_cpus": os.cpu_count(), "affinity_cpus": U.default_threads(), "loadavg_start": U.loadavg(),
        "python": platform.python_version(), "numpy": np.__version__, "pyside6": PySide6.__version__,
        "qt": qVersion(), "pyqtgraph": pyqtgraph.__version__, "qpa": os.environ.get("QT_QPA_PLATFORM"),
    }


# --------------------------------------------------------------------------- Qt helpers
def spin(app, until: Callable[[], bool], timeout: float, poll_ms: int = 20) -> bool:
    """Run the real event loop (QEventLoop.exec) until ``until()`` or ``timeout`` seconds."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.perf_counter() + timeout
    done = {"ok": False}

    def check() -> None:
        if until():
            done["ok"] = True
            loop.quit()
        elif time.perf_counter() >= deadline:
            loop.quit()

    poll = QTimer()
    poll.setInterval(poll_ms)
    poll.timeout.connect(check)
    poll.start()
    QTimer.singleShot(0, check)
    loop.exec()
    poll.stop()
    return done["ok"]


def wait(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    spin(app, lambda: time.perf_counter() >= end, seconds + 1.0)


class Heartbeat:
    """A precise Qt timer recording when it fires; gaps between ticks are event-loop stalls."""

    def __init__(self, interval_ms: int):
        from PySide6.QtCore import Qt, QTimer

        self.ticks = array.array("d")
        self.timer = QTimer()
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def start(self) -> None:
        self.ticks.append(time.perf_counter())
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self.ticks.append(time.perf_counter())


def gap_stats(ticks, t0: float, windows: Dict[str, tuple]) -> Dict[str, Any]:
    """Heartbeat gaps in ms: distribution, the largest ones, and the largest per time window."""
    import numpy as np

    t = np.asarray(ticks)
    gaps = np.diff(t) * 1000.0
    if not len(gaps):
        return {"n": 0}
    order = np.argsort(gaps)[::-1][:5]
    out: Dict[str, Any] = {
        "n": int(len(gaps)), "median_ms": float(np.median(gaps)), "p99_ms": float(np.percentile(gaps, 99)),
        "p999_ms": float(np.percentile(gaps, 99.9)), "max_ms": float(gaps.max()),
        "over_16ms": int((gaps > 1000 / 60).sum()), "over_50ms": int((gaps > STALL_GOAL_MS).sum()),
        "largest": [{"ms": float(gaps[i]), "at_s": float(t[i] - t0)} for i in order],
    }
    for name, (a, b) in windows.items():
        # gaps overlapping [a, b]
        sel = (t[1:] >= a) & (t[:-1] <= b)
        out[f"max_{name}_ms"] = float(gaps[sel].max()) if sel.any() else None
    return out


# --------------------------------------------------------------------------- (a) stalls
def listing() -> Dict[str, Any]:
    started = json.loads(TEMPLATE.read_text(encoding="utf-8").splitlines()[0])
    return {"recipes": [{"name": DRILL, "title": "Figure 6: clean vs attacked vs defended (fake backend)",
                         "role": "defended", "attack": "drunk_optimizer",
                         "settings": started["config"]["settings"]}]}


def stall_arm(app, arm: str, rep: int, args, tmp: Path) -> Dict[str, Any]:
    from PySide6.QtWidgets import QApplication

    from breakfix_desktop._qt.qt_drills_view import QtDrillsView
    from breakfix_desktop.core import drills as D

    data = tmp / "data"
    for split in ("Training", "Testing"):
        (data / split).mkdir(parents=True, exist_ok=True)
    studio = D.DrillStudio(store_dir=tmp / f"store-{arm}-{rep}", data_dir=data, configs_dir=tmp / "no-configs",
                           status=D.BackendStatus(True, "benchmark", True, True))
    prefix = [str(FAKE_BACKEND), "--rate", str(args.rate), "--seconds", str(args.seconds),
              "--batches", str(args.batches), "--template", str(TEMPLATE), "--"]
    view = QtDrillsView(studio, prefix=prefix, probe_backend=False)
    view.resize(1280, 860)
    view.show()
    wait(app, 0.5)
    run_box: Dict[str, Any] = {}
    arrivals = array.array("d")
    marks: Dict[str, float] = {}

    def on_studio(what: str, run) -> None:
        if what == "started":
            marks["started"] = time.perf_counter()

            def hook() -> None:
                job = view.runner.jobs.get(run.id)
                if job is not None:
                    job.message.connect(lambda *_: arrivals.append(time.perf_counter()))
            from PySide6.QtCore import QTimer
            QTimer.singleShot(0, hook)
        elif what == "finished":
            marks["finished"] = time.perf_counter()

    studio.subscribe(on_studio)
    if arm == "backend":
        studio.set_backend_recipes(listing())
        view.select_recipe(f"drill:{DRILL}")
        view.device_box.setCurrentText("cpu")

    def launch() -> None:
        runs = view.launch()
        if not runs:
            raise RuntimeError(f"not launched: {view.error_label.text()}")
        run_box["run"] = runs[0]

    hb = Heartbeat(args.heartbeat_ms)
    cpu0 = time.process_time()
    updates0 = view.curves.updates
    hb.start()
    t0 = time.perf_counter()
    if arm == "backend":
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, launch)
        ok = spin(app, lambda: "run" in run_box and run_box["run"].is_final, args.seconds + 60.0)
        wait(app, 1.0)
    else:
        wait(app, args.seconds + 1.0)
        ok = True
    hb.stop()
    t1 = time.perf_counter()
    cpu = time.process_time() - cpu0
    run = run_box.get("run")
    windows = {}
    if len(arrivals):
        windows["streaming"] = (arrivals[0], arrivals[-1])
        if "finished" in marks:
            windows["finish"] = (arrivals[-1], marks["finished"] + 0.5)
    stats = gap_stats(hb.ticks, t0, windows)
    result: Dict[str, Any] = {
        "arm": arm, "rep": rep, "ok": ok, "seconds": t1 - t0, "gui_cpu_s": cpu, "curve_updates": view.curves.updates - updates0,
        "gaps": stats,
    }
    if run is not None:
        stream_s = (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else float("nan")
        result.update({
            "status": run.status, "message": run.message, "events": len(run.events),
            "invalid_lines": len(run.invalid_lines), "events_per_s": (len(arrivals) - 1) / stream_s if stream_s else None,
            "stream_seconds": stream_s,
            "batch_points": {d.name: len(d.batch_loss) for d in run.tagged_series},
            "epochs": {d.name: len(d.epochs) for d in run.tagged_series},
            "launch_to_first_event_s": (arrivals[0] - t0) if len(arrivals) else None,
        })
    view.shutdown()
    studio.unsubscribe(on_studio)
    view.close()
    view.deleteLater()
    studio.history.close()
    QApplication.processEvents()
    return result


def measure_stalls(app, args, tmp: Path) -> Dict[str, Any]:
    samples: List[Dict[str, Any]] = []
    for rep in range(args.reps):
        for arm in ("baseline", "backend"):
            log(f"(a) {arm} rep {rep + 1}/{args.reps}: {args.seconds:g} s"
                + (f" at {args.rate:g} events/s" if arm == "backend" else ""))
            r = stall_arm(app, arm, rep, args, tmp)
            g = r["gaps"]
            log(f"    max gap {g.get('max_ms', float('nan')):.1f} ms, p99 {g.get('p99_ms', float('nan')):.2f} ms"
                + (f", {r.get('events')} events, status {r.get('status')}" if arm == "backend" else ""))
            samples.append(r)
    arms: Dict[str, Any] = {}
    for arm in ("baseline", "backend"):
        mine = [s for s in samples if s["arm"] == arm]
        arms[arm] = {
            "max_ms": max(s["gaps"]["max_ms"] for s in mine),
            "p99_ms": U.median([s["gaps"]["p99_ms"] for s in mine]),
            "p999_ms": U.median([s["gaps"]["p999_ms"] for s in mine]),
            "median_ms": U.median([s["gaps"]["median_ms"] for s in mine]),
            "over_16ms": sum(s["gaps"]["over_16ms"] for s in mine),
            "over_50ms": sum(s["gaps"]["over_50ms"] for s in mine),
            "heartbeats": sum(s["gaps"]["n"] for s in mine),
            "seconds": sum(s["seconds"] for s in mine),
            "gui_cpu_s": sum(s["gui_cpu_s"] for s in mine),
            "curve_updates": sum(s["curve_updates"] for s in mine),
        }
        if arm == "backend":
            arms[arm].update({
                "events": sum(s.get("events") or 0 for s in mine),
                "events_per_s": U.median([s["events_per_s"] for s in mine if s.get("events_per_s")]),
                "max_streaming_ms": max((s["gaps"].get("max_streaming_ms") or 0.0) for s in mine),
                "max_finish_ms": max((s["gaps"].get("max_finish_ms") or 0.0) for s in mine),
                "all_ok": all(s.get("status") == "ok" for s in mine),
            })
    return {"samples": samples, "arms": arms,
            "goal_ms": STALL_GOAL_MS, "met": arms["backend"]["max_ms"] <= STALL_GOAL_MS and arms["backend"]["all_ok"]}


# --------------------------------------------------------------------------- (b) plot cost
class Feeder:
    """Grows a three-model run as the backend would: per model, progress per batch, epoch_end per epoch."""

    def __init__(self, run, batches: int, seed: int = 0):
        import numpy as np

        self.run, self.batches = run, batches
        self.rng = np.random.default_rng(seed)
        self.step = {name: 0 for name, _ in SERIES}

    def _events(self, name: str, role: str):
        self.step[name] += 1
        n = self.step[name]
        epoch, step = divmod(n - 1, self.batches)
        epoch, step = epoch + 1, step + 1
        loss = float(0.2 + 1.2 * 0.999 ** n + abs(self.rng.normal(0, 0.1)))
        yield {"v": 1, "type": "progress", "t": 0.0, "phase": "train", "epoch": epoch, "step": step,
               "total": self.batches, "loss": loss, "acc": 1 - loss / 2, "series": name, "role": role}
        if step == self.batches:
            yield {"v": 1, "type": "epoch_end", "t": 0.0, "epoch": epoch, "train_loss": loss, "train_acc": 1 - loss / 2,
                   "test_loss": loss + 0.1, "test_acc": 1 - loss / 1.8, "lr": 1e-4, "series": name, "role": role}

    def fill(self, per_model: int) -> None:
        """Fast fill (no event list kept: a 300k-event list is not what is measured)."""
        for name, role in SERIES:
            for _ in range(per_model):
                for msg in self._events(name, role):
                    data = self.run.series_of(msg)
                    (data.add_progress if msg["type"] == "progress" else data.add_epoch)(msg)
        self.run.version += 1

    def grow(self, k: int) -> None:
        """k new batches per model through ``DrillRun.apply`` (as the live events arrive)."""
        for name, role in SERIES:
            for _ in range(k):
                for msg in self._events(name, role):
                    self.run.apply(msg)


def make_curves(run, naive: bool):
    from breakfix_desktop._qt.qt_curves import QtCurvesView

    view = QtCurvesView()
    view.timer.stop()  # updates are driven (and timed) here
    view.decimate = not naive  # naive: the whole history to setData
    view.resize(1180, 470)
    view.show()
    view.show_runs([run])
    view._paints = count_paints(view.glw.viewport())
    if naive:
        for plot in view.plots:
            plot.setDownsampling(ds=1, auto=False)
            plot.setClipToView(False)
        for part in view.tracks[run.id].parts.values():
            for curve in part.values():
                curve.setDownsampling(ds=1, auto=False)
                curve.setClipToView(False)
    return view


def setdata_points(view, run) -> int:
    """Points handed to setData for the first model's batch curve (before pyqtgraph's own pass)."""
    name = next(iter(run.series_data[n] for n in run.series_data if n)).name
    item = view.tracks[run.id].parts[name]["batch"]
    return 0 if item.xData is None else int(len(item.xData))


def drawn_points(view, run) -> int:
    """Points handed to Qt for the first model's batch curve (after downsampling and clipping)."""
    name = next(iter(run.series_data[n] for n in run.series_data if n)).name
    curve = view.tracks[run.id].parts[name]["batch"].curve
    return 0 if curve.xData is None else int(len(curve.xData))


def count_paints(widget) -> List[int]:
    from PySide6.QtCore import QEvent, QObject

    class Filter(QObject):
        def __init__(self):
            super().__init__(widget)
            self.n = [0]

        def eventFilter(self, obj, event):  # noqa: N802 - Qt override
            if event.type() == QEvent.Paint:
                self.n[0] += 1
            return False

    f = Filter()
    widget.installEventFilter(f)
    widget._paint_filter = f  # keep it alive
    return f.n


def one_update(app, view, feeder: Feeder, k: int) -> Dict[str, float]:
    paints = view._paints
    before = paints[0]
    t0 = time.perf_counter()
    feeder.grow(k)
    t1 = time.perf_counter()
    view.refresh()
    t2 = time.perf_counter()
    app.processEvents()  # what setData posted (view range, layout) and the frame's paint
    app.processEvents()
    t3 = time.perf_counter()
    return {"apply_ms": 1e3 * (t1 - t0), "setdata_ms": 1e3 * (t2 - t1), "update_ms": 1e3 * (t3 - t1),
            "paints": paints[0] - before}


def measure_plot(app, args) -> Dict[str, Any]:
    from breakfix_desktop.core.drills import DrillRun

    arms = ["curves"] + ([] if args.no_naive else ["naive"])
    cells: Dict[tuple, Any] = {}
    for arm in arms:
        for i, n in enumerate(args.sizes):
            run = DrillRun(f"{arm}-{n}", f"drill:{DRILL}", "plot cost", role="defended", number=i + 1)
            feeder = Feeder(run, max(1, n // args.plot_epochs), seed=i)
            t = time.perf_counter()
            feeder.fill(n)
            view = make_curves(run, naive=arm == "naive")
            app.processEvents()
            log(f"(b) {arm}: {n:,} points per model x {len(SERIES)} filled in {time.perf_counter() - t:.1f} s")
            cells[(arm, n)] = {"run": run, "feeder": feeder, "view": view, "samples": []}
    order = [(arm, n) for n in args.sizes for arm in arms]
    for _ in range(args.warmup):
        for key in order:
            one_update(app, cells[key]["view"], cells[key]["feeder"], args.new_points)
    for rep in range(args.repeats):
        seq = order if rep % 2 == 0 else order[::-1]
        for key in seq:
            cells[key]["samples"].append(one_update(app, cells[key]["view"], cells[key]["feeder"], args.new_points))
        if (rep + 1) % 10 == 0 or rep + 1 == args.repeats:
            log(f"(b) repetition {rep + 1}/{args.repeats}")
    out: Dict[str, Any] = {"arms": {}, "sizes": args.sizes}
    for arm in arms:
        rows = []
        for n in args.sizes:
            c = cells[(arm, n)]
            s = c["samples"]
            rows.append({
                "points_per_model": n, "points_total": sum(len(d.batch_loss) for d in c["run"].tagged_series),
                "epochs_per_model": len(c["run"].tagged_series[0].epochs),
                "setdata_points_batch_curve": setdata_points(c["view"], c["run"]),
                "drawn_points_batch_curve": drawn_points(c["view"], c["run"]),
                "update_ms": U.spread([x["update_ms"] for x in s]),
                "setdata_ms": U.spread([x["setdata_ms"] for x in s]),
                "apply_ms": U.spread([x["apply_ms"] for x in s]),
                "paints_per_update": U.median([x["paints"] for x in s]),
                "samples": s,
            })
        lo, hi = rows[0]["update_ms"]["median"], rows[-1]["update_ms"]["median"]
        # the smallest history drawing as many points as the largest (within 10 %): the cost of the
        # history itself, the drawing work being the same (below the plot's width in points a short
        # history is also cheaper to draw)
        last = rows[-1]["drawn_points_batch_curve"]
        same = next(r for r in rows if r["drawn_points_batch_curve"] >= 0.9 * last)
        lo_same = same["update_ms"]["median"]
        out["arms"][arm] = {"rows": rows, "ratio_largest_over_smallest": hi / lo if lo else None,
                            "same_drawn_from": same["points_per_model"],
                            "ratio_largest_over_same_drawn": hi / lo_same if lo_same else None}
    for c in cells.values():
        c["view"].close()
        c["view"].deleteLater()
    app.processEvents()
    ratio = out["arms"]["curves"]["ratio_largest_over_smallest"]
    out.update({"goal_ratio": FLAT_GOAL, "met": ratio is not None and ratio <= FLAT_GOAL})
    return out


# --------------------------------------------------------------------------- report
def report(result: Dict[str, Any]) -> str:
    lines: List[str] = []
    st = result.get("stalls")
    if st:
        lines.append(f"### (a) Event-loop stalls: Drills page, fake backend at {result['config']['rate']:g} events/s "
                     f"(heartbeat {result['config']['heartbeat_ms']} ms)\n")
        rows = []
        for arm in ("baseline", "backend"):
            a = st["arms"][arm]
            rows.append([arm, U.fmt(a["seconds"], 1), a.get("events", "-"), U.fmt(a.get("events_per_s"), 1),
                         U.fmt(a["median_ms"], 2), U.fmt(a["p99_ms"], 2), U.fmt(a["p999_ms"], 1),
                         f"**{U.fmt(a['max_ms'], 1)}**", a["over_16ms"], a["over_50ms"], a["curve_updates"],
                         U.fmt(a["gui_cpu_s"], 1)])
        lines.append(U.markdown_table(
            ["arm", "seconds", "events", "events/s", "median gap ms", "p99 ms", "p99.9 ms", "max ms",
             "gaps > 16.7 ms", "gaps > 50 ms", "curve updates", "GUI CPU s"], rows))
        b = st["arms"]["backend"]
        lines.append(f"\nBackend arm: largest gap while events stream {U.fmt(b['max_streaming_ms'], 1)} ms, "
                     f"around the run's end (history save, results) {U.fmt(b['max_finish_ms'], 1)} ms.")
        lines.append(f"**Longest UI stall with the backend streaming: {U.fmt(b['max_ms'], 1)} ms "
                     f"(goal <= {STALL_GOAL_MS:g} ms: {'met' if st['met'] else 'NOT met'}).**\n")
    pl = result.get("plot")
    if pl:
        lines.append(f"### (b) Curve update cost vs history size ({len(SERIES)} models, "
                     f"+{result['config']['new_points']} batches each per update, median of "
                     f"{result['config']['repeats']})\n")
        rows = []
        for arm, a in pl["arms"].items():
            for r in a["rows"]:
                u = r["update_ms"]
                rows.append([arm, f"{r['points_per_model']:,}", f"{r['points_total']:,}",
                             r.get("setdata_points_batch_curve", "-"), r["drawn_points_batch_curve"],
                             U.fmt(r["setdata_ms"]["median"], 2), f"**{U.fmt(u['median'], 2)}**", U.fmt(u["min"], 2),
                             U.fmt(u["max"], 2)])
        lines.append(U.markdown_table(["arm", "points / model", "points total", "setData / batch curve",
                                       "drawn / batch curve",
                                       "refresh (setData) ms", "update + repaint ms", "min", "max"], rows))
        for arm, a in pl["arms"].items():
            lines.append(f"\n{arm}: ratio {pl['sizes'][-1]:,} / {pl['sizes'][0]:,} points = "
                         f"{U.fmt(a['ratio_largest_over_smallest'], 2)}x"
                         + (f"; {pl['sizes'][-1]:,} / {a['same_drawn_from']:,} points (as many drawn) = "
                            f"{U.fmt(a['ratio_largest_over_same_drawn'], 2)}x"
                            if a.get("same_drawn_from") not in (None, pl['sizes'][0], pl['sizes'][-1]) else ""))
        lines.append(f"\n**Plot update cost ratio (curves as shipped): "
                     f"{U.fmt(pl['arms']['curves']['ratio_largest_over_smallest'], 2)}x "
                     f"(goal flat, <= {FLAT_GOAL:g}x: {'met' if pl['met'] else 'NOT met'}).**")
    return "\n".join(lines)


def keep_previous(result: Dict[str, Any], out: Path) -> None:
    """A run of one part keeps the other part's results from ``out`` (when they are there), with
    the environment and config they were measured under (``kept_from_previous``)."""
    missing = [k for k in ("stalls", "plot") if k not in result]
    if not missing or not out.exists():
        return
    try:
        old = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    kept = {k: old[k] for k in missing if k in old}
    if not kept:
        return
    result.update(kept)
    origin = old.get("kept_from_previous", {})
    result["kept_from_previous"] = {
        k: origin.get(k) or {"environment": old.get("environment"), "config": old.get("config")} for k in kept}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    result: Dict[str, Any] = {
        "benchmark": NAME, "quick": args.quick, "environment": environment(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="breakfix-bench-drill-ui-") as tmp:
        if not args.skip_stalls:
            result["stalls"] = measure_stalls(app, args, Path(tmp))
        if not args.skip_plot:
            result["plot"] = measure_plot(app, args)
    result["environment"]["loadavg_end"] = U.loadavg()
    from breakfix_desktop.core.fsutil import atomic_write_bytes

    measured = [k for k in ("stalls", "plot") if k in result]
    text = report(result)  # this run's parts only
    keep_previous(result, args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(result, indent=2, default=str) + "\n").encode("utf-8"))
    log(f"wrote {args.out}")
    print(text)
    met = all(result[k]["met"] for k in measured)
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    raise SystemExit(main())
