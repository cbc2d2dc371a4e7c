"""The pattern detector (paper §5.3, §6.6) and the feature-squeezing second check, end to end.

Metrics against brute force; the squeezers against numpy; a tiny detector drill (1 epoch, synthetic
scans) whose report carries every extra result; its export through ``python -m training detector
export`` checked against torch, accepted by the app's registry, screened by the app's engine (the
card's threshold decides the verdict) and localised by the review queue's Localiser; the squeeze
check exported, calibrated and loaded by the engine as the ``check`` model.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from breakfix_desktop.core.labels import CLASS_NAMES
from breakfix_desktop.core.localisation import Localiser
from breakfix_desktop.core.model_registry import ModelCatalog, load_registry
from breakfix_desktop.core.preprocess import preprocess_file
from breakfix_desktop.core.protocol import NullWriter
from breakfix_desktop.core.quarantine import QuarantineStore
from breakfix_desktop.core.screening import NO_DETECTOR_NOTE, ScreeningEngine
from training import cli
from training import detector_metrics as M
from training.squeeze import SqueezeCheck, bit_depth, median3x3
from training.patterns import ALL_SHAPES

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- metrics
def test_threshold_for_recall_is_the_highest_that_reaches_the_target():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50, int), np.ones(40, int)]
    s = rng.random(90)
    for target in (0.5, 0.9, 0.95, 1.0):
        t = M.threshold_for_recall(y, s, target)
        assert M.rates(y, s, t)["recall"] >= target
        higher = np.nextafter(t, 2.0)
        assert M.rates(y, s, higher)["recall"] < target  # no higher threshold still reaches it
    with pytest.raises(ValueError, match="no positive"):
        M.threshold_for_recall(np.zeros(5, int), rng.random(5), 0.9)


def test_recall_confidence_pays_for_calibration_error_with_a_lower_threshold():
    """wilson_lower solves the score test (p - p0) / sqrt(p0 (1 - p0) / n) = z; with a confidence the
    threshold is the highest whose lower bound on recall reaches the target, lower than the plain one."""
    from statistics import NormalDist

    for k, n, c in ((95, 100, 0.95), (1090, 1144, 0.9), (3, 3, 0.8)):
        p0, p, z = M.wilson_lower(k, n, c), k / n, NormalDist().inv_cdf(c)
        assert 0.0 < p0 < p and (p - p0) / math.sqrt(p0 * (1 - p0) / n) == pytest.approx(z, rel=1e-9)
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(400, np.int64), np.zeros(400, np.int64)]
    s = np.r_[rng.normal(2, 1, 400), rng.normal(0, 1, 400)]
    plain, sure = M.threshold_for_recall(y, s, 0.9), M.threshold_for_recall(y, s, 0.9, 0.9)
    assert sure < plain
    caught = int((s[:400] >= sure).sum())
    assert M.wilson_lower(caught, 400, 0.9) >= 0.9 > M.wilson_lower(caught - 1, 400, 0.9)  # the highest such
    with pytest.raises(ValueError, match="too few"):
        M.threshold_for_recall(y[:5].tolist() + [0], s[:6], 0.99, 0.95)
    with pytest.raises(ValueError, match="confidence"):
        M.threshold_for_recall(y, s, 0.9, 1.0)


def test_threshold_for_false_alarm_is_the_lowest_within_budget():
    rng = np.random.default_rng(1)
    clean = rng.random(200).astype(np.float32).astype(np.float64)  # scores come from float32 graphs
    for rate in (0.0, 0.01, 0.05, 0.2):
        t = M.threshold_for_false_alarm(clean, rate)
        flagged = (clean >= t).sum()
        assert flagged <= int(rate * 200)
        below = np.max(clean[clean < t])  # lowering the threshold to the next clean score breaks the budget
        assert (clean >= below).sum() > int(rate * 200)


def _brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])


def test_roc_and_pr_curves_against_brute_force():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    s = np.round(rng.random(120) + 0.4 * y, 2)  # ties on purpose
    roc = M.roc_curve(y, s)
    assert roc["auc"] == pytest.approx(_brute_auc(y, s), abs=1e-12)
    assert roc["fpr"][0] == roc["tpr"][0] == 0.0 and roc["fpr"][-1] == roc["tpr"][-1] == 1.0
    assert all(np.diff(roc["fpr"]) >= 0) and all(np.diff(roc["tpr"]) >= 0)
    pr = M.pr_curve(y, s)
    for t, p, r in zip(pr["thresholds"], pr["precision"], pr["recall"]):
        rr = M.rates(y, s, t)
        assert (p, r) == pytest.approx((rr["precision"], rr["recall"]))
    brute_ap = sum((M.rates(y, s, t)["recall"] - M.rates(y, s, t_prev)["recall"]) * M.rates(y, s, t)["precision"]
                   for t_prev, t in zip([np.inf] + pr["thresholds"][:-1], pr["thresholds"]))
    assert pr["average_precision"] == pytest.approx(brute_ap)
    assert M.roc_curve([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])["auc"] == 1.0
    assert M.roc_curve([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])["auc"] == 0.0
    thin = M.thin(roc, 10)
    assert len(thin["fpr"]) <= 10 and thin["fpr"][-1] == 1.0 and thin["thinned_from"] == len(roc["fpr"])


def test_binary_report_is_the_papers_layout():
    rep = M.binary_report([0, 0, 0, 1, 1, 1, 1], [0.1, 0.6, 0.2, 0.9, 0.7, 0.3, 0.8], 0.5)
    assert rep["classes"] == ["no pattern", "pattern"] and rep["threshold"] == 0.5
    assert rep["per_class"]["pattern"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert rep["per_class"]["no pattern"]["recall"] == pytest.approx(2 / 3) and rep["accuracy"] == pytest.approx(5 / 7)


# --------------------------------------------------------------------------- squeezers
def test_median3x3_and_bit_depth_against_numpy():
    x = torch.rand(2, 3, 19, 23)
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    ref = np.median(np.stack([xp[..., dy:dy + 19, dx:dx + 23] for dy in range(3) for dx in range(3)]), axis=0)
    assert np.array_equal(median3x3(x).numpy(), ref.astype(np.float32))
    b = bit_depth(x, 5)
    assert len(torch.unique(torch.round(b * 31))) <= 32 and (b - x).abs().max() <= 0.5 / 31 + 1e-6
    assert torch.equal(bit_depth(b, 5), b)


def test_squeeze_score_is_the_max_total_variation_distance():
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
    x = torch.rand(3, 3, 8, 8)
    clf(x)
    check = SqueezeCheck(clf, bits=3).eval()
    score, d_bits, d_med = check(x)
    p = torch.softmax(clf(x), 1)
    assert torch.allclose(d_bits, 0.5 * (p - torch.softmax(clf(bit_depth(x, 3)), 1)).abs().sum(1))
    assert torch.allclose(d_med, 0.5 * (p - torch.softmax(clf(median3x3(x)), 1)).abs().sum(1))
    assert torch.equal(score, torch.maximum(d_bits, d_med)) and ((score >= 0) & (score <= 1)).all()
    flat = torch.full((1, 3, 8, 8), 3 / 7)  # already 3-bit and unchanged by a median: nothing to squeeze
    assert check(flat)[0].item() == 0.0


# --------------------------------------------------------------------------- shared fixtures
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from conftest import CLASSES, synthetic_scan

    root = tmp_path_factory.mktemp("det-data")
    rng = np.random.default_rng(0)
    for split, n in (("Training", 10), ("Testing", 5)):
        for label, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(synthetic_scan(label, rng, 64)).save(root / split / cls / f"{cls}_{i}.png")
    return root


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory, data_root):
    """A tiny CNN classifier trained one epoch on the synthetic scans (the squeeze check's subject and
    CNN_clean's stand-in for the FGSM/PGD extra results)."""
    from training import data as D
    from training.engine import Trainer, TrainConfig, make_loader, seed_everything
    from training.models import build_model

    torch.set_num_threads(2)
    cfg = TrainConfig(arch="cnn", epochs=1, batch_size=8, lr=3e-3, val_fraction=0.2, device="cpu",
                      model_kwargs={"blocks": 2, "width": 4, "hidden": 16, "pool": 4, "dropout": 0.0}).validate()
    seed_everything(0)
    train, _ = D.stratified_holdout(D.scan_split(data_root, "Training"), cfg.val_fraction, cfg.seed)
    path = tmp_path_factory.mktemp("clf") / "checkpoint.pt"
    trainer = Trainer(build_model("cnn", **cfg.model_kwargs), cfg,
                      make_loader(D.MRIDataset(train), 8, True, 0, 0), checkpoint_path=path)
    trainer.fit()
    return path


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory, data_root, classifier_ckpt):
    """Table 9's recipe, tiny: 1 epoch, circles held out of training, every extra result on."""
    from training.drills import create_drill

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("det-run")
    config = {"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "eval_batch_size": 16,
              "holdout_shapes": ["circle"], "adversarial_classifier": str(classifier_ckpt),
              "pgd_steps": 2, "adversarial_max_images": 8}
    report = create_drill("table9-detector-triangles").execute(data_root, out, NullWriter(), config=config,
                                                                device="cpu")
    return out, report


# --------------------------------------------------------------------------- the drill
def test_detector_drill_reports_paper_table_operating_point_and_extras(detector_run):
    out, r = detector_run
    assert r["paper"]["per_class"]["pattern"] == {"precision": 0.91, "recall": 0.66, "f1": 0.77, "support": 655}
    test = r["data"]["test"]["images"]
    assert r["reports"]["Testing@0.5"]["n"] == test == r["patterns"]["test"]["images"]
    assert r["patterns"]["test"]["poisoned"] == round(0.5 * test)
    assert r["patterns"]["test"]["patterns_per_shape"] == {"triangle": round(0.5 * test)}  # small triangles only
    assert r["patterns"]["test"]["images_by_pattern_count"] == {"1": round(0.5 * test)}
    assert "circle" not in r["patterns"]["train"]["spec"]["shapes"]  # held out of training
    assert r["patterns"]["train"]["spec"]["sizes"] == ["small"]
    op = r["operating_point"]
    assert op["target_recall"] == 0.95 and op["validation"]["recall"] >= 0.95
    assert r["reports"]["Testing@operating-point"]["threshold"] == op["threshold"]
    assert op["test"]["recall"] == r["reports"]["Testing@operating-point"]["per_class"]["pattern"]["recall"]
    assert len(r["roc"]["fpr"]) == len(r["roc"]["tpr"]) >= 2 and r["roc"]["fpr"][-1] == 1.0
    assert len(r["pr"]["recall"]) == len(r["pr"]["precision"]) >= 1
    assert 0.0 <= r["roc_auc"] <= 1.0
    assert r["localisation"]["images"] == round(0.5 * test)
    assert set(r["per_shape_recall"]) == set(ALL_SHAPES)  # the probe shapes ring, diamond, saltire too
    assert r["per_shape_recall"]["circle"]["held_out"] and not r["per_shape_recall"]["square"]["held_out"]
    assert r["holdout"]["shapes"] == ["circle"] and r["holdout"]["images"] == test
    for loc in ("corner", "random"):
        assert r["creeper"][loc]["images"] == test and 0.0 <= r["creeper"][loc]["recall"] <= 1.0
    adv = r["adversarial"]
    assert "skipped" not in adv and adv["images"] == 8 and adv["eps"] == 0.01
    for name in ("fgsm", "pgd"):
        assert 0.0 <= adv[name]["recall"] <= 1.0 and 0.0 <= adv[name]["classifier_accuracy_attacked"] <= 1.0
    assert r["figures"] == {"roc": "roc.png", "pr": "pr.png"}
    for name in ("roc.png", "pr.png"):
        assert Image.open(out / name).size == (640, 560)
    table = (out / "table.txt").read_text()
    assert "Table 9" in table and "0.91" in table and "Operating point" in table and "circle (held out)" in table
    assert "creeper" in table and "FGSM eps 0.01" in table
    assert r["curves"][0]["role"] == "defended" and len(r["curves"][0]["epoch"]) == 1
    assert r["score_rule"] == "mean" and r["train_score_rule"] == "segmentation"
    assert set(r["by_score_rule"]) == {"mean", "segmentation", "classifier"}
    assert r["by_score_rule"]["mean"]["roc_auc"] == r["roc_auc"]
    assert "score rule: mean; with the segmentation rule: ROC AUC" in table and "with the classifier rule" in table


def test_missing_classifier_is_skipped_with_the_reason(data_root, tmp_path):
    from training.drills import create_drill
    from training.drills.base import DrillError

    drill = create_drill("table8-detector-small")
    assert drill.settings()["epochs"] == 10 and drill.settings()["test_sizes"] == ["small"]
    with pytest.raises(DrillError, match="holdout_shapes"):
        drill.settings({"holdout_shapes": list(("circle", "square", "cross", "triangle"))})
    with pytest.raises(DrillError, match="val_patterns"):
        drill.settings({"val_patterns": "both"})
    with pytest.raises(DrillError, match="train_sizes"):
        drill.settings({"train_sizes": ["huge"]})
    with pytest.raises(DrillError, match="train_camouflage_offset"):
        drill.settings({"train_camouflage_offset": [0.3, 0.1]})
    band = drill.settings({"train_camouflage_rate": 0.4, "train_camouflage_offset": [0.06, 0.2]})
    assert drill.specs(band)["train"].camouflage_offset == (0.06, 0.2)
    assert drill.specs(band)["test"].camouflage_rate == 0.0  # Testing keeps the paper's rule
    res = drill._adversarial(type("Ctx", (), {"settings": {**drill.settings(), "adversarial_classifier":
                                                            str(tmp_path / "nope.pt")}})(), None, None, 0.5, "cpu")
    assert res == {"skipped": f"{tmp_path / 'nope.pt'} not found (train CNN_clean first: configs/cnn_clean.toml)"}


def test_detector_figure_tool_runs_without_torch(detector_run, tmp_path):
    out, _ = detector_run
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            "sys.argv = ['detector_figure', sys.argv[1], '--out-dir', sys.argv[2], '--format', 'svg']; "
            "runpy.run_module('breakfix_desktop.tools.detector_figure', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, str(out / "report.json"), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "roc.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    (tmp_path / "bad.json").write_text(json.dumps({"drill": "x"}))
    from breakfix_desktop.tools import detector_figure as DF

    assert DF.main([str(tmp_path / "bad.json"), "--out-dir", str(tmp_path / "f")]) == 2


# --------------------------------------------------------------------------- export -> registry -> screening
def _add_classifier(folder: Path) -> None:
    from conftest import write_shipped_model

    entry = write_shipped_model(folder, "tiny-cnn", "classifier")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["models"].append(entry)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _save_scan(pixels: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pixels[0].numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def _engine(folder, store):
    return ScreeningEngine(load_registry(folder), store, prefer_gpu=False, workers=1)


def test_detector_export_registry_screening_and_localisation(detector_run, data_root, tmp_path):
    from training.detector import DetectorGraph, load_detector
    from training.drills.base import DrillContext
    from training.patterns import PatternDataset, PatternSpec

    out, report = detector_run
    ckpt = out / "detector" / "checkpoint.pt"
    models = tmp_path / "models"
    onnx_path = models / "pattern_detector.onnx"
    rc = cli.main(["--events", "none", "detector", "export", "--checkpoint", str(ckpt), "--out", str(onnx_path),
                   "--name", "pattern_detector", "--data", str(data_root), "--manifest", str(models / "manifest.json"),
                   "--parity-images", "4", "--threads", "2"])
    assert rc == 0

    # the graph: same input contract as the classifiers, outputs score (N) and map (N x 1 x 224 x 224)
    proto = onnx.load(str(onnx_path))
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["score", "map"]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model, state = load_detector(ckpt)
    x = np.random.default_rng(0).random((3, 3, 224, 224)).astype(np.float32)
    score, heat = sess.run(None, {"pixels": x})
    with torch.no_grad():
        t_score, t_heat = DetectorGraph(model)(torch.from_numpy(x))
    assert score.shape == (3,) and heat.shape == (3, 1, 224, 224)
    assert np.abs(score - t_score.numpy()).max() <= 1e-4 and np.abs(heat - t_heat.numpy()).max() <= 1e-4
    assert ((heat >= 0) & (heat <= 1)).all() and ((score >= 0) & (score <= 1)).all()

    # the card
    card = json.loads((models / "pattern_detector.card.json").read_text())
    threshold = card["threshold"]
    assert card["role"] == "detector" and card["classes"] == ["no pattern", "pattern"]
    assert card["score_rule"] == "mean" and "both heads" in card["outputs"][0]["meaning"]
    assert [o["name"] for o in card["outputs"]] == ["score", "map"]
    parity = card["metrics"]["parity"]
    assert parity["max_abs_score_diff"] <= 1e-4 and parity["max_abs_map_diff"] <= 1e-4
    assert card["operating_point"]["validation"]["recall"] >= 0.95 == card["operating_point"]["target_recall"]
    assert len(card["data"]["training"]["sha256"]) == 64 and card["data"]["patterns"]["test"]["shapes"] == ["triangle"]
    assert card["metrics"]["test"]["report"]["n"] == report["data"]["test"]["images"]
    assert card["training"]["detector"]["holdout_shapes"] == ["circle"]
    sizes = card["metrics"]["recall_per_size"]  # one triangle per Testing scan, every size class
    assert list(sizes) == ["small", "medium", "large"] == list(report["per_size_recall"])
    assert [v["in_training"] for v in sizes.values()] == [True, False, False]
    assert all(v["images"] == report["data"]["test"]["images"] and 0 <= v["recall"] <= 1 for v in sizes.values())
    creeper = card["metrics"]["creeper"]
    assert [creeper[k]["images"] for k in ("corner", "random")] == [report["data"]["test"]["images"]] * 2
    bins = card["metrics"]["recall_by_contrast"]["bins"]  # every patterned Testing scan falls in one bin
    assert [b["from"] for b in bins] == [0.0, 0.1, 0.2, 0.4]
    assert sum(b["images"] for b in bins) == card["data"]["patterns"]["test_poisoned"]
    caught = sum(b["images"] * b["recall"] for b in bins if b["images"])
    assert caught == pytest.approx(card["metrics"]["test"]["recall"] * card["data"]["patterns"]["test_poisoned"])
    per_shape = card["metrics"]["recall_by_contrast"]["by_shape"]  # the same scans, split by shape
    assert [sum(rows[k]["images"] for rows in per_shape.values()) for k in range(len(bins))] == [
        b["images"] for b in bins]
    assert sum(b["missed"] for rows in per_shape.values() for b in rows) == sum(b["missed"] for b in bins)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert float(meta["threshold"]) == threshold and meta["role"] == "detector"  # inside the hashed bytes too
    assert meta["score_rule"] == "mean"

    # the app's registry verifies it
    _add_classifier(models)
    reg = load_registry(models)
    (det,) = reg.verified("detector")
    assert det.name == "pattern_detector" and det.card["threshold"] == threshold and not reg.refused

    # scans on disk: patterned test scans (the drill's own test patterns) and clean ones
    ctx = DrillContext(data_root, tmp_path, {"seed": 0, "max_train_images": None, "max_test_images": None,
                                             "val_fraction": 0.2}, NullWriter())
    p_test = PatternDataset(ctx.dataset("test"), PatternSpec.test(("triangle",), ("small",)), "test", 0.5, 0)
    patterned = [_save_scan(p_test[i][0], tmp_path / "in" / f"patterned_{i}.png") for i in p_test.poisoned_indices[:4]]
    clean_idx = [i for i in range(len(p_test)) if not p_test.is_poisoned(i)][:3]
    clean = [_save_scan(p_test[i][0], tmp_path / "in" / f"clean_{i}.png") for i in clean_idx]
    files = patterned + clean
    expected = sess.run(["score"], {"pixels": np.stack([preprocess_file(f) for f in files])})[0]

    with QuarantineStore(tmp_path / "store") as store:
        summary = _engine(models, store).run(files)
        assert NO_DETECTOR_NOTE not in summary.notes
        for f, s, res in zip(files, expected, summary.results):
            assert res.path == str(f) and res.pattern_score == pytest.approx(float(s), abs=1e-5)
            assert res.verdict == ("quarantined" if s >= threshold else "clear"), (f.name, s, threshold)
        quarantined = [r for r in summary.results if r.verdict == "quarantined"]
        assert any("patterned" in r.path for r in quarantined), (expected, threshold)
        # the review queue's localisation map comes from the detector's 'map' output
        loc = Localiser(ModelCatalog(models, prefer_gpu=False)).localise(
            store.folder / store.review_queue()[0].quarantine_file)
        assert loc.model == "pattern_detector" and loc.heat is not None and loc.heat.shape == loc.image.shape

    # the threshold is sealed in the ONNX metadata (inside the hashed bytes): an edited card that would
    # switch the detector off is refused when the model is loaded, never silently obeyed.
    card["threshold"] = float(np.nextafter(np.float32(expected.max()), np.float32(2)))
    (models / "pattern_detector.card.json").write_text(json.dumps(card))
    from breakfix_desktop.core.model_registry import ModelRefusedError, Registry, create_session

    entry = [m for m in Registry.load(models).models if m.name == "pattern_detector"][0]
    with pytest.raises(ModelRefusedError, match="threshold .* may have been edited"):
        create_session(entry, prefer_gpu=False)


def test_score_rules_read_the_two_heads():
    """segmentation: the map's most pattern-like cell; classifier: softmax of the 2 logits (the paper);
    mean: the two averaged."""
    from training.detector import DetectorGraph, PatternDetector, detector_score, rule_logits

    torch.manual_seed(0)
    model = PatternDetector().eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits, seg = model.forward_all(x)
        seg_score, heat = DetectorGraph(model, "segmentation")(x)
        cls_score, _ = DetectorGraph(model, "classifier")(x)
        mean_score, _ = DetectorGraph(model, "mean")(x)
    assert torch.allclose(cls_score, torch.softmax(logits, 1)[:, 1])
    assert torch.allclose(seg_score, torch.sigmoid(seg).amax(dim=(1, 2, 3)))
    # the exported map is the same map upsampled: its maximum is at most the cells' maximum
    assert (heat.amax(dim=(1, 2, 3)) <= seg_score + 1e-6).all()
    assert torch.allclose(mean_score, (seg_score + cls_score) / 2)
    assert torch.equal(detector_score(logits, seg), mean_score)  # mean is the default
    for rule, score in (("segmentation", seg_score), ("classifier", cls_score), ("mean", mean_score)):
        # forward's 2 logits (the engine's accuracy, the LR schedule) read the same score
        assert torch.allclose(torch.softmax(rule_logits(logits, seg, rule), 1)[:, 1], score, atol=1e-6)
    assert model.score_rule == "segmentation"  # what training watches by default
    with pytest.raises(ValueError, match="unknown detector score rule 'median'"):
        DetectorGraph(model, "median")


def test_detector_export_float16_storage_halves_the_file_and_measures_the_shipped_bytes(detector_run, data_root,
                                                                                        tmp_path):
    """--weight-storage float16: the file is about half, input and outputs stay float32, the metrics are
    the float16 file's own, and the card compares its Testing decisions with the float32 graph's."""
    out, _ = detector_run
    ckpt = out / "detector" / "checkpoint.pt"
    paths = {}
    for storage in ("float32", "float16"):
        paths[storage] = tmp_path / storage / "pattern_detector.onnx"
        assert cli.main(["--events", "none", "detector", "export", "--checkpoint", str(ckpt), "--out",
                         str(paths[storage]), "--name", "pattern_detector", "--data", str(data_root),
                         "--parity-images", "4", "--threads", "2", "--weight-storage", storage]) == 0
    size32, size16 = paths["float32"].stat().st_size, paths["float16"].stat().st_size
    assert size16 < 0.55 * size32
    proto = onnx.load(str(paths["float16"]))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert {p.key: p.value for p in proto.metadata_props}["weight_storage"] == "float16"
    for v in list(proto.graph.input) + list(proto.graph.output):
        assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    card16 = json.loads((paths["float16"].parent / "pattern_detector.card.json").read_text())
    card32 = json.loads((paths["float32"].parent / "pattern_detector.card.json").read_text())
    assert "weight_storage" not in card32["metrics"]
    ws = card16["metrics"]["weight_storage"]
    t = ws["testing"]
    assert ws["dtype"] == "float16" and t["images"] == card16["data"]["patterns"]["test_images"]
    assert t["threshold"] == card16["threshold"] and t["decision_agreement"] >= 0.995
    assert t["recall"] == pytest.approx(card16["metrics"]["test"]["recall"])
    assert 0 < t["max_abs_score_diff"] < 1e-2 and ws["parity_images"]["max_abs_score_diff"] < 1e-2
    # the torch parity contract holds on the float32 graph of the same detector
    assert card16["metrics"]["parity"]["max_abs_score_diff"] <= 1e-4 and "float32" in card16["metrics"]["parity"]["graph"]
    # the float16 file scores like the float32 one
    x = np.random.default_rng(1).random((2, 3, 224, 224)).astype(np.float32)
    s16, s32 = (ort.InferenceSession(str(paths[k]), providers=["CPUExecutionProvider"]).run(["score"], {"pixels": x})[0]
                for k in ("float16", "float32"))
    assert np.abs(s16 - s32).max() < 1e-2


def test_detector_export_refuses_what_it_cannot_do(detector_run, classifier_ckpt, tmp_path, capsys):
    out, _ = detector_run
    ckpt = out / "detector" / "checkpoint.pt"
    with pytest.raises(SystemExit) as exc:
        cli.main(["--events", "none", "detector", "export", "--checkpoint", str(ckpt), "--out",
                  str(tmp_path / "d.onnx"), "--name", "d"])
    assert exc.value.code == 2 and "give --threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a classifier checkpoint is not a detector
        cli.main(["--events", "none", "detector", "export", "--checkpoint", str(classifier_ckpt), "--out",
                  str(tmp_path / "d.onnx"), "--name", "d", "--threshold", "0.5"])
    assert exc.value.code == 2 and "not a pattern-detector checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--events", "none", "detector", "squeeze", "--classifier", str(tmp_path / "none.pt"), "--out",
                  str(tmp_path / "s.onnx"), "--name", "s"])
    assert exc.value.code == 2 and "not found" in capsys.readouterr().err


def test_detector_validate_compares_checkpoints_on_validation_scans_only(detector_run, data_root, tmp_path,
                                                                          capsys):
    out, _ = detector_run
    ckpt = out / "detector" / "checkpoint.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    other = tmp_path / "other.pt"  # same run, weights perturbed: must score differently on the same scans
    torch.manual_seed(0)
    state2 = {**state, "model": {k: (v + 0.05 * torch.randn_like(v)) if v.is_floating_point() else v
                                 for k, v in state["model"].items()}}
    torch.save(state2, other)
    assert cli.main(["--events", "none", "detector", "validate", "--checkpoint", str(ckpt), "--checkpoint",
                     str(other), "--checkpoint", str(ckpt), "--data", str(data_root)]) == 0
    res = json.loads(capsys.readouterr().out)
    val = res["validation"]
    assert val["scans"] == 8 and val["patterned"] == 4  # 20 % of 40 Training scans, half patterned
    assert val["patterns"]["sizes"] == ["small"] and val["patterns"]["max_patterns"] == 1  # the test rule
    a, b, a2 = res["checkpoints"]
    assert a == a2  # deterministic: same scans, same patterns
    assert 0.0 <= a["roc_auc"] <= 1.0 and a["score_rule"] == "mean"
    assert (a["roc_auc"], a["average_precision"]) != (b["roc_auc"], b["average_precision"])
    # --draws 3 pools three independent pattern draws of the same 8 scans; draw 0 is the single set
    assert cli.main(["--events", "none", "detector", "validate", "--checkpoint", str(ckpt), "--draws", "3",
                     "--data", str(data_root)]) == 0
    pooled = json.loads(capsys.readouterr().out)["validation"]
    assert pooled["scans"] == 24 and pooled["patterned"] == 12 and pooled["draws"] == 3 and val["draws"] == 1
    with pytest.raises(SystemExit) as exc:
        cli.main(["--events", "none", "detector", "validate", "--checkpoint", str(ckpt), "--draws", "0",
                  "--data", str(data_root)])
    assert exc.value.code == 2 and "draws" in capsys.readouterr().err
    moved = tmp_path / "moved.pt"  # trained on another validation split: refused, not compared unfairly
    torch.save({**state, "config": {**state["config"], "seed": 5}}, moved)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--events", "none", "detector", "validate", "--checkpoint", str(ckpt), "--checkpoint", str(moved),
                  "--data", str(data_root)])
    assert exc.value.code == 2 and "another split" in capsys.readouterr().err


def test_detector_measure_reproduces_the_card_and_tests_other_shapes(detector_run, data_root, tmp_path, capsys):
    """``detector measure`` scores the shipped file on Testing: under the card's own test rule it gives
    the card's numbers; ``--shapes triangle`` is Table 9's setting on the same patterned scans."""
    out, _ = detector_run
    onnx_path = tmp_path / "models" / "pattern_detector.onnx"
    assert cli.main(["--events", "none", "detector", "export", "--checkpoint", str(out / "detector" / "checkpoint.pt"),
                     "--out", str(onnx_path), "--name", "pattern_detector", "--data", str(data_root),
                     "--parity-images", "2"]) == 0
    card = json.loads((tmp_path / "models" / "pattern_detector.card.json").read_text())
    capsys.readouterr()
    assert cli.main(["--events", "none", "detector", "measure", str(onnx_path), "--data", str(data_root)]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["threshold"] == card["threshold"] and same["sha256"] == card["sha256"]
    for key in ("precision", "recall", "false_positive_rate"):
        assert same["at_threshold"][key] == pytest.approx(card["metrics"]["test"][key])
    assert same["roc_auc"] == pytest.approx(card["metrics"]["roc_auc"])
    written = tmp_path / "tri.json"
    assert cli.main(["--events", "none", "detector", "measure", str(onnx_path), "--data", str(data_root),
                     "--shapes", "triangle", "glyph", "ring", "--out", str(written)]) == 0
    tri = json.loads(written.read_text())
    assert tri["patterns"]["shapes"] == ["triangle", "glyph", "ring"] and tri["patterns"]["max_patterns"] == 1
    assert tri["scans"] == same["scans"] and tri["patterned"] == same["patterned"]
    assert tri["shapes_in_training"] == {"triangle": True, "glyph": False, "ring": False}
    per = tri["recall_by_shape"]  # recall per shape adds up to the overall recall
    assert set(per) <= {"triangle", "glyph", "ring"} and sum(r["images"] for r in per.values()) == tri["patterned"]
    assert {k: r["in_training"] for k, r in per.items()} == {k: tri["shapes_in_training"][k] for k in per}
    caught = sum(r["recall"] * r["images"] for r in per.values())
    assert caught / tri["patterned"] == pytest.approx(tri["at_threshold"]["recall"])
    assert sum(r["recall_at_0.5"] * r["images"] for r in per.values()) / tri["patterned"] == pytest.approx(
        tri["at_0.5"]["recall"])
    assert tri["at_threshold"]["negatives"] == same["at_threshold"]["negatives"]
    # recall by contrast: the bins cover every patterned scan, overall and per shape, and agree with both
    rc = tri["recall_by_contrast"]
    assert sum(b["images"] for b in rc["bins"]) == tri["patterned"]
    assert sum(b["images"] - b["missed"] for b in rc["bins"]) == pytest.approx(caught)
    assert set(rc["by_shape"]) == set(per)
    for shape, rows in rc["by_shape"].items():
        assert sum(b["images"] for b in rows) == per[shape]["images"]
        assert sum(b["missed"] for b in rows) == round(per[shape]["images"] * (1 - per[shape]["recall"]))
    assert [sum(r[k]["images"] for r in rc["by_shape"].values()) for k in range(len(rc["bins"]))] == [
        b["images"] for b in rc["bins"]]
    # a file that no longer matches its card is refused, naming the file
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(["--events", "none", "detector", "measure", str(onnx_path), "--data", str(data_root)])
    assert exc.value.code == 2 and "does not match the SHA-256" in capsys.readouterr().err


def test_detector_measure_attacks_scores_both_gates_on_attacked_scans(detector_run, classifier_ckpt, data_root,
                                                                      tmp_path, capsys):
    """``detector measure --adversarial CLF --squeeze-check ONNX``: FGSM / PGD copies of the clean Testing
    scans against CLF, the share each gate flags at its own card's threshold and both together."""
    from training.detector_export import _Session, gate_on_attacks

    out, _ = detector_run
    models = tmp_path / "models"
    det, sq = models / "pattern_detector.onnx", models / "squeeze_check.onnx"
    assert cli.main(["--events", "none", "detector", "export", "--checkpoint", str(out / "detector" / "checkpoint.pt"),
                     "--out", str(det), "--name", "pattern_detector", "--data", str(data_root),
                     "--parity-images", "2"]) == 0
    assert cli.main(["--events", "none", "detector", "squeeze", "--classifier", str(classifier_ckpt), "--out", str(sq),
                     "--name", "squeeze_check", "--data", str(data_root), "--false-alarm", "0.25", "--pgd-steps", "2",
                     "--max-test-images", "8", "--parity-images", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["--events", "none", "detector", "measure", str(det), "--data", str(data_root),
                     "--adversarial", str(classifier_ckpt), "--squeeze-check", str(sq),
                     "--adversarial-max-images", "10"]) == 0
    res = json.loads(capsys.readouterr().out)
    a = res["attacks"]
    assert a["images"] == 10 and a["eps"] == 0.01 and a["pgd_steps"] == 5
    assert a["gates"]["detector"]["threshold"] == res["threshold"]
    sq_card = json.loads((models / "squeeze_check.card.json").read_text())
    assert a["gates"]["squeeze_check"]["threshold"] == sq_card["threshold"]
    for part in ("clean", "fgsm", "pgd"):
        f = a[part]["flagged"]
        assert set(f) == {"detector", "squeeze_check", "either"}
        assert max(f["detector"], f["squeeze_check"]) <= f["either"] <= f["detector"] + f["squeeze_check"] + 1e-12
    for name in ("fgsm", "pgd"):
        assert 0 <= a[name]["fooled"] <= round(a["clean"]["classifier_accuracy"] * 10)
        assert a[name]["classifier_accuracy"] <= a["clean"]["classifier_accuracy"] + 1e-12
    # eps 0 changes nothing: the attacked copies are flagged exactly like the clean scans, nobody is fooled
    from training.detector_export import _context
    from breakfix_desktop.core.protocol import NullWriter
    ckpt = torch.load(out / "detector" / "checkpoint.pt", map_location="cpu", weights_only=False)
    test = _context(data_root, tmp_path, ckpt["config"], NullWriter()).dataset("test")
    same = gate_on_attacks(_Session(det), res["threshold"], test, classifier_ckpt, squeeze_check=sq, eps=0.0,
                           pgd_steps=1, max_images=6)
    for name in ("fgsm", "pgd"):
        assert same[name]["flagged"] == same["clean"]["flagged"] and same[name]["fooled"] == 0
        assert same[name]["classifier_accuracy"] == same["clean"]["classifier_accuracy"]
    # refused with a clear message: a second check without attacks, a check that no longer matches its card
    with pytest.raises(SystemExit) as exc:
        cli.main(["--events", "none", "detector", "measure", str(det), "--data", str(data_root),
                  "--squeeze-check", str(sq)])
    assert exc.value.code == 2 and "--adversarial" in capsys.readouterr().err
    sq.write_bytes(sq.read_bytes() + b"\0")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--events", "none", "detector", "measure", str(det), "--data", str(data_root),
                  "--adversarial", str(classifier_ckpt), "--squeeze-check", str(sq)])
    assert exc.value.code == 2 and "squeeze_check.onnx does not match the SHA-256" in capsys.readouterr().err


def test_squeeze_check_export_calibration_and_screening(classifier_ckpt, data_root, tmp_path):
    models = tmp_path / "models"
    rc = cli.main(["--events", "none", "detector", "squeeze", "--classifier", str(classifier_ckpt),
                   "--out", str(models / "squeeze_check.onnx"), "--name", "squeeze_check", "--data", str(data_root),
                   "--false-alarm", "0.25", "--pgd-steps", "2", "--max-test-images", "12",
                   "--manifest", str(models / "manifest.json"), "--parity-images", "4", "--threads", "2"])
    assert rc == 0
    card = json.loads((models / "squeeze_check.card.json").read_text())
    threshold = card["threshold"]
    assert card["role"] == "check" and [o["name"] for o in card["outputs"]][0] == "score"
    assert card["operating_point"]["validation_false_alarm"] <= 0.25
    per = card["metrics"]["per_set"]
    assert per["clean"]["images"] == per["fgsm"]["images"] == per["pgd"]["images"] == 12
    assert all(0.0 <= per[k]["flagged"] <= 1.0 for k in ("clean", "fgsm", "pgd"))
    assert card["metrics"]["parity"]["max_abs_score_diff"] <= 1e-4
    assert card["training"]["squeezers"] == ["bit depth 5", "median 3x3 (edge-replicated)"]
    meta = {p.key: p.value for p in onnx.load(str(models / "squeeze_check.onnx")).metadata_props}
    assert float(meta["threshold"]) == threshold and meta["role"] == "check"

    _add_classifier(models)
    reg = load_registry(models)
    assert [m.name for m in reg.verified("check")] == ["squeeze_check"] and not reg.refused
    files = [_save_scan(torch.from_numpy(preprocess_file(p)), tmp_path / "in" / p.name)
             for p in sorted((data_root / "Testing" / "glioma").glob("*.png"))[:3]]
    sess = ort.InferenceSession(str(models / "squeeze_check.onnx"), providers=["CPUExecutionProvider"])
    expected = sess.run(["score"], {"pixels": np.stack([preprocess_file(f) for f in files])})[0]
    with QuarantineStore(tmp_path / "store") as store:
        summary = _engine(models, store).run(files)
    assert NO_DETECTOR_NOTE not in summary.notes
    for s, res in zip(expected, summary.results):
        assert res.scores["squeeze_check"] == pytest.approx(float(s), abs=1e-5)
        assert res.verdict == ("quarantined" if s >= threshold else "clear")


def test_detector_from_reuses_a_matching_detector_and_refuses_another(detector_run, data_root, classifier_ckpt,
                                                                     tmp_path):
    """Table 9 with the same training rule measures an already trained detector; a detector trained
    differently (here: without the held-out circles) is refused, naming what differs."""
    from training.drills import create_drill
    from training.drills.base import DrillError

    out, first = detector_run
    ckpt = out / "detector" / "checkpoint.pt"
    config = {"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "eval_batch_size": 16,
              "holdout_shapes": ["circle"], "adversarial_classifier": str(classifier_ckpt),
              "pgd_steps": 2, "adversarial_max_images": 8, "test_shapes": ["square"], "creeper": False,
              "figures": False, "detector_from": str(ckpt)}
    r = create_drill("table9-detector-triangles").execute(data_root, tmp_path / "reuse", NullWriter(),
                                                          config=config, device="cpu")
    assert r["model"]["reused_from"] == {"checkpoint": str(ckpt), "drill": "table9-detector-triangles",
                                         "epochs": 1}
    assert r["history"] == first["history"]  # not trained again
    assert r["patterns"]["test"]["patterns_per_shape"] == {"square": r["patterns"]["test"]["poisoned"]}
    assert r["per_shape_recall"] == first["per_shape_recall"]  # same weights, same scans
    with pytest.raises(DrillError, match=r"trained with other settings \(holdout_shapes, patterns.train"):
        create_drill("table9-detector-triangles").execute(
            data_root, tmp_path / "refused", NullWriter(), config={**config, "holdout_shapes": []}, device="cpu")
    with pytest.raises(DrillError, match="does not exist"):
        create_drill("table9-detector-triangles").execute(
            data_root, tmp_path / "missing", NullWriter(),
            config={**config, "detector_from": str(tmp_path / "nope.pt")}, device="cpu")


def test_shipped_detector_imports_back_and_seeds_a_drill(detector_run, data_root, classifier_ckpt, tmp_path):
    """import-onnx on an exported detector gives a checkpoint with the same score and map (in eval
    mode) and its pattern settings; a detector drill's init_from trains on from those weights and
    records where it started; every detector drill reports recall per size class."""
    from training.detector import DetectorGraph, load_detector
    from training.drills import create_drill
    from training.drills.base import DrillError

    out, _ = detector_run
    models = tmp_path / "models"
    onnx_path = models / "pattern_detector.onnx"
    assert cli.main(["--events", "none", "detector", "export", "--checkpoint", str(out / "detector" / "checkpoint.pt"),
                     "--out", str(onnx_path), "--name", "pattern_detector", "--data", str(data_root),
                     "--parity-images", "4", "--threads", "2", "--calibrate-on", "test-rule"]) == 0
    op = json.loads((models / "pattern_detector.card.json").read_text())["operating_point"]
    assert "test rule: one pattern per scan" in op["calibrated_on"]
    assert op["calibration_patterns"]["max_patterns"] == 1 and op["calibration_patterns"]["shapes"] == ["triangle"]
    imported = tmp_path / "imported" / "checkpoint.pt"
    assert cli.main(["--events", "none", "import-onnx", str(onnx_path), "--out", str(imported), "--data",
                     str(data_root), "--calibration-images", "16"]) == 0
    model, state = load_detector(imported)
    par = state["provenance"]["imported_from"]["parity"]
    assert par["max_abs_score_diff"] <= 1e-4 and par["max_abs_map_diff"] <= 1e-4
    assert state["detector"]["drill"] == "table9-detector-triangles"
    x = np.random.default_rng(1).random((2, 3, 224, 224)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    score, heat = sess.run(None, {"pixels": x})
    with torch.no_grad():
        t_score, t_heat = DetectorGraph(model)(torch.from_numpy(x))
    assert np.abs(score - t_score.numpy()).max() <= 1e-4 and np.abs(heat - t_heat.numpy()).max() <= 1e-4

    config = {"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "eval_batch_size": 16, "lr": 1e-4,
              "train_sizes": ["small", "small", "medium", "large"], "adversarial_classifier": str(classifier_ckpt),
              "pgd_steps": 2, "adversarial_max_images": 8, "creeper": False, "figures": False,
              "init_from": str(imported)}
    r = create_drill("table7-detector-mixed-sizes").execute(data_root, tmp_path / "tuned", NullWriter(),
                                                            config=config, device="cpu")
    init = r["model"]["init_from"]
    assert init["checkpoint"] == str(imported) and init["drill"] == "table9-detector-triangles"
    assert init["provenance"]["imported_from"]["onnx"] == str(onnx_path) and len(init["sha256"]) == 64
    assert r["patterns"]["train"]["spec"]["sizes"] == ["small", "small", "medium", "large"]
    test = r["data"]["test"]["images"]
    assert list(r["per_size_recall"]) == ["small", "medium", "large"]
    assert all(v["images"] == test and v["in_training"] for v in r["per_size_recall"].values())
    assert "recall per size (circle/square/cross/triangle, 1 per scan, operating point): small " in (
        tmp_path / "tuned" / "table.txt").read_text()
    saved = torch.load(tmp_path / "tuned" / "detector" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert saved["detector"]["init_from"]["sha256"] == init["sha256"]

    with pytest.raises(DrillError, match="not both"):
        create_drill("table7-detector-mixed-sizes").execute(
            data_root, tmp_path / "both", NullWriter(), config={**config, "detector_from": str(imported)}, device="cpu")
    with pytest.raises(DrillError, match="init_from: .* is not a pattern-detector checkpoint"):
        create_drill("table7-detector-mixed-sizes").execute(
            data_root, tmp_path / "wrong", NullWriter(), config={**config, "init_from": str(classifier_ckpt)},
            device="cpu")


# --------------------------------------------------------------------------- test-time augmentation
def test_hflip_tta_averages_the_scan_and_its_mirror_in_eval_mode_only():
    """tta = hflip: both heads are the mean over the scan and its mirror image (the mirror's map
    flipped back), so the score no longer depends on which side a scan is shown; training sees
    single passes."""
    from training.detector import DetectorGraph, PatternDetector

    torch.manual_seed(0)
    plain = PatternDetector(fine_channels=4).eval()
    tta = PatternDetector(fine_channels=4, tta="hflip").eval()
    tta.load_state_dict(plain.state_dict())
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        lg, seg = plain.forward_all(x)
        lgm, segm = plain.forward_all(torch.flip(x, [-1]))
        tl, ts = tta.forward_all(x)
        ml, ms = tta.forward_all(torch.flip(x, [-1]))
        score, heat = DetectorGraph(tta, "segmentation")(x)
    assert torch.allclose(tl, (lg + lgm) / 2, atol=1e-5)
    assert torch.allclose(ts, (seg + torch.flip(segm, [-1])) / 2, atol=1e-5)
    assert torch.allclose(ml, tl, atol=1e-5) and torch.allclose(ms, torch.flip(ts, [-1]), atol=1e-5)
    assert torch.allclose(score, torch.sigmoid(ts).amax(dim=(1, 2, 3)), atol=1e-6)
    assert not torch.allclose(ts, seg, atol=1e-3)  # it does change the map of an asymmetric scan
    tta.train()
    plain.train()
    torch.manual_seed(1)
    a = tta.forward_all(x)[1]
    torch.manual_seed(1)
    assert torch.allclose(a, plain.forward_all(x)[1])  # training: one pass, no mirror
    assert "mirror image" in tta.description and "mirror" not in plain.description
    with pytest.raises(ValueError, match="unknown detector test-time augmentation 'vflip'"):
        PatternDetector(tta="vflip")


def test_tta_export_records_it_and_imports_back_validate_compares_modes(detector_run, data_root, tmp_path, capsys):
    """detector export --tta hflip: the graph holds the mirror pass (parity against torch passes), the
    card records it, import-onnx rebuilds the same graph; validate --tta none hflip gives a row each."""
    from training.detector import DetectorGraph, load_detector

    out, _ = detector_run
    ckpt = out / "detector" / "checkpoint.pt"
    onnx_path = tmp_path / "models" / "pattern_detector.onnx"
    assert cli.main(["--events", "none", "detector", "export", "--checkpoint", str(ckpt), "--out", str(onnx_path),
                     "--name", "pattern_detector", "--data", str(data_root), "--parity-images", "2",
                     "--score", "segmentation", "--tta", "hflip", "--calibration-draws", "2",
                     "--recall-confidence", "0.8", "--target-recall", "0.8"]) == 0
    card = json.loads((tmp_path / "models" / "pattern_detector.card.json").read_text())
    op = card["operating_point"]
    assert op["calibration_draws"] == 2 and "2 pattern draws of" in op["calibrated_on"]
    assert op["recall_confidence"] == 0.8 and op["validation_recall_lower_bound"] >= 0.8
    import re
    total, per_draw = map(int, re.search(r"\((\d+) scans, 2 pattern draws of (\d+) scans", op["calibrated_on"]).groups())
    assert total == 2 * per_draw == op["validation"]["positives"] + op["validation"]["negatives"]
    assert card["training"]["detector"]["tta"] == "hflip" and "mirror image" in card["architecture"]
    assert card["metrics"]["parity"]["max_abs_score_diff"] <= 1e-4
    x = np.random.default_rng(2).random((2, 3, 224, 224)).astype(np.float32)
    score, _ = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})
    model, _ = load_detector(ckpt)
    with torch.no_grad():
        plain, _ = DetectorGraph(model, "segmentation")(torch.from_numpy(x))
        mirror, _ = DetectorGraph(model, "segmentation")(torch.from_numpy(x[..., ::-1].copy()))
    assert np.abs(score - plain.numpy()).max() > 1e-6  # not the plain graph
    # the score is the map maximum of the averaged logits: between the plain and the mirrored maxima's min and max
    assert (score <= np.maximum(plain.numpy(), mirror.numpy()) + 1e-5).all()
    imported = tmp_path / "imported.pt"
    assert cli.main(["--events", "none", "import-onnx", str(onnx_path), "--out", str(imported), "--data",
                     str(data_root), "--calibration-images", "8"]) == 0
    back, state = load_detector(imported)
    assert back.tta == "hflip" and state["provenance"]["imported_from"]["parity"]["max_abs_score_diff"] <= 1e-4
    capsys.readouterr()
    assert cli.main(["--events", "none", "detector", "validate", "--checkpoint", str(ckpt), "--data", str(data_root),
                     "--tta", "none", "hflip", "--score", "segmentation"]) == 0
    rows = json.loads(capsys.readouterr().out)["checkpoints"]
    assert [r["tta"] for r in rows] == ["none", "hflip"] and rows[0]["roc_auc"] != rows[1]["roc_auc"]


def test_union_export_flags_what_any_member_flags_and_imports_each_member(detector_run, data_root, tmp_path, capsys):
    """detector export with two --checkpoint: one graph whose score is the highest member score (map =
    cell-wise maximum), the card lists both members, import-onnx needs --member and rebuilds each;
    a member that held out a different validation split is refused."""
    from training.detector import DetectorGraph, load_detector

    out, _ = detector_run
    first = out / "detector" / "checkpoint.pt"
    state = torch.load(first, map_location="cpu", weights_only=False)
    gen = torch.Generator().manual_seed(3)
    # a second trained detector: every convolution differs (the exporter keeps identical weights once)
    state["model"] = {k: (v + (0.5 if k.startswith("seg.") else 0.01) * torch.randn(v.shape, generator=gen)
                          if v.dim() == 4 else v) for k, v in state["model"].items()}
    second = tmp_path / "second.pt"
    torch.save(state, second)
    onnx_path = tmp_path / "models" / "pattern_detector.onnx"
    assert cli.main(["--events", "none", "detector", "export", "--checkpoint", str(first), "--checkpoint", str(second),
                     "--out", str(onnx_path), "--name", "pattern_detector", "--data", str(data_root),
                     "--parity-images", "2", "--score", "segmentation", "--tta", "hflip"]) == 0
    card = json.loads(onnx_path.with_name("pattern_detector.card.json").read_text())
    union = card["training"]["detector"]["union"]
    assert [u["checkpoint"] for u in union] == [str(first), str(second)]
    assert card["architecture"].startswith("union of 2 pattern detectors") and card["metrics"]["parity"]["max_abs_score_diff"] <= 1e-4
    x = np.random.default_rng(4).random((3, 3, 224, 224)).astype(np.float32)
    score, heat = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})
    members = []
    for path in (first, second):
        model, _ = load_detector(path)
        model.tta = "hflip"
        with torch.no_grad():
            members.append([t.numpy() for t in DetectorGraph(model, "segmentation")(torch.from_numpy(x))])
    assert np.abs(members[0][0] - members[1][0]).max() > 1e-3  # the members differ
    np.testing.assert_allclose(score, np.maximum(members[0][0], members[1][0]), atol=1e-4)
    # the map is upsampled after the maximum: at least each member's, and somewhere more than one of them
    assert (heat >= np.maximum(members[0][1], members[1][1]) - 1e-4).all()
    capsys.readouterr()
    imported = tmp_path / "imported.pt"
    base = ["--events", "none", "import-onnx", str(onnx_path), "--out", str(imported), "--data", str(data_root),
            "--calibration-images", "8"]
    with pytest.raises(SystemExit) as exc:
        cli.main(base)
    assert exc.value.code == 2 and "a union of pattern detectors" in capsys.readouterr().err
    assert cli.main(base + ["--member", "1"]) == 0
    back, st = load_detector(imported)
    assert back.tta == "hflip" and "member 1 of the detector union" in st["provenance"]["imported_from"]["note"]
    assert st["provenance"]["imported_from"]["parity"]["max_abs_score_diff"] <= 1e-4
    with torch.no_grad():
        again = DetectorGraph(back, "segmentation")(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(again, members[1][0], atol=1e-3)
    state["config"]["val_fraction"] = 0.3
    torch.save(state, second)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--events", "none", "detector", "export", "--checkpoint", str(first), "--checkpoint", str(second),
                  "--out", str(tmp_path / "bad.onnx"), "--name", "bad", "--threshold", "0.5"])
    assert exc.value.code == 2 and "different validation split" in capsys.readouterr().err


# --------------------------------------------------------------------------- the fine branch
def test_fine_branch_starts_at_zero_so_trained_weights_score_as_before():
    """A detector with a fine branch, loaded from one without, scores exactly as that one did until
    it is trained (the branch's output convolution starts at zero); it adds weights only under
    ``seg.fine.``."""
    from training.detector import DetectorGraph, PatternDetector, build_detector

    torch.manual_seed(0)
    plain = PatternDetector().eval()
    fine = PatternDetector(fine_channels=4).eval()
    missing, unexpected = fine.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("seg.fine.") for k in missing) and not unexpected
    assert fine.arch == "resnet18+fine" and build_detector({"fine_channels": 4}).fine_channels == 4
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        (s0, m0), (s1, m1) = DetectorGraph(plain)(x), DetectorGraph(fine)(x)
        assert torch.equal(s0, s1) and torch.equal(m0, m1)
        fine.seg.fine.out.weight.normal_()
        assert not torch.allclose(DetectorGraph(fine)(x)[1], m0)


def test_fine_branch_trains_on_a_detector_exports_and_imports_back(detector_run, data_root, classifier_ckpt,
                                                                     tmp_path):
    """init_from a detector without the branch plus ``fine_channels``: the new weights train, the
    checkpoint and card record the branch, the ONNX export matches torch and import-onnx rebuilds it."""
    from training.detector import load_detector
    from training.drills import create_drill
    from training.drills.base import DrillError

    out, _ = detector_run
    config = {"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "eval_batch_size": 16, "lr": 1e-3,
              "adversarial_classifier": "", "creeper": False, "figures": False, "per_shape_recall": False,
              "per_size_recall": False, "init_from": str(out / "detector" / "checkpoint.pt"), "fine_channels": 4}
    r = create_drill("table7-detector-mixed-sizes").execute(data_root, tmp_path / "fine", NullWriter(),
                                                            config=config, device="cpu")
    assert r["model"]["arch"] == "resnet18+fine" and r["model"]["fine_channels"] == 4
    ckpt = tmp_path / "fine" / "detector" / "checkpoint.pt"
    model, state = load_detector(ckpt)
    assert state["detector"]["fine_channels"] == 4 and model.fine_channels == 4
    assert model.seg.fine.out.weight.abs().sum() > 0  # it trained
    onnx_path = tmp_path / "models" / "pattern_detector.onnx"
    assert cli.main(["--events", "none", "detector", "export", "--checkpoint", str(ckpt), "--out", str(onnx_path),
                     "--name", "pattern_detector", "--data", str(data_root), "--parity-images", "4",
                     "--threads", "2"]) == 0
    card = json.loads(onnx_path.with_name("pattern_detector.card.json").read_text())
    assert card["training"]["detector"]["fine_channels"] == 4
    assert card["architecture"] == "resnet18 + segmentation head + 4-channel full-resolution branch (pattern detector)"
    imported = tmp_path / "imported" / "checkpoint.pt"
    assert cli.main(["--events", "none", "import-onnx", str(onnx_path), "--out", str(imported), "--data",
                     str(data_root), "--calibration-images", "16"]) == 0
    again, st = load_detector(imported)
    assert again.fine_channels == 4 and st["provenance"]["imported_from"]["parity"]["max_abs_map_diff"] <= 1e-4

    with pytest.raises(DrillError, match="fine_channels"):
        create_drill("table7-detector-mixed-sizes").settings({"fine_channels": -1})
