"""DICOM in the one preprocessing path: windowing, rescale, MONOCHROME1, frames, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from breakfix_desktop.core import preprocess as P


def ramp(dtype=np.uint16, size=64, top=4095):
    return (np.arange(size * size, dtype=np.float64).reshape(size, size) / (size * size - 1) * top).round().astype(dtype)


def test_8bit_monochrome2_is_pixel_over_255(tmp_path, dicom_writer):
    arr = np.arange(224 * 224, dtype=np.uint32).reshape(224, 224) % 256
    path = dicom_writer(tmp_path / "a.dcm", arr.astype(np.uint8))
    grey = P.load_grey(path)
    # no window: the values are stretched from their own min (0) to max (255) -> pixel / 255
    np.testing.assert_allclose(grey, arr / 255.0, atol=1e-6)
    x = P.preprocess_file(path)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and np.array_equal(x[0], x[2])


def test_16bit_uses_the_files_window(tmp_path, dicom_writer):
    arr = ramp()
    path = dicom_writer(tmp_path / "w.dcm", arr, window=(1000, 501))
    grey = P.load_grey(path)
    # DICOM LINEAR window: centre c - 0.5 = 999.5, width w - 1 = 500 -> (749.5, 1249.5] maps to (0, 1]
    assert grey[arr <= 749].max() == 0.0
    assert grey[arr >= 1250].min() == 1.0
    inside = (arr >= 750) & (arr <= 1249)
    expected = ((arr[inside] - 999.5) / 500 + 0.5)
    np.testing.assert_allclose(grey[inside], expected, atol=1e-5)
    # the window is really applied: without it the same pixels stretch over the full range
    plain = P.load_grey(dicom_writer(tmp_path / "plain.dcm", arr))
    assert plain[arr == 4095].max() == 1.0 and plain[arr == 1000].max() == pytest.approx(1000 / 4095, abs=1e-3)


def test_rescale_slope_intercept_before_window(tmp_path, dicom_writer):
    arr = ramp(np.uint16, top=2000)
    # stored value v means 2v - 1000 (e.g. Hounsfield-like units); the window is in those units
    path = dicom_writer(tmp_path / "r.dcm", arr, rescale=(2, -1000), window=(0, 1001))
    grey = P.load_grey(path)
    units = arr * 2.0 - 1000
    assert grey[units <= -501].max() == 0.0 and grey[units > 500].min() == 1.0
    mid = np.abs(units) < 100
    np.testing.assert_allclose(grey[mid], (units[mid] + 0.5) / 1000 + 0.5, atol=1e-5)


def test_monochrome1_is_inverted(tmp_path, dicom_writer):
    arr = ramp(np.uint8, top=255)
    m2 = P.load_grey(dicom_writer(tmp_path / "m2.dcm", arr))
    m1 = P.load_grey(dicom_writer(tmp_path / "m1.dcm", arr, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] == 1.0  # stored 0 is white in MONOCHROME1


def test_multi_frame_gives_frames(tmp_path, dicom_writer):
    frames = np.stack([ramp(np.uint8, 32, 255) // (k + 1) for k in range(3)]).astype(np.uint8)
    frames[1, 0, 0] = 255
    path = dicom_writer(tmp_path / "multi.dcm", frames, frames=3)
    assert P.frame_count(path) == 3
    greys = list(P.load_frames(path))
    assert len(greys) == 3 and all(g.shape == (32, 32) for g in greys)
    assert not np.array_equal(greys[0], greys[2])
    with pytest.raises(P.PreprocessError, match="3 frames"):
        P.preprocess_file(path)
    x1 = P.preprocess_file(path, frame=1)
    np.testing.assert_array_equal(x1, list(P.preprocess_frames(path))[1])
    with pytest.raises(P.PreprocessError, match="frame 7 does not exist"):
        P.preprocess_file(path, frame=7)


def test_extensionless_file_with_dicm_marker(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "IM0001", ramp(np.uint8, 32, 255))
    assert P.has_dicom_magic(path) and P.is_dicom(path)
    assert P.preprocess_file(path).shape == (3, 224, 224)


def test_patient_identifiers_are_separate(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "p.dcm", ramp(np.uint8, 32, 255),
                        patient={"name": "Müller^Anna", "id": "X-42", "birth_date": "19800229"})
    assert P.read_patient_identifiers(path) == {
        "patient_name": "Müller^Anna", "patient_id": "X-42", "patient_birth_date": "19800229"}
    png = tmp_path / "a.png"
    from PIL import Image

    Image.new("L", (8, 8)).save(png)
    assert P.read_patient_identifiers(png) == {}


def test_no_pixel_data(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "nopix.dcm", np.zeros((32, 32), np.uint8), pixel_data=False)
    with pytest.raises(P.PreprocessError) as err:
        P.preprocess_file(path)
    assert str(path) in str(err.value) and "no pixel data" in str(err.value)


def test_unsupported_transfer_syntax(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "jls.dcm", np.zeros((32, 32), np.uint8), transfer_syntax="1.2.840.10008.1.2.4.80")
    with pytest.raises(P.PreprocessError) as err:
        P.preprocess_file(path)
    msg = str(err.value)
    assert str(path) in msg and "JPEG-LS" in msg and "no decoder" in msg


def test_truncated_pixel_data(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "t.dcm", ramp(np.uint16, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(P.PreprocessError) as err:
        P.preprocess_file(path)
    assert str(path) in str(err.value)


def test_pixel_cap_applies_to_dicom(tmp_path, dicom_writer, monkeypatch):
    path = dicom_writer(tmp_path / "big.dcm", np.zeros((100, 100), np.uint8))
    monkeypatch.setattr(P, "MAX_PIXELS", 100 * 100 - 1)
    with pytest.raises(P.PreprocessError, match="safety limit"):
        P.preprocess_file(path)


@pytest.mark.parametrize("content", [b"not dicom at all, just text" * 10, b"\0" * 200])
def test_dcm_name_without_dicom_content(tmp_path, content):
    path = tmp_path / "fake.dcm"
    path.write_bytes(content)
    with pytest.raises(P.PreprocessError) as err:
        P.preprocess_file(path)
    assert str(path) in str(err.value)


def test_pipe_is_not_read(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    os.mkfifo(fifo)
    with pytest.raises(P.PreprocessError, match="not a regular file"):
        P.preprocess_file(fifo)
