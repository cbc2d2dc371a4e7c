"""Pattern injection (paper §5.3/§6.6): shapes, size classes, intensity, counts, poison rate, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.patterns import (ALL_SHAPES, GLYPH_CONTRAST, INTENSITY_RANGE, PROBE_SHAPES, SHAPES, SIZE_CLASSES, PatternDataset,
                               PatternInjector, PatternSpec, pattern_contrast, select_poisoned, shape_mask,
                               shape_pixels)


class Base(torch.utils.data.Dataset):
    """A tiny in-memory data set like MRIDataset: (3 x H x W in [0, 1], tumour label)."""

    def __init__(self, n=40, size=224, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.grey = torch.rand(n, size, size, generator=g) * 0.3
        self.labels = torch.arange(n) % 4

    def __len__(self):
        return len(self.grey)

    def __getitem__(self, i):
        return self.grey[i].unsqueeze(0).expand(3, -1, -1), self.labels[i]


def test_size_classes_are_pixel_ranges_and_small_is_small():
    assert SIZE_CLASSES["small"] == (6, 12)  # 3-5 % of a 224 px side: genuinely small
    lo_prev = 0
    for name in ("small", "medium", "large"):
        lo, hi = SIZE_CLASSES[name]
        assert lo_prev < lo <= hi  # increasing, non-overlapping
        lo_prev = hi


@pytest.mark.parametrize("size", [6, 7, 12, 31, 48])
def test_shapes_are_distinct_filled_and_fill_their_box(size):
    masks = {s: shape_mask(s, size) for s in SHAPES}
    for s, m in masks.items():
        assert m.shape == (size, size) and m.dtype == bool
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert rows[0] == 0 and rows[-1] == size - 1 and cols[0] == 0 and cols[-1] == size - 1, s
    assert masks["square"].all()
    assert np.array_equal(masks["circle"], masks["circle"].T) and np.array_equal(masks["cross"], masks["cross"].T)
    assert np.array_equal(masks["cross"], masks["cross"][::-1, ::-1])  # centred
    tri = masks["triangle"]
    widths = tri.sum(1)
    assert (np.diff(widths) >= 0).all() and widths[-1] == size and widths[0] <= 2  # apex up, base down
    assert len({m.tobytes() for m in masks.values()}) == 4
    with pytest.raises(ValueError, match="unknown pattern shape 'star'"):
        shape_mask("star", size)


def test_spec_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown shape"):
        PatternSpec(shapes=("hexagon",))
    with pytest.raises(ValueError, match="unknown size class"):
        PatternSpec(sizes=("tiny",))
    with pytest.raises(ValueError, match="min_patterns 3 > max_patterns 1"):
        PatternSpec(min_patterns=3, max_patterns=1)
    assert PatternSpec.test().min_patterns == PatternSpec.test().max_patterns == 1
    assert PatternSpec.train().max_patterns == 3
    spec = PatternSpec.train(("circle",), ("small", "large"))
    assert PatternSpec.from_dict(spec.to_dict()) == spec


def test_poison_rate_is_exact_and_seeded():
    a = select_poisoned(1311, 0.5, 0, "test")
    assert len(a) == round(0.5 * 1311) and a == sorted(set(a))
    assert a == select_poisoned(1311, 0.5, 0, "test")
    assert a != select_poisoned(1311, 0.5, 1, "test") and a != select_poisoned(1311, 0.5, 0, "train")
    with pytest.raises(ValueError):
        select_poisoned(10, 1.5, 0, "x")


def test_dataset_items_masks_intensity_and_untouched_source():
    base = Base()
    before = base.grey.clone()
    ds = PatternDataset(base, PatternSpec.train(), "train", 0.5, seed=3)
    assert len(ds.poisoned_indices) == 20 and int(ds.labels.sum()) == 20
    lo, hi = INTENSITY_RANGE
    for i in range(len(ds)):
        x, y, mask = ds[i]
        assert x.shape == (3, 224, 224) and mask.shape == (1, 224, 224) and mask.dtype == torch.float32
        assert int(y) == int(ds.is_poisoned(i)) and y.dtype == torch.int64
        src = base[i][0]
        m = mask[0].bool()
        if not ds.is_poisoned(i):
            assert not m.any() and torch.equal(x, src)
            continue
        assert m.any()
        assert torch.equal(x[:, ~m], src[:, ~m])  # pixels outside the patterns never change
        values = set(torch.unique(x[:, m]).tolist())
        placements = ds.placements(i)
        assert 1 <= len(placements) <= 3
        for p in placements:
            assert p.shape in SHAPES and SIZE_CLASSES[p.size_class][0] <= p.size <= SIZE_CLASSES[p.size_class][1]
            assert 0 <= p.top <= 224 - p.size and 0 <= p.left <= 224 - p.size  # inside the image
            assert round(255 * lo) <= p.level <= round(255 * hi) and p.intensity == p.level / 255
        assert values <= {np.float32(p.level / 255).item() for p in placements}
        # an 8-bit PNG of a patterned scan decodes back exactly: every pattern value is k / 255
        assert all(abs(v * 255 - round(v * 255)) < 1e-4 for v in values)
    assert torch.equal(base.grey, before)  # the source tensors are never modified


def test_test_rule_is_one_pattern_and_shapes_sizes_are_selectable():
    ds = PatternDataset(Base(), PatternSpec.test(shapes=("triangle",), sizes=("small",)), "test", 0.5, seed=0)
    counts = ds.summary()
    assert counts["images_by_pattern_count"] == {"1": 20}
    assert counts["patterns_per_shape"] == {"triangle": 20} and counts["patterns_per_size"] == {"small": 20}
    for i in ds.poisoned_indices:
        (p,) = ds.placements(i)
        assert p.shape == "triangle" and 6 <= p.size <= 12
        assert int(ds[i][2].sum()) == int(shape_mask("triangle", p.size).sum())  # the mask is exactly the shape


def test_deterministic_per_seed_stream_and_index():
    a = PatternDataset(Base(), PatternSpec.train(), "train", 0.5, seed=7)
    b = PatternDataset(Base(), PatternSpec.train(), "train", 0.5, seed=7)
    c = PatternDataset(Base(), PatternSpec.train(), "train", 0.5, seed=8)
    i = a.poisoned_indices[0]
    assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][2], b[i][2])
    assert a.placements(i) == b.placements(i)
    # order of access does not matter: item i is a function of (seed, stream, index) only
    _ = [b[j] for j in reversed(range(len(b)))]
    assert torch.equal(a[i][0], b[i][0])
    inj = PatternInjector(PatternSpec.train(), 7, "train")
    assert inj.placements(i, 224, 224) == a.placements(i)
    assert inj.placements(i, 224, 224) != PatternInjector(PatternSpec.train(), 7, "val").placements(i, 224, 224)
    assert a.poisoned_indices != c.poisoned_indices or a.placements(i) != c.placements(i)


def test_several_patterns_avoid_each_other_and_all_sizes_occur():
    ds = PatternDataset(Base(n=200), PatternSpec.train(), "train", 1.0, seed=0)
    summary = ds.summary()
    assert set(summary["images_by_pattern_count"]) == {"1", "2", "3"}
    assert all(v > 0 for v in summary["patterns_per_size"].values())
    assert all(v > 0 for v in summary["patterns_per_shape"].values())
    overlaps = 0
    for i in range(200):
        ps = ds.placements(i)
        boxes = np.zeros((224, 224), int)
        for p in ps:
            boxes[p.top:p.top + p.size, p.left:p.left + p.size] += 1
        overlaps += int((boxes > 1).any())
    assert overlaps == 0


def test_without_masks_view_is_what_the_engine_reads():
    ds = PatternDataset(Base(n=8), PatternSpec.test(), "val", 0.5, seed=0)
    view = ds.without_masks()
    x, y = view[ds.poisoned_indices[0]]
    assert int(y) == 1 and torch.equal(x, ds[ds.poisoned_indices[0]][0])
    assert len(ds[0]) == 3  # the original still carries masks


def test_glyph_is_two_tone_pixel_art_filling_its_box_and_not_a_default_shape():
    assert "glyph" not in SHAPES and "glyph" in ALL_SHAPES  # the paper's four stay the default
    for size, level, texture in [(6, 102, 1), (8, 200, 2), (12, 150, 3), (48, 204, 4)]:
        mask, values = shape_pixels("glyph", size, level, texture)
        assert mask.all() and values.shape == (size, size) and values.dtype == np.float32
        tones = np.unique(values)
        assert len(tones) == 2 and tones[1] == np.float32(level / 255)  # light tone = the intensity
        gap = tones[1] - tones[0]
        assert tones[0] == 0 or GLYPH_CONTRAST[0] - 1 / 255 <= gap <= GLYPH_CONTRAST[1] + 1 / 255
        assert all(abs(v * 255 - round(v * 255)) < 1e-4 for v in tones)  # 8-bit exact, like the flat shapes
        again = shape_pixels("glyph", size, level, texture)[1]
        assert np.array_equal(values, again)  # a function of the texture seed
    layouts = {shape_pixels("glyph", 8, 200, t)[1].tobytes() for t in range(1, 30)}
    assert len(layouts) > 20  # the seed varies the layout
    _, flat = shape_pixels("square", 8, 200, 0)
    assert np.unique(flat).tolist() == [np.float32(200 / 255)]


def test_glyph_patterns_render_inside_their_box_with_the_placements_texture():
    base = Base()
    ds = PatternDataset(base, PatternSpec.test(shapes=("glyph",), sizes=("small", "large")), "test", 0.5, seed=3)
    for i in ds.poisoned_indices[:8]:
        x, y, m = ds[i]
        (p,) = ds.placements(i)
        assert p.shape == "glyph" and p.texture > 0 and int(y) == 1
        _, values = shape_pixels("glyph", p.size, p.level, p.texture)
        box = x[0, p.top:p.top + p.size, p.left:p.left + p.size].numpy()
        assert np.array_equal(box, values) and torch.equal(x[0], x[2])  # grey, exactly the glyph
        assert int(m.sum()) == p.size * p.size
        out_np, mask_np = PatternInjector.render(base[i][0].numpy(), [p])  # the numpy path draws the same
        assert np.array_equal(out_np, x.numpy()) and mask_np.sum() == p.size * p.size
    # flat-shape specs draw the same placements as before glyphs existed (texture 0, same stream)
    flat = PatternInjector(PatternSpec.train(), 7, "train").placements(5, 224, 224)
    assert [(p.shape, p.size_class, p.size, p.top, p.left, p.level, p.texture) for p in flat] == [
        ("cross", "large", 47, 27, 116, 182, 0)]  # recorded before the glyph shape was added


def test_pattern_contrast_is_the_mean_difference_to_the_covered_pixels():
    from training.patterns import Placement

    scan = np.full((3, 32, 32), 0.5, dtype=np.float32)
    scan[:, :, 16:] = 0.1
    square = Placement("square", "small", 6, 2, 2, 204)  # 0.8 over 0.5
    assert pattern_contrast(scan, [square]) == pytest.approx(0.3, abs=1e-6)
    straddle = Placement("square", "small", 8, 10, 12, 51)  # 0.2: half over 0.5, half over 0.1
    assert pattern_contrast(torch.from_numpy(scan), [straddle]) == pytest.approx(0.2, abs=1e-6)
    assert pattern_contrast(scan, [square, straddle]) == pytest.approx((36 * 0.3 + 64 * 0.2) / 100, abs=1e-6)
    assert pattern_contrast(scan, []) == 0.0


def test_intensity_range_can_be_widened_and_the_paper_default_is_recorded_as_before():
    wide = PatternSpec.train(intensity=(0.4, 1.0))
    assert wide.to_dict()["intensity"] == [0.4, 1.0] and PatternSpec.from_dict(wide.to_dict()) == wide
    assert "intensity" not in PatternSpec.train().to_dict()  # old cards and checkpoints read the same
    assert PatternSpec.from_dict(PatternSpec.train().to_dict()).intensity == INTENSITY_RANGE
    levels = [p.level for i in range(200) for p in PatternInjector(wide, 0, "train").placements(i, 224, 224)]
    assert min(levels) >= round(255 * 0.4) and max(levels) <= 255 and max(levels) > round(255 * 0.8) + 10
    for bad in [(0.0, 0.5), (0.9, 0.5), (0.5, 1.2), (0.5,)]:
        with pytest.raises(ValueError, match="intensity"):
            PatternSpec(intensity=bad)


def test_edge_rate_pushes_patterns_flush_to_the_border_and_the_default_is_unchanged():
    """``edge_rate`` 1: every pattern touches the border (§6.1's corner trigger is placed so); 0 (the
    paper's uniform placement) draws exactly the placements it drew before the setting existed,
    and is not written into recorded specs."""
    from training.patterns import PatternInjector, PatternSpec

    edge = PatternInjector(PatternSpec.train(edge_rate=1.0), seed=3, stream="train")
    corners = 0
    for i in range(40):
        for p in edge.placements(i, 224, 224):
            sides = [p.top == 0, p.left == 0, p.top + p.size == 224, p.left + p.size == 224]
            assert any(sides), p
            corners += sum(sides) == 2
    assert corners > 0
    plain, zero = PatternSpec.train(), PatternSpec.train(edge_rate=0.0)
    assert "edge_rate" not in plain.to_dict() and PatternSpec.from_dict(plain.to_dict()) == plain
    a, b = PatternInjector(plain, 3, "train"), PatternInjector(zero, 3, "train")
    assert all(a.placements(i, 224, 224) == b.placements(i, 224, 224) for i in range(20))
    half = PatternSpec.train(edge_rate=0.5)
    assert PatternSpec.from_dict(half.to_dict()) == half and half.to_dict()["edge_rate"] == 0.5
    with pytest.raises(ValueError, match="edge_rate"):
        PatternSpec.train(edge_rate=1.5)


def test_camouflage_takes_the_grey_level_from_the_scan_and_the_default_is_unchanged():
    """``camouflage_rate`` 1: every pattern's level is the scan's mean under its mask plus at most
    CAMOUFLAGE_OFFSET (the low-contrast stamps a detector misses most); 0 draws exactly what it drew
    before the setting existed and is not recorded."""
    from training.patterns import CAMOUFLAGE_OFFSET, PatternInjector

    base = Base(n=12, size=96, seed=4)
    cam = PatternDataset(base, PatternSpec.train(sizes=("small", "medium"), camouflage_rate=1.0), "train", 1.0, seed=2)
    plain = PatternDataset(base, PatternSpec.train(sizes=("small", "medium")), "train", 1.0, seed=2)
    low = []
    for i in range(len(base)):
        x = base[i][0]
        placements = cam.placements(i)
        assert placements and all(p.offset is not None and abs(p.offset) <= CAMOUFLAGE_OFFSET for p in placements)
        for p in placements:
            under = x[0, p.top:p.top + p.size, p.left:p.left + p.size].numpy()[shape_mask(p.shape, p.size)]
            assert abs(p.intensity - (under.mean() + p.offset)) <= 0.5 / 255 + 1e-6 or p.level == 1
        xi, _, mask = cam[i]
        assert torch.equal(xi, PatternInjector.render(x, placements)[0])  # drawn at the resolved levels
        assert mask.sum() > 0 and "offset" in placements[0].to_dict()
        low.append(pattern_contrast(x, placements))
        assert all(p.offset is None for p in plain.placements(i)) and "offset" not in plain.placements(i)[0].to_dict()
    far = [pattern_contrast(base[i][0], plain.placements(i)) for i in range(len(base))]
    assert max(low) < min(far)  # camouflaged stamps are far less visible than the paper's
    zero = PatternInjector(PatternSpec.train(camouflage_rate=0.0), 3, "train")
    old = PatternInjector(PatternSpec.train(), 3, "train")
    assert all(zero.placements(i, 224, 224) == old.placements(i, 224, 224) for i in range(20))
    assert "camouflage_rate" not in PatternSpec.train().to_dict()
    half = PatternSpec.train(camouflage_rate=0.5)
    assert PatternSpec.from_dict(half.to_dict()) == half and half.to_dict()["camouflage_rate"] == 0.5
    with pytest.raises(ValueError, match="camouflage_rate"):
        PatternSpec.train(camouflage_rate=-0.1)


def test_camouflage_offset_band_keeps_stamps_faint_but_never_invisible():
    """A ``camouflage_offset`` band ``(lo, hi)`` puts every camouflaged level ``lo..hi`` away from the
    scan's mean under it, either side; the band is recorded, round-trips, and is validated; the
    default band draws what the plain camouflage drew."""
    from training.patterns import CAMOUFLAGE_OFFSET, PatternInjector

    spec = PatternSpec.train(sizes=("small", "medium"), camouflage_rate=1.0, camouflage_offset=(0.1, 0.2))
    inj = PatternInjector(spec, 5, "train")
    offsets = [p.offset for i in range(60) for p in inj.placements(i, 96, 96)]
    assert all(0.1 <= abs(o) <= 0.2 for o in offsets)
    assert any(o < 0 for o in offsets) and any(o > 0 for o in offsets)
    assert spec.to_dict()["camouflage_offset"] == [0.1, 0.2] and PatternSpec.from_dict(spec.to_dict()) == spec
    default = PatternSpec.train(camouflage_rate=1.0, camouflage_offset=(0.0, CAMOUFLAGE_OFFSET))
    assert "camouflage_offset" not in default.to_dict()
    old = PatternInjector(PatternSpec.train(camouflage_rate=1.0), 3, "train")
    assert all(PatternInjector(default, 3, "train").placements(i, 224, 224) == old.placements(i, 224, 224)
               for i in range(20))
    for bad in [(0.2, 0.1), (0.0, 0.0), (-0.1, 0.2), (0.1,)]:
        with pytest.raises(ValueError, match="camouflage_offset"):
            PatternSpec.train(camouflage_rate=1.0, camouflage_offset=bad)


@pytest.mark.parametrize("size", [6, 7, 9, 12, 31, 48])
def test_probe_shapes_are_new_masks_that_fill_their_box_and_are_never_a_default(size):
    assert set(PROBE_SHAPES) == {"ring", "diamond", "saltire"}
    assert not set(PROBE_SHAPES) & set(SHAPES) and set(PROBE_SHAPES) <= set(ALL_SHAPES)
    assert set(PatternSpec.train().shapes) == set(PatternSpec.test().shapes) == set(SHAPES)  # defaults never probe
    trained = {shape_mask(s, size).tobytes() for s in SHAPES}
    for s in PROBE_SHAPES:
        m = shape_mask(s, size)
        assert m.shape == (size, size) and m.dtype == bool and 0 < m.sum() < size * size, s
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert rows[0] == 0 and rows[-1] == size - 1 and cols[0] == 0 and cols[-1] == size - 1, s
        assert np.array_equal(m, m.T) and np.array_equal(m, m[::-1, ::-1]), s  # centred, symmetric
        assert m.tobytes() not in trained, s
    ring, diamond, saltire = (shape_mask(s, size) for s in PROBE_SHAPES)
    c = size // 2
    assert not ring[c, c] and not ring[c - (size % 2 == 0), c - (size % 2 == 0)]  # hollow centre
    assert diamond[c, c] and not diamond[0, 0] and diamond[c, 0]  # corners on the edge midpoints
    assert saltire[0, 0] and saltire[0, -1] and saltire[c, c] and not saltire[0, c]  # an X, not a plus
    ds = PatternDataset(Base(n=6, size=64), PatternSpec.test(shapes=PROBE_SHAPES), "test", 1.0, seed=1)
    for i in range(len(ds)):
        _, y, mask = ds[i]
        assert int(y) == 1 and mask.sum() > 0 and ds.placements(i)[0].shape in PROBE_SHAPES
