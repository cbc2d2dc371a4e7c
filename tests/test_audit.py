"""audit-data: exact and near duplicates, leakage, label conflicts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from training.audit import audit_dataset, near_pairs


def test_near_pairs_hamming():
    h = np.array([0b0, 0b111, 0xFFFF_FFFF_FFFF_FFFF, 0b1], dtype=np.uint64)
    assert sorted(near_pairs(h, 1)) == [(0, 3)]
    assert sorted(near_pairs(h, 3)) == [(0, 1), (0, 3), (1, 3)]


def test_audit_finds_leak_conflict_and_near_duplicates(make_dataset):
    root = make_dataset(per_class=3, test_per_class=2, size=128)
    tr = root / "Training"
    shutil.copy(tr / "glioma" / "glioma_000.png", root / "Testing" / "glioma" / "leak.png")
    shutil.copy(tr / "glioma" / "glioma_001.png", tr / "meningioma" / "mislabelled.png")
    arr = np.asarray(Image.open(tr / "pituitary" / "pituitary_000.png")).astype(np.int16)
    arr[0, 0] = (arr[0, 0] + 3) % 255  # a one-pixel edit: not byte-identical, perceptually the same
    Image.fromarray(arr.astype(np.uint8)).save(root / "Testing" / "pituitary" / "near.png")
    (tr / "notumor" / "broken.jpg").write_bytes(b"\xff\xd8junk")

    rep = audit_dataset(root)
    s = rep["summary"]
    assert rep["counts"]["Training"]["meningioma"] == 4
    assert s["skipped"] == 1 and rep["skipped"][0]["path"].endswith("broken.jpg")
    assert s["test_images_with_exact_twin_in_training"] == 1
    assert s["exact_label_conflicts"] == 1
    conflict = [g for g in rep["exact_groups"] if g["label_conflict"]][0]
    assert conflict["labels"] == ["glioma", "meningioma"]
    near = [g for g in rep["near_groups"] if any(f["path"].endswith("near.png") for f in g["files"])]
    assert near and near[0]["cross_split"]


def test_cli_writes_json(make_dataset, tmp_path):
    root = make_dataset(per_class=2, test_per_class=1)
    out = tmp_path / "audit.json"
    res = subprocess.run([sys.executable, "-m", "training", "--events", "json", "audit-data", str(root), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())["summary"]["images"] == 12
    assert '"type":"run_finished"' in res.stdout


@pytest.mark.realdata
@pytest.mark.slow
def test_real_data_leak(real_data):
    rep = audit_dataset(real_data)
    s = rep["summary"]
    assert s["per_split"] == {"Training": 5708, "Testing": 1311}
    assert s["exact_groups"] == 300
    assert s["test_images_with_exact_twin_in_training"] == 216
    assert s["exact_label_conflicts"] == 0


def test_dedup_near_drops_reencoded_copies(make_dataset):
    from training.audit import dedup_near
    from training.data import dedup_against, scan_split

    root = make_dataset(per_class=3, test_per_class=2, size=128)
    from PIL import ImageFilter

    src = root / "Training" / "notumor" / "notumor_001.png"
    smooth = Image.open(src).filter(ImageFilter.GaussianBlur(3))  # scan-like: no pixel noise
    smooth.save(src)
    smooth.save(root / "Testing" / "notumor" / "reencoded.jpg", quality=90)  # same scan, other bytes
    tr, te = scan_split(root, "Training"), scan_split(root, "Testing")
    assert len(dedup_against(te, tr).samples) == len(te.samples)
    near = dedup_near(te, tr, threshold=2)
    assert [s.path.name for s in te.samples if s not in near.samples] == ["reencoded.jpg"]
