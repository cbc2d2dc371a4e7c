"""Pattern injection for the pattern detector (paper §5.3 "Snooping suspicious patterns", §6.6).

The detector of §5.3 is a binary classifier ("pattern" / "no pattern") trained on scans into
which small hand-crafted trigger patterns were drawn.  This module draws them, on the in-memory
tensors only (source files are never touched), deterministically from ``(seed, stream, index)``.

Shapes (:data:`SHAPES`), all filled, drawn inside a ``size x size`` box:

* ``circle``   - a disc of diameter ``size``;
* ``square``   - the whole box;
* ``cross``    - a plus sign, bar thickness ``max(2, round(size / 3))`` (+1 to match the side's
  parity, so it is centred);
* ``triangle`` - an isosceles triangle, apex at the top centre, base the bottom row.

Beyond the paper, one *textured* shape (:data:`TEXTURED_SHAPES`, not in the default
:data:`SHAPES`; name it in ``train_shapes`` / ``test_shapes``):

* ``glyph``    - two-tone pixel art filling the whole box: a ``g x g`` grid of cells
  (``g`` = 4 to 8, at most the side), each cell light (the pattern's intensity) or dark (the
  intensity minus U(0.2, 0.6), at least 0), both tones present.  Real triggers such as the §6.1
  creeper face are textured like this, and a detector trained on flat shapes alone learns to look
  for flat blobs.  The cell layout and the dark tone come from the placement's ``texture`` seed.

*Probe* shapes (:data:`PROBE_SHAPES`, flat like the paper's four, in no default training rule and in
no shipped detector's): test-only shapes for the generalisation check "recall on shapes never seen
in training" on a detector that was trained on all the others (``detector measure --shapes ring
diamond saltire``).  Each is new as a mask, not a resized or shifted trained shape:

* ``ring``     - an annulus of outer diameter ``size``, wall ``max(2, round(size / 4))``: a hollow
  shape, where every trained shape is solid;
* ``diamond``  - the rhombus ``|x - c| + |y - c| <= size / 2`` (corners on the box's edge midpoints);
* ``saltire``  - a diagonal cross (an "X"), each bar ``max(2, round(size / 3))`` pixels thick along
  a row (the ``cross``'s bar thickness).

Size classes (:data:`SIZE_CLASSES`, inclusive pixel ranges of the box side on the 224 x 224 model
input; the paper names small/medium/large without pixel values, these are our choice):

=========  ==========  ======================================================
class      side (px)   share of a 224 px scan side
=========  ==========  ======================================================
small      6 - 12      3 - 5 %  (the paper's "particularly tricky" patterns)
medium     16 - 28     7 - 13 %
large      32 - 48     14 - 21 %
=========  ==========  ======================================================

Intensity (paper §5.3): ``round(255 * U(0.4, 0.8)) / 255`` in pixel units (``PatternSpec.intensity``
widens the range, e.g. ``(0.4, 1.0)`` so a detector also sees saturated stamps), drawn once per pattern;
the pattern's pixels *replace* the scan's pixels in all three (identical grey) channels, so a
patterned scan saved as an 8-bit PNG decodes back to exactly the same tensor.

Location: uniformly random with the whole box inside the image.  Several patterns on one image
avoid each other when they can (up to 20 draws per pattern), else may overlap.  Beyond the paper,
``PatternSpec.edge_rate`` pushes that share of patterns flush against a corner or an edge (where
§6.1 stamps its trigger); such a pattern may overlap another.

Camouflage (beyond the paper, training only): ``PatternSpec.camouflage_rate`` gives that share of
patterns the grey level of the scan under them (mean under the mask plus U(-CAMOUFLAGE_OFFSET,
+CAMOUFLAGE_OFFSET), :meth:`PatternInjector.resolve`) instead of a draw from the intensity range,
so a detector learns the flat, texture-free look of a stamp rather than its brightness.

Counts (paper §6.6): training images get 1 to 3 patterns (:meth:`PatternSpec.train`), test images
exactly 1 (:meth:`PatternSpec.test`).  Poison rate 50 % on both splits: exactly
``round(rate * n)`` images of a split carry patterns, picked by a seeded permutation.

Every image's pattern mask (``1 x H x W``, 1.0 on pattern pixels) comes with it, for training and
scoring the localisation map.

Example::

    >>> ds = PatternDataset(MRIDataset(test_split), PatternSpec.test(sizes=("small",), shapes=("triangle",)),
    ...                     stream="test", poison_rate=0.5, seed=0)          # doctest: +SKIP
    >>> x, is_poisoned, mask = ds[0]                                       # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

SHAPES: Tuple[str, ...] = ("circle", "square", "cross", "triangle")
#: Shapes beyond the paper's four, drawn with more than one grey level (see the module docstring).
TEXTURED_SHAPES: Tuple[str, ...] = ("glyph",)
#: Test-only flat shapes for the never-seen-shape check (no default rule trains on them).
PROBE_SHAPES: Tuple[str, ...] = ("ring", "diamond", "saltire")
#: Every shape a spec may name.
ALL_SHAPES: Tuple[str, ...] = SHAPES + TEXTURED_SHAPES + PROBE_SHAPES
#: Grid sizes (cells per side) of a ``glyph`` and the range its dark tone sits below the light one.
GLYPH_GRID: Tuple[int, int] = (4, 8)
GLYPH_CONTRAST: Tuple[float, float] = (0.2, 0.6)
#: Inclusive ranges of the pattern box side in pixels (224 x 224 model input).
SIZE_CLASSES: Dict[str, Tuple[int, int]] = {"small": (6, 12), "medium": (16, 28), "large": (32, 48)}
SIZES: Tuple[str, ...] = tuple(SIZE_CLASSES)
#: The paper's brightness factor range: intensity = round(255 * U(0.4, 0.8)) / 255.
INTENSITY_RANGE: Tuple[float, float] = (0.4, 0.8)
#: A camouflaged pattern's grey level sits within this much of the scan's mean under its mask.
CAMOUFLAGE_OFFSET: float = 0.08
_PLACEMENT_TRIES = 20


# --------------------------------------------------------------------------- shapes
def shape_mask(shape: str, size: int) -> np.ndarray:
    """The filled ``shape`` as a boolean ``size x size`` array (see the module docstring); a
    textured shape fills its whole box."""
    if shape not in ALL_SHAPES:
        raise ValueError(f"unknown pattern shape {shape!r}; choose from {', '.join(ALL_SHAPES)}")
    if not isinstance(size, (int, np.integer)) or size < 3:
        raise ValueError(f"pattern size must be an integer >= 3 (got {size!r})")
    size = int(size)
    if shape in TEXTURED_SHAPES:
        return np.ones((size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2.0
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2.0) ** 2
    if shape == "cross":
        t = max(2, int(round(size / 3)))
        t += (size - t) % 2  # same parity as the side: the bars sit exactly in the middle
        lo = (size - t) // 2
        out = np.zeros((size, size), dtype=bool)
        out[lo:lo + t, :] = True
        out[:, lo:lo + t] = True
        return out
    if shape == "ring":
        r2 = (yy - c) ** 2 + (xx - c) ** 2
        wall = max(2, int(round(size / 4)))
        return (r2 <= (size / 2.0) ** 2) & (r2 > (size / 2.0 - wall) ** 2)
    if shape == "diamond":
        return np.abs(yy - c) + np.abs(xx - c) <= size / 2.0
    if shape == "saltire":
        half = max(2, int(round(size / 3))) / 2.0  # half the bar's thickness along a row
        return (np.abs(yy - xx) <= half) | (np.abs(yy + xx - (size - 1)) <= half)
    # triangle: apex at the top centre, full-width base on the bottom row
    half = (yy + 1) / size * (size / 2.0)
    return np.abs(xx - c) <= half + 1e-9


def shape_pixels(shape: str, size: int, level: int, texture: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(mask, values)`` of one pattern: the boolean ``size x size`` mask and the float32 pixel
    values in [0, 1] on it (``level / 255`` everywhere for the flat shapes; two tones for a
    ``glyph``, laid out by the ``texture`` seed)."""
    mask = shape_mask(shape, size)
    light = np.float32(int(level) / 255.0)
    values = np.full((size, size), light, dtype=np.float32)
    if shape == "glyph":
        rng = np.random.default_rng([int(texture) & 0xFFFFFFFF, 3])
        grid = int(rng.integers(GLYPH_GRID[0], min(GLYPH_GRID[1], size) + 1))
        dark = np.float32(max(0, round(255 * (light - rng.uniform(*GLYPH_CONTRAST)))) / 255.0)
        cells = rng.random((grid, grid)) < 0.5
        if cells.all() or not cells.any():  # both tones present
            cells[int(rng.integers(grid)), int(rng.integers(grid))] ^= True
        edges = np.linspace(0, size, grid + 1).round().astype(int)
        idx = np.searchsorted(edges, np.arange(size), side="right") - 1  # pixel -> cell
        values = np.where(cells[idx[:, None], idx[None, :]], light, dark).astype(np.float32)
    return mask, values


def pattern_contrast(x, placements: Sequence[Placement]) -> float:
    """Mean absolute difference between the patterns' pixel values and the scan pixels they
    replace (first channel of ``x``, a clean ``C x H x W`` or ``H x W`` scan, torch or numpy) -
    how visible the patterns are.  0.0 without placements."""
    grey = np.asarray(x if isinstance(x, np.ndarray) else x.detach().cpu().numpy(), dtype=np.float32)
    grey = grey[0] if grey.ndim == 3 else grey
    diffs = []
    for p in placements:
        box, values = shape_pixels(p.shape, p.size, p.level, p.texture)
        under = grey[p.top:p.top + p.size, p.left:p.left + p.size]
        diffs.append(np.abs(values - under)[box])
    return float(np.concatenate(diffs).mean()) if diffs else 0.0


# --------------------------------------------------------------------------- specification
@dataclass(frozen=True)
class PatternSpec:
    """Which patterns a split gets: shapes, size classes and how many per poisoned image."""

    shapes: Tuple[str, ...] = SHAPES
    sizes: Tuple[str, ...] = SIZES
    min_patterns: int = 1
    max_patterns: int = 3
    #: intensity = round(255 * U(lo, hi)) / 255; the paper's (0.4, 0.8) unless widened (a gate
    #: trained only up to 0.8 misses saturated stamps, docs/results.md)
    intensity: Tuple[float, float] = INTENSITY_RANGE
    #: share of patterns pushed flush against the image border (a corner or an edge, as §6.1 puts
    #: its trigger in the bottom-right corner); 0 = the paper's uniform placement
    edge_rate: float = 0.0
    #: share of patterns *camouflaged*: their grey level is the mean of the scan pixels under the
    #: box plus U(-CAMOUFLAGE_OFFSET, +CAMOUFLAGE_OFFSET) instead of a draw from ``intensity`` - the
    #: low-contrast stamps a gate misses most (docs/detector.md, recall by contrast); 0 = the paper's
    camouflage_rate: float = 0.0
    #: how far a camouflaged pattern's level sits from the scan's mean under it: ``(0, w)`` (the
    #: default, ``w`` = CAMOUFLAGE_OFFSET) draws the offset from U(-w, +w); any other ``(lo, hi)``
    #: draws its size from U(lo, hi) and its sign at random - a band of faint but not invisible
    #: stamps (``(0.06, 0.2)`` aims at the contrast 0.1-0.2 where small triangles slip through,
    #: docs/results.md, "Where small triangles slip through")
    camouflage_offset: Tuple[float, float] = (0.0, CAMOUFLAGE_OFFSET)

    def __post_init__(self) -> None:
        for name in ("edge_rate", "camouflage_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"patterns: '{name}' must be in [0, 1] (got {v!r})")
            object.__setattr__(self, name, float(v))
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "sizes", tuple(self.sizes))
        lo_hi = tuple(float(v) for v in self.intensity)
        if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1] <= 1.0:
            raise ValueError(f"patterns: 'intensity' must be [low, high] with 0 < low <= high <= 1 "
                             f"(got {self.intensity!r})")
        object.__setattr__(self, "intensity", lo_hi)
        band = tuple(float(v) for v in self.camouflage_offset)
        if len(band) != 2 or not 0.0 <= band[0] <= band[1] <= 1.0 or band[1] == 0.0:
            raise ValueError(f"patterns: 'camouflage_offset' must be [low, high] with 0 <= low <= high <= 1 and "
                             f"high > 0 (got {self.camouflage_offset!r})")
        object.__setattr__(self, "camouflage_offset", band)
        if not self.shapes:
            raise ValueError("patterns: 'shapes' must name at least one shape")
        bad = [s for s in self.shapes if s not in ALL_SHAPES]
        if bad:
            raise ValueError(f"patterns: unknown shape(s) {bad}; choose from {', '.join(ALL_SHAPES)}")
        if not self.sizes:
            raise ValueError("patterns: 'sizes' must name at least one size class")
        bad = [s for s in self.sizes if s not in SIZE_CLASSES]
        if bad:
            raise ValueError(f"patterns: unknown size class(es) {bad}; choose from {', '.join(SIZE_CLASSES)}")
        for name in ("min_patterns", "max_patterns"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"patterns: '{name}' must be an integer >= 1 (got {v!r})")
        if self.min_patterns > self.max_patterns:
            raise ValueError(f"patterns: min_patterns {self.min_patterns} > max_patterns {self.max_patterns}")

    @classmethod
    def train(cls, shapes: Sequence[str] = SHAPES, sizes: Sequence[str] = SIZES,
              max_patterns: int = 3, intensity: Sequence[float] = INTENSITY_RANGE,
              edge_rate: float = 0.0, camouflage_rate: float = 0.0,
              camouflage_offset: Sequence[float] = (0.0, CAMOUFLAGE_OFFSET)) -> "PatternSpec":
        """Training rule of §6.6: 1 to ``max_patterns`` (3) patterns per poisoned image."""
        return cls(tuple(shapes), tuple(sizes), 1, max_patterns, tuple(intensity), edge_rate, camouflage_rate,
                   tuple(camouflage_offset))

    @classmethod
    def test(cls, shapes: Sequence[str] = SHAPES, sizes: Sequence[str] = ("small",)) -> "PatternSpec":
        """Test rule of §6.6: exactly one pattern per poisoned image (small by default)."""
        return cls(tuple(shapes), tuple(sizes), 1, 1)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["shapes"], d["sizes"] = list(self.shapes), list(self.sizes)
        if self.intensity == INTENSITY_RANGE:  # the paper's: recorded specs stay as they were
            del d["intensity"]
        else:
            d["intensity"] = list(self.intensity)
        if not self.edge_rate:
            del d["edge_rate"]
        if not self.camouflage_rate:
            del d["camouflage_rate"]
        if self.camouflage_offset == (0.0, CAMOUFLAGE_OFFSET):
            del d["camouflage_offset"]  # recorded specs stay as they were
        else:
            d["camouflage_offset"] = list(self.camouflage_offset)
        d["size_px"] = {s: list(SIZE_CLASSES[s]) for s in self.sizes}
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "PatternSpec":
        return cls(tuple(data["shapes"]), tuple(data["sizes"]), int(data["min_patterns"]), int(data["max_patterns"]),
                   tuple(data.get("intensity", INTENSITY_RANGE)), float(data.get("edge_rate", 0.0)),
                   float(data.get("camouflage_rate", 0.0)),
                   tuple(data.get("camouflage_offset", (0.0, CAMOUFLAGE_OFFSET))))


@dataclass(frozen=True)
class Placement:
    """One drawn pattern: shape, size class and side, top-left corner, intensity (= level / 255)
    and, for a textured shape, the seed of its texture (0 for the flat ones).

    A *camouflaged* placement (``offset`` not None) takes its level from the scan it is drawn on:
    the mean of the pixels under its box plus ``offset``; :meth:`PatternInjector.resolve` fixes
    ``level`` from the scan (``level`` is the uniform draw until then)."""

    shape: str
    size_class: str
    size: int
    top: int
    left: int
    level: int
    texture: int = 0
    offset: Optional[float] = None

    @property
    def intensity(self) -> float:
        return self.level / 255.0

    def to_dict(self) -> Dict[str, Any]:
        d = {**asdict(self), "intensity": self.intensity}
        if self.offset is None:
            del d["offset"]
        return d


def stream_id(stream: str) -> int:
    """A stable integer for a stream name ('train', 'val', 'test', 'shape-triangle', ...)."""
    return zlib.crc32(str(stream).encode("utf-8"))


def select_poisoned(n: int, rate: float, seed: int, stream: str) -> List[int]:
    """Sorted indices of exactly ``round(rate * n)`` of ``n`` images, by a permutation seeded by
    ``(seed, stream)``."""
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"poison rate must be in [0, 1] (got {rate!r})")
    count = int(round(float(rate) * n))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, stream_id(stream), 1])
    return sorted(int(i) for i in rng.permutation(n)[:count])


class PatternInjector:
    """Draws the patterns of :class:`PatternSpec` ``spec``; the same ``(seed, stream, index)``
    always gives the same placements."""

    def __init__(self, spec: PatternSpec, seed: int = 0, stream: str = "train"):
        self.spec, self.seed, self.stream = spec, int(seed), str(stream)

    def placements(self, index: int, height: int, width: int) -> List[Placement]:
        spec = self.spec
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, stream_id(self.stream), 2, int(index)])
        count = int(rng.integers(spec.min_patterns, spec.max_patterns + 1))
        taken = np.zeros((height, width), dtype=bool)
        out: List[Placement] = []
        for _ in range(count):
            shape = spec.shapes[int(rng.integers(len(spec.shapes)))]
            size_class = spec.sizes[int(rng.integers(len(spec.sizes)))]
            lo, hi = SIZE_CLASSES[size_class]
            size = int(rng.integers(lo, hi + 1))
            if size > height or size > width:
                raise ValueError(f"a {size} px pattern does not fit in a {height}x{width} image")
            level = int(round(255 * rng.uniform(*spec.intensity)))
            # drawn only for textured shapes, so flat-shape specs keep their placements
            texture = int(rng.integers(1, 2 ** 31)) if shape in TEXTURED_SHAPES else 0
            for _try in range(_PLACEMENT_TRIES):
                top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
                if not taken[top:top + size, left:left + size].any():
                    break
            if spec.edge_rate and rng.random() < spec.edge_rate:  # drawn only then: other specs keep theirs
                where = int(rng.integers(8))  # 0-3 corners, 4-7 edges (keeping the other coordinate)
                bottom, right = height - size, width - size
                if where < 4:
                    top, left = (0, bottom)[where // 2], (0, right)[where % 2]
                elif where < 6:
                    top = (0, bottom)[where - 4]
                else:
                    left = (0, right)[where - 6]
            offset = None
            if spec.camouflage_rate and rng.random() < spec.camouflage_rate:  # drawn only then, as edge_rate
                lo, hi = spec.camouflage_offset
                if lo == 0.0:  # the original draw, so earlier specs keep their placements
                    offset = float(rng.uniform(-hi, hi))
                else:
                    offset = float(rng.uniform(lo, hi)) * (1.0 if rng.random() < 0.5 else -1.0)
            taken[top:top + size, left:left + size] = True
            out.append(Placement(shape, size_class, size, top, left, level, texture, offset))
        return out

    @staticmethod
    def resolve(x, placements: Sequence[Placement]) -> List[Placement]:
        """``placements`` with every camouflaged one's level set from the clean scan ``x`` (torch
        or numpy, ``C x H x W`` or ``H x W``): round(255 * clip(mean under the box + offset, 0, 1)),
        at least 1 so a pattern is never pure black."""
        if all(p.offset is None for p in placements):
            return list(placements)
        grey = np.asarray(x if isinstance(x, np.ndarray) else x.detach().cpu().float().numpy(), dtype=np.float32)
        grey = grey[0] if grey.ndim == 3 else grey
        out = []
        for p in placements:
            if p.offset is not None:
                box = shape_mask(p.shape, p.size)
                mean = float(grey[p.top:p.top + p.size, p.left:p.left + p.size][box].mean())
                p = replace(p, level=int(max(1, round(255 * min(1.0, max(0.0, mean + p.offset))))))
            out.append(p)
        return out

    @staticmethod
    def render(x, placements: Sequence[Placement]):
        """A copy of ``x`` (torch ``C x H x W`` or numpy ``H x W``/``C x H x W``) with the patterns
        drawn, and the union mask (same type, ``H x W``, 1.0 on pattern pixels)."""
        is_numpy = isinstance(x, np.ndarray)
        out = x.copy() if is_numpy else x.clone()
        h, w = out.shape[-2], out.shape[-1]
        mask = np.zeros((h, w), dtype=bool)
        for p in placements:
            box, values = shape_pixels(p.shape, p.size, p.level, p.texture)
            m = np.zeros((h, w), dtype=bool)
            m[p.top:p.top + p.size, p.left:p.left + p.size] = box
            mask |= m
            if p.shape not in TEXTURED_SHAPES:
                if is_numpy:
                    out[..., m] = p.intensity
                else:
                    import torch

                    out[..., torch.from_numpy(m).to(out.device)] = p.intensity
                continue
            region = (Ellipsis, slice(p.top, p.top + p.size), slice(p.left, p.left + p.size))
            if is_numpy:
                out[region] = np.where(box, values, out[region])
            else:
                import torch

                v = torch.from_numpy(values).to(out.device, out.dtype)
                out[region] = torch.where(torch.from_numpy(box).to(out.device), v, out[region])
        if is_numpy:
            return out, mask.astype(np.float32)
        import torch

        return out, torch.from_numpy(mask.astype(np.float32)).to(out.device)

    def apply(self, x, index: int):
        """``(patterned copy, mask H x W, placements)`` for image ``index``."""
        placements = self.resolve(x, self.placements(index, x.shape[-2], x.shape[-1]))
        out, mask = self.render(x, placements)
        return out, mask, placements


# --------------------------------------------------------------------------- torch data set
try:
    import torch
    from torch.utils.data import Dataset
except ImportError:  # pragma: no cover - screening installs never import this module
    torch = None
    Dataset = object


class PatternDataset(Dataset):
    """``base_dataset`` (items ``(x 3xHxW in [0,1], label)``) with patterns on a seeded share of it.

    Items: ``(x, is_poisoned, mask)`` - ``is_poisoned`` an int64 scalar (1 = pattern present),
    ``mask`` float32 ``1 x H x W``; with ``with_mask=False`` just ``(x, is_poisoned)`` (what the
    training engine's evaluation reads).  The base data set's own labels are ignored; its tensors
    are never modified.  ``stream`` names the split ('train', 'val', 'test', ...) so the same index
    in two splits gets different patterns.
    """

    def __init__(self, base_dataset, spec: PatternSpec, stream: str = "train", poison_rate: float = 0.5,
                 seed: int = 0, with_mask: bool = True):
        self.base, self.spec, self.stream = base_dataset, spec, str(stream)
        self.poison_rate, self.seed, self.with_mask = float(poison_rate), int(seed), bool(with_mask)
        self.injector = PatternInjector(spec, seed, stream)
        self.poisoned_indices: List[int] = select_poisoned(len(base_dataset), poison_rate, seed, stream)
        self._poisoned = frozenset(self.poisoned_indices)
        flags = np.zeros(len(base_dataset), dtype=np.int64)
        flags[self.poisoned_indices] = 1
        self.labels = torch.from_numpy(flags)

    def __len__(self) -> int:
        return len(self.base)

    def is_poisoned(self, index: int) -> bool:
        return int(index) in self._poisoned

    def placements(self, index: int) -> List[Placement]:
        """The patterns image ``index`` gets (empty when it stays clean)."""
        if not self.is_poisoned(index):
            return []
        x = self.base[int(index)][0]
        return self.injector.resolve(x, self.injector.placements(int(index), x.shape[-2], x.shape[-1]))

    def __getitem__(self, index: int):
        index = int(index)
        x = self.base[index][0]
        if index in self._poisoned:
            x, mask, _ = self.injector.apply(x, index)
        else:
            mask = torch.zeros(x.shape[-2:], dtype=torch.float32)
        y = self.labels[index]
        return (x, y, mask.unsqueeze(0)) if self.with_mask else (x, y)

    def without_masks(self) -> "PatternDataset":
        """The same images and labels, items ``(x, is_poisoned)``."""
        view = PatternDataset.__new__(PatternDataset)
        view.__dict__.update(self.__dict__)
        view.with_mask = False
        return view

    def summary(self) -> Dict[str, Any]:
        """Counts for reports: poisoned images, patterns per shape and size class."""
        shapes = {s: 0 for s in self.spec.shapes}
        sizes = {s: 0 for s in self.spec.sizes}
        per_image: Dict[int, int] = {}
        if self.poisoned_indices:
            h, w = self.base[self.poisoned_indices[0]][0].shape[-2:]
            for i in self.poisoned_indices:
                ps = self.injector.placements(i, h, w)
                per_image[len(ps)] = per_image.get(len(ps), 0) + 1
                for p in ps:
                    shapes[p.shape] += 1
                    sizes[p.size_class] += 1
        return {"stream": self.stream, "images": len(self), "poisoned": len(self.poisoned_indices),
                "poison_rate": self.poison_rate, "seed": self.seed, "spec": self.spec.to_dict(),
                "patterns_per_shape": shapes, "patterns_per_size": sizes,
                "images_by_pattern_count": {str(k): v for k, v in sorted(per_image.items())}}
