"""The data augmentation pipeline of the paper (§5.1), with ``torchvision.transforms.v2``.

Applied per training image, on the fly, to the decoded ``3 x 224 x 224`` float tensor in [0, 1]
(:class:`~training.data.MRIDataset` ``transform=``); validation and test images are never
augmented.  The steps, in the paper's order and with its parameters:

=========================  ================================================================
RandomHorizontalFlip(0.5)  mirror left-right with probability 0.5
RandomVerticalFlip(0.5)    mirror top-bottom with probability 0.5
RandomRotation(15)         angle uniform in [-15, 15] degrees, NEAREST interpolation,
                           uncovered corners filled with 0 (black, like the scan background)
ColorJitter(.2,.2,.2,.1)   brightness/contrast/saturation x U[0.8, 1.2], hue + U[-0.1, 0.1]
                           (on a grey scan replicated to 3 channels saturation and hue change
                           nothing; they are kept because the paper lists them)
RandomResizedCrop(224)     a crop of 80-100 % of the area (aspect 3/4..4/3, torchvision's
                           default) resized back to 224 x 224, bilinear with antialiasing
RandomErasing(0.5)         with probability 0.5 one rectangle of 2-20 % of the area, aspect
                           0.3..3.3, set to 0
=========================  ================================================================

The paper's last step, ``Normalize(mean=0.1855, std=0.1813)``, is deliberately **not** here:
every model of :mod:`training.models` normalises inside (its first op), so augmented pixels stay
on the [0, 1] scale the app, the attacks and the exported ONNX graphs use.

Every step only interpolates, blends towards values in [0, 1] or writes 0, and ColorJitter clamps,
so the output stays in [0, 1] (tests check it over many draws).  The randomness comes from torch's
global generator, so ``torch.manual_seed(s)`` (``seed_everything`` in the trainer) makes a run
reproducible, and the trainer's checkpoints (which store the RNG state) resume it exactly.

Example::

    >>> aug = build_augmentation()
    >>> x = torch.rand(3, 224, 224)
    >>> aug(x).shape
    torch.Size([3, 224, 224])
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from breakfix_desktop.core.preprocess import IMAGE_SIZE

#: The pipeline as data (recorded in run configs and docs); :func:`build_augmentation` builds it.
PAPER_AUGMENTATION: List[Dict[str, Any]] = [
    {"op": "RandomHorizontalFlip", "p": 0.5},
    {"op": "RandomVerticalFlip", "p": 0.5},
    {"op": "RandomRotation", "degrees": 15, "interpolation": "nearest", "fill": 0},
    {"op": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
    {"op": "RandomResizedCrop", "size": IMAGE_SIZE, "scale": [0.8, 1.0], "antialias": True},
    {"op": "RandomErasing", "p": 0.5, "scale": [0.02, 0.2], "ratio": [0.3, 3.3], "value": 0},
]


class _Contiguous(torch.nn.Module):
    """MRIDataset hands out the grey channel *expanded* to 3 (a stride-0 view); copy it once so no
    later step can write through the view into the cached data set."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()


def build_augmentation(size: int = IMAGE_SIZE) -> T.Compose:
    """The §5.1 pipeline: ``3 x H x W`` float in [0, 1] -> ``3 x size x size`` float in [0, 1]."""
    return T.Compose([
        _Contiguous(),
        T.RandomHorizontalFlip(p=0.5),
        T.RandomVerticalFlip(p=0.5),
        T.RandomRotation(15, interpolation=InterpolationMode.NEAREST, fill=0),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
        T.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True),
        T.RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0),
    ])


def augmentation_grid(images: torch.Tensor, copies: int = 3, padding: int = 4) -> torch.Tensor:
    """One row per image: the original, then ``copies`` independently augmented versions.

    ``images`` is ``N x 3 x H x W`` in [0, 1]; returns the ``3 x H' x W'`` grid of
    ``torchvision.utils.make_grid`` (white padding between tiles).
    """
    from torchvision.utils import make_grid

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be N x 3 x H x W, got {tuple(images.shape)}")
    if copies < 1:
        raise ValueError(f"copies must be >= 1 (got {copies})")
    aug = build_augmentation(images.shape[-1])
    tiles = []
    for img in images:
        tiles.append(img)
        tiles.extend(aug(img) for _ in range(copies))
    return make_grid(torch.stack(tiles), nrow=copies + 1, padding=padding, pad_value=1.0)


def save_grid(grid: torch.Tensor, path) -> None:
    """Write a ``3 x H x W`` [0, 1] grid as an 8-bit RGB PNG (or any format PIL infers from the name)."""
    from pathlib import Path

    from PIL import Image

    arr = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)  # H x W x 3 uint8 -> RGB
