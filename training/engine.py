"""The training engine: seeded, checkpointed, resumable, streaming protocol events.

One :class:`Trainer` serves every recipe (clean training; attacks and defenses plug in through
``loss_fn``, ``optimizer_wrapper``, ``batch_hook`` and ``epoch_hook``, e.g. the adversarial
training and robust early stopping of :mod:`training.defenses.adversarial`, paper §5.2).  Per
batch it emits ``progress`` events (loss, accuracy, images/s); per epoch an ``epoch_end`` event
with train/test accuracy and loss, then writes a checkpoint (model, optimizer, scheduler, RNG
states, history) so ``resume`` continues exactly where a killed run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from breakfix_desktop.core.fsutil import atomic_output, atomic_write_bytes
from breakfix_desktop.core.protocol import EventWriter, NullWriter

from .metrics import classification_report

log = logging.getLogger(__name__)


#: Adversarial training methods (``TrainConfig.adv``; :mod:`training.defenses.adversarial`).
ADV_METHODS = ("fgsm", "pgd", "fast", "trades")
#: Arithmetic of the training step (``TrainConfig.precision``).
PRECISIONS = ("fp32", "bf16")


def _optional(default: Any = None, factory: Optional[Callable[[], Any]] = None):
    """A field of an optional feature: left out of :meth:`TrainConfig.to_dict` while at its default.

    Checkpoints, ``config.json`` files and model cards written before the feature existed then
    still describe the same run (drills resume a checkpoint only when the recorded config equals
    the current one), and a clean run's card is not cluttered with settings it never used.
    """
    if factory is not None:
        return field(default_factory=factory, metadata={"optional": True})
    return field(default=default, metadata={"optional": True})


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded verbatim in checkpoints and model cards).

    The defense settings (paper §5) are optional fields: ``augment`` (the §5.1 pipeline,
    :mod:`training.augment`), ``adv`` and the ``adv_*`` / ``trades_beta`` settings (§5.2
    adversarial training), ``init`` (the clean checkpoint adversarial training starts from) and the
    ``robust_val_*`` / ``patience_drop`` settings of robust early stopping.  They appear in
    :meth:`to_dict` only when they differ from their defaults.
    """

    arch: str = "cnn"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    weights: Optional[str] = None
    finetune: bool = False
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    eval_every: int = 1
    max_train_images: Optional[int] = None
    max_test_images: Optional[int] = None
    val_fraction: float = 0.1
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    # bf16: forward passes (training steps, batch hooks such as adversarial attacks, evaluations)
    # under torch.autocast in bfloat16 with the model in channels_last memory; weights, optimiser
    # state and checkpoints stay float32.  2.5-3.3x faster on a CPU with AVX-512 BF16 (benchmarks/
    # bench_precision.py); fp32 (default) is exact float32.
    precision: str = _optional("fp32")
    # -- defenses (paper §5); optional fields, see _optional ---------------------------------
    augment: bool = _optional(False)                 # §5.1 augmentation of the training split
    adv: Optional[str] = _optional(None)             # fgsm | pgd | fast | trades (§5.2)
    adv_eps: List[float] = _optional(factory=lambda: [0.001, 0.01])  # eps ~ U[min, max] per batch
    adv_alpha: Optional[float] = _optional(None)     # PGD/TRADES step; None: 2.5 * eps / steps
    adv_steps: int = _optional(5)                    # PGD/TRADES inner steps
    trades_beta: float = _optional(6.0)              # TRADES robustness weight (Zhang et al. 2019)
    init: Optional[str] = _optional(None)            # clean checkpoint.pt to start from
    force_random_init: bool = _optional(False)       # allow adversarial training from random weights
    robust_val_images: int = _optional(128)          # robust early stopping: val images (0: off)
    robust_val_steps: int = _optional(10)            # ... PGD steps of the measurement
    robust_val_eps: Optional[float] = _optional(None)  # ... its eps (None: adv_eps max)
    patience_drop: float = _optional(0.2)            # stop when robust acc < best - patience_drop

    def validate(self) -> "TrainConfig":
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ValueError(f"{name}: {msg} (got {getattr(self, name)!r})")

        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "must be an integer >= 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "must be an integer >= 1")
        need(isinstance(self.lr, (int, float)) and 0 < self.lr < 10, "lr", "must be a number in (0, 10)")
        need(isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(isinstance(self.workers, int) and self.workers >= 0, "workers", "must be an integer >= 0")
        need(isinstance(self.seed, int), "seed", "must be an integer")
        need(self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:"), "device",
             "must be auto, cpu, cuda or cuda:N")
        need(isinstance(self.plateau_patience, int) and self.plateau_patience >= 0, "plateau_patience", "must be >= 0")
        need(0 < self.plateau_factor < 1, "plateau_factor", "must be in (0, 1)")
        need(isinstance(self.eval_every, int) and self.eval_every >= 1, "eval_every", "must be >= 1")
        need(isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 0.5, "val_fraction",
             "must be in [0, 0.5)")
        for name in ("max_train_images", "max_test_images"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and v >= 1), name, "must be empty or an integer >= 1")
        need(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        from .models import ARCHITECTURES

        need(self.arch in ARCHITECTURES, "arch", f"must be one of {', '.join(ARCHITECTURES)}")
        self._validate_defenses(need)
        return self

    def _validate_defenses(self, need: Callable[[bool, str, str], None]) -> None:
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        need(isinstance(self.augment, bool), "augment", "must be true or false")
        need(self.adv is None or self.adv in ADV_METHODS, "adv", f"must be empty or one of {', '.join(ADV_METHODS)}")
        eps = self.adv_eps
        need(isinstance(eps, (list, tuple)) and len(eps) == 2 and all(number(e) for e in eps)
             and 0 < eps[0] <= eps[1] <= 1, "adv_eps", "must be [min, max] with 0 < min <= max <= 1")
        self.adv_eps = [float(eps[0]), float(eps[1])]
        need(self.adv_alpha is None or (number(self.adv_alpha) and 0 < self.adv_alpha <= 1), "adv_alpha",
             "must be empty or a number in (0, 1]")
        need(isinstance(self.adv_steps, int) and not isinstance(self.adv_steps, bool) and self.adv_steps >= 1,
             "adv_steps", "must be an integer >= 1")
        need(number(self.trades_beta) and self.trades_beta >= 0, "trades_beta", "must be a number >= 0")
        need(self.init is None or (isinstance(self.init, str) and self.init != ""), "init",
             "must be empty or the path of a checkpoint.pt")
        need(isinstance(self.force_random_init, bool), "force_random_init", "must be true or false")
        need(isinstance(self.robust_val_images, int) and not isinstance(self.robust_val_images, bool)
             and self.robust_val_images >= 0, "robust_val_images",
             "must be an integer >= 0 (0: no robust early stopping)")
        need(isinstance(self.robust_val_steps, int) and not isinstance(self.robust_val_steps, bool)
             and self.robust_val_steps >= 1, "robust_val_steps", "must be an integer >= 1")
        need(self.robust_val_eps is None or (number(self.robust_val_eps) and 0 < self.robust_val_eps <= 1),
             "robust_val_eps", "must be empty or a number in (0, 1]")
        need(number(self.patience_drop) and 0 < self.patience_drop <= 1, "patience_drop", "must be in (0, 1]")
        # Paper §5.2: "It's crucial to use a pre-trained model that has been trained exclusively on the
        # original clean data ... Without this foundation, the model might struggle to perform effectively."
        need(self.adv is None or self.init is not None or self.force_random_init, "adv",
             "adversarial training needs a model trained on clean data first (paper §5.2: 'crucial to use a "
             "pre-trained model'): pass --init CHECKPOINT (init = \"...\" in a config), or --force-random-init "
             "to start from random weights anyway")

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("optional"):
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if out[f.name] == default:
                    del out[f.name]
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``model`` over ``loader``; returns (labels, logits, mean cross-entropy)."""
    model.eval()
    ys, outs, loss_sum, n = [], [], 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
        ys.append(y.cpu())
        outs.append(logits.float().cpu())
    return torch.cat(ys).numpy(), torch.cat(outs).numpy(), loss_sum / max(n, 1)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> Dict[str, Any]:
    labels, logits, loss = predict(model, loader, device)
    report = classification_report(labels, logits.argmax(1))
    report["loss"] = loss
    return report


class Cancelled(Exception):
    pass


class Trainer:
    """Train ``model`` on ``train_loader``, evaluating on ``test_loader`` each epoch.

    Hooks for the attack/defense recipes:
      * ``loss_fn(logits, y) -> scalar`` (default cross-entropy);
      * ``optimizer_wrapper(optimizer) -> optimizer`` (e.g. DrunkOptimizer);
      * ``batch_hook(model, x, y) -> (x, y)`` (e.g. adversarial training appends attacked copies);
      * ``epoch_hook(trainer, row)`` after each epoch, once ``row`` (the epoch's history entry) is in
        :attr:`history` and before the ``epoch_end`` event and the checkpoint: it may add fields to
        ``row`` and end training with :meth:`request_stop` (e.g. robust early stopping, §5.2).

    A stop requested by the hook is recorded as ``row["early_stop"]`` (the reason), announced by a
    ``warning`` event, kept in the checkpoint's history, and honoured again after a resume.
    ``provenance`` (e.g. the clean checkpoint a run started from) is saved in checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_loader: DataLoader,
        test_loader: Optional[DataLoader] = None,
        val_loader: Optional[DataLoader] = None,
        events: Optional[EventWriter] = None,
        checkpoint_path: Optional[Path] = None,
        loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
        optimizer_wrapper: Optional[Callable[[torch.optim.Optimizer], torch.optim.Optimizer]] = None,
        batch_hook: Optional[Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple]] = None,
        progress_every: int = 1,
        should_stop: Optional[Callable[[], bool]] = None,
        epoch_hook: Optional[Callable[["Trainer", Dict[str, Any]], None]] = None,
    ):
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        if config.precision == "bf16":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_loader = train_loader
        self.test_loader = test_loader
        self.val_loader = val_loader
        self.events = events or NullWriter()
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.optimizer = optimizer_wrapper(opt) if optimizer_wrapper else opt
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
        )
        self.batch_hook = batch_hook
        self.progress_every = max(1, progress_every)
        self.should_stop = should_stop or (lambda: False)
        self.epoch = 0  # epochs completed
        self.history: List[Dict[str, Any]] = []
        self.best_test_acc: Optional[float] = None
        self.epoch_hook = epoch_hook
        self.stop_reason: Optional[str] = None
        self.provenance: Dict[str, Any] = {}
        self.keep_epochs = False  # also keep each epoch's checkpoint as epochN.pt beside checkpoint.pt

    def autocast(self):
        """The context the model's forward passes run in: bfloat16 autocast for ``precision`` bf16,
        else a no-op (float32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

    def request_stop(self, reason: str) -> None:
        """End training after the current epoch (its checkpoint is still written); ``reason`` is recorded."""
        self.stop_reason = str(reason)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        return {
            "format": "breakfix-checkpoint/1",
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "rng": _rng_state(),
            "provenance": self.provenance,
        }

    def save_checkpoint(self, path: Optional[Path] = None) -> Path:
        path = Path(path or self.checkpoint_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, mode=None) as tmp:  # a kill mid-write never leaves a broken checkpoint
            torch.save(self.state_dict(), tmp)
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("format") != "breakfix-checkpoint/1":
            raise ValueError(f"{path}: not a BreakFix checkpoint")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.provenance = dict(state.get("provenance") or {})
        self.stop_reason = next((h["early_stop"] for h in self.history if h.get("early_stop")), None)
        _set_rng_state(state["rng"])
        log.info("resumed from %s after epoch %d", path, self.epoch)

    # ------------------------------------------------------------------ loop
    def prepare_batch(self, batch):
        """A loader batch on the device, through ``batch_hook`` (e.g. adversarial copies appended).

        Subclasses with other batch layouts (the pattern detector's ``(x, y, mask)``) override this
        and :meth:`compute_loss`; the rest of the epoch loop is shared."""
        x, y = batch
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.batch_hook is not None:
            x, y = self.batch_hook(self.model, x, y)
            self.model.train()
        return x, y

    def compute_loss(self, inputs):
        """``(loss, logits, labels)`` of one prepared batch (gradients are zeroed before)."""
        x, y = inputs
        logits = self.model(x)
        return self.loss_fn(logits, y), logits, y

    def train_epoch(self) -> Dict[str, float]:
        self.model.train()
        epoch = self.epoch + 1
        total = len(self.train_loader)
        loss_sum, correct, seen = 0.0, 0, 0
        t0 = time.perf_counter()
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for step, batch in enumerate(self.train_loader, start=1):
            if self.should_stop():
                raise Cancelled()
            with self.autocast():
                inputs = self.prepare_batch(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss, logits, y = self.compute_loss(inputs)
            loss.backward()
            self.optimizer.step()
            batch_loss = loss.detach().item()
            batch_correct = (logits.detach().argmax(1) == y).sum().item()
            loss_sum += batch_loss * len(y)
            correct += batch_correct
            seen += len(y)
            if step % self.progress_every == 0 or step == total:
                elapsed = time.perf_counter() - t0
                self.events.emit(
                    "progress", phase="train", epoch=epoch, step=step, total=total,
                    loss=batch_loss, acc=batch_correct / len(y),
                    images_per_s=seen / elapsed if elapsed > 0 else None,
                )
        return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                "train_seconds": time.perf_counter() - t0}

    def fit(self) -> List[Dict[str, Any]]:
        cfg = self.config
        if self.stop_reason:
            log.info("not training further: stopped early before (%s)", self.stop_reason)
        while self.epoch < cfg.epochs and not self.stop_reason:
            stats = self.train_epoch()
            self.epoch += 1
            test = val = None
            due = self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs
            with self.autocast():
                if self.val_loader is not None:
                    val = evaluate(self.model, self.val_loader, self.device)
                if self.test_loader is not None and due:
                    test = evaluate(self.model, self.test_loader, self.device)
            # The LR schedule watches the validation split carved from Training, never the test split.
            monitor = val["accuracy"] if val else stats["train_acc"]
            self.scheduler.step(monitor)
            lr = self.optimizer.param_groups[0]["lr"]
            row = {
                "epoch": self.epoch,
                **stats,
                "val_loss": val["loss"] if val else None,
                "val_acc": val["accuracy"] if val else None,
                "test_loss": test["loss"] if test else None,
                "test_acc": test["accuracy"] if test else None,
                "lr": lr,
            }
            self.history.append(row)
            if self.epoch_hook is not None:
                self.epoch_hook(self, row)
            if self.stop_reason:
                row["early_stop"] = self.stop_reason
            self.events.emit("epoch_end", **row)
            log.info(
                "epoch %d/%d  train loss %.4f acc %.4f  test %s  lr %.2e  (%.0fs)",
                self.epoch, cfg.epochs, stats["train_loss"], stats["train_acc"],
                f"loss {test['loss']:.4f} acc {test['accuracy']:.4f}" if test else "-", lr, stats["train_seconds"],
            )
            if self.checkpoint_path:
                self.save_checkpoint()
                self.events.emit("artifact_written", kind="checkpoint", path=str(self.checkpoint_path))
                if self.keep_epochs:  # the trajectory, e.g. for weight averaging (python -m training average)
                    kept = self.checkpoint_path.with_name(f"epoch{self.epoch}.pt")
                    shutil.copyfile(self.checkpoint_path, kept)
                    self.events.emit("artifact_written", kind="epoch_checkpoint", path=str(kept))
            if self.stop_reason:
                log.warning("stopping after epoch %d: %s", self.epoch, self.stop_reason)
                self.events.emit("warning", message=f"early stop after epoch {self.epoch}: {self.stop_reason}",
                                 epoch=self.epoch)
        return self.history


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation seeded by (seed, epoch): a resumed run sees the same order as an unbroken one."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(dataset, batch_size: int, shuffle: bool, workers: int, seed: int) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, sampler=EpochShuffle(len(dataset), seed) if shuffle else None,
        num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
    )


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"))
