"""The drill machinery: settings, the shared data and training helpers, reports.

A drill reproduces one result of the paper end to end on the real data: it builds (or loads) the
models it needs, runs the attack, measures, and writes to its ``--out`` folder

* ``report.json``  - settings, per-model/per-run results, the paper's numbers, the printed table;
* ``events.jsonl`` - the protocol event stream (the same lines the GUI reads on stdout);
* ``table.txt``    - the result laid out like the paper's table;
* one sub-folder per trained model (``checkpoint.pt``; a re-run with the same ``--out`` and
  settings resumes there instead of starting over).

Settings: every drill declares ``defaults`` (full mode: the whole data set) and ``quick``
overrides (a small stratified real subset and 1-2 epochs, for tests and demos); ``--config`` (TOML
or JSON; a ``[drill]`` table or the top level) overrides both.  Unknown keys and values of the
wrong type are refused with a message naming the key.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from breakfix_desktop.core.labels import CLASS_NAMES
from breakfix_desktop.core.protocol import EventWriter, encode, make_event

log = logging.getLogger(__name__)

REPORT_FORMAT = "breakfix-drill-report/1"

#: The CNN recipe the drills train (configs/cnn_clean.toml: the shipped CNN_clean).
CNN_MODEL = {"arch": "cnn", "model_kwargs": {"blocks": 5, "width": 16, "hidden": 256, "pool": 4, "dropout": 0.3}}

#: Settings every training drill understands (full-mode defaults).
TRAIN_DEFAULTS: Dict[str, Any] = {
    **CNN_MODEL,
    "epochs": 5,
    "batch_size": 32,
    "lr": 1e-3,
    "plateau_patience": 1,
    "plateau_factor": 0.3,
    "val_fraction": 0.1,
    "seed": 0,
    "max_train_images": None,
    "max_test_images": None,
    "precision": "fp32",
}

#: Quick mode: a small stratified subset of the real data, one epoch.
QUICK_DATA: Dict[str, Any] = {"max_train_images": 240, "max_test_images": 120, "epochs": 1}


class DrillError(ValueError):
    """A user-facing drill error (bad setting, missing input); the CLI exits with status 2."""


class DrillCancelled(Exception):
    pass


# --------------------------------------------------------------------------- settings
def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def merge_settings(drill: str, defaults: Dict[str, Any], *layers: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``defaults`` overridden by each layer in turn; unknown keys and wrong types raise DrillError."""
    out = copy.deepcopy(defaults)
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in out:
                raise DrillError(f"{drill}: unknown setting {key!r}; known: {', '.join(sorted(out))}")
            if not _type_ok(out[key], value):
                raise DrillError(f"{drill}: setting {key!r} must be {type(out[key]).__name__}, got {value!r}")
            if isinstance(out[key], dict) and isinstance(value, dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- events
class TeeWriter(EventWriter):
    """Emits through ``inner`` (stdout/terminal) and appends every event to ``events.jsonl``."""

    def __init__(self, inner: EventWriter, path: Path):
        super().__init__()
        self.inner = inner
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def emit(self, type_: str, **fields: Any) -> Dict[str, Any]:
        msg = self.inner.emit(type_, **fields)
        self._file.write(encode(msg) + "\n")
        self._file.flush()
        return msg

    def close(self) -> None:
        self._file.close()


class SeriesWriter(EventWriter):
    """Tags progress / epoch_end events with the run they belong to (``series``, ``role``).

    Multi-run drills (sweeps, clean vs attacked vs defended) train several models in one process;
    the tag tells the GUI which curve a point belongs to.  Optional fields: protocol v1 unchanged.
    """

    def __init__(self, inner: EventWriter, series: str, role: str, param: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.inner, self.series, self.role, self.param = inner, series, role, param

    def emit(self, type_: str, **fields: Any) -> Dict[str, Any]:
        if type_ in ("progress", "epoch_end", "metrics"):
            fields.setdefault("series", self.series)
            fields.setdefault("role", self.role)
            if self.param is not None:
                fields.setdefault("param", self.param)
        return self.inner.emit(type_, **fields)


# --------------------------------------------------------------------------- context
@dataclass
class DrillContext:
    """What a running drill gets: data, output folder, device, events, cancellation."""

    data_root: Path
    out: Path
    settings: Dict[str, Any]
    events: EventWriter
    quick: bool = False
    device: str = "auto"
    should_stop: Callable[[], bool] = lambda: False
    _splits: Dict[str, Any] = field(default_factory=dict)
    _datasets: Dict[str, Any] = field(default_factory=dict)

    # -- data ---------------------------------------------------------------
    def splits(self):
        """(train, val, test) :class:`~training.data.Split` objects per the settings (cached)."""
        if not self._splits:
            from .. import cli as C
            from .. import data as D

            s = self.settings
            on_skip = C._skip_reporter(self.events)
            train = C._subset(D.scan_split(self.data_root, "Training", on_skip), s.get("max_train_images"), s["seed"])
            test = C._subset(D.scan_split(self.data_root, "Testing", on_skip), s.get("max_test_images"), s["seed"])
            train, val = D.stratified_holdout(train, s.get("val_fraction", 0.1), s["seed"])
            self._splits = {"train": train, "val": val, "test": test}
        return self._splits["train"], self._splits["val"], self._splits["test"]

    def dataset(self, name: str):
        """The decoded in-memory :class:`~training.data.MRIDataset` for ``train``/``val``/``test``."""
        if name not in self._datasets:
            from .. import cli as C
            from ..data import MRIDataset

            train, val, test = self.splits()
            split = {"train": train, "val": val, "test": test}[name]
            if split is None:
                self._datasets[name] = None
            else:
                log.info("decoding the %s split (%d images)", name, len(split.samples))
                self._datasets[name] = MRIDataset(split, on_skip=C._skip_reporter(self.events))
        return self._datasets[name]

    def data_summary(self) -> Dict[str, Any]:
        out = {"root": str(self.data_root)}
        for name in ("train", "val", "test"):
            ds = self.dataset(name)
            if ds is not None:
                out[name] = {"images": len(ds), "counts": ds.split.counts(), "skipped": len(ds.skipped)}
        return out

    # -- training -------------------------------------------------------------
    def train_config(self, **overrides: Any):
        from ..engine import TrainConfig

        s = self.settings
        keys = ("arch", "epochs", "batch_size", "lr", "plateau_patience", "plateau_factor", "val_fraction",
                "seed", "max_train_images", "max_test_images", "model_kwargs", "precision")
        data = {k: copy.deepcopy(s[k]) for k in keys if k in s}
        data.update(overrides)
        data["device"] = self.device
        try:
            return TrainConfig.from_dict(data).validate()
        except (TypeError, ValueError) as exc:
            raise DrillError(str(exc)) from exc

    def build_model(self, config):
        from ..models import build_model

        try:
            return build_model(config.arch, weights=config.weights, finetune=config.finetune, **config.model_kwargs)
        except FileNotFoundError as exc:
            raise DrillError(str(exc)) from exc

    def train(
        self,
        series: str,
        config,
        train_ds=None,
        test_ds=None,
        role: str = "clean",
        param: Optional[Dict[str, Any]] = None,
        model=None,
        loss_fn=None,
        optimizer_wrapper=None,
        batch_hook=None,
        val_ds=None,
    ):
        """Train one model in ``OUT/series``; resumes a matching checkpoint.  Returns (model, history)."""
        import torch

        from ..engine import Cancelled, Trainer, make_loader, seed_everything, write_json

        run_dir = self.out / series.replace(" ", "_").replace("=", "")
        ckpt = run_dir / "checkpoint.pt"
        seed_everything(config.seed)
        model = model if model is not None else self.build_model(config)
        train_ds = train_ds if train_ds is not None else self.dataset("train")
        test_ds = test_ds if test_ds is not None else self.dataset("test")
        val_ds = val_ds if val_ds is not None else self.dataset("val")
        writer = SeriesWriter(self.events, series, role, param)
        trainer = Trainer(
            model, config,
            make_loader(train_ds, config.batch_size, True, config.workers, config.seed),
            make_loader(test_ds, 128, False, 0, config.seed) if test_ds is not None else None,
            val_loader=make_loader(val_ds, 128, False, 0, config.seed) if val_ds is not None else None,
            events=writer, checkpoint_path=ckpt, loss_fn=loss_fn, optimizer_wrapper=optimizer_wrapper,
            batch_hook=batch_hook, should_stop=self.should_stop, progress_every=5,
        )
        if ckpt.exists():
            prev = torch.load(ckpt, map_location="cpu", weights_only=False).get("config", {})
            if prev == config.to_dict():
                trainer.load_checkpoint(ckpt)
                log.info("%s: resuming after epoch %d", series, trainer.epoch)
            else:
                log.warning("%s: %s was made with other settings; starting over", series, ckpt)
        write_json(run_dir / "config.json", config.to_dict())
        t0 = time.time()
        try:
            history = trainer.fit()
        except Cancelled as exc:
            raise DrillCancelled() from exc
        write_json(run_dir / "history.json", history)
        log.info("%s: trained %d epochs in %.0f s", series, trainer.epoch, time.time() - t0)
        return trainer.model.eval(), history

    # -- evaluation -----------------------------------------------------------
    def predict(self, model, dataset, transform: Optional[Callable] = None, batch_size: int = 128,
                label: str = ""):
        """(labels, predictions) of ``model`` over ``dataset``; ``transform(x, y)`` attacks a batch first.

        Emits ``progress`` events (phase ``attack`` or ``eval``, ``message`` = ``label``) so a GUI
        sees long evaluations move."""
        import numpy as np
        import torch

        from ..engine import make_loader, resolve_device

        device = resolve_device(self.device)
        model = model.to(device).eval()
        ys, preds = [], []
        loader = make_loader(dataset, batch_size, False, 0, 0)
        for step, (x, y) in enumerate(loader, start=1):
            if self.should_stop():
                raise DrillCancelled()
            x, y = x.to(device), y.to(device)
            if transform is not None:
                x = transform(x, y)
            with torch.no_grad():
                preds.append(model(x).argmax(1).cpu())
            ys.append(y.cpu())
            self.events.emit("progress", phase="attack" if transform is not None else "eval", epoch=0,
                             step=step, total=len(loader), message=label or None)
        return torch.cat(ys).numpy().astype(np.int64), torch.cat(preds).numpy().astype(np.int64)

    def report(self, labels, preds, split: str, series: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
        """Classification report, emitted as a ``metrics`` event."""
        from ..metrics import classification_report

        rep = classification_report(labels, preds)
        rep.update(extra)
        fields = {"series": series} if series else {}
        self.events.emit("metrics", split=split, report=rep, **fields)
        return rep


def history_curve(series: str, role: str, history: Sequence[Dict[str, Any]], param=None) -> Dict[str, Any]:
    """One entry of ``report["curves"]`` from a Trainer history."""
    return {
        "series": series, "role": role, "param": param,
        "epoch": [h["epoch"] for h in history],
        "test_acc": [h.get("test_acc") for h in history],
        "train_acc": [h.get("train_acc") for h in history],
        "val_acc": [h.get("val_acc") for h in history],
        "train_loss": [h.get("train_loss") for h in history],
    }


# --------------------------------------------------------------------------- drill base
class Drill:
    """One reproducible result of the paper.  Subclasses set the class attributes and ``run``."""

    name: str = ""
    title: str = ""
    summary: str = ""
    paper: str = ""            # section / table of the paper
    role: str = "attacked"     # clean | attacked | defended (the GUI's colour)
    attack: Optional[str] = None  # catalog name of the attack it exercises
    defaults: Dict[str, Any] = {}
    quick: Dict[str, Any] = {}
    #: the paper's numbers, for the side-by-side table
    paper_result: Dict[str, Any] = {}

    def settings(self, config: Optional[Dict[str, Any]] = None, quick: bool = False) -> Dict[str, Any]:
        return merge_settings(self.name, self.defaults, self.quick if quick else None, config)

    def run(self, ctx: DrillContext) -> Dict[str, Any]:  # pragma: no cover - abstract
        """Do the work; return the drill's results (merged into report.json)."""
        raise NotImplementedError

    def format_table(self, report: Dict[str, Any]) -> str:  # pragma: no cover - abstract
        """The result as printed in the paper (ours next to the paper's)."""
        raise NotImplementedError

    def listing(self) -> Dict[str, Any]:
        """This drill as one entry of ``drill --list`` (read by the GUI's drill studio)."""
        return {
            "name": self.name, "title": self.title, "summary": self.summary, "paper": self.paper,
            "role": self.role, "attack": self.attack,
            "settings": {k: v for k, v in self.defaults.items()}, "quick": dict(self.quick),
        }

    # -- the whole run ------------------------------------------------------------
    def execute(self, data_root: Path, out: Path, events: EventWriter, config: Optional[Dict[str, Any]] = None,
                quick: bool = False, device: str = "auto", should_stop: Callable[[], bool] = lambda: False,
                ) -> Dict[str, Any]:
        from ..engine import write_json

        settings = self.settings(config, quick)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tee = TeeWriter(events, out / "events.jsonl")
        try:
            tee.emit("run_started", run_id=uuid.uuid4().hex[:12], command=f"drill {self.name}",
                     config={"drill": self.name, "quick": quick, "settings": settings, "data": str(data_root)})
            ctx = DrillContext(Path(data_root), out, settings, tee, quick=quick, device=device, should_stop=should_stop)
            t0 = time.time()
            results = self.run(ctx)
            report = {
                "format": REPORT_FORMAT,
                "drill": self.name,
                "title": self.title,
                "paper_section": self.paper,
                "quick": quick,
                "settings": settings,
                "data": ctx.data_summary(),
                "paper": self.paper_result,
                "seconds": round(time.time() - t0, 1),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "classes": list(CLASS_NAMES),
                **results,
            }
            report["table"] = self.format_table(report)
            write_json(out / "report.json", report)
            (out / "table.txt").write_text(report["table"] + "\n", encoding="utf-8")
            tee.emit("artifact_written", kind="report", path=str(out / "report.json"))
            tee.emit("run_finished", status="ok", summary={"drill": self.name, "seconds": report["seconds"],
                                                           **results.get("summary", {})})
            return report
        except (DrillCancelled, KeyboardInterrupt):
            tee.emit("run_finished", status="cancelled", summary={"drill": self.name})
            raise DrillCancelled()
        finally:
            tee.close()


def fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def side_by_side_report(ours: Dict[str, Any], paper: Dict[str, Any], title: str) -> str:
    """A Table-1-style classification report with the paper's numbers beside ours."""
    lines = [title, f"{'':<12}{'precision':>18}{'recall':>18}{'f1-score':>18}{'support':>16}",
             f"{'':<12}" + "".join(f"{'ours':>9}{'paper':>9}" for _ in range(3)) + f"{'ours':>8}{'paper':>8}"]
    for name in ours["classes"]:
        r, p = ours["per_class"][name], paper.get("per_class", {}).get(name, {})
        cells = "".join(f"{fmt(r[k]):>9}{fmt(p.get(k)):>9}" for k in ("precision", "recall", "f1"))
        lines.append(f"{name:<12}{cells}{r['support']:>8d}{p.get('support', '-')!s:>8}")
    lines.append(f"{'accuracy':<12}{'':>36}{fmt(ours['accuracy']):>9}{fmt(paper.get('accuracy')):>9}"
                 f"{ours['n']:>8d}{paper.get('n', '-')!s:>8}")
    return "\n".join(lines)
