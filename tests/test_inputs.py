"""Input discovery: folders, extensions, hidden files, order, DICOM frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from breakfix_desktop.core.inputs import InputItem, discover, is_supported_file


def img(path, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), 40).save(path)
    return path


def test_recursive_filtered_sorted(tmp_path, dicom_writer):
    root = tmp_path / "scans"
    files = [img(root / "b.png"), img(root / "A.JPG", 8), img(root / "sub dir" / "c.bmp"),
             img(root / "sub dir" / "deep" / "d.tif"), img(root / "ünï 脑.tiff")]
    dicom_writer(root / "e.dcm", np.zeros((8, 8), np.uint8))
    dicom_writer(root / "sub dir" / "IM0001", np.zeros((8, 8), np.uint8))  # extensionless, DICM marker
    (root / "notes.txt").write_text("not a scan")
    (root / "README").write_text("extensionless, no DICM marker")
    img(root / ".hidden.png")
    img(root / ".cache" / "x.png")
    found = discover([root])
    rel = [it.path.relative_to(root).as_posix() for it in found.items]
    assert rel == ["A.JPG", "b.png", "e.dcm", "sub dir/c.bmp", "sub dir/deep/d.tif", "sub dir/IM0001", "ünï 脑.tiff"]
    assert all(it.frame is None for it in found.items) and found.missing == []
    assert discover([root]).items == found.items  # deterministic
    assert set(files) <= set(found.files)


def test_explicit_files_kept_in_order_and_deduplicated(tmp_path):
    a, b = img(tmp_path / "a.png"), img(tmp_path / "b.png")
    odd = tmp_path / "report.txt"
    odd.write_text("named explicitly: screened (and will get an error verdict)")
    found = discover([b, odd, a, tmp_path / "a.png", tmp_path / "missing.png"])
    assert [it.path for it in found.items] == [b, odd, a]
    assert found.missing == [tmp_path / "missing.png"]


def test_multi_frame_dicom_expands(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "cine.dcm", np.zeros((4, 8, 8), np.uint8), frames=4)
    found = discover([tmp_path])
    assert found.items == [InputItem(path, f) for f in range(4)]
    assert found.items[2].display_name == "cine.dcm [frame 2]"
    assert discover([path], expand_frames=False).items == [InputItem(path, None)]


def test_broken_dicom_stays_one_item(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 10)
    assert discover([tmp_path]).items == [InputItem(bad, None)]


def test_pipes_and_empty_folders(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    os.mkfifo(tmp_path / "pipe.png")
    assert not is_supported_file(tmp_path / "pipe.png")
    (tmp_path / "empty").mkdir()
    assert discover([tmp_path]).items == []
