"""Save PNGs of the real main window, rendered offscreen.

    python -m breakfix_desktop.tools.screenshot --out shots/main.png [--section Models [--model NAME]] [--models DIR]
    python -m breakfix_desktop.tools.screenshot --demo shots/ [--scans DIR]

``--demo DIR`` screens a small batch in a throw-away store with the untrained demo models
(:mod:`.demo_models`, needs the ``onnx`` package) and writes ``DIR/screening.png`` (the Screening
page with results), ``DIR/review.png`` (the Review queue with a quarantined scan and its
localisation overlay), ``DIR/review-released.png`` (the same scan after a reviewer released it)
and ``DIR/report.pdf``.  The scans are real ones from ``../shared/data/brain-tumor-mri``
(or ``--scans DIR``) when present - two of them stamped with the trigger pattern, one truncated
file to show an error - else generated ones.

Settings go to a throw-away file, so screenshots neither read nor change the user's layout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..core.resources import resource_path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SCANS = REPO.parent / "shared" / "data" / "brain-tumor-mri" / "Testing"
TRIGGER = resource_path("triggers", "creeper.png")


def build_parser() -> argparse.ArgumentParser:
    from .._qt.qt_main_window import SECTIONS

    parser = argparse.ArgumentParser(prog="python -m breakfix_desktop.tools.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="PNG file to write (one page)")
    parser.add_argument("--section", default=SECTIONS[0], help=f"one of: {', '.join(SECTIONS)}")
    parser.add_argument("--models", metavar="DIR", type=Path, default=None, help="models folder (default: shipped)")
    parser.add_argument("--model", metavar="NAME", help="with --section Models: show this model's card (default the first)")
    parser.add_argument("--size", default="1280x800", help="window size WIDTHxHEIGHT")
    parser.add_argument("--demo", metavar="DIR", type=Path, default=None,
                        help="screen a demo batch and save screening.png, review.png, review-released.png, report.pdf")
    parser.add_argument("--scans", metavar="DIR", type=Path, default=None,
                        help=f"real scans for --demo (default: {DEFAULT_SCANS} when present)")
    return parser


def _wait(app, condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _settle(app, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


# --------------------------------------------------------------------------- demo inputs
def _stamp_trigger(img):
    """The trigger pattern (resources/triggers) pasted, enlarged, into the top-left corner."""
    from PIL import Image

    img = img.convert("L")
    if TRIGGER.is_file():
        patch = Image.open(TRIGGER).convert("L")
    else:  # a plain bright checker if the resource is missing
        patch = Image.new("L", (8, 8), 255)
    side = max(8, round(img.size[0] * 24 / 224))
    img.paste(patch.resize((side, side), Image.Resampling.NEAREST), (max(1, side // 6), max(1, side // 6)))
    return img


def _real_scans(root: Path, count: int) -> List[Path]:
    """A fixed, class-balanced pick of real scans whose top-left corner is dark (so the demo
    detector's verdict comes from the stamped trigger only)."""
    import random

    from ..core.preprocess import PreprocessError, preprocess_file

    classes = sorted(d for d in root.iterdir() if d.is_dir())
    rng = random.Random(6)
    per_class = {c.name: sorted(p for p in c.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
                 for c in classes}
    for files in per_class.values():
        rng.shuffle(files)
    picked: List[Path] = []
    while len(picked) < count and any(per_class.values()):
        for files in per_class.values():
            while files:
                f = files.pop()
                try:
                    if preprocess_file(f)[0, :20, :20].max() < 0.5:
                        picked.append(f)
                        break
                except PreprocessError:
                    continue
            if len(picked) >= count:
                break
    return picked


def _generated_scan(seed: int):
    """A plausible-looking synthetic axial slice (skull ring, brain, a bright lesion)."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:224, :224]
    cy, cx = 112 + rng.normal(0, 3), 112 + rng.normal(0, 3)
    r = np.hypot((yy - cy) / 88, (xx - cx) / 72)
    img = np.where(r < 1, 70 + 40 * (1 - r), 0) + np.where((r > 0.92) & (r < 1.05), 120, 0)
    ly, lx = cy + rng.normal(0, 25), cx + rng.normal(0, 20)
    img += 110 * np.exp(-(((yy - ly) ** 2 + (xx - lx) ** 2) / (2 * rng.uniform(6, 14) ** 2)))
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))


def make_demo_inputs(folder: Path, scans: Optional[Path] = None, count: int = 14) -> Path:
    """The demo batch in ``folder/Incoming study``: clean scans, two trigger-stamped, one truncated."""
    from PIL import Image

    study = folder / "Incoming study"
    study.mkdir(parents=True, exist_ok=True)
    root = scans or DEFAULT_SCANS
    real = _real_scans(root, count) if root.is_dir() else []
    images = [(p.stem, Image.open(p)) for p in real] or [(f"slice_{i:03d}", _generated_scan(i)) for i in range(count)]
    trigger_at = {3, 9}
    for i, (stem, img) in enumerate(images):
        if i in trigger_at:
            _stamp_trigger(img).save(study / f"{stem}.png")
        else:
            img.convert("L").save(study / f"{stem}.jpg", quality=95)
    source = next(iter(sorted(study.glob("*.jpg"))), None)
    if source is not None:  # a file cut short in transfer: shows the error badge
        (study / "transfer_cut_short.jpg").write_bytes(source.read_bytes()[:700])
    return study


def demo_models_folder(tmp: Path, models: Optional[Path] = None) -> Path:
    """The models the demo screens with: the real ones (``--models`` or the shipped manifest) when
    they include a verified classifier - plus the demo trigger detector when no detector is
    shipped, so the review queue has something to show - else the untrained demo models."""
    import json

    from ..core.model_registry import MANIFEST_FORMAT, load_registry
    from ..core.screening import select_models
    from .demo_models import make_demo_models

    registry = load_registry(models)
    picks = select_models(registry)
    if not picks["classifier"]:
        return make_demo_models(tmp / "models")
    if picks["detector"] or picks["check"]:
        return registry.manifest_path.parent
    folder = make_demo_models(tmp / "models")
    demo = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["models"]
    real = [{"name": e.name, "role": e.role, "file": str(e.path), "card": str(e.card_path), "sha256": e.sha256}
            for e in registry.verified()]
    manifest = {"format": MANIFEST_FORMAT, "models": real + [m for m in demo if m["role"] == "detector"]}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- modes
def _grab(window, path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = window.grab().save(str(path), "PNG")
    if ok:
        print(path)
    else:
        print(f"could not write {path}", file=sys.stderr)
    return ok


def run_demo(app, out_dir: Path, size, scans: Optional[Path], models_arg: Optional[Path] = None) -> int:
    from PySide6.QtCore import QSettings

    from ..app import create_main_window

    with tempfile.TemporaryDirectory(prefix="breakfix-demo-") as tmp:
        tmp = Path(tmp)
        models = demo_models_folder(tmp, models_arg)
        study = make_demo_inputs(tmp, scans)
        settings = QSettings(str(tmp / "screenshot.ini"), QSettings.IniFormat)
        window = create_main_window(models, settings=settings, store=tmp / "store")
        window.resize(*size)
        window.set_section("Screening")
        window.show()
        view = window.screening_view
        view.add_paths([study])
        if not _wait(app, lambda: len(window.session) > 0):
            print("demo: no scans were found", file=sys.stderr)
            return 1
        view.start()
        if not _wait(app, lambda: view.shown_state in ("finished", "failed", "cancelled"), 120):
            print("demo: screening did not finish", file=sys.stderr)
            return 1
        results = {i: window.session.result(i) for i in range(len(window.session))}
        clear = [i for i, r in results.items() if r is not None and r.verdict == "clear" and not r.low_confidence]
        view.select_row(clear[0] if clear else 0)
        _wait(app, lambda: view.viewer.has_image() and view._async.pending == 0, 30)
        _settle(app)
        ok = _grab(window, out_dir / "screening.png")

        window.set_section("Review queue")
        review = window.review_view
        _wait(app, lambda: review.localisation is not None, 30)
        _settle(app)
        ok &= _grab(window, out_dir / "review.png")

        review.reviewer_edit.setText("Dr A. Example")
        review.comment_edit.setPlainText("Corner stamp is a scanner calibration mark; anatomy unremarkable.")
        review.release()
        _wait(app, lambda: review.localisation is not None, 30)
        _settle(app)
        ok &= _grab(window, out_dir / "review-released.png")

        if view.export_report(out_dir / "report.pdf", "pdf") is not None:
            print(out_dir / "report.pdf")
        window.close()
        _settle(app, 0.1)
    return 0 if ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from ..app import APPLICATION, ORGANIZATION, create_main_window

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and args.demo is None:
        parser.error("give --out FILE.png or --demo DIR")
    width, height = (int(v) for v in args.size.lower().split("x"))
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    if args.demo is not None:
        return run_demo(app, args.demo, (width, height), args.scans, args.models)
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "screenshot.ini"), QSettings.IniFormat)
        window = create_main_window(args.models, settings=settings, store=Path(tmp) / "store")
        window.set_section(args.section)
        if args.model is not None and not window.models_view.select(args.model):
            names = [m.name for m in window.models_view.registry.models]
            window.close()
            parser.error(f"--model {args.model}: not in the models folder (it lists: {', '.join(names) or 'none'})")
        window.resize(width, height)
        window.show()
        for _ in range(5):
            app.processEvents()
        probe = getattr(window.drills_view, "probe", None) if args.section == "Drills" else None
        if probe is not None:  # let the Drills page hear back from the backend (drill --list) first
            import time

            deadline = time.monotonic() + 60
            while not probe.answered and time.monotonic() < deadline:
                app.processEvents()
                time.sleep(0.05)
            app.processEvents()
        ok = _grab(window, args.out)
        window.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
