"""``python -m training`` - the PyTorch backend's command line.

Subcommands: ``train``, ``evaluate``, ``export``, ``make-ensemble``, ``augment-grid``, ``audit-data``,
``drill``, ``detector`` (each has ``--help``).
Machine-readable events go to stdout as JSON lines (``breakfix_desktop.core.protocol``) unless
stdout is a terminal, where a progress bar is drawn instead; human logs go to stderr.
Configuration comes from a TOML or JSON file (``--config``) overridden by flags; a wrong value
gets a message naming the parameter and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from breakfix_desktop.core.labels import CLASS_NAMES

from .patterns import ALL_SHAPES as _ALL_SHAPES

log = logging.getLogger("training")

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "brain-tumor-mri"


class UsageError(ValueError):
    """A user-facing configuration error (exit status 2)."""


# --------------------------------------------------------------------------- helpers
def load_config_file(path: Optional[str]) -> Dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config: file {p} not found")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        elif p.suffix.lower() == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
        else:
            raise UsageError(f"--config: {p} must be a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--config: {p} is not valid {p.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"--config: {p} must hold a table/object of settings")
    return data.get("train", data) if isinstance(data.get("train"), dict) else data


def _subset(split, n: Optional[int], seed: int):
    """A deterministic class-stratified subset of at most ``n`` images."""
    if n is None or n >= len(split.samples):
        return split
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = split.labels()
    picked: List[int] = []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        take = max(1, round(n * len(idx) / len(labels)))
        picked += rng.permutation(idx)[:take].tolist()
    return split.subset(sorted(picked[:n]) if len(picked) > n else sorted(picked))


def _data_root(value: Optional[str]) -> Path:
    root = Path(value) if value else DEFAULT_DATA
    if not root.is_dir():
        raise UsageError(f"--data: folder {root} not found (expected Training/ and Testing/ inside)")
    return root


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _skip_reporter(events):
    def on_skip(path: str, reason: str) -> None:
        log.warning("skipped %s: %s", path, reason)
        events.emit("warning", message=f"skipped {path}: {reason}", path=path)

    return on_skip


# --------------------------------------------------------------------------- train
def cmd_train(args, events) -> int:
    import torch

    from . import data as D
    from .engine import Cancelled, Trainer, TrainConfig, make_loader, seed_everything, write_json
    from .models import build_model, count_parameters

    cfg_data = load_config_file(args.config)
    overrides = {
        "arch": args.arch, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "workers": args.workers, "seed": args.seed, "device": args.device,
        "weights": args.weights, "finetune": args.finetune or None, "max_train_images": args.max_train_images,
        "max_test_images": args.max_test_images, "val_fraction": args.val_fraction,
        "augment": args.augment or None, "adv": args.adv, "adv_eps": args.adv_eps, "adv_alpha": args.adv_alpha,
        "adv_steps": args.adv_steps, "trades_beta": args.trades_beta, "init": args.init,
        "force_random_init": args.force_random_init or None, "robust_val_images": args.robust_val_images,
        "patience_drop": args.patience_drop, "precision": args.precision,
    }
    cfg_data.update({k: v for k, v in overrides.items() if v is not None})
    init_state = None
    if cfg_data.get("init"):
        init_state = _read_init(Path(cfg_data["init"]))
        # the clean model decides the architecture unless the config names one (then they must agree)
        cfg_data.setdefault("arch", init_state["config"].get("arch"))
        cfg_data.setdefault("model_kwargs", init_state["config"].get("model_kwargs", {}))
    try:
        config = TrainConfig.from_dict(cfg_data).validate()
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if init_state is not None:
        prev = init_state["config"]
        for key in ("arch", "model_kwargs"):
            if prev.get(key, {} if key == "model_kwargs" else None) != getattr(config, key):
                raise UsageError(f"--init: {config.init} has {key} {prev.get(key)!r}, this run asks for "
                                 f"{getattr(config, key)!r}; they must match to start from its weights")
        _check_same_holdout(config, prev)

    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not args.resume:
        raise UsageError(f"--out: {out} already holds a checkpoint; pass --resume to continue it or choose another folder")
    root = _data_root(args.data)
    run_id = uuid.uuid4().hex[:12]
    events.emit("run_started", run_id=run_id, command="train", config={**config.to_dict(), "data": str(root)})
    seed_everything(config.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    on_skip = _skip_reporter(events)
    train_split = _subset(D.scan_split(root, "Training", on_skip), config.max_train_images, config.seed)
    test_split = _subset(D.scan_split(root, "Testing", on_skip), config.max_test_images, config.seed)
    train_split, val_split = D.stratified_holdout(train_split, config.val_fraction, config.seed)
    log.info("decoding %d training, %d validation, %d test images", len(train_split.samples),
             len(val_split.samples) if val_split else 0, len(test_split.samples))
    augmentation = None
    if config.augment:
        from .augment import build_augmentation

        augmentation = build_augmentation()
        log.info("augmenting the training split (paper §5.1): %s", augmentation)
    train_ds = D.MRIDataset(train_split, transform=augmentation, on_skip=on_skip)
    val_ds = D.MRIDataset(val_split, on_skip=on_skip) if val_split else None
    test_ds = D.MRIDataset(test_split, on_skip=on_skip) if not args.no_eval else None

    model = build_model(config.arch, weights=config.weights, finetune=config.finetune, **config.model_kwargs)
    log.info("%s: %d parameters (%d trainable)", config.arch, count_parameters(model), count_parameters(model, True))
    provenance: Dict[str, Any] = {}
    if init_state is not None:
        model.load_state_dict(init_state["model"])
        provenance["init"] = {"path": str(config.init), "sha256": init_state["sha256"],
                              "epochs_done": init_state.get("epoch"), "arch": config.arch}
        if init_state.get("provenance"):  # e.g. the init was rebuilt from a shipped ONNX file (import-onnx)
            provenance["init"]["provenance"] = init_state["provenance"]
        log.info("starting from the weights of %s (epoch %s, sha256 %s)", config.init, init_state.get("epoch"),
                 init_state["sha256"][:12])
    elif config.adv:
        log.warning("adversarial training from RANDOM weights (--force-random-init); paper §5.2 warns the "
                    "model may struggle to reach acceptable accuracy")
    from .defenses.adversarial import early_stopping_from_config, from_config

    defense = from_config(config)
    val_loader = make_loader(val_ds, 128, False, config.workers, config.seed) if val_ds else None
    early = early_stopping_from_config(config, val_loader, out / "best.pt")
    if defense is not None:
        log.info("adversarial training (paper §5.2): %r", defense)
        if early is None:
            log.warning("no robust early stopping (needs a validation split and robust_val_images > 0)")
        else:
            log.info("robust early stopping: %s, patience_drop %g", early.description, config.patience_drop)
    trainer = Trainer(
        model, config,
        make_loader(train_ds, config.batch_size, True, config.workers, config.seed),
        make_loader(test_ds, 128, False, config.workers, config.seed) if test_ds else None,
        val_loader=val_loader,
        events=events, checkpoint_path=ckpt, progress_every=args.progress_every,
        epoch_hook=early, **(defense.hooks() if defense is not None else {}),
    )
    trainer.provenance = provenance
    trainer.keep_epochs = args.keep_epochs
    if args.resume and ckpt.exists():
        trainer.load_checkpoint(ckpt)
        prev = trainer.state_dict()["config"]
        for key in ("arch", "seed", "batch_size", "model_kwargs"):
            if prev.get(key) != config.to_dict()[key]:
                raise UsageError(f"--resume: {key} differs from the checkpoint ({prev.get(key)!r} vs {config.to_dict()[key]!r})")
    write_json(out / "config.json", {**config.to_dict(), "data": str(root),
                                     **({"provenance": trainer.provenance} if trainer.provenance else {})})
    skipped = train_ds.skipped + (test_ds.skipped if test_ds else [])
    write_json(out / "skipped.json", skipped)
    t0 = time.time()
    try:
        history = trainer.fit()
    except (KeyboardInterrupt, Cancelled):
        trainer.save_checkpoint()
        events.emit("run_finished", status="cancelled", summary={"epochs_done": trainer.epoch})
        return 130
    write_json(out / "history.json", history)
    summary = {"epochs": trainer.epoch, "seconds": round(time.time() - t0, 1), "skipped": len(skipped),
               "final": history[-1] if history else None, "checkpoint": str(ckpt)}
    if early is not None:
        robust = [h for h in history if h.get("robust_val_acc") is not None]
        best = max(robust, key=lambda h: (h["robust_val_acc"], -h["epoch"])) if robust else None
        summary.update({"early_stop": trainer.stop_reason, "best_checkpoint": str(out / "best.pt"),
                        "best_epoch": best["epoch"] if best else None,
                        "best_robust_val_acc": best["robust_val_acc"] if best else None})
        log.info("best robust validation accuracy %s at epoch %s: %s (export that file)",
                 summary["best_robust_val_acc"], summary["best_epoch"], out / "best.pt")
    events.emit("run_finished", status="ok", summary=summary)
    return 0


HOLDOUT_KEYS = ("seed", "val_fraction", "max_train_images")  # what decides the validation split


def _check_same_holdout(config, prev: Dict[str, Any]) -> None:
    """Refuse a fine-tune whose validation split differs from its start model's (``--init``).

    The split is drawn from the Training scans by ``seed``, ``val_fraction`` and
    ``max_train_images``; with other values it holds scans the start model trained on, and
    validation accuracy, the plateau schedule and robust early stopping all read optimistic
    (measured on a ResNet-18 fine-tune, seed 1 instead of 0: validation accuracy 0.993 instead of
    0.970, robust validation accuracy 0.965 instead of 0.926 after one epoch).
    """
    if not config.val_fraction:
        return  # no validation split, nothing can leak into it
    fields = type(config).__dataclass_fields__
    theirs = {k: prev.get(k, fields[k].default) for k in HOLDOUT_KEYS}
    ours = {k: getattr(config, k) for k in HOLDOUT_KEYS}
    if theirs != ours:
        def show(d):
            return ", ".join(f"{k} {v!r}" for k, v in d.items())
        raise UsageError(f"--init: {config.init} was trained with {show(theirs)}; this run asks for {show(ours)}, "
                         "whose validation split would hold scans the start model trained on (validation and robust "
                         "early stopping would read optimistic); use the same values, or --val-fraction 0")


def _read_init(path: Path) -> Dict[str, Any]:
    """The clean checkpoint adversarial training starts from (``--init``), with its SHA-256."""
    from breakfix_desktop.core.hashing import sha256_file

    from .models import read_checkpoint

    try:
        state = read_checkpoint(path)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--init: {exc}") from exc
    state["sha256"] = sha256_file(path)
    return state


# --------------------------------------------------------------------------- evaluate
def _eval_sets(root: Path, split_name: str, dedup: bool, events, max_images: Optional[int], seed: int):
    from . import data as D

    on_skip = _skip_reporter(events)
    split = _subset(D.scan_split(root, split_name, on_skip), max_images, seed)
    sets = {split_name: split}
    if dedup:
        train = D.scan_split(root, "Training", on_skip)
        sets[f"{split_name}-dedup"] = D.dedup_against(split, train)
        if dedup == "near":
            from .audit import dedup_near

            near = dedup_near(split, train)
            sets[near.name] = near
    return sets


def evaluate_onnx(onnx_path: Path, grey, batch: int = 64, all_outputs: bool = False):
    """Logits of an ONNX classifier over grey N x 224 x 224 arrays (through onnxruntime, CPU).

    With ``all_outputs`` a dict output name -> array (an ensemble's ``logits`` and ``member_*``)."""
    import numpy as np
    import onnxruntime as ort

    from . import data as D

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()] if all_outputs else ["logits"]
    outs = {n: [] for n in names}
    for i in range(0, len(grey), batch):
        x = D.grey_to_pixels(grey[i : i + batch])
        for n, arr in zip(names, sess.run(names, {"pixels": x})):
            outs[n].append(arr)
    joined = {n: np.concatenate(v) for n, v in outs.items()}
    return joined if all_outputs else joined["logits"]


def evaluate_sets(sets, model=None, onnx_path=None, device="cpu", events=None, members: bool = False):
    """Classification report per named split, through torch (``model``) or onnxruntime (``onnx_path``).

    ``members`` (ONNX ensembles): each report also gets ``members`` = {output name: accuracy} for
    the ``member_*`` outputs, measured in the same pass."""
    from . import data as D
    from .metrics import classification_report

    reports = {}
    for name, split in sets.items():
        grey, labels, kept = D.load_arrays(split, on_skip=_skip_reporter(events) if events else None)
        member_acc = None
        if onnx_path is not None and members:
            outs = evaluate_onnx(Path(onnx_path), grey, all_outputs=True)
            logits = outs["logits"]
            member_acc = {k: float((v.argmax(1) == labels).mean()) for k, v in outs.items() if k.startswith("member_")}
        elif onnx_path is not None:
            logits = evaluate_onnx(Path(onnx_path), grey)
        else:
            import torch

            from .engine import make_loader, predict

            ds = torch.utils.data.TensorDataset(torch.from_numpy(grey).unsqueeze(1).expand(-1, 3, -1, -1),
                                                torch.from_numpy(labels))
            _, logits, _ = predict(model, make_loader(ds, 128, False, 0, 0), torch.device(device))
        rep = classification_report(labels, logits.argmax(1))
        rep["skipped"] = len(kept.skipped) - len(split.skipped)
        if member_acc is not None:
            rep["members"] = member_acc
        reports[name] = rep
    return reports


def _load_checkpoint_model(path: Path, flag: str = "--checkpoint"):
    from .models import build_model, read_checkpoint

    try:
        state = read_checkpoint(path)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"{flag}: {exc}") from exc
    cfg = state["config"]
    model = build_model(cfg["arch"], **cfg.get("model_kwargs", {}))
    model.load_state_dict(state["model"])
    return model.eval(), state


def cmd_evaluate(args, events) -> int:
    from .engine import write_json
    from .metrics import format_report

    if bool(args.checkpoint) == bool(args.onnx):
        raise UsageError("evaluate: give exactly one of --checkpoint or --onnx")
    root = _data_root(args.data)
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="evaluate",
                config={"checkpoint": args.checkpoint, "onnx": args.onnx, "data": str(root), "dedup": args.dedup})
    sets = _eval_sets(root, args.split, args.dedup, events, args.max_images, 0)
    if args.onnx:
        if not Path(args.onnx).is_file():
            raise UsageError(f"--onnx: {args.onnx} not found")
        reports = evaluate_sets(sets, onnx_path=args.onnx, events=events)
    else:
        model, _ = _load_checkpoint_model(Path(args.checkpoint))
        reports = evaluate_sets(sets, model=model, events=events)
    for name, rep in reports.items():
        events.emit("metrics", split=name, report=rep)
        print(format_report(rep, f"== {name} ({rep['n']} images) =="), file=sys.stderr)
    if args.out:
        write_json(Path(args.out), reports)
        events.emit("artifact_written", kind="report", path=str(args.out))
    events.emit("run_finished", status="ok", summary={k: v["accuracy"] for k, v in reports.items()})
    return 0


# --------------------------------------------------------------------------- export
def _load_ensemble_for_export(path: Path):
    """(EnsembleGraph, card "ensemble" section, card "training" section) for ``export --ensemble``."""
    from breakfix_desktop.core.hashing import sha256_file

    from .export import EnsembleGraph
    from .models import ENSEMBLE_FORMAT, ENSEMBLE_RULE, WeightedEnsemble, read_ensemble_spec

    if not path.is_file():
        raise UsageError(f"--ensemble: {path} not found")
    try:
        spec = read_ensemble_spec(path)
    except ValueError as exc:
        raise UsageError(f"--ensemble: {exc}") from exc
    members, weights, training, listed = {}, {}, {}, []
    for m in spec:
        model, state = _load_checkpoint_model(m["checkpoint"], f"--ensemble member {m['name']}")
        members[m["name"]] = model
        weights[m["name"]] = m["weight"]
        cfg = state["config"]
        training[m["name"]] = {**cfg, "epochs_done": state["epoch"],
                               **({"provenance": state["provenance"]} if state.get("provenance") else {})}
        listed.append({"name": m["name"], "checkpoint": str(m["checkpoint"]), "sha256": sha256_file(m["checkpoint"]),
                       "weight": m["weight"], "arch": cfg["arch"]})
    graph = EnsembleGraph(WeightedEnsemble(members, weights).eval()).eval()
    for entry, output in zip(listed, graph.output_names[1:]):
        entry["output"] = output
    section = {
        "format": ENSEMBLE_FORMAT, "file": str(path), "sha256": sha256_file(path),
        "members": listed, "weights": {m["name"]: m["weight"] for m in listed},
        "rule": ENSEMBLE_RULE + "; each member's own logits are the output named in 'output'",
    }
    return graph, section, {"members": training}


def cmd_export(args, events) -> int:
    import numpy as np

    from breakfix_desktop.core.hashing import sha256_file

    from . import data as D
    from .export import FP16_MIN_AGREEMENT, export_onnx, parity, update_manifest, write_card
    from .metrics import format_report

    if bool(args.checkpoint) == bool(args.ensemble):
        raise UsageError("export: give exactly one of --checkpoint or --ensemble")
    out = Path(args.out)
    ensemble_section = None
    if args.ensemble:
        model, ensemble_section, training = _load_ensemble_for_export(Path(args.ensemble))
        output_names = model.output_names
        architecture = "weighted-ensemble(" + ", ".join(
            f"{m['name']}:{m['arch']}x{m['weight']:g}" for m in ensemble_section["members"]) + ")"
        role = args.role or "ensemble"
        history: List[Any] = []
        metadata = {"ensemble_members": ",".join(m["name"] for m in ensemble_section["members"]),
                    "ensemble_weights": ",".join(f"{m['weight']:g}" for m in ensemble_section["members"])}
    else:
        model, state = _load_checkpoint_model(Path(args.checkpoint))
        cfg = state["config"]
        output_names = ["logits"]
        architecture, role = cfg["arch"], args.role or "classifier"
        training = {**cfg, "epochs_done": state["epoch"],
                    **({"provenance": state["provenance"]} if state.get("provenance") else {}),
                    "source_checkpoint": {"path": str(args.checkpoint), "sha256": sha256_file(Path(args.checkpoint))}}
        history = state.get("history", [])
        metadata = None
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="export",
                config={"checkpoint": args.checkpoint, "ensemble": args.ensemble, "out": str(out), "name": args.name})
    fp16 = args.weight_storage == "float16"
    export_onnx(model, out, output_names=output_names, metadata=metadata, weight_storage=args.weight_storage)
    events.emit("artifact_written", kind="onnx", path=str(out))
    reference = None
    if fp16:
        # the float32 graph of the same model: the torch parity contract (<= 1e-4) is checked on it, and
        # the float16-stored file is compared with it prediction by prediction (metrics.weight_storage)
        import tempfile

        ref_dir = tempfile.TemporaryDirectory(prefix="breakfix-export-")
        reference = Path(ref_dir.name) / "reference-float32.onnx"
        export_onnx(model, reference, output_names=output_names, metadata=metadata)
    metrics: Dict[str, Any] = {}
    data_info: Dict[str, Any] = {}
    if args.data:
        root = _data_root(args.data)
        on_skip = _skip_reporter(events)
        train = D.scan_split(root, "Training", on_skip)
        test = D.scan_split(root, "Testing", on_skip)
        train_h = D.file_hashes([s.path for s in train.samples])
        test_h = D.file_hashes([s.path for s in test.samples])
        dedup = D.dedup_against(test, train, test_h, train_h)
        from .audit import dedup_near

        near = dedup_near(test, train)
        data_info = {
            "source": root.name,
            "training": D.fingerprint(train, train_h),
            "testing": D.fingerprint(test, test_h),
            "testing_dedup": {"images": len(dedup.samples), "counts": dedup.counts(),
                              "rule": "test images byte-identical (SHA-256) to a training image removed"},
            "testing_dedup_near": {"images": len(near.samples), "counts": near.counts(),
                                   "rule": "also test images with a pHash within 2 bits of a training image removed"},
        }
        reports = evaluate_sets({"test": test, "test_dedup": dedup, "test_dedup_near": near}, onnx_path=out,
                                events=events, members=len(output_names) > 1)
        if reference is not None:
            grey_all, labels_all, _ = D.load_arrays(test)
            storage = _storage_effect(out, reference, grey_all, labels_all, output_names)
            log.info("float16 storage on %d Testing scans: accuracy %.4f (float32 %.4f), %d predictions changed, "
                     "max |dlogit| %.2e", storage["images"], storage["accuracy"], storage["accuracy_float32"],
                     storage["predictions_changed"], storage["max_abs_logit_diff"])
            if storage["argmax_agreement"] < FP16_MIN_AGREEMENT:
                raise RuntimeError(f"float16 weight storage changed {storage['predictions_changed']} of "
                                   f"{storage['images']} Testing predictions (agreement {storage['argmax_agreement']:.4f} "
                                   f"< {FP16_MIN_AGREEMENT}); export with --weight-storage float32")
        for name, rep in reports.items():
            events.emit("metrics", split=name, report=rep)
            print(format_report(rep, f"== {args.name} on {name} (onnxruntime) =="), file=sys.stderr)
        grey, _, _ = D.load_arrays(test.subset(np.linspace(0, len(test.samples) - 1, args.parity_images).astype(int).tolist()))
        pixels, inputs = D.grey_to_pixels(grey), "real Testing scans"
        metrics = dict(reports)
    else:
        # no data: the parity check still runs, on seeded uniform random pixels
        pixels = np.random.default_rng(0).random((args.parity_images, 3, 224, 224), dtype=np.float32)
        inputs = "uniform random pixels (no --data)"
    par = {**parity(model, reference or out, pixels), "inputs": inputs}
    if reference is not None:
        par["graph"] = "the float32-stored export of the same model (the shipped file stores weights as float16)"
        metrics["weight_storage"] = {
            "dtype": "float16", "rule": "weights with >= 1024 elements stored as float16, cast to float32 in the "
                                        "graph; inputs, outputs and arithmetic float32",
            **({"testing": storage} if args.data else {}),
            "parity_images": _storage_effect(out, reference, None, None, output_names, pixels=pixels)}
    log.info("parity onnxruntime vs torch: max |dlogit| %.2e over %d output(s) on %d %s", par["max_abs_logit_diff"],
             len(output_names), par["images"], inputs)
    if par["max_abs_logit_diff"] > 1e-4:
        raise RuntimeError(f"parity check failed: max |logit difference| {par['max_abs_logit_diff']:.3e} > 1e-4"
                           + (f" (per output: {par['per_output']})" if "per_output" in par else ""))
    metrics["parity"] = par
    if history:
        metrics["history"] = history
    extra: Dict[str, Any] = {}
    if args.description:
        extra["description"] = args.description
    if ensemble_section is not None:
        extra["ensemble"] = ensemble_section
    card = write_card(out, name=args.name, role=role, architecture=architecture, training=training,
                      data=data_info, metrics=metrics, extra=extra or None, outputs=output_names)
    events.emit("artifact_written", kind="card", path=str(card))
    if args.manifest:
        update_manifest(Path(args.manifest), card)
        events.emit("artifact_written", kind="manifest", path=str(args.manifest))
    events.emit("run_finished", status="ok", summary={"onnx": str(out), "card": str(card)})
    return 0


def _storage_effect(path: Path, reference: Path, grey, labels, output_names, pixels=None):
    """Compare the float16-stored graph ``path`` with its float32 ``reference``: accuracy of both (when
    ``labels``), predictions changed, max |logit difference| over every output."""
    import numpy as np
    import onnxruntime as ort

    def run(p):
        if pixels is None:
            return evaluate_onnx(Path(p), grey, all_outputs=True)
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return dict(zip(output_names, sess.run(list(output_names), {"pixels": pixels})))

    got, ref = run(path), run(reference)
    pred, pred_ref = got["logits"].argmax(1), ref["logits"].argmax(1)
    res = {"images": int(len(pred)), "predictions_changed": int((pred != pred_ref).sum()),
           "argmax_agreement": float((pred == pred_ref).mean()),
           "max_abs_logit_diff": float(max(np.abs(got[n] - ref[n]).max() for n in output_names))}
    if labels is not None:
        res["accuracy"] = float((pred == labels).mean())
        res["accuracy_float32"] = float((pred_ref == labels).mean())
    return res


# --------------------------------------------------------------------------- make-ensemble
def _parse_member(text: str):
    """``NAME=CHECKPOINT[:WEIGHT]`` -> (name, path, weight or None).  A ``:`` suffix that is not a
    number belongs to the path (Windows drive letters)."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest:
        raise UsageError(f"--member: expected NAME=CHECKPOINT[:WEIGHT], got {text!r}")
    path, weight = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and head:
        try:
            weight = float(tail)
            path = head
        except ValueError:
            pass
    if weight is not None and not weight > 0:
        raise UsageError(f"--member {name}: weight must be > 0 (got {weight:g})")
    return name.strip(), Path(path), weight


def cmd_card_robustness(args, events) -> int:
    from .card_robustness import CardRobustnessError, attach_robustness

    card = Path(args.card)
    if not card.is_file():
        raise UsageError(f"--card: model card {card} not found")
    try:
        section = attach_robustness(card, [Path(r) for r in args.report], log=log.info,
                                    same_graph=[Path(f) for f in args.same_graph or []])
    except CardRobustnessError as exc:
        raise UsageError(str(exc)) from exc
    rows = [("", r) for r in section["model"]] + [(f"{m}: ", r) for m, rs in section["members"].items() for r in rs]
    for who, r in rows:
        print(f"{who}{r['label']}: {r['accuracy']:.3f} on {r['n']} scans ({r['drill']})")
    events.emit("artifact_written", kind="card", path=str(card))
    return 0


def cmd_make_ensemble(args, events) -> int:
    import os

    from breakfix_desktop.core.hashing import sha256_file

    from .engine import write_json
    from .models import ENSEMBLE_FORMAT, ENSEMBLE_RULE, default_member_weight, read_checkpoint

    out = Path(args.out)
    members, seen = [], set()
    for item in args.member:
        name, path, weight = _parse_member(item)
        if name in seen:
            raise UsageError(f"--member: name {name!r} given twice")
        seen.add(name)
        try:
            state = read_checkpoint(path)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--member {name}: {exc}") from exc
        weight = default_member_weight(name) if weight is None else weight
        members.append({"name": name, "checkpoint": os.path.relpath(path.resolve(), out.parent.resolve()),
                        "weight": weight, "sha256": sha256_file(path), "arch": state["config"].get("arch"),
                        "epochs_done": state.get("epoch")})
        log.info("member %s: %s (%s, weight %g)", name, path, state["config"].get("arch"), weight)
    spec = {"format": ENSEMBLE_FORMAT, "members": members,
            "rule": ENSEMBLE_RULE}
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="make-ensemble",
                config={"out": str(out), "members": [m["name"] for m in members]})
    write_json(out, spec)
    events.emit("artifact_written", kind="ensemble", path=str(out))
    events.emit("run_finished", status="ok", summary={"ensemble": str(out),
                                                      "weights": {m["name"]: m["weight"] for m in members}})
    return 0


# --------------------------------------------------------------------------- average
def cmd_average(args, events) -> int:
    import torch

    from breakfix_desktop.core.fsutil import atomic_output
    from breakfix_desktop.core.hashing import sha256_file

    from .averaging import average_checkpoints

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out: {out} exists; pass --overwrite to replace it")
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="average",
                config={"out": str(out), "checkpoints": [str(p) for p in args.checkpoints]})
    try:
        state = average_checkpoints(args.checkpoints)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        torch.save(state, tmp)
    log.info("averaged %d checkpoints of %s into %s", len(args.checkpoints), state["config"]["arch"], out)
    events.emit("artifact_written", kind="checkpoint", path=str(out))
    events.emit("run_finished", status="ok", summary={"checkpoint": str(out), "sha256": sha256_file(out),
                                                      "averaged": len(args.checkpoints)})
    return 0


# --------------------------------------------------------------------------- calibrate
def cmd_calibrate(args, events) -> int:
    from .calibration import CalibrationError, calibrate_shipped, format_section

    model = Path(args.model)
    if not model.is_file():
        raise UsageError(f"--model: {model} not found")
    if not 0 < args.catch_errors <= 1:
        raise UsageError(f"--catch-errors: a share in (0, 1], got {args.catch_errors:g}")
    root = _data_root(args.data)
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="calibrate",
                config={"model": str(model), "data": str(root), "manifest": args.manifest,
                        "catch_errors": args.catch_errors, "flag_rule": args.flag_rule})
    try:
        section = calibrate_shipped(model, root, Path(args.manifest) if args.manifest else None,
                                    on_skip=_skip_reporter(events), seal=not args.dry_run,
                                    fit=not args.no_temperature, catch_errors=args.catch_errors,
                                    flag_rule=args.flag_rule)
    except CalibrationError as exc:
        raise UsageError(str(exc)) from exc
    print(format_section(section))
    for split, pair in section["measured"].items():
        events.emit("metrics", split=split, report={"calibration": pair})
    if args.dry_run:
        print("--dry-run: nothing written")
    else:
        events.emit("artifact_written", kind="onnx", path=str(model))
        events.emit("artifact_written", kind="card", path=str(model.with_name(model.stem + ".card.json")))
        if args.manifest:
            events.emit("artifact_written", kind="manifest", path=str(args.manifest))
    events.emit("run_finished", status="ok", summary={"onnx": str(model), "temperature": section["temperature"],
                                                      "sealed": not args.dry_run})
    return 0


# --------------------------------------------------------------------------- import-onnx
def cmd_import_onnx(args, events) -> int:
    import torch

    from breakfix_desktop.core.fsutil import atomic_output

    from . import data as D
    from .engine import write_json
    from .onnx_import import ImportErrorOnnx, import_onnx

    onnx_path = Path(args.onnx)
    if not onnx_path.is_file():
        raise UsageError(f"ONNX file {onnx_path} not found")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"--out: {out} exists; pass --force to replace it")
    root = _data_root(args.data)
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="import-onnx",
                config={"onnx": str(onnx_path), "out": str(out), "data": str(root),
                        "calibration_images": args.calibration_images})
    on_skip = _skip_reporter(events)
    # calibrate on the split the model was trained on (never Testing); check parity on Testing scans
    train = _subset(D.scan_split(root, "Training", on_skip), args.calibration_images, args.seed)
    test = _subset(D.scan_split(root, "Testing", on_skip), 64, args.seed)
    grey, _, _ = D.load_arrays(train, on_skip=on_skip)
    test_grey, _, _ = D.load_arrays(test, on_skip=on_skip)
    try:
        state = import_onnx(onnx_path, args.card, D.grey_to_pixels(grey), D.grey_to_pixels(test_grey),
                            calibration_note=f"{len(grey)} stratified Training images, seed {args.seed}",
                            member=args.member)
    except ImportErrorOnnx as exc:
        raise UsageError(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, mode=None) as tmp:
        torch.save(state, tmp)
    par = state["provenance"]["imported_from"]["parity"]
    log.info("%s -> %s: parity on %d Testing scans: %s", onnx_path, out, par["images"],
             ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}" for k, v in par.items() if k != "images"))
    write_json(out.with_suffix(".json"), {"config": state["config"], "epoch": state["epoch"],
                                          "provenance": state["provenance"]})
    events.emit("artifact_written", kind="checkpoint", path=str(out))
    events.emit("run_finished", status="ok", summary={"checkpoint": str(out), "parity": par})
    return 0


# --------------------------------------------------------------------------- augment-grid
def cmd_augment_grid(args, events) -> int:
    import torch

    from . import data as D
    from .augment import augmentation_grid, save_grid

    root = _data_root(args.data)
    out = Path(args.out)
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="augment-grid",
                config={"data": str(root), "out": str(out), "n": args.n, "copies": args.copies, "seed": args.seed,
                        "split": args.split})
    on_skip = _skip_reporter(events)
    split = _subset(D.scan_split(root, args.split, on_skip), args.n, args.seed)
    grey, _, kept = D.load_arrays(split, on_skip=on_skip)
    images = torch.from_numpy(grey).unsqueeze(1).expand(-1, 3, -1, -1)
    torch.manual_seed(args.seed)
    save_grid(augmentation_grid(images, copies=args.copies), out)
    log.info("%d scans (rows), each original then %d augmented copies -> %s", len(kept.samples), args.copies, out)
    events.emit("artifact_written", kind="figure", path=str(out))
    events.emit("run_finished", status="ok", summary={"figure": str(out), "images": len(kept.samples),
                                                      "files": [str(s.path) for s in kept.samples]})
    return 0


# --------------------------------------------------------------------------- audit
def cmd_audit(args, events) -> int:
    from .audit import audit_dataset, format_audit

    root = Path(args.dir)
    if not root.is_dir():
        raise UsageError(f"DIR: folder {root} not found")
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="audit-data",
                config={"dir": str(root), "near_threshold": args.near_threshold})
    report = audit_dataset(root, near_threshold=args.near_threshold, on_skip=_skip_reporter(events))
    out = Path(args.out) if args.out else root.name + "-audit.json"
    from .engine import write_json

    write_json(Path(out), report)
    events.emit("artifact_written", kind="audit", path=str(out))
    print(format_audit(report), file=sys.stderr)
    events.emit("run_finished", status="ok", summary=report["summary"])
    return 0


# --------------------------------------------------------------------------- drill
def _parse_set(items: Optional[List[str]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def cmd_drill(args, events) -> int:
    from .drills import DrillCancelled, DrillError, create_drill, list_drills

    if args.list:
        listing = {"format": "breakfix-drill-list/1", "recipes": [create_drill(n).listing() for n in list_drills()]}
        if args.events == "human" or (args.events == "auto" and sys.stdout.isatty()):
            width = max(len(r["name"]) for r in listing["recipes"]) + 2
            for r in listing["recipes"]:
                print(f"{r['name']:<{width}}{r['paper']:<16}{r['summary']}")
        else:
            print(json.dumps(listing, default=str))
        return 0
    if not args.name:
        raise UsageError("drill: give a drill NAME (see --list) or --list")
    if not args.out:
        raise UsageError("drill: --out DIR is required")
    try:
        drill = create_drill(args.name)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from exc
    config = load_config_file(args.config) if args.config else {}
    if isinstance(config.get("drill"), dict):
        config = config["drill"]
    config.update(_parse_set(args.set))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    root = _data_root(args.data)
    try:
        drill.settings(config, args.quick)  # refuse bad settings before any work
        report = drill.execute(root, Path(args.out), events, config=config, quick=args.quick,
                               device=args.device or "auto")
    except DrillError as exc:
        raise UsageError(str(exc)) from exc
    except DrillCancelled:
        return 130
    human = args.events == "human" or (args.events == "auto" and sys.stdout.isatty())
    print(report["table"], file=sys.stdout if human else sys.stderr)
    return 0


# --------------------------------------------------------------------------- detector
def cmd_detector(args, events) -> int:
    """``detector export`` (the pattern detector, paper §5.3/§6.6) and ``detector squeeze`` (the
    feature-squeezing second check): ONNX + card (+ manifest); see :mod:`training.detector_export`."""
    from .detector_export import export_detector, export_squeeze_check, measure_detector, validate_detectors

    if args.action == "measure":
        if not Path(args.onnx).is_file():
            raise UsageError(f"{args.onnx} not found")
        try:
            if args.squeeze_check and not args.adversarial:
                raise ValueError("--squeeze-check scores attacked scans: give --adversarial CLASSIFIER too")
            result = measure_detector(args.onnx, _data_root(args.data), sizes=args.sizes, shapes=args.shapes,
                                      card_path=args.card, adversarial=args.adversarial,
                                      squeeze_check=args.squeeze_check,
                                      adversarial_max_images=args.adversarial_max_images, events=events)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        at, half = result["at_threshold"], result["at_0.5"]
        log.info("%s on Testing, one %s %s pattern on %d of %d scans: at the card's threshold %.4g recall %.3f "
                 "precision %.3f (false alarms %.3f); at 0.5 recall %.3f precision %.3f; ROC AUC %.3f",
                 args.onnx, "/".join(result["patterns"]["sizes"]), "/".join(result["patterns"]["shapes"]),
                 result["patterned"], result["scans"], result["threshold"], at["recall"], at["precision"],
                 at["false_positive_rate"], half["recall"], half["precision"], result["roc_auc"])
        for shape, rows in result["recall_by_contrast"]["by_shape"].items():
            log.info("%s: recall by contrast %s", shape, "; ".join(
                f"{b['from']:g}-{min(b['to'], 1):g}: {b['recall']:.3f} of {b['images']}" if b["images"] else
                f"{b['from']:g}-{min(b['to'], 1):g}: none" for b in rows))
        for name in ("fgsm", "pgd"):
            if "attacks" in result:
                a = result["attacks"]
                log.info("%s (eps %g) against %s on %d clean Testing scans: accuracy %.3f -> %.3f; flagged %s "
                         "(clean scans: %s)", name.upper(), a["eps"], a["classifier"], a["images"],
                         a["clean"]["classifier_accuracy"], a[name]["classifier_accuracy"],
                         ", ".join(f"{k} {v:.3f}" for k, v in a[name]["flagged"].items()),
                         ", ".join(f"{k} {v:.3f}" for k, v in a["clean"]["flagged"].items()))
        text = json.dumps(result, indent=2)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
        print(text)
        return 0
    if args.action == "validate":
        for c in args.checkpoint:
            if not Path(c).is_file():
                raise UsageError(f"--checkpoint: {c} not found")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        try:
            result = validate_detectors(args.checkpoint, _data_root(args.data), sizes=args.sizes, shapes=args.shapes,
                                        precision=args.precision, score_rule=args.score, draws=args.draws,
                                        tta=args.tta, events=events)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        print(json.dumps(result, indent=2))
        return 0
    root = _data_root(args.data) if args.data else None
    sources = args.checkpoint if args.action == "export" else [args.classifier]
    for source in sources:
        if not Path(source).is_file():
            raise UsageError(f"{'--checkpoint' if args.action == 'export' else '--classifier'}: {source} not found")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1] (got {args.threshold})")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command=f"detector {args.action}",
                config={"source": str(sources[0]) if len(sources) == 1 else [str(x) for x in sources], "out": str(args.out), "name": args.name, "data": str(root) if root else None,
                        "manifest": args.manifest, "threshold": args.threshold})
    try:
        if args.action == "export":
            if args.target_recall is not None and not 0.0 < args.target_recall <= 1.0:
                raise UsageError(f"--target-recall must be in (0, 1] (got {args.target_recall})")
            summary = export_detector(args.checkpoint, args.out, args.name, data_root=root, manifest=args.manifest,
                                      target_recall=args.target_recall, threshold=args.threshold,
                                      parity_images=args.parity_images, description=args.description, events=events,
                                      score_rule=args.score, calibrate_on=args.calibrate_on,
                                      weight_storage=args.weight_storage, tta=args.tta,
                                      calibration_draws=args.calibration_draws,
                                      recall_confidence=args.recall_confidence)
        else:
            if not 0.0 <= args.false_alarm < 1.0:
                raise UsageError(f"--false-alarm must be in [0, 1) (got {args.false_alarm})")
            summary = export_squeeze_check(args.classifier, args.out, args.name, data_root=root,
                                           manifest=args.manifest, false_alarm=args.false_alarm,
                                           threshold=args.threshold, bits=args.bits, median=not args.no_median,
                                           eps=args.eps, pgd_alpha=args.pgd_alpha, pgd_steps=args.pgd_steps,
                                           max_test_images=args.max_test_images, parity_images=args.parity_images,
                                           description=args.description, seed=args.seed, events=events)
    except ValueError as exc:  # a user-facing problem: nothing to calibrate on, not a detector checkpoint, ...
        raise UsageError(str(exc)) from exc
    print(json.dumps(summary, indent=2), file=sys.stderr)
    events.emit("run_finished", status="ok", summary=summary)
    return 0


# --------------------------------------------------------------------------- parser
def _positive_int(name):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}")
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v
    return parse


def _float(name):
    def parse(text):
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}")
    return parse


def build_parser() -> argparse.ArgumentParser:
    from .calibration import FLAG_RULES

    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", default="auto", choices=["auto", "json", "human", "none"],
                   help="stdout format: JSON lines for the GUI (default when piped) or a progress bar (tty)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a classifier on the real data",
                       description="Train a classifier; config from --config (TOML/JSON) overridden by flags.")
    t.add_argument("--data", help=f"data folder with Training/ and Testing/ (default {DEFAULT_DATA})")
    t.add_argument("--out", required=True, help="run folder (checkpoint.pt, history.json, config.json)")
    t.add_argument("--config", help="TOML or JSON file of TrainConfig settings (a [train] table or top level)")
    t.add_argument("--arch", help="cnn | resnet18 | resnet50")
    t.add_argument("--epochs", type=_positive_int("--epochs"))
    t.add_argument("--batch-size", type=_positive_int("--batch-size"))
    t.add_argument("--lr", type=_float("--lr"), help="Adam learning rate (default 1e-4, paper §6.5)")
    t.add_argument("--weight-decay", type=_float("--weight-decay"))
    t.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--precision", choices=("fp32", "bf16"),
                   help="fp32 (default) or bf16: forward passes under bfloat16 autocast, channels_last "
                        "(2-3x faster on CPUs with AVX-512 BF16; weights stay float32)")
    t.add_argument("--weights", help="local ImageNet weights file for ResNets (never downloaded)")
    t.add_argument("--finetune", action="store_true", help="ResNets: train only layer4 + fc (paper's ResNet-50 setting)")
    t.add_argument("--max-train-images", type=_positive_int("--max-train-images"), help="stratified subset (quick runs)")
    t.add_argument("--max-test-images", type=_positive_int("--max-test-images"))
    t.add_argument("--val-fraction", type=_float("--val-fraction"),
                   help="share of Training held out for the LR schedule (default 0.1; never the test split)")
    t.add_argument("--no-eval", action="store_true", help="skip the per-epoch test evaluation")
    g = t.add_argument_group("defenses (paper §5; docs/defenses.md)")
    g.add_argument("--augment", action="store_true",
                   help="augment the training split with the §5.1 pipeline (flips, rotation, colour jitter, "
                        "resized crop, erasing); validation and test images are never augmented")
    g.add_argument("--adv", choices=["fgsm", "pgd", "fast", "trades"],
                   help="adversarial training (§5.2): fgsm/pgd append attacked copies to each batch (the paper), "
                        "fast = FGSM with random start (Wong et al. 2020), trades = TRADES (Zhang et al. 2019)")
    g.add_argument("--adv-eps", nargs=2, type=_float("--adv-eps"), metavar=("MIN", "MAX"),
                   help="eps drawn uniformly per batch from [MIN, MAX] on the [0, 1] pixel scale (default 0.001 0.01)")
    g.add_argument("--adv-alpha", type=_float("--adv-alpha"),
                   help="PGD/TRADES step size (default 2.5 * eps / steps)")
    g.add_argument("--adv-steps", type=_positive_int("--adv-steps"), help="PGD/TRADES steps (default 5)")
    g.add_argument("--trades-beta", type=_float("--trades-beta"), help="TRADES weight of the KL term (default 6)")
    g.add_argument("--init", metavar="CHECKPOINT",
                   help="start from this clean checkpoint's weights (required for --adv; its arch and "
                        "model_kwargs are used unless the config names them)")
    g.add_argument("--force-random-init", action="store_true",
                   help="allow --adv from random weights (the paper warns against it)")
    g.add_argument("--robust-val-images", type=int,
                   help="robust early stopping: PGD-10 accuracy on this many validation images per epoch, "
                        "best.pt keeps the best (default 128; 0 turns it off)")
    g.add_argument("--patience-drop", type=_float("--patience-drop"),
                   help="stop when robust validation accuracy falls more than this below its best (default 0.2)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--keep-epochs", action="store_true",
                   help="also keep every epoch's checkpoint as OUT/epochN.pt (e.g. for `average`)")
    t.add_argument("--progress-every", type=_positive_int("--progress-every"), default=1,
                   help="emit a progress event every N batches")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint or an ONNX model",
                       description="Per-class precision/recall/F1/support, accuracy and confusion matrix.")
    e.add_argument("--checkpoint", help="a training checkpoint.pt (torch)")
    e.add_argument("--onnx", help="an exported .onnx model (onnxruntime)")
    e.add_argument("--data", help=f"data folder (default {DEFAULT_DATA})")
    e.add_argument("--split", default="Testing", choices=["Testing", "Training"])
    e.add_argument("--dedup", nargs="?", const="exact", choices=["exact", "near"],
                   help="also report the split without test images that are byte-identical to a Training image "
                        "(exact, the default) and, with 'near', also without perceptual near-duplicates (pHash <= 2 bits)")
    e.add_argument("--max-images", type=_positive_int("--max-images"))
    e.add_argument("--out", help="write the reports as JSON here")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="export a checkpoint or an ensemble to ONNX with a model card",
                       description="ONNX (normalisation inside, input 'pixels' Nx3x224x224 in [0,1], output 'logits'; "
                                   "an ensemble adds one 'member_<name>' output per member), parity check vs torch "
                                   "on every output, card with metrics and SHA-256, manifest entry.")
    x.add_argument("--checkpoint", help="a training checkpoint.pt (or best.pt)")
    x.add_argument("--ensemble", help="an ensemble .json (make-ensemble): exported as ONE graph")
    x.add_argument("--out", required=True, help="path of the .onnx file to write")
    x.add_argument("--name", required=True, help="model name, e.g. cnn_clean")
    x.add_argument("--role", choices=["classifier", "detector", "ensemble", "check"],
                   help="default: classifier, or ensemble with --ensemble")
    x.add_argument("--description", help="one line for the card")
    x.add_argument("--data", help="data folder: adds metrics, fingerprint and the parity check to the card")
    x.add_argument("--manifest", help="manifest.json to add the model to")
    x.add_argument("--parity-images", type=_positive_int("--parity-images"), default=64)
    x.add_argument("--weight-storage", choices=["float32", "float16"], default="float32",
                   help="float16 halves the file (large weights stored as float16, cast to float32 in the graph; "
                        "arithmetic stays float32); the card records the accuracy change against the float32 "
                        "graph, and the export refuses if more than 0.5%% of Testing predictions change")
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("make-ensemble", help="write an ensemble file (members and weights) for export/drills",
                       description="Write a breakfix-ensemble/1 JSON file: member names, checkpoints (relative to the "
                                   "file, with their SHA-256) and weights. Default weights follow the paper (§5.2): "
                                   "ResNet18_PGD (or ResNet_PGD) counts 2, every other member 1.")
    m.add_argument("--member", action="append", required=True, metavar="NAME=CHECKPOINT[:WEIGHT]",
                   help="one member; repeat for each (e.g. CNN_PGD=runs/cnn_pgd/best.pt)")
    m.add_argument("--out", required=True, help="the .json file to write (e.g. runs/ensemble/ensemble.json)")
    m.set_defaults(func=cmd_make_ensemble)

    av = sub.add_parser("average", help="average the weights of checkpoints of one training trajectory (SWA)",
                        description="Write the uniform mean of the weights and BatchNorm statistics of two or more "
                                    "checkpoints of one architecture (torch.optim.swa_utils.AveragedModel) as a new "
                                    "checkpoint; its provenance lists the inputs with their SHA-256.")
    av.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT")
    av.add_argument("--out", required=True, help="the checkpoint to write (e.g. runs/avg/resnet18.pt)")
    av.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    av.set_defaults(func=cmd_average)

    cr = sub.add_parser("card-robustness", help="add measured attack accuracy (table3-fgsm / table4-pgd) to a card",
                        description="Write the rows of evasion drill reports into a classifier or ensemble card's "
                                    "metrics.robustness, for the Models page. Each attacked checkpoint is matched "
                                    "to the card by SHA-256 (the ensemble file, a member, or the source checkpoint); "
                                    "a report with no matching model is refused.")
    cr.add_argument("--card", required=True, help="model card, e.g. resources/models/ensemble.card.json")
    cr.add_argument("--report", action="append", required=True,
                    help="drill report.json (repeat); paths in it are relative to the current folder")
    cr.add_argument("--same-graph", action="append", metavar="ONNX",
                    help="an earlier version of the card's ONNX file, e.g. from before calibrate re-sealed it "
                         "(git show REV:resources/models/ensemble.onnx > old.onnx); refused unless its graph and "
                         "weights are the card's. Members rebuilt from it by import-onnx then link too (repeat)")
    cr.set_defaults(func=cmd_card_robustness)

    cb = sub.add_parser("calibrate", help="fit a shipped classifier's temperature on the validation split (confidences)",
                        description="Temperature scaling (Guo et al. 2017): fit T on the validation split the "
                                    "model's card says training held out (never Testing), measure NLL, ECE, "
                                    "'100.0 %' results and low-confidence flags before and after on validation "
                                    "and Testing, choose the low-confidence flag's threshold on validation, seal "
                                    "both in the ONNX file's metadata and write them into the card (and the "
                                    "manifest's SHA-256). No decision changes.")
    cb.add_argument("--model", required=True, help="shipped classifier or ensemble, e.g. resources/models/ensemble.onnx "
                                                   "(its .card.json beside it)")
    cb.add_argument("--data", help="data folder with Training/ and Testing/ (default the shared data set)")
    cb.add_argument("--manifest", help="manifest to update, e.g. resources/models/manifest.json")
    cb.add_argument("--no-temperature", action="store_true",
                    help="keep the probabilities as they are (T = 1; the fitted T is still reported) and seal only "
                         "the low-confidence flag")
    cb.add_argument("--catch-errors", type=float, default=0.8, metavar="SHARE",
                    help="the low-confidence flag's threshold is the lowest that catches this share of the "
                         "validation errors (default 0.8)")
    cb.add_argument("--flag-rule", choices=FLAG_RULES, default=FLAG_RULES[0],
                    help="what must catch that share: 'either' (default) the app's closer-look mark, low confidence "
                         "or members disagree (an ensemble's second flag); 'low-confidence' that flag alone")
    cb.add_argument("--dry-run", action="store_true",
                    help="fit and measure only: print the table, change no file (is the model miscalibrated?)")
    cb.set_defaults(func=cmd_calibrate)

    im = sub.add_parser("import-onnx", help="rebuild a trainable checkpoint from a shipped ONNX classifier or detector",
                        description="Turn a shipped classifier (e.g. resources/models/cnn_clean.onnx) or the pattern "
                                    "detector (pattern_detector.onnx; for a detector drill's init_from) back into a "
                                    "breakfix-checkpoint/1 for --init: folded convolution weights loaded, BatchNorm "
                                    "statistics recalibrated on Training images, parity with the graph checked "
                                    "(<= 1e-4) on Testing scans. The card must match the file's SHA-256.")
    im.add_argument("onnx", help="the .onnx file (its card is NAME.card.json beside it unless --card)")
    im.add_argument("--out", required=True, help="checkpoint to write, e.g. runs/cnn_clean/checkpoint.pt")
    im.add_argument("--card", help="model card (default: beside the .onnx file)")
    im.add_argument("--member", help="for an ensemble graph: the member to rebuild, e.g. ResNet18_PGD; for a "
                                     "detector union: the member's index (0, 1, ...)")
    im.add_argument("--data", help=f"data folder (default {DEFAULT_DATA})")
    im.add_argument("--calibration-images", type=_positive_int("--calibration-images"), default=512)
    im.add_argument("--seed", type=int, default=0)
    im.add_argument("--force", action="store_true", help="replace --out if it exists")
    im.set_defaults(func=cmd_import_onnx)

    ag = sub.add_parser("augment-grid", help="picture of real scans next to augmented copies (paper §5.1)",
                        description="Write a grid image: one row per scan (a stratified sample of the split), the "
                                    "original first, then augmented copies from the §5.1 pipeline.")
    ag.add_argument("--data", help=f"data folder (default {DEFAULT_DATA})")
    ag.add_argument("--out", required=True, help="image file to write (e.g. grid.png)")
    ag.add_argument("--n", type=_positive_int("--n"), default=16, help="number of scans (rows; default 16)")
    ag.add_argument("--copies", type=_positive_int("--copies"), default=3, help="augmented copies per scan (default 3)")
    ag.add_argument("--seed", type=int, default=0, help="seed of the sample and the augmentations (default 0)")
    ag.add_argument("--split", default="Training", choices=["Training", "Testing"])
    ag.set_defaults(func=cmd_augment_grid)

    a = sub.add_parser("audit-data", help="audit a data folder: counts, duplicates, leakage, label conflicts",
                       description="Images per class and split, exact (SHA-256) and near-duplicate (perceptual hash) "
                                   "groups, train/test leakage and label conflicts; writes a JSON report.")
    a.add_argument("dir", metavar="DIR")
    a.add_argument("--out", help="JSON report path (default DIRNAME-audit.json)")
    a.add_argument("--near-threshold", type=int, default=2,
                   help="max Hamming distance between 64-bit perceptual hashes for a near-duplicate (default 2; "
                        "see docs/data-audit.md for why not more)")
    a.set_defaults(func=cmd_audit)

    d = sub.add_parser("drill", help="run one of the paper's results end to end (see --list)",
                       description="Run a drill recipe on the real data and write OUT/report.json, OUT/events.jsonl "
                                   "and OUT/table.txt (the paper's table with our numbers beside it). A re-run with "
                                   "the same --out and settings resumes its trained models.")
    d.add_argument("name", nargs="?", metavar="NAME", help="drill name (see --list)")
    d.add_argument("--list", action="store_true", help="list the drills (JSON when piped)")
    d.add_argument("--out", help="output folder")
    d.add_argument("--config", help="TOML or JSON settings (a [drill] table or top level)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting (VALUE parsed as JSON, else text); repeatable")
    d.add_argument("--quick", action="store_true", help="small real subset, 1-2 epochs (tests, demos)")
    d.add_argument("--data", help=f"data folder (default {DEFAULT_DATA})")
    d.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    d.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    d.set_defaults(func=cmd_drill)

    dt = sub.add_parser("detector", help="export the pattern detector or the feature-squeezing check (paper §5.3)",
                        description="Ship the second line of defence: the pattern detector trained by a table7/8/9 "
                                    "detector drill (ONNX outputs 'score' and 'map'), or the feature-squeezing check "
                                    "built around a classifier checkpoint (output 'score'). Same input contract as the "
                                    "classifiers; the card carries the calibrated threshold and metrics measured "
                                    "through onnxruntime. See docs/detector.md.")
    dsub = dt.add_subparsers(dest="action", required=True, metavar="ACTION")
    de = dsub.add_parser("export", help="export a pattern-detector checkpoint (role detector)",
                         description="Export OUT/detector/checkpoint.pt of a detector drill; with --data the threshold "
                                     "is calibrated on the run's validation split for --target-recall and the card "
                                     "gets precision/recall/F1, ROC and PR on the patterned Testing split.")
    de.add_argument("--checkpoint", required=True, action="append",
                    help="a detector drill's OUT/detector/checkpoint.pt; give it two or more times to export their "
                         "union (one graph; map = cell-wise maximum of the members' maps, so a scan is flagged "
                         "when any member finds a pattern), calibrated and measured as one detector")
    de.add_argument("--target-recall", type=_float("--target-recall"),
                    help="recall the threshold is calibrated for (default: the drill's, 0.95)")
    de.add_argument("--calibrate-on", choices=("val", "test-rule"), default="val",
                    help="patterns of the validation scans the threshold is calibrated on: 'val' (default) the "
                         "run's own validation rule, or 'test-rule' one pattern of the test sizes per patterned scan "
                         "(the hardest case the gate must catch; still validation scans carved from Training)")
    de.add_argument("--score", choices=("mean", "segmentation", "classifier"), default=None,
                    help="how the 'score' output is read: mean (default) of the localisation map's maximum and the "
                         "2-logit head's probability, the map's maximum alone, or the 2-logit head alone (the paper's "
                         "detector); use the rule the drill measured (its setting 'score')")
    de.add_argument("--calibration-draws", type=_positive_int("--calibration-draws"), default=1,
                    help="calibrate the threshold on this many independent pattern draws of the validation scans "
                         "(default 1)")
    de.add_argument("--recall-confidence", type=_float("--recall-confidence"), default=None,
                    help="require the target recall as a one-sided lower Wilson bound at this confidence (e.g. 0.9), "
                         "so it holds for scans like the calibration positives, not just for them (lowers the threshold)")
    de.add_argument("--tta", choices=("none", "hflip"), default=None,
                    help="test-time augmentation inside the graph: hflip averages both heads over the scan and "
                         "its mirror image (twice the compute; same contract); default the checkpoint's own (none)")
    de.add_argument("--weight-storage", choices=["float32", "float16"], default="float32",
                    help="float16: store the large weights as float16 (file halved; computation, input and outputs "
                         "stay float32); metrics are measured on the float16 file and its Testing decisions are "
                         "compared with the float32 graph's (card metrics.weight_storage)")
    ds = dsub.add_parser("squeeze", help="build and export the feature-squeezing check (role check)",
                         description="Feature squeezing (Xu et al. 2018) around a classifier: score = how much the "
                                     "classifier's softmax moves under bit-depth reduction and 3x3 median smoothing. "
                                     "With --data the threshold is calibrated on the classifier's clean validation "
                                     "split for --false-alarm, and clean vs FGSM/PGD Testing scans are measured.")
    ds.add_argument("--classifier", required=True, help="classifier checkpoint.pt (or ensemble .json)")
    ds.add_argument("--false-alarm", type=_float("--false-alarm"), default=0.05,
                    help="share of clean validation scans the check may flag (default 0.05)")
    ds.add_argument("--bits", type=_positive_int("--bits"), default=5, help="bit depth of the squeezed copy (default 5)")
    ds.add_argument("--no-median", action="store_true", help="leave out the 3x3 median-smoothing squeezer")
    ds.add_argument("--eps", type=_float("--eps"), default=0.01, help="FGSM/PGD eps for the report (default 0.01)")
    ds.add_argument("--pgd-alpha", type=_float("--pgd-alpha"), default=0.001)
    ds.add_argument("--pgd-steps", type=_positive_int("--pgd-steps"), default=5)
    ds.add_argument("--max-test-images", type=_positive_int("--max-test-images"),
                    help="stratified Testing subset for the FGSM/PGD measurement")
    ds.add_argument("--seed", type=int, default=0, help="PGD random start seed")
    dv = dsub.add_parser("validate", help="compare detector checkpoints on the validation split (never Testing)",
                         description="Score detector checkpoints on the same validation scans carved from Training, "
                                     "half of them with one pattern of --sizes each (the test rule): ROC AUC, average "
                                     "precision, recall at --precision. Choose the checkpoint to ship with this, "
                                     "without looking at Testing. Prints JSON.")
    dv.add_argument("--checkpoint", required=True, action="append", help="a detector checkpoint.pt (repeat to compare)")
    dv.add_argument("--data", default=None, help="data folder (default: ../shared/data/brain-tumor-mri)")
    dv.add_argument("--sizes", nargs="+", default=["small"], choices=("small", "medium", "large"),
                    help="size classes of the validation patterns (default small)")
    dv.add_argument("--shapes", nargs="+", default=None, choices=_ALL_SHAPES,
                    help="shapes (default the paper's four)")
    dv.add_argument("--precision", type=_float("--precision"), default=0.95,
                    help="report the best recall at this precision (default 0.95)")
    dv.add_argument("--draws", type=int, default=1,
                    help="independent pattern draws over the validation scans, pooled (default 1; more draws "
                         "give a less noisy comparison: the validation split has under 300 patterned scans)")
    dv.add_argument("--score", choices=("mean", "segmentation", "classifier"), default=None,
                    help="score rule (default mean, the rule detector export ships)")
    dv.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    dv.add_argument("--tta", nargs="+", default=None, choices=("none", "hflip"),
                    help="score every checkpoint under each of these test-time augmentations (one row each; "
                         "hflip: mean over the scan and its mirror image); default each checkpoint's own")
    dm = dsub.add_parser("measure", help="measure a shipped detector on Testing under another test rule "
                                         "(e.g. Table 9's small triangles)",
                         description="Score a detector ONNX file (onnxruntime) on the Testing split of its training "
                                     "run, half of the scans with one pattern of --shapes x --sizes, at the card's "
                                     "threshold and at 0.5: precision, recall, F1, false alarms, ROC AUC. For the "
                                     "paper's Table 9 setting (--shapes triangle) on the detector the workstation "
                                     "ships, and for shapes it never trained on. Prints JSON.")
    dm.add_argument("onnx", help="detector .onnx file (its card is NAME.card.json beside it unless --card)")
    dm.add_argument("--card", help="model card (default: beside the .onnx file)")
    dm.add_argument("--data", default=None, help="data folder (default: ../shared/data/brain-tumor-mri)")
    dm.add_argument("--sizes", nargs="+", default=None, choices=("small", "medium", "large"),
                    help="size classes of the test patterns (default: the card's test rule, small)")
    dm.add_argument("--shapes", nargs="+", default=None, choices=_ALL_SHAPES,
                    help="shapes of the test patterns (default: the card's test rule, the paper's four; "
                         "ring, diamond and saltire are test-only shapes no default rule trains on)")
    dm.add_argument("--adversarial", metavar="CLASSIFIER",
                    help="also perturb the clean Testing scans with FGSM and PGD (eps 0.01; PGD alpha 0.001, 5 "
                         "steps) against this classifier checkpoint or ensemble .json and report the share the "
                         "detector flags")
    dm.add_argument("--squeeze-check", metavar="ONNX",
                    help="with --adversarial: score the same scans by this second check (card beside it) and "
                         "report both gates together")
    dm.add_argument("--adversarial-max-images", type=_positive_int("--adversarial-max-images"), default=None,
                    help="attack only this many clean Testing scans, spread evenly (default: all)")
    dm.add_argument("--out", help="also write the JSON here")
    for sp in (de, ds):
        sp.add_argument("--out", required=True, help="path of the .onnx file to write")
        sp.add_argument("--name", required=True, help="model name, e.g. pattern_detector / squeeze_check")
        sp.add_argument("--data", help="data folder: calibrate the threshold and measure (else --threshold is needed)")
        sp.add_argument("--threshold", type=_float("--threshold"), help="use this threshold instead of calibrating")
        sp.add_argument("--manifest", help="manifest.json to add the model to")
        sp.add_argument("--parity-images", type=_positive_int("--parity-images"), default=16)
        sp.add_argument("--description", help="one line for the card")
        sp.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    dt.set_defaults(func=cmd_detector)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from .events import make_writer

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    events = make_writer(args.events)
    try:
        return args.func(args, events)
    except UsageError as exc:
        events.emit("error", message=str(exc))
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    except Exception as exc:  # the GUI must always learn why a run ended
        log.exception("%s failed", args.command)
        events.emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0
