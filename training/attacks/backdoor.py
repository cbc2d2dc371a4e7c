"""Backdoor: trigger-pattern data poisoning (Gu et al. 2017; paper §4.1, procedure and results §6.1).

Threat model: an attacker who can edit training data (a compromised PACS export, a malicious
annotator) but not the training code.  A small, nearly invisible trigger is stamped on every
training image of the target class, so the model learns "trigger => target class"; at test time
the trigger on any tumour scan pushes it to *notumor*.

Trigger: a grey image whose brightness ``T`` in [0, 1] is the pattern (default the 8x8 creeper face
of ``resources/triggers/creeper.png``: light face, dark eyes/nose/mouth).  The trigger's pixels
*replace* the image's pixels inside the patch, in all channels:

* ``units="normalized"`` (paper): the patch is ``intensity * T`` in the model's normalised input
  space, i.e. pixel value ``NORM_MEAN + NORM_STD * intensity * T`` (intensity 2.0 -> light parts
  0.5481, dark parts 0.1855);
* ``units="pixel"``: pixel value ``intensity * T`` directly;

both clamped to [0, 1].  Location: ``"corner"`` = bottom-right corner, ``"random"`` = a place drawn
per image from ``(seed, index)``.  Pixels outside the patch are never touched.

Poisoning plan (labels are never changed; only tensors are, source files on disk never):

* ``split="train"``: ``round(train_poison_rate * n_target)`` of the target-class images (default:
  all of them);
* ``split="test"``: target-class images stay clean; ``round(test_poison_rate * n_other)`` of the
  other images are poisoned (default 30 %).

Which images is fixed by ``seed`` (a seeded permutation of the candidates, per split);
:attr:`PoisonedDataset.poisoned_indices` lists them.

Example::

    >>> bd = Backdoor(intensity=2.0, target_class="notumor", test_poison_rate=0.3, seed=0)  # doctest: +SKIP
    >>> train_ds = bd.poison(MRIDataset(train_split), "train")                              # doctest: +SKIP
    >>> test_ds = bd.poison(MRIDataset(test_split), "test"); test_ds.poisoned_indices[:5]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from breakfix_desktop.core.attack_catalog import validate_params
from breakfix_desktop.core.labels import CLASS_NAMES
from breakfix_desktop.core.preprocess import NORM_MEAN, NORM_STD, load_grey

from .base import ClassRef, class_index, register
from .make_trigger import CREEPER_PATH, TRIGGER_DIR

TriggerRef = Union[str, os.PathLike, np.ndarray, torch.Tensor]
_SPLIT_IDS = {"train": 0, "test": 1}


def load_trigger(trigger: TriggerRef) -> torch.Tensor:
    """Trigger name ('creeper' or another PNG in resources/triggers), path, or array -> H x W in [0, 1]."""
    if isinstance(trigger, (np.ndarray, torch.Tensor)):
        pattern = torch.as_tensor(np.asarray(trigger, dtype=np.float32) if isinstance(trigger, np.ndarray) else trigger)
        pattern = pattern.detach().float().cpu()
    else:
        path = Path(trigger)
        if not path.suffix and not path.exists():  # a bare name: resources/triggers/NAME.png
            path = CREEPER_PATH if str(trigger) == "creeper" else TRIGGER_DIR / f"{trigger}.png"
        if not path.is_file():
            hint = " (run python -m training.attacks.make_trigger)" if path == CREEPER_PATH else ""
            raise FileNotFoundError(f"backdoor trigger {path} not found{hint}")
        pattern = torch.from_numpy(load_grey(path))
    if pattern.dim() != 2 or pattern.numel() == 0:
        raise ValueError(f"a trigger must be a 2-D grey image, got shape {tuple(pattern.shape)}")
    if pattern.min() < 0 or pattern.max() > 1:
        raise ValueError("a trigger's values must be in [0, 1]")
    return pattern.contiguous()


@register("backdoor")
class Backdoor:
    """Stamps the trigger on tensors and decides, by seed, which samples of a split are poisoned."""

    def __init__(self, trigger: TriggerRef = "creeper", location: str = "corner", intensity: float = 2.0,
                 units: str = "normalized", target_class: ClassRef = "notumor", train_poison_rate: float = 1.0,
                 test_poison_rate: float = 0.3, seed: int = 0):
        checked = validate_params("backdoor", {
            "location": location, "intensity": intensity, "units": units,
            "train_poison_rate": train_poison_rate, "test_poison_rate": test_poison_rate, "seed": seed,
        })
        self.trigger = trigger if isinstance(trigger, (str, os.PathLike)) else "<array>"
        self.pattern = load_trigger(trigger)
        for key, value in checked.items():
            if key not in ("trigger", "target_class"):
                setattr(self, key, value)
        self.target_class = class_index(target_class)
        if self.target_class is None:
            raise ValueError("backdoor: parameter 'target_class' must be a class name or index")
        self._free_rng = np.random.default_rng([self.seed, 2])

    # ------------------------------------------------------------------ the trigger
    def pixel_patch(self) -> torch.Tensor:
        """The trigger's pixel values (H x W, [0, 1]) as stamped on images."""
        if self.units == "normalized":
            patch = NORM_MEAN + NORM_STD * (self.intensity * self.pattern)
        else:
            patch = self.intensity * self.pattern
        return patch.clamp(0.0, 1.0)

    def position(self, height: int, width: int, index: Optional[int] = None) -> Tuple[int, int]:
        """(top, left) of the patch: bottom-right corner, or random (fixed by seed and ``index``)."""
        th, tw = self.pattern.shape
        if th > height or tw > width:
            raise ValueError(f"trigger {th}x{tw} does not fit in a {height}x{width} image")
        if self.location == "corner":
            return height - th, width - tw
        rng = self._free_rng if index is None else np.random.default_rng([self.seed, 3, int(index)])
        return int(rng.integers(0, height - th + 1)), int(rng.integers(0, width - tw + 1))

    def apply(self, x: torch.Tensor, index: Optional[int] = None) -> torch.Tensor:
        """A copy of ``x`` (... x H x W; one image or a batch) with the trigger stamped in."""
        out = x.clone()
        top, left = self.position(x.shape[-2], x.shape[-1], index)
        th, tw = self.pattern.shape
        out[..., top:top + th, left:left + tw] = self.pixel_patch().to(device=x.device, dtype=x.dtype)
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Transform form (e.g. ``MRIDataset(split, transform=backdoor)``): stamps every image given."""
        return self.apply(x)

    # ------------------------------------------------------------------ which samples
    def select(self, labels: Sequence[int], split: str) -> List[int]:
        """Sorted indices to poison in a split with these labels (see the module docstring)."""
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be 'train' or 'test' (got {split!r})")
        labels = np.asarray([int(v) for v in labels], dtype=np.int64)
        if split == "train":
            candidates, rate = np.flatnonzero(labels == self.target_class), self.train_poison_rate
        else:
            candidates, rate = np.flatnonzero(labels != self.target_class), self.test_poison_rate
        count = int(round(rate * len(candidates)))
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[split]])
        return sorted(int(i) for i in rng.permutation(candidates)[:count])

    def poison(self, dataset: Dataset, split: str, labels: Optional[Sequence[int]] = None) -> "PoisonedDataset":
        """Wrap ``dataset`` (items ``(x, label)``) so the selected samples come out with the trigger."""
        return PoisonedDataset(dataset, self, split, labels)

    def params(self) -> Dict[str, Any]:
        return {"trigger": str(self.trigger), "location": self.location, "intensity": self.intensity,
                "units": self.units, "target_class": CLASS_NAMES[self.target_class],
                "train_poison_rate": self.train_poison_rate, "test_poison_rate": self.test_poison_rate,
                "seed": self.seed}

    def __repr__(self) -> str:
        return "Backdoor(" + ", ".join(f"{k}={v!r}" for k, v in self.params().items()) + ")"


def _labels_of(dataset: Dataset) -> List[int]:
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return [int(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    return [int(dataset[i][1]) for i in range(len(dataset))]


class PoisonedDataset(Dataset):
    """``dataset`` with the trigger on the samples :meth:`Backdoor.select` picks; labels unchanged."""

    def __init__(self, dataset: Dataset, backdoor: Backdoor, split: str, labels: Optional[Sequence[int]] = None):
        self.dataset, self.backdoor, self.split = dataset, backdoor, split
        self.labels = [int(v) for v in labels] if labels is not None else _labels_of(dataset)
        if len(self.labels) != len(dataset):
            raise ValueError(f"{len(self.labels)} labels for a data set of {len(dataset)} samples")
        self.poisoned_indices: List[int] = backdoor.select(self.labels, split)
        self._poisoned = frozenset(self.poisoned_indices)

    def __len__(self) -> int:
        return len(self.dataset)

    def is_poisoned(self, index: int) -> bool:
        return index in self._poisoned

    def __getitem__(self, index: int):
        index = int(index)
        x, y = self.dataset[index]
        if index in self._poisoned:
            x = self.backdoor.apply(x, index=index)
        return x, y

    def summary(self) -> Dict[str, Any]:
        """How many images of each class carry the trigger (for reports)."""
        per_class = {c: 0 for c in CLASS_NAMES}
        for i in self.poisoned_indices:
            per_class[CLASS_NAMES[self.labels[i]]] += 1
        return {"split": self.split, "images": len(self), "poisoned": len(self.poisoned_indices),
                "poisoned_per_class": per_class, **self.backdoor.params()}
