"""``python -m training`` - the PyTorch backend's command line.

Subcommands: ``train``, ``evaluate``, ``export``, ``audit-data``, ``drill`` (each has ``--help``).
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


def _stratified_holdout(split, fraction: float, seed: int):
    import numpy as np

    if fraction <= 0:
        return split, None
    rng = np.random.default_rng(seed + 1)
    labels = split.labels()
    val_idx: List[int] = []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        val_idx += rng.permutation(idx)[: max(1, int(round(len(idx) * fraction)))].tolist()
    val_set = set(val_idx)
    train_idx = [i for i in range(len(split.samples)) if i not in val_set]
    train, val = split.subset(train_idx), split.subset(sorted(val_idx))
    val.name = f"{split.name}-val"
    return train, val


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
    }
    cfg_data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = TrainConfig.from_dict(cfg_data).validate()
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc

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
    train_split, val_split = _stratified_holdout(train_split, config.val_fraction, config.seed)
    log.info("decoding %d training, %d validation, %d test images", len(train_split.samples),
             len(val_split.samples) if val_split else 0, len(test_split.samples))
    train_ds = D.MRIDataset(train_split, on_skip=on_skip)
    val_ds = D.MRIDataset(val_split, on_skip=on_skip) if val_split else None
    test_ds = D.MRIDataset(test_split, on_skip=on_skip) if not args.no_eval else None

    model = build_model(config.arch, weights=config.weights, finetune=config.finetune, **config.model_kwargs)
    log.info("%s: %d parameters (%d trainable)", config.arch, count_parameters(model), count_parameters(model, True))
    trainer = Trainer(
        model, config,
        make_loader(train_ds, config.batch_size, True, config.workers, config.seed),
        make_loader(test_ds, 128, False, config.workers, config.seed) if test_ds else None,
        val_loader=make_loader(val_ds, 128, False, config.workers, config.seed) if val_ds else None,
        events=events, checkpoint_path=ckpt, progress_every=args.progress_every,
    )
    if args.resume and ckpt.exists():
        trainer.load_checkpoint(ckpt)
        prev = trainer.state_dict()["config"]
        for key in ("arch", "seed", "batch_size", "model_kwargs"):
            if prev.get(key) != config.to_dict()[key]:
                raise UsageError(f"--resume: {key} differs from the checkpoint ({prev.get(key)!r} vs {config.to_dict()[key]!r})")
    write_json(out / "config.json", {**config.to_dict(), "data": str(root)})
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
    events.emit("run_finished", status="ok", summary=summary)
    return 0


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


def evaluate_onnx(onnx_path: Path, grey, batch: int = 64):
    """Logits of an ONNX classifier over grey N x 224 x 224 arrays (through onnxruntime, CPU)."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outs = []
    for i in range(0, len(grey), batch):
        x = np.repeat(grey[i : i + batch, None], 3, axis=1)
        outs.append(sess.run(["logits"], {"pixels": x})[0])
    return np.concatenate(outs)


def evaluate_sets(sets, model=None, onnx_path=None, device="cpu", events=None):
    """Classification report per named split, through torch (``model``) or onnxruntime (``onnx_path``)."""
    from . import data as D
    from .metrics import classification_report

    reports = {}
    for name, split in sets.items():
        grey, labels, kept = D.load_arrays(split, on_skip=_skip_reporter(events) if events else None)
        if onnx_path is not None:
            logits = evaluate_onnx(Path(onnx_path), grey)
        else:
            import torch

            from .engine import make_loader, predict

            ds = torch.utils.data.TensorDataset(torch.from_numpy(grey).unsqueeze(1).expand(-1, 3, -1, -1),
                                                torch.from_numpy(labels))
            _, logits, _ = predict(model, make_loader(ds, 128, False, 0, 0), torch.device(device))
        rep = classification_report(labels, logits.argmax(1))
        rep["skipped"] = len(kept.skipped) - len(split.skipped)
        reports[name] = rep
    return reports


def _load_checkpoint_model(path: Path):
    import torch

    from .models import build_model

    if not path.is_file():
        raise UsageError(f"--checkpoint: {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != "breakfix-checkpoint/1":
        raise UsageError(f"--checkpoint: {path} is not a BreakFix checkpoint")
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
def cmd_export(args, events) -> int:
    import numpy as np

    from . import data as D
    from .export import export_onnx, parity, update_manifest, write_card
    from .metrics import format_report

    model, state = _load_checkpoint_model(Path(args.checkpoint))
    cfg = state["config"]
    out = Path(args.out)
    events.emit("run_started", run_id=uuid.uuid4().hex[:12], command="export",
                config={"checkpoint": args.checkpoint, "out": str(out), "name": args.name})
    export_onnx(model, out)
    events.emit("artifact_written", kind="onnx", path=str(out))
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
        reports = evaluate_sets({"test": test, "test_dedup": dedup, "test_dedup_near": near}, onnx_path=out, events=events)
        for name, rep in reports.items():
            events.emit("metrics", split=name, report=rep)
            print(format_report(rep, f"== {args.name} on {name} (onnxruntime) =="), file=sys.stderr)
        grey, _, _ = D.load_arrays(test.subset(np.linspace(0, len(test.samples) - 1, args.parity_images).astype(int).tolist()))
        par = parity(model, out, np.repeat(grey[:, None], 3, axis=1))
        log.info("parity onnxruntime vs torch: max |dlogit| %.2e on %d real images", par["max_abs_logit_diff"], par["images"])
        if par["max_abs_logit_diff"] > 1e-4:
            raise RuntimeError(f"parity check failed: max |logit difference| {par['max_abs_logit_diff']:.3e} > 1e-4")
        metrics = {**reports, "parity": par,
                   "history": state.get("history", [])}
    card = write_card(out, name=args.name, role=args.role, architecture=cfg["arch"],
                      training={**cfg, "epochs_done": state["epoch"]}, data=data_info, metrics=metrics,
                      extra={"description": args.description} if args.description else None)
    events.emit("artifact_written", kind="card", path=str(card))
    if args.manifest:
        update_manifest(Path(args.manifest), card)
        events.emit("artifact_written", kind="manifest", path=str(args.manifest))
    events.emit("run_finished", status="ok", summary={"onnx": str(out), "card": str(card)})
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
            for r in listing["recipes"]:
                print(f"{r['name']:<26}{r['paper']:<16}{r['summary']}")
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
    t.add_argument("--weights", help="local ImageNet weights file for ResNets (never downloaded)")
    t.add_argument("--finetune", action="store_true", help="ResNets: train only layer4 + fc (paper's ResNet-50 setting)")
    t.add_argument("--max-train-images", type=_positive_int("--max-train-images"), help="stratified subset (quick runs)")
    t.add_argument("--max-test-images", type=_positive_int("--max-test-images"))
    t.add_argument("--val-fraction", type=_float("--val-fraction"),
                   help="share of Training held out for the LR schedule (default 0.1; never the test split)")
    t.add_argument("--no-eval", action="store_true", help="skip the per-epoch test evaluation")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
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

    x = sub.add_parser("export", help="export a checkpoint to ONNX with a model card",
                       description="ONNX (normalisation inside, input 'pixels' Nx3x224x224 in [0,1], output 'logits'), "
                                   "parity check vs torch on real images, card with metrics and SHA-256, manifest entry.")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True, help="path of the .onnx file to write")
    x.add_argument("--name", required=True, help="model name, e.g. cnn_clean")
    x.add_argument("--role", default="classifier", choices=["classifier", "detector", "ensemble", "check"])
    x.add_argument("--description", help="one line for the card")
    x.add_argument("--data", help="data folder: adds metrics, fingerprint and the parity check to the card")
    x.add_argument("--manifest", help="manifest.json to add the model to")
    x.add_argument("--parity-images", type=_positive_int("--parity-images"), default=64)
    x.set_defaults(func=cmd_export)

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
