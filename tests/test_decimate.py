"""PeakDecimator: incremental min/max decimation keeps the envelope with a bounded point count."""

import numpy as np
import pytest

from breakfix_desktop.core.decimate import PeakDecimator

CAP = 64


def brute_blocks(x, y, size):
    """(x, y) of the min and max of every complete block of ``size`` points (first occurrence)."""
    out = []
    for s in range(0, len(y) - len(y) % size, size):
        by = y[s:s + size]
        lo, hi = s + int(np.nanargmin(by)), s + int(np.nanargmax(by))
        out += [(x[lo], y[lo]), (x[hi], y[hi])]
    return out


def series(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 20, n)) if n else np.empty(0)
    y = rng.normal(0, 1, n).cumsum() + rng.standard_cauchy(n) * 0.1
    return x, y


def check(dec, x, y, cap):
    vx, vy = dec.view()
    n = len(x)
    assert len(vx) == len(vy) and len(dec) == n
    assert np.all(np.diff(vx) >= 0)  # x monotone
    assert len(vx) <= 2 * cap + 2 + dec.block_size
    if n <= cap:  # short histories: exactly the data
        assert dec.block_size == 1
        np.testing.assert_array_equal(vx, x)
        np.testing.assert_array_equal(vy, y)
        return
    assert cap // 2 <= dec.blocks <= cap
    assert len(vx) < n or n <= 2 * cap + 2
    shown = set(zip(vx.tolist(), vy.tolist()))
    assert (x[np.argmin(y)], y.min()) in shown and (x[np.argmax(y)], y.max()) in shown
    assert vy.min() == y.min() and vy.max() == y.max()
    for point in brute_blocks(x, y, dec.block_size):  # every block's extremes are drawn
        assert point in shown
    # every shown point is a data point
    assert set(zip(vx.tolist(), vy.tolist())) <= set(zip(x.tolist(), y.tolist()))


@pytest.mark.parametrize("n", [0, 1, 2, CAP - 1, CAP, CAP + 1, 2 * CAP + 1, 1000, 100_000])
@pytest.mark.parametrize("chunk", [None, 1, 7, 333])
def test_envelope_matches_brute_force(n, chunk):
    if chunk == 1 and n > 5000:
        chunk = 97  # point by point over 100k is slow in Python; still small chunks
    x, y = series(n, seed=n)
    dec = PeakDecimator(cap=CAP)
    if chunk is None:
        dec.extend(x, y)
    else:
        for s in range(0, n, chunk):
            dec.extend(x[s:s + chunk], y[s:s + chunk])
    check(dec, x, y, CAP)


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 100_000])
def test_default_cap_bounds_the_view(n):
    x, y = series(n, seed=1)
    dec = PeakDecimator()
    dec.extend(x, y)
    check(dec, x, y, dec.cap)


def test_sync_follows_a_growing_series_and_restarts():
    x, y = series(10_000, seed=3)
    dec = PeakDecimator(cap=CAP)
    for m in range(0, 10_001, 37):
        dec.sync(x[:m], y[:m])
    dec.sync(x, y)
    check(dec, x, y, CAP)
    one_shot = PeakDecimator(cap=CAP)
    one_shot.extend(x, y)
    for a, b in zip(dec.view(), one_shot.view()):  # the same summary however it was fed
        np.testing.assert_array_equal(a, b)
    dec.sync(x[:10], y[:10])  # shorter: a restarted series
    np.testing.assert_array_equal(dec.view()[1], y[:10])


def test_nan_values_do_not_hide_the_extremes():
    x = np.arange(1000.0)
    y = np.sin(x / 30.0)
    y[::3] = np.nan
    y[500:600] = np.nan  # whole NaN blocks
    dec = PeakDecimator(cap=CAP)
    dec.extend(x, y)
    vx, vy = dec.view()
    assert np.nanmin(vy) == np.nanmin(y) and np.nanmax(vy) == np.nanmax(y)
    assert np.isnan(vy).any()  # the NaN stretch stays a gap
    assert np.all(np.diff(vx) >= 0)


def test_view_stays_bounded_on_a_long_history():
    """What setData gets is bounded by the cap, not the history (speed: benchmarks/bench_drill_ui.py)."""
    x, y = series(1_000_000, seed=5)
    dec = PeakDecimator()
    dec.extend(x[:-4000], y[:-4000])
    assert dec.block_size >= 128
    for s in range(len(x) - 4000, len(x), 4):  # the live case: a few points per tick
        dec.extend(x[s:s + 4], y[s:s + 4])
        vx, vy = dec.view()
        assert len(vx) <= 2 * dec.cap + 2 + dec.block_size
    assert vy.min() == y.min() and vy.max() == y.max() and len(dec) == len(x)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        PeakDecimator(cap=3)
    with pytest.raises(ValueError):
        PeakDecimator().extend([1.0, 2.0], [1.0])
