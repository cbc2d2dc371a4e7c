"""The Drills view's model: :class:`DrillStudio` (recipes, this session's runs and the history,
building runs into backend command lines) and :class:`RunQueue` (FIFO, one running run per device)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from ..attack_catalog import validate_params
from .environment import BackendStatus, backend_status, check_data_dir, default_data_dir
from .history import RunHistory
from .importer import IMPORT_PREFIX, DrillImportError, read_drill_folder
from .recipes import (
    ParamForm,
    Recipe,
    builtin_recipes,
    defense_config,
    drill_config,
    model_presets,
    parse_sweep_values,
    recipes_from_listing,
)
from .run import ROLES, DrillRun

__all__ = ["device_lane", "lanes_conflict", "RunQueue", "Listener", "DrillStudio"]


# --------------------------------------------------------------------------- queue
def device_lane(device: str) -> str:
    """The device a run occupies: ``cpu``, ``cuda:N`` (``cuda`` = ``cuda:0``) or ``*`` for ``auto``
    (it may pick either, so it waits for every other run and every other run waits for it)."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "*"
    if device == "cuda":
        return "cuda:0"
    return device


def lanes_conflict(a: str, b: str) -> bool:
    return a == "*" or b == "*" or a == b


class RunQueue:
    """FIFO of runs; at most one running run per device lane (:func:`device_lane`)."""

    def __init__(self) -> None:
        self.pending: List[DrillRun] = []
        self.running: List[DrillRun] = []

    def add(self, run: DrillRun) -> None:
        self.pending.append(run)

    def remove(self, run: DrillRun) -> bool:
        if run in self.pending:
            self.pending.remove(run)
            return True
        return False

    def busy_lanes(self) -> List[str]:
        return [device_lane(r.device) for r in self.running]

    def next_startable(self) -> Optional[DrillRun]:
        """The oldest pending run whose device is free and that no older pending run on the same
        device precedes (order is kept per device)."""
        blocked = list(self.busy_lanes())
        for run in self.pending:
            lane = device_lane(run.device)
            if not any(lanes_conflict(lane, b) for b in blocked):
                return run
            blocked.append(lane)
        return None

    def start(self, run: DrillRun) -> None:
        self.pending.remove(run)
        self.running.append(run)

    def done(self, run: DrillRun) -> None:
        if run in self.running:
            self.running.remove(run)
        self.remove(run)

    def __len__(self) -> int:
        return len(self.pending) + len(self.running)


# --------------------------------------------------------------------------- studio
Listener = Callable[[str, Optional[DrillRun]], None]


class DrillStudio:
    """The Drills view's model: recipes, the runs of this session and history, the queue.

    Listeners (:meth:`subscribe`) are called with ``(what, run)``: ``"queued"``, ``"started"``,
    ``"finished"``, ``"removed"``, ``"recipes"``, ``"history"``.  Per-event updates are *not*
    announced (views poll ``run.version`` on a timer).
    """

    def __init__(self, store_dir: Optional[Path] = None, runs_dir: Optional[Path] = None,
                 data_dir: Optional[Path] = None, configs_dir: Optional[Path] = None,
                 status: Optional[BackendStatus] = None):
        # writes go to a background thread: the GUI never waits for SQLite (benchmarks/bench_drill_ui.py)
        self.history = RunHistory(store_dir, background=True)
        self.runs_dir = Path(runs_dir) if runs_dir else self.history.folder / "drill-runs"
        self.data_dir = data_dir if data_dir is not None else default_data_dir()
        self.presets = model_presets(configs_dir)
        self.backend = status if status is not None else backend_status()
        self.recipes: List[Recipe] = builtin_recipes(self.presets)
        self.backend_recipes_note = ""
        self.queue = RunQueue()
        self.runs: Dict[str, DrillRun] = {}
        self._listeners: List[Listener] = []
        self._number = self.history.next_number()
        self.baseline_id: Optional[str] = None
        #: seconds between incremental saves of a running run's events (:meth:`persist_events`)
        self.persist_interval = 1.0
        self._persisted_at: Dict[str, float] = {}
        self._history_loaded = False  # the stored runs are read once, then kept in ``runs``

    # ------------------------------------------------------------------ listeners
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, what: str, run: Optional[DrillRun] = None) -> None:
        for listener in list(self._listeners):
            listener(what, run)

    # ------------------------------------------------------------------ recipes
    def recipe(self, name: str) -> Recipe:
        for r in self.recipes:
            if r.name == name:
                return r
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(r.name for r in self.recipes)}")

    def set_backend_recipes(self, listing: Any) -> List[Recipe]:
        """Use the backend's ``drill --list``: its recipes become available and replace the
        unavailable catalog placeholders."""
        recipes = recipes_from_listing(listing, self.presets)
        keep = [r for r in self.recipes if r.kind == "command"]  # backend commands and single defenses
        self.recipes = keep + recipes
        self.backend_recipes_note = f"{len(recipes)} drill recipe(s) listed by the backend."
        self._emit("recipes")
        return recipes

    def forms(self, recipe: Recipe) -> Tuple[ParamForm, Optional[ParamForm]]:
        """(settings form, attack parameter form or None) for a recipe."""
        settings = ParamForm(recipe.title, recipe.settings)
        specs = recipe.param_specs()
        if not specs:
            return settings, None
        if recipe.params is None and recipe.attack:
            params = ParamForm.for_attack(recipe.attack)
            if recipe.kind == "sweep":  # the swept parameter comes from sweep_values
                params = ParamForm(recipe.attack, [p for p in specs if p.name != "scale_strength"],
                                   attack=None)
        else:
            params = ParamForm(recipe.title, specs)
        return settings, params

    # ------------------------------------------------------------------ building runs
    def prepare(self, recipe_name: str, settings: Mapping[str, Any], params: Optional[Mapping[str, Any]] = None,
                data_dir: Any = None, device: str = "auto", role: Optional[str] = None) -> List[DrillRun]:
        """Validate everything and build the run(s) (a sweep gives one per value); nothing starts.

        Raises ValueError with a message for the user: unavailable recipe, invalid setting or
        parameter, missing data folder or model file.
        """
        recipe = self.recipe(recipe_name)
        if not recipe.available:
            raise ValueError(f"{recipe.title} cannot be launched yet. {recipe.unavailable_reason}")
        if not self.backend.available:
            raise ValueError(self.backend.message)
        s_form, p_form = self.forms(recipe)
        s_form.set_values(settings)
        s_vals = s_form.values()
        p_vals: Dict[str, Any] = {}
        if p_form is not None:
            p_form.set_values(params or {})
            p_vals = p_form.values()
        role = role or recipe.role
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
        device = (device or "auto").strip()
        if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ValueError(f"Device must be auto, cpu, cuda or cuda:N (got {device!r})")
        if not recipe.uses_device:
            device = "cpu"
        data = check_data_dir(data_dir, recipe.needs_splits)
        if recipe.kind == "sweep":
            values = parse_sweep_values(s_vals.pop("sweep_values"))
            group = uuid.uuid4().hex[:8]
            return [self._build(recipe, dict(s_vals), validate_params(recipe.attack, {**p_vals, "scale_strength": v}),
                                data, device, role, sweep={"param": "scale_strength", "value": v, "group": group})
                    for v in values]
        return [self._build(recipe, s_vals, p_vals, data, device, role)]

    def _build(self, recipe: Recipe, s: Dict[str, Any], p: Dict[str, Any], data: Path, device: str, role: str,
               sweep: Optional[Dict[str, Any]] = None) -> DrillRun:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        out = self.runs_dir / run_id
        config: Dict[str, Any] = {"recipe": recipe.name, "settings": s, "params": p, "data": str(data),
                                  "device": device, "role": role}
        if sweep:
            config["sweep"] = sweep
        files: Dict[str, Any] = {}
        if recipe.name == "evaluate":
            model_file = str(s.get("model_file", "")).strip()
            if not model_file:
                raise ValueError(f"{recipe.title}: choose a model file (a checkpoint.pt or an .onnx model)")
            if not Path(model_file).is_file():
                raise ValueError(f"{recipe.title}: model file {model_file} does not exist")
            flag = "--onnx" if model_file.lower().endswith(".onnx") else "--checkpoint"
            step = ["evaluate", flag, model_file, "--data", str(data), "--split", s["split"],
                    "--out", str(out / "report.json")]
            if s["dedup"] != "none":
                step += ["--dedup", s["dedup"]]
            if s.get("max_images"):
                step += ["--max-images", str(s["max_images"])]
            steps = [step]
        elif recipe.name == "audit-data":
            steps = [["audit-data", str(data), "--out", str(out / "audit.json"),
                      "--near-threshold", str(s["near_threshold"])]]
        else:
            preset = self.presets[s["model"]]
            train = {"arch": preset["arch"], "model_kwargs": preset.get("model_kwargs", {}),
                     "epochs": s["epochs"], "batch_size": s["batch_size"], "lr": s["lr"], "seed": s["seed"],
                     "val_fraction": s["val_fraction"], "max_train_images": s["max_train_images"],
                     "max_test_images": s["max_test_images"], "device": device}
            config["train"] = train
            evaluate = ["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--data", str(data),
                        "--out", str(out / "report.json")]
            if s["max_test_images"]:
                evaluate += ["--max-images", str(s["max_test_images"])]
            if recipe.name in ("train-clean", "defense:augment", "defense:adversarial"):
                train.update(defense_config(recipe.name, p))
                files["train-config.json"] = train
                steps = [["train", "--data", str(data), "--out", str(out), "--config", str(out / "train-config.json"),
                          "--device", device], evaluate]
            else:
                quick = bool(s.get("quick"))
                drill_train = {k: v for k, v in train.items()
                               if not (quick and k in ("epochs", "max_train_images", "max_test_images"))}
                files["drill-config.json"] = drill_config(recipe, drill_train, p)
                name = recipe.name.split(":", 1)[1]
                # the drill evaluates on its own (metrics events, report.json)
                steps = [["drill", name, "--data", str(data), "--out", str(out),
                          "--config", str(out / "drill-config.json"), "--device", device]
                         + (["--quick"] if quick else [])
                         + (["--threads", str(s["threads"])] if s.get("threads") else [])]
        run = DrillRun(run_id, recipe.name, recipe.title, role, config, steps, files=files, out_dir=str(out),
                       device=device, number=self._number)
        self._number += 1
        return run

    @staticmethod
    def materialise(run: DrillRun) -> None:
        """Create the run folder and write its config files (called just before step 0 starts)."""
        out = Path(run.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, content in run.files.items():
            (out / name).write_text(json.dumps(content, indent=2), encoding="utf-8")

    # ------------------------------------------------------------------ lifecycle
    def submit(self, runs: Iterable[DrillRun]) -> List[DrillRun]:
        runs = list(runs)
        for run in runs:
            self.runs[run.id] = run
            self.queue.add(run)
            self._emit("queued", run)
        return runs

    def import_run(self, path: Any) -> DrillRun:
        """Add a drill that ran outside the app (its ``--out`` folder, or that folder's
        ``events.jsonl``) to the history, numbered like the runs made here.

        Raises :class:`~.importer.DrillImportError` (a ValueError naming the file) when the folder
        holds no readable event stream, or when the same stream was imported already."""
        known = {r.name.split(":", 1)[1]: r for r in self.recipes if r.name.startswith("drill:")}
        run = read_drill_folder(path, roles={k: r.role for k, r in known.items()},
                                titles={k: r.title for k, r in known.items()})
        self.all_runs()  # the stored history, to refuse a second copy
        if run.id in self.runs:
            old = self.runs[run.id]
            raise DrillImportError(f"{run.config['imported_from']}: already in the history as #{old.number} "
                                   f"({old.title}, {old.status})")
        run.number = self._number
        self._number += 1
        self.runs[run.id] = run
        self.history.save(run)
        self._emit("finished", run)
        return run

    def rerun(self, run_id: str) -> List[DrillRun]:
        """Queue a fresh run with the same recipe, settings, parameters, data and device."""
        old = self.get(run_id)
        cfg = old.config
        if old.id.startswith(IMPORT_PREFIX):
            raise ValueError(f"#{old.number} was imported from {cfg.get('imported_from')}; run it again there "
                             f"with: {cfg.get('command')} (the same --out resumes its trained models)")
        recipe = self.recipe(cfg["recipe"])
        params = dict(cfg.get("params", {}))
        settings = dict(cfg.get("settings", {}))
        if recipe.kind == "sweep":  # re-run just this member of the family
            return self.submit([self._build(recipe, settings, params, Path(cfg["data"]), cfg["device"], cfg["role"],
                                            sweep=dict(cfg["sweep"], group=uuid.uuid4().hex[:8]))])
        return self.submit(self.prepare(recipe.name, settings, params or None, cfg["data"], cfg["device"], cfg["role"]))

    def start_next(self) -> Optional[DrillRun]:
        """Move the next startable run to running (the runner then launches it)."""
        run = self.queue.next_startable()
        if run is None:
            return None
        self.queue.start(run)
        run.mark_started()
        self.history.save(run, with_events=False)
        self._emit("started", run)
        return run

    def cancel_queued(self, run: DrillRun) -> bool:
        if self.queue.remove(run):
            run.finish("cancelled", "cancelled before it started")
            self._emit("finished", run)
            return True
        return False

    def finish(self, run: DrillRun, status: str, message: str = "", stderr_tail: str = "") -> None:
        run.finish(status, message, stderr_tail)
        self.queue.done(run)
        self.history.save(run)  # queued; only the events not stored yet by persist_events
        self._persisted_at.pop(run.id, None)
        self._emit("finished", run)

    def persist_events(self, force: bool = False) -> int:
        """Queue the running runs' new events for the history, at most every
        :attr:`persist_interval` seconds per run (the view calls this on its timer), so a run's end
        writes only its last events.  Returns how many events were queued."""
        now = time.monotonic()
        queued = 0
        for run in self.queue.running:
            if len(run.events) <= self.history.stored_events(run.id):
                continue
            if not force and now - self._persisted_at.get(run.id, 0.0) < self.persist_interval:
                continue
            self._persisted_at[run.id] = now
            queued += self.history.append_events(run)
        return queued

    def close(self) -> None:
        """Write everything queued to the history and stop its writer (the app is closing)."""
        self.persist_events(force=True)
        self.history.close()

    def get(self, run_id: str) -> DrillRun:
        if run_id not in self.runs:
            self.runs[run_id] = self.history.load(run_id)
        return self.runs[run_id]

    def all_runs(self) -> List[DrillRun]:
        """This session's runs and the stored history, newest first.  The stored runs are read
        on the first call; later calls only sort ``runs`` (no database access while runs stream)."""
        if self._history_loaded:
            return sorted(self.runs.values(), key=lambda r: (r.created, r.number), reverse=True)
        self._history_loaded = True
        for entry in self.history.entries():
            if entry.id not in self.runs:
                try:
                    self.runs[entry.id] = self.history.load(entry.id)
                except (KeyError, json.JSONDecodeError):
                    continue
        return sorted(self.runs.values(), key=lambda r: (r.created, r.number), reverse=True)

    def delete(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is not None and not run.is_final:
            raise ValueError("cancel the run before deleting it from the history")
        self.runs.pop(run_id, None)
        self.history.delete(run_id)
        self._emit("removed", run)
