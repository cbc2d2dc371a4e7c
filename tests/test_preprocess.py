"""The one preprocessing path: every mode, every bad input, and the real scans."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from breakfix_desktop.core import preprocess as P


def _save(tmp_path, img: Image.Image, name: str, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def _check(x):
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[1], x[2])


def test_grey_8bit_is_exact(tmp_path):
    arr = np.arange(224 * 224, dtype=np.uint32).reshape(224, 224) % 256
    path = _save(tmp_path, Image.fromarray(arr.astype(np.uint8)), "g.png")
    x = P.preprocess_file(path)
    _check(x)
    np.testing.assert_array_equal(x[0], arr.astype(np.float32) / 255.0)


def test_rgb_grey_equals_l(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (224, 224), dtype=np.uint8)
    a = P.preprocess_file(_save(tmp_path, Image.fromarray(arr), "l.png"))
    b = P.preprocess_file(_save(tmp_path, Image.fromarray(arr).convert("RGB"), "rgb.png"))
    np.testing.assert_array_equal(a, b)


def test_rgba_composited_over_black(tmp_path):
    img = Image.new("RGBA", (224, 224), (200, 200, 200, 0))
    img.paste((200, 200, 200, 255), (0, 0, 112, 224))
    x = P.preprocess_file(_save(tmp_path, img, "a.png"))
    _check(x)
    assert x[0, :, :100].min() == pytest.approx(200 / 255)
    assert x[0, :, 120:].max() == 0.0


def test_palette_and_bilevel(tmp_path):
    pal = Image.fromarray(np.full((224, 224), 128, np.uint8)).convert("P")
    x = P.preprocess_file(_save(tmp_path, pal, "p.png"))
    _check(x)
    assert x[0].mean() == pytest.approx(128 / 255, abs=1 / 255)
    bw = Image.new("1", (224, 224), 1)
    _check(P.preprocess_file(_save(tmp_path, bw, "b.png")))


def test_16bit_stretched(tmp_path):
    arr = np.linspace(1000, 4000, 224 * 224).reshape(224, 224).astype(np.uint16)
    path = _save(tmp_path, Image.fromarray(arr), "d16.png")
    assert Image.open(path).mode.startswith("I")
    x = P.preprocess_file(path)
    _check(x)
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0)
    flat = P.preprocess_file(_save(tmp_path, Image.fromarray(np.full((30, 30), 7, np.uint16)), "flat.png"))
    assert flat.max() == 0.0


def test_non_square_padded_not_stretched(tmp_path):
    img = Image.new("L", (400, 200), 255)
    x = P.preprocess_file(_save(tmp_path, img, "wide.png"))
    _check(x)
    assert x[0, :50].max() == 0.0 and x[0, -50:].max() == 0.0  # black bars top/bottom
    assert x[0, 112, :].min() == pytest.approx(1.0)


def test_exif_orientation_applied(tmp_path):
    img = Image.new("L", (224, 224), 0)
    img.paste(255, (0, 0, 224, 20))  # white stripe on top
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180 degrees
    path = _save(tmp_path, img, "rot.jpg", exif=exif, quality=100)
    x = P.preprocess_file(path)
    assert x[0, -10:].mean() > 0.9 and x[0, :10].mean() < 0.1


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("empty.jpg", b"", "0 bytes"),
        ("text.png", b"this is not an image at all", "not an image"),
        ("trunc.png", None, "truncated"),
    ],
)
def test_bad_files_name_the_file(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is None:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (224, 224), dtype=np.uint8)).save(buf, "PNG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(P.PreprocessError) as err:
        P.preprocess_file(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value).lower()


def test_missing_and_directory(tmp_path):
    with pytest.raises(P.PreprocessError, match="cannot read"):
        P.preprocess_file(tmp_path / "nope.png")
    with pytest.raises(P.PreprocessError, match="directory"):
        P.preprocess_file(tmp_path)


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    path = _save(tmp_path, Image.new("L", (300, 300)), "big.png")
    monkeypatch.setattr(P, "MAX_PIXELS", 300 * 300 - 1)
    with pytest.raises(P.PreprocessError, match="safety limit"):
        P.preprocess_file(path)


def test_unicode_and_spaces_in_names(tmp_path):
    path = _save(tmp_path, Image.new("L", (224, 224), 10), "scan ünïcode 脑.png")
    _check(P.preprocess_file(path))


@pytest.mark.realdata
def test_real_scans_rgb_and_l(real_data):
    files = sorted((real_data / "Testing" / "glioma").iterdir())[:40]
    modes = set()
    for f in files:
        with Image.open(f) as im:
            modes.add(im.mode)
            ref = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        x = P.preprocess_file(f)
        _check(x)
        np.testing.assert_allclose(x[0], ref, atol=1e-6)
    assert modes <= {"L", "RGB"}
