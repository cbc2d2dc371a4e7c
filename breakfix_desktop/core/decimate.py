"""Incremental peak (min/max) decimation of a growing (x, y) series - numpy only, no Qt.

:class:`PeakDecimator` keeps a summary of a series that only grows (a training run's per-batch
loss), so a live plot can be handed a bounded number of points however long the history gets:

* points are appended with :meth:`PeakDecimator.extend` (or :meth:`PeakDecimator.sync` from a
  growing array) in O(new points), amortised;
* the history is cut into consecutive blocks of ``block_size`` points; per block the decimator
  keeps its minimum and its maximum (the actual points: x, y and index).  The block size starts
  at 1 and doubles - merging pairs of neighbouring blocks - whenever there would be more than
  ``cap`` blocks, so between ``cap / 2`` and ``cap`` blocks are kept;
* the newest points, those of the block not yet complete, are kept raw (plus, just after a
  doubling, the min/max of the one block that had no partner to merge with);
* :meth:`PeakDecimator.view` returns the x, y arrays to draw: per block its minimum and its
  maximum in the order they occurred (one point when they are the same point), then the partial
  block.  At most ``2 * cap + 2 + block_size`` points, x in the input's order, every point a real
  data point, and every block's extremes - so the global minimum and maximum and the drawn
  envelope - present.  While the history holds at most ``cap`` points the view is exactly the
  data.

NaN values are kept out of the extremes while a block has finite values (a block of NaN only
gives a NaN point: a gap in the drawn line, as the raw data would).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

#: Default number of blocks kept: 4096 blocks give 4k-8k points, a few per pixel column of any
#: plot (the plot may reduce them further - cheaply, they are few).
DEFAULT_CAP = 4096

_FIELDS = ("min_x", "min_y", "min_i", "max_x", "max_y", "max_i")


def _reduce(x: np.ndarray, y: np.ndarray, first: int, k: int, size: int) -> Tuple[np.ndarray, ...]:
    """Min and max (x, y, index) of ``k`` consecutive blocks of ``size`` points of ``x``/``y``;
    ``first`` is the index (in the whole series) of ``x[0]``."""
    xs = x[: k * size].reshape(k, size)
    ys = y[: k * size].reshape(k, size)
    nan = np.isnan(ys)
    if nan.any():
        lo = np.argmin(np.where(nan, np.inf, ys), axis=1)
        hi = np.argmax(np.where(nan, -np.inf, ys), axis=1)
    else:
        lo = np.argmin(ys, axis=1)
        hi = np.argmax(ys, axis=1)
    rows = np.arange(k)
    base = first + rows * size
    return (xs[rows, lo], ys[rows, lo], base + lo, xs[rows, hi], ys[rows, hi], base + hi)


def _merge(a: Tuple[np.ndarray, ...], b: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
    """Extremes of the union of blocks ``a`` and ``b`` (``b`` after ``a``; ties keep ``a``)."""
    take_min = (b[1] < a[1]) | np.isnan(a[1])
    take_max = (b[4] > a[4]) | np.isnan(a[4])
    return tuple(np.where(take_min if j < 3 else take_max, b[j], a[j]) for j in range(6))


def _points(blocks: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """Per block its min and max points in index order, one point where they coincide."""
    min_x, min_y, min_i, max_x, max_y, max_i = blocks
    n = len(min_x)
    if not n:
        return np.empty(0), np.empty(0)
    min_first = min_i <= max_i
    x = np.empty(2 * n)
    y = np.empty(2 * n)
    x[0::2] = np.where(min_first, min_x, max_x)
    y[0::2] = np.where(min_first, min_y, max_y)
    x[1::2] = np.where(min_first, max_x, min_x)
    y[1::2] = np.where(min_first, max_y, min_y)
    keep = np.ones(2 * n, dtype=bool)
    keep[1::2] = min_i != max_i
    if keep.all():
        return x, y
    return x[keep], y[keep]


class PeakDecimator:
    """Min/max per block of a growing series, with a doubling block size; see the module doc."""

    def __init__(self, cap: int = DEFAULT_CAP):
        if cap < 2 or cap % 2:
            raise ValueError(f"cap must be an even number >= 2, not {cap!r}")
        self.cap = int(cap)
        self.reset()

    def reset(self) -> None:
        """Forget every point."""
        self.n = 0  # points appended
        self.block_size = 1
        self._nb = 0  # complete blocks kept
        self._blocks = {f: np.empty(self.cap + 1, dtype=np.int64 if f.endswith("_i") else np.float64)
                        for f in _FIELDS}
        #: extremes (6 one-element arrays) and point count of the start of the partial block, left
        #: over by a doubling (the block that had no partner); None when there is none
        self._head: Optional[Tuple[np.ndarray, ...]] = None
        self._head_n = 0
        self._raw_x = np.empty(1)
        self._raw_y = np.empty(1)
        self._raw_n = 0
        self._cache: Optional[Tuple[int, np.ndarray, np.ndarray]] = None  # (n, x, y) of the blocks

    def __len__(self) -> int:
        return self.n

    @property
    def blocks(self) -> int:
        """Complete blocks kept (between cap / 2 and cap once the history is longer than cap)."""
        return self._nb

    # ------------------------------------------------------------------ input
    def sync(self, x: np.ndarray, y: np.ndarray) -> None:
        """Follow a growing series: append the points of ``x``/``y`` past the ones already seen
        (a series shorter than that was restarted: start over)."""
        if len(x) < self.n:
            self.reset()
        if len(x) > self.n:
            self.extend(x[self.n:], y[self.n:])

    def extend(self, x, y) -> None:
        """Append points (x should not decrease, as the plot expects)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
        pos, total = 0, len(x)
        while pos < total:
            need = self.block_size - self._head_n - self._raw_n
            if total - pos < need:  # not enough to complete the partial block: keep raw
                self._raw_append(x[pos:], y[pos:])
                break
            # complete the partial block: its head's extremes with those of its raw points
            if self._head_n or self._raw_n:
                bx = np.concatenate((self._raw_x[: self._raw_n], x[pos:pos + need]))
                by = np.concatenate((self._raw_y[: self._raw_n], y[pos:pos + need]))
                block = _reduce(bx, by, self.n - self._raw_n, 1, len(bx))
                if self._head is not None:
                    block = _merge(self._head, block)
            else:
                block = _reduce(x[pos:], y[pos:], self.n, 1, need)
            self._push(block)
            self.n += need
            pos += need
            self._head, self._head_n, self._raw_n = None, 0, 0
            # then whole blocks at once, as many as fit under the cap (+1 triggers a doubling)
            k = min((total - pos) // self.block_size, self.cap + 1 - self._nb)
            if k > 0 and self._nb <= self.cap:
                self._push(_reduce(x[pos:], y[pos:], self.n, k, self.block_size))
                self.n += k * self.block_size
                pos += k * self.block_size
            if self._nb > self.cap:
                self._double()

    def _raw_append(self, x: np.ndarray, y: np.ndarray) -> None:
        m = self._raw_n + len(x)
        if m > len(self._raw_x):
            size = max(m, min(2 * len(self._raw_x), self.block_size))
            self._raw_x = np.resize(self._raw_x[: self._raw_n], size)
            self._raw_y = np.resize(self._raw_y[: self._raw_n], size)
        self._raw_x[self._raw_n:m] = x
        self._raw_y[self._raw_n:m] = y
        self._raw_n = m
        self.n += len(x)

    def _push(self, block: Tuple[np.ndarray, ...]) -> None:
        k = len(block[0])
        for f, values in zip(_FIELDS, block):
            self._blocks[f][self._nb:self._nb + k] = values
        self._nb += k

    def _double(self) -> None:
        """Merge pairs of blocks; an odd last block starts the (empty) partial block."""
        b = tuple(self._blocks[f][: self._nb] for f in _FIELDS)
        pairs = self._nb // 2
        merged = _merge(tuple(a[0:2 * pairs:2] for a in b), tuple(a[1:2 * pairs:2] for a in b))
        if self._nb % 2:
            self._head = tuple(a[-1:].copy() for a in b)
            self._head_n = self.block_size
        for f, values in zip(_FIELDS, merged):
            self._blocks[f][:pairs] = values
        self._nb = pairs
        self.block_size *= 2
        self._cache = None

    # ------------------------------------------------------------------ output
    def view(self) -> Tuple[np.ndarray, np.ndarray]:
        """(x, y) to draw: every block's min and max in order, then the partial block (its head's
        extremes, then its raw points).  New arrays, safe to keep."""
        if self._cache is None or self._cache[0] != self._nb:
            bx, by = _points(tuple(self._blocks[f][: self._nb] for f in _FIELDS))
            self._cache = (self._nb, bx, by)
        _, bx, by = self._cache
        parts_x, parts_y = [bx], [by]
        if self._head is not None:
            hx, hy = _points(self._head)
            parts_x.append(hx)
            parts_y.append(hy)
        parts_x.append(self._raw_x[: self._raw_n])
        parts_y.append(self._raw_y[: self._raw_n])
        return np.concatenate(parts_x), np.concatenate(parts_y)
