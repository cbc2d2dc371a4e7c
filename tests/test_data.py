"""Data layout scanning, bad-file handling, dedup and fingerprints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from training import data as D


def test_scan_class_order_and_counts(make_dataset):
    root = make_dataset(per_class=3, test_per_class=2)
    tr = D.scan_split(root, "Training")
    assert [s.class_name for s in tr.samples] == ["glioma"] * 3 + ["meningioma"] * 3 + ["notumor"] * 3 + ["pituitary"] * 3
    assert tr.counts() == {"glioma": 3, "meningioma": 3, "notumor": 3, "pituitary": 3}
    assert tr.skipped == []


def test_bad_files_are_skipped_counted_and_named(make_dataset):
    root = make_dataset(per_class=3, test_per_class=2)
    g = root / "Training" / "glioma"
    (g / "empty.jpg").write_bytes(b"")
    (g / "fake.png").write_text("not a png")
    good = (g / "glioma_000.png").read_bytes()
    (g / "trunc.png").write_bytes(good[: len(good) // 3])
    (g / "notes.txt").write_text("hello")
    (root / "Training" / "astrocytoma").mkdir()
    seen = []
    split = D.scan_split(root, "Training", on_skip=lambda p, r: seen.append((p, r)))
    assert any("astrocytoma" in p and "unknown class folder" in r for p, r in seen)
    assert any(p.endswith("notes.txt") for p, _ in seen)
    ds = D.MRIDataset(split, on_skip=lambda p, r: seen.append((p, r)))
    assert len(ds) == 12  # the three broken images are left out, the run goes on
    names = {d["path"].split("/")[-1] for d in ds.skipped}
    assert {"empty.jpg", "fake.png", "trunc.png", "notes.txt", "astrocytoma"} <= names
    x, y = ds[0]
    assert x.shape == (3, 224, 224) and float(x.max()) <= 1.0 and int(y) == 0


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(D.DataLayoutError, match="Training"):
        D.scan_split(tmp_path, "Training")


def test_dedup_removes_byte_identical_test_images(make_dataset):
    root = make_dataset(per_class=2, test_per_class=2)
    shutil.copy(root / "Training" / "glioma" / "glioma_000.png", root / "Testing" / "glioma" / "leak.png")
    tr, te = D.scan_split(root, "Training"), D.scan_split(root, "Testing")
    dd = D.dedup_against(te, tr)
    assert len(dd.samples) == len(te.samples) - 1
    assert all(s.path.name != "leak.png" for s in dd.samples)


def test_fingerprint_is_stable_and_content_sensitive(make_dataset, tmp_path):
    root = make_dataset(per_class=2, test_per_class=1)
    a = D.fingerprint(D.scan_split(root, "Training"))
    assert a == D.fingerprint(D.scan_split(root, "Training"))
    p = root / "Training" / "notumor" / "notumor_000.png"
    p.write_bytes(p.read_bytes() + b"\0")
    assert D.fingerprint(D.scan_split(root, "Training"))["sha256"] != a["sha256"]


@pytest.mark.realdata
def test_real_layout_counts(real_data):
    tr, te = D.scan_split(real_data, "Training"), D.scan_split(real_data, "Testing")
    assert tr.counts() == {"glioma": 1321, "meningioma": 1339, "notumor": 1591, "pituitary": 1457}
    assert te.counts() == {"glioma": 300, "meningioma": 306, "notumor": 405, "pituitary": 300}  # + 1 Jupyter checkpoint copy, ignored
    assert tr.skipped == [] and te.skipped == []
