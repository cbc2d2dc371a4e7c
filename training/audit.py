"""``audit-data``: what is really in a data folder before anyone trusts a number computed on it.

Reports, per split and class, the image count; exact duplicate groups (same SHA-256 of the file
bytes); near-duplicate groups (64-bit perceptual hash, DCT "pHash" from the ``imagehash`` library,
Hamming distance <= threshold, grouped transitively); train/test leakage (groups that span both
splits); and label conflicts (groups whose members disagree on the class).  Undecodable files
are listed with the reason and left out, never fatal.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from PIL import Image

from breakfix_desktop.core.labels import CLASS_NAMES
from breakfix_desktop.core.preprocess import PreprocessError, preprocess_file

from .data import SPLITS, DataLayoutError, scan_split, sha256_file


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _phash(path: Path) -> int | PreprocessError:
    import imagehash

    try:
        grey = preprocess_file(path)[0]  # the same decoding as training and the app
    except PreprocessError as exc:
        return exc
    img = Image.fromarray(np.round(grey * 255).astype(np.uint8))
    return int(str(imagehash.phash(img, hash_size=8)), 16)


def perceptual_hashes(paths, workers: int = 4) -> np.ndarray:
    """64-bit pHash per file as uint64; files that fail to decode get ``None`` in an object array."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        got = list(pool.map(_phash, paths))
    return [None if isinstance(h, PreprocessError) else h for h in got]


def dedup_near(test, train, threshold: int = 2):
    """The test split without images byte-identical OR perceptually near (pHash Hamming distance
    <= ``threshold``) to any training image: a stricter evaluation than exact de-duplication."""
    from .data import dedup_against

    exact = dedup_against(test, train)
    th = [h for h in perceptual_hashes([s.path for s in train.samples]) if h is not None]
    qh = perceptual_hashes([s.path for s in exact.samples])
    train_h = np.array(th, dtype=np.uint64)
    keep = []
    for i, h in enumerate(qh):
        if h is None:
            keep.append(i)  # evaluation will report it as skipped
            continue
        if int(np.bitwise_count(train_h ^ np.uint64(h)).min()) > threshold:
            keep.append(i)
    out = exact.subset(keep)
    out.name = f"{test.name}-dedup-near{threshold}"
    return out


def near_pairs(hashes: np.ndarray, threshold: int, chunk: int = 512) -> List[tuple[int, int]]:
    """All index pairs (i < j) whose 64-bit hashes differ in at most ``threshold`` bits."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs: List[tuple[int, int]] = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, :])
        ii, jj = np.nonzero(dist <= threshold)
        ii = ii + start
        keep = ii < jj
        pairs.extend(zip(ii[keep].tolist(), jj[keep].tolist()))
    return pairs


def _groups(n: int, pairs) -> List[List[int]]:
    uf = _UnionFind(n)
    for a, b in pairs:
        uf.union(a, b)
    members: Dict[int, List[int]] = defaultdict(list)
    for i in range(n):
        members[uf.find(i)].append(i)
    return [sorted(m) for m in members.values() if len(m) > 1]


def audit_dataset(
    root: os.PathLike | str,
    near_threshold: int = 2,
    on_skip: Optional[Callable[[str, str], None]] = None,
    workers: int = 4,
) -> Dict[str, Any]:
    root = Path(root)
    skipped: List[Dict[str, str]] = []

    def skip(path: str, reason: str) -> None:
        skipped.append({"path": path, "reason": reason})
        if on_skip:
            on_skip(path, reason)

    items = []  # (split, label, path)
    splits_found = []
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        splits_found.append(split)
        sp = scan_split(root, split, on_skip=skip)
        items += [(split, s.label, s.path) for s in sp.samples]
    if not splits_found:
        raise DataLayoutError(f"{root}: neither Training/ nor Testing/ found")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        shas = list(pool.map(lambda it: sha256_file(it[2]), items))
        phashes = list(pool.map(lambda it: _phash(it[2]), items))
    ok = []
    for i, ph in enumerate(phashes):
        if isinstance(ph, PreprocessError):
            skip(str(items[i][2]), ph.reason)
        else:
            ok.append(i)
    items = [items[i] for i in ok]
    shas = [shas[i] for i in ok]
    hashes = np.array([phashes[i] for i in ok], dtype=np.uint64)
    n = len(items)

    def rel(i: int) -> str:
        return items[i][2].relative_to(root).as_posix()

    def describe(group: List[int], kind: str) -> Dict[str, Any]:
        splits = sorted({items[i][0] for i in group})
        labels = sorted({CLASS_NAMES[items[i][1]] for i in group})
        return {
            "kind": kind,
            "size": len(group),
            "splits": splits,
            "labels": labels,
            "cross_split": len(splits) > 1,
            "label_conflict": len(labels) > 1,
            "files": [{"path": rel(i), "split": items[i][0], "label": CLASS_NAMES[items[i][1]]} for i in group],
        }

    by_sha: Dict[str, List[int]] = defaultdict(list)
    for i, h in enumerate(shas):
        by_sha[h].append(i)
    exact = [describe(g, "exact") for g in by_sha.values() if len(g) > 1]
    # Near groups: perceptual-hash neighbours, joined with the exact twins.
    pairs = near_pairs(hashes, near_threshold) if n else []
    near_all = _groups(n, pairs + [(g[0], j) for g in by_sha.values() for j in g[1:]])
    exact_sets = {frozenset(g) for g in by_sha.values() if len(g) > 1}
    near = [describe(g, "near") for g in near_all if frozenset(g) not in exact_sets]

    counts = {s: {c: 0 for c in CLASS_NAMES} for s in splits_found}
    for split, label, _ in items:
        counts[split][CLASS_NAMES[label]] += 1

    def leaked_test(groups) -> int:
        return sum(sum(1 for f in g["files"] if f["split"] == "Testing") for g in groups if g["cross_split"])

    train_shas = {h for (s, _, _), h in zip(items, shas) if s == "Training"}
    redundant_train = sum(
        sum(1 for i in g if items[i][0] == "Training") - 1
        for g in by_sha.values() if sum(1 for i in g if items[i][0] == "Training") > 1
    )
    summary = {
        "images": n,
        "per_split": {s: sum(c.values()) for s, c in counts.items()},
        "skipped": len(skipped),
        "exact_groups": len(exact),
        "exact_cross_split_groups": sum(g["cross_split"] for g in exact),
        "test_images_with_exact_twin_in_training": sum(
            1 for (s, _, _), h in zip(items, shas) if s == "Testing" and h in train_shas),
        "redundant_training_copies": redundant_train,
        "exact_label_conflicts": sum(g["label_conflict"] for g in exact),
        "near_threshold_bits": near_threshold,
        "near_groups_beyond_exact": len(near),
        "near_cross_split_groups": sum(g["cross_split"] for g in near),
        "test_images_in_near_cross_split_groups": leaked_test(near),
        "near_label_conflicts": sum(g["label_conflict"] for g in near),
    }
    return {
        "format": "breakfix-audit/1",
        "root": str(root),
        "classes": list(CLASS_NAMES),
        "counts": counts,
        "summary": summary,
        "exact_groups": exact,
        "near_groups": near,
        "skipped": skipped,
    }


def format_audit(report: Dict[str, Any]) -> str:
    s = report["summary"]
    lines = [f"Audit of {report['root']}", ""]
    header = f"{'split':<10}" + "".join(f"{c:>12}" for c in report["classes"]) + f"{'total':>10}"
    lines.append(header)
    for split, c in report["counts"].items():
        lines.append(f"{split:<10}" + "".join(f"{c[k]:>12d}" for k in report["classes"]) + f"{sum(c.values()):>10d}")
    lines += [
        "",
        f"skipped (undecodable / not images): {s['skipped']}",
        f"exact duplicate groups (SHA-256):   {s['exact_groups']}  ({s['exact_cross_split_groups']} span Training and Testing)",
        f"Testing images with a byte-identical twin in Training (leak): {s['test_images_with_exact_twin_in_training']}",
        f"redundant copies inside Training:   {s['redundant_training_copies']}",
        f"label conflicts among exact groups: {s['exact_label_conflicts']}",
        f"near-duplicate groups beyond exact (pHash <= {s['near_threshold_bits']} bits): {s['near_groups_beyond_exact']}"
        f"  ({s['near_cross_split_groups']} cross-split, {s['near_label_conflicts']} with conflicting labels)",
    ]
    return "\n".join(lines)
