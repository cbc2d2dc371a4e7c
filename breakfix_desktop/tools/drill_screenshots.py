"""Screenshots of the Drills page: live curves mid-run and a finished run's report.

    python -m breakfix_desktop.tools.drill_screenshots --out-dir shots [--data DIR] [--replay]
        [--epochs 6] [--size 1180x740]

Opens the real main window offscreen on the Drills section (settings, run history and run folders
in a throw-away folder), launches a short baseline run and then the main run - both real
``python -m training`` runs of a tiny CNN - and saves:

* ``drills-live.png``   while the main run trains (after its second epoch): live curves of both runs;
* ``drills-report.png`` when it has finished: its classification report and confusion matrix,
  compared against the baseline run;
* ``drills-curves.png`` / ``drills-curves.svg``: the plot exported through pyqtgraph.

With ``--replay`` also the paper's multi-model drills, replayed from their recordings
(``tests/fixtures/drill_fig6_quick.jsonl``, ``drill_fig5_quick.jsonl``): one curve per trained
model, coloured by role (Figure 6) or along the sweep colour map (Figure 5):

* ``drills-fig6-live.png`` while the attacked model trains, ``drills-fig6.png`` when finished
  (per-model results), ``drills-fig5.png`` (the scale-strength sweep).

Data: ``--data DIR`` (e.g. the real data set; ``--max-train-images``/``--max-test-images`` keep
it quick), else a small synthetic data set (a bright blob in one quadrant per class) made in the
temporary folder.  ``--replay`` needs no torch: it replays the recorded streams in
``tests/fixtures`` instead of training.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
#: The recorded multi-model drills replayed by ``--replay``: (drill, title, role, attack, recording).
MULTI_SERIES_REPLAYS = (
    ("fig6-drunk-curves", "Figure 6: clean vs attacked (DrunkOptimizer) vs defended (UpdateGuard) accuracy curves",
     "defended", "drunk_optimizer", "drill_fig6_quick.jsonl"),
    ("fig5-drunk-sweep", "Figure 5: test accuracy over epochs per DrunkOptimizer scale strength",
     "attacked", "drunk_optimizer", "drill_fig5_quick.jsonl"),
)


def write_synthetic_dataset(root: Path, per_class: int = 24, test_per_class: int = 8, size: int = 64,
                            seed: int = 0) -> Path:
    """A learnable toy data set in the standard layout (the recipe of tests/conftest.py)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    q = size // 2
    for split, n in (("Training", per_class), ("Testing", test_per_class)):
        for label, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            r, c = divmod(label, 2)
            for i in range(n):
                img = rng.normal(40, 10, (size, size))
                img[r * q + q // 4: r * q + 3 * q // 4, c * q + q // 4: c * q + 3 * q // 4] += 150
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{cls}_{i:03d}.png")
    return root


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m breakfix_desktop.tools.drill_screenshots",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=Path("shots"), help="folder for the PNGs (default shots/)")
    p.add_argument("--data", type=Path, help="data folder (default: a synthetic one)")
    p.add_argument("--replay", action="store_true", help="replay tests/fixtures recordings (no torch needed)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of the main run (default 6)")
    p.add_argument("--max-train-images", type=int, help="subset of Training (for --data)")
    p.add_argument("--max-test-images", type=int, help="subset of Testing (for --data)")
    p.add_argument("--size", default="1280x860", help="window size WIDTHxHEIGHT")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for each run")
    return p


def _wait(app, condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    return False


def _grab(app, window, path: Path) -> Path:
    for _ in range(5):
        app.processEvents()
    window.drills_view.curves.refresh(force=True)
    app.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path), "PNG"):
        raise OSError(f"could not write {path}")
    print(path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="breakfix-drill-shots-") as tmp:
        tmp = Path(tmp)
        os.environ["BREAKFIX_STORE"] = str(tmp / "store")  # history and run folders stay in tmp
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication

        from ..app import APPLICATION, ORGANIZATION, create_main_window

        app = QApplication.instance() or QApplication([sys.argv[0]])
        app.setOrganizationName(ORGANIZATION)
        app.setApplicationName(APPLICATION)
        settings = QSettings(str(tmp / "screenshot.ini"), QSettings.IniFormat)
        window = create_main_window(None, settings=settings, probe_device=False)
        view = window.drills_view
        if args.replay:
            view.runner.prefix = ["-m", "breakfix_desktop.tools.replay_events",
                                  "--file", f"train={FIXTURES / 'drill_train_tiny.jsonl'}",
                                  "--file", f"evaluate={FIXTURES / 'drill_evaluate_tiny.jsonl'}",
                                  "--delay", "0.15", "--"]
            view.probe_backend = False
        elif not view.studio.backend.available:
            print(f"{view.studio.backend.message}\n(or use --replay)", file=sys.stderr)
            return 2
        data = args.data or write_synthetic_dataset(tmp / "data")
        window.set_section("Drills")
        window.resize(width, height)
        window.show()
        app.processEvents()
        view.data_edit.setText(str(data))
        view.device_box.setCurrentText("cpu")
        view.set_field("model", "tiny")
        view.set_field("batch_size", "8")
        view.set_field("lr", "0.003")
        if args.max_train_images:
            view.set_field("max_train_images", str(args.max_train_images))
        if args.max_test_images:
            view.set_field("max_test_images", str(args.max_test_images))

        view.set_field("epochs", "2")
        baseline = view.launch()
        view.set_field("epochs", str(args.epochs))
        view.set_field("lr", "0.01")
        main_run = view.launch()
        if not baseline or not main_run:
            print(f"not launched: {view.error_label.text()}", file=sys.stderr)
            return 1
        run = main_run[0]
        if not _wait(app, lambda: len(run.epochs) >= 2 or run.is_final, args.timeout):
            print("timed out waiting for the main run", file=sys.stderr)
            return 1
        view.tabs.setCurrentIndex(0)
        _grab(app, window, args.out_dir / "drills-live.png")
        if not _wait(app, lambda: run.is_final, args.timeout):
            print("timed out waiting for the main run to finish", file=sys.stderr)
            return 1
        if baseline[0].report is not None:
            view.results.set_baseline(baseline[0].id)
        view.select_run(run.id)
        view.tabs.setCurrentWidget(view.results)
        view.right_split.setSizes([360, 420])
        _grab(app, window, args.out_dir / "drills-report.png")
        for suffix in ("png", "svg"):
            print(view.curves.export(str(args.out_dir / f"drills-curves.{suffix}")))
        ok = run.status == "ok"
        if args.replay:
            ok = _multi_series_shots(app, window, args) and ok
        window.close()
        view.shutdown()
        return 0 if ok else 1


def _multi_series_shots(app, window, args) -> bool:
    """Replay the recorded multi-model drills through the page as if the backend ran them."""
    import json

    view = window.drills_view
    listing = []
    for name, title, role, attack, recording in MULTI_SERIES_REPLAYS:
        started = json.loads((FIXTURES / recording).read_text().splitlines()[0])
        listing.append({"name": name, "title": title, "role": role, "attack": attack,
                        "settings": started["config"]["settings"]})
    view.studio.set_backend_recipes({"recipes": listing})
    for name, _, _, _, recording in MULTI_SERIES_REPLAYS:
        view.runner.prefix = ["-m", "breakfix_desktop.tools.replay_events", "--file", f"drill={FIXTURES / recording}",
                              "--delay", "0.08", "--"]
        view.select_recipe(f"drill:{name}")
        view.device_box.setCurrentText("cpu")
        view.set_field("epochs", "2")
        launched = view.launch()
        if not launched:
            print(f"{name}: not launched: {view.error_label.text()}", file=sys.stderr)
            return False
        run = launched[0]
        view.set_plotted([run.id])
        short = name.split("-")[0]
        if short == "fig6":
            if not _wait(app, lambda: "attacked" in run.series_data or run.is_final, args.timeout):
                print(f"{name}: timed out", file=sys.stderr)
                return False
            view.tabs.setCurrentIndex(0)
            _grab(app, window, args.out_dir / "drills-fig6-live.png")
        if not _wait(app, lambda: run.is_final, args.timeout):
            print(f"{name}: timed out waiting for the replay to finish", file=sys.stderr)
            return False
        view.select_run(run.id)
        view.tabs.setCurrentWidget(view.results)
        _grab(app, window, args.out_dir / f"drills-{short}.png")
        if run.status != "ok":
            return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
