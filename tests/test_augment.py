"""The §5.1 augmentation pipeline: contract (shape, range, grey stays grey), seeded determinism,
real randomness, the training-split-only wiring, and the augment-grid picture."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from training.augment import PAPER_AUGMENTATION, augmentation_grid, build_augmentation


def _scan(seed=0):
    g = torch.Generator().manual_seed(seed)
    grey = torch.rand(224, 224, generator=g)
    return grey.unsqueeze(0).expand(3, -1, -1)  # as MRIDataset hands it out (a stride-0 view)


def test_pipeline_is_the_papers():
    steps = [t for t in build_augmentation().transforms if type(t).__module__.startswith("torchvision")]
    assert [type(t).__name__ for t in steps] == [d["op"] for d in PAPER_AUGMENTATION]
    hflip, vflip, rot, jitter, crop, erase = steps
    assert hflip.p == vflip.p == 0.5
    assert list(rot.degrees) == [-15.0, 15.0] and rot.interpolation == InterpolationMode.NEAREST
    assert jitter.brightness == jitter.contrast == jitter.saturation == pytest.approx((0.8, 1.2))
    assert jitter.hue == pytest.approx((-0.1, 0.1))
    assert list(crop.size) == [224, 224] and crop.scale == (0.8, 1.0) and crop.antialias
    assert erase.p == 0.5 and erase.scale == (0.02, 0.2) and erase.ratio == (0.3, 3.3)
    assert not any(isinstance(t, T.Normalize) for t in steps)  # normalisation stays inside the model


def test_output_shape_range_and_grey_channels():
    aug = build_augmentation()
    x = _scan()
    before = x.clone()
    torch.manual_seed(0)
    for _ in range(40):
        y = aug(x)
        assert y.shape == (3, 224, 224) and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])  # a grey scan stays grey
    assert torch.equal(x, before)  # the cached input is never written through


def test_seeded_runs_are_identical_and_draws_differ():
    aug, x = build_augmentation(), _scan(1)
    torch.manual_seed(123)
    a = [aug(x) for _ in range(3)]
    torch.manual_seed(123)
    b = [aug(x) for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], a[1])  # consecutive draws are different augmentations
    torch.manual_seed(124)
    assert not torch.equal(aug(x), a[0])
    assert not any(torch.equal(p, x) for p in a)  # never the identity (the crop alone resamples)


def test_grid_has_one_row_per_image_original_first():
    imgs = torch.stack([_scan(i) for i in range(2)])
    torch.manual_seed(0)
    grid = augmentation_grid(imgs, copies=2, padding=4)
    assert grid.shape == (3, 2 * 224 + 3 * 4, 3 * 224 + 4 * 4)
    assert torch.equal(grid[:, 4:228, 4:228], imgs[0])  # top-left tile is the untouched original
    assert torch.equal(grid[:, 232:456, 4:228], imgs[1])


def test_training_split_only(make_dataset, tmp_path):
    """train --augment: the training set gets the pipeline, the recorded config says so."""
    import json

    root = make_dataset(per_class=3, test_per_class=1)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[train]\narch = "cnn"\nbatch_size = 6\nval_fraction = 0.25\ndevice = "cpu"\n'
                   'model_kwargs = { blocks = 2, width = 4, hidden = 16, pool = 4, dropout = 0.0 }\n')
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "training", "--events", "json", "train", "--data", str(root),
                          "--out", str(out), "--config", str(cfg), "--epochs", "1", "--augment", "--threads", "1"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["augment"] is True
    assert "augmenting the training split" in res.stderr
    # a clean run's recorded config does not mention the optional defense settings at all
    from training.engine import TrainConfig

    assert "augment" not in TrainConfig().to_dict() and "adv" not in TrainConfig().to_dict()
    assert TrainConfig(augment=True).to_dict()["augment"] is True


def test_augment_grid_command_writes_a_picture(make_dataset, tmp_path):
    root = make_dataset(per_class=2, test_per_class=1)
    out = tmp_path / "figs" / "grid.png"
    res = subprocess.run([sys.executable, "-m", "training", "--events", "json", "augment-grid", "--data", str(root),
                          "--out", str(out), "--n", "4", "--copies", "2", "--seed", "3"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    img = np.asarray(Image.open(out))
    # 4 rows (scans) x 3 tiles (original + 2 copies) of 224 px, padding 4
    assert img.shape == (4 * 228 + 4, 3 * 228 + 4, 3), img.shape
    assert img.dtype == np.uint8 and img[4:228, 4:228].std() > 0  # a real scan tile, not blank
    again = tmp_path / "again.png"
    subprocess.run([sys.executable, "-m", "training", "--events", "none", "augment-grid", "--data", str(root),
                    "--out", str(again), "--n", "4", "--copies", "2", "--seed", "3"], check=True, capture_output=True)
    assert np.array_equal(np.asarray(Image.open(again)), img)  # same seed, same picture
