"""Model cards in sentences (core.model_cards) and on the Models page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from breakfix_desktop.core.model_cards import card_summary, card_warnings

MODELS = Path(__file__).resolve().parents[1] / "resources" / "models"


def _detector_card(sizes=None, fpr=0.05):
    card = {"role": "detector", "threshold": 0.0868, "operating_point": {"target_recall": 0.95},
            "data": {"source": "brain-tumor-mri", "training": {"images": 5137, "split": "Training", "sha256": "ab" * 32},
                     "patterns": {"test": {"sizes": ["small"], "max_patterns": 1}}},
            "metrics": {"test": {"recall": 0.852, "precision": 0.834, "false_positive_rate": fpr}}}
    if sizes is not None:
        card["metrics"]["recall_per_size"] = {k: {"recall": v, "in_training": k == "small"} for k, v in sizes.items()}
    return card


def test_detector_card_names_its_operating_point_and_weak_sizes():
    card = _detector_card({"small": 0.83, "medium": 0.435, "large": 0.90})
    text = " ".join(card_summary(card))
    assert "Flags a scan when its score is >= 0.0868, calibrated for recall 0.95" in text
    assert "Testing (one small pattern per patterned scan): recall 85.2 %, precision 83.4 %, false alarms 5.0 %" in text
    assert "small 83.0 %, medium 43.5 % (not trained on), large 90.0 % (not trained on)" in text
    assert "Data: 5137 Training scans of brain-tumor-mri (fingerprint abababababab)" in text
    [warning] = card_warnings(card)  # small (0.12 below the target) and medium; large is within 0.10
    assert warning.startswith("Misses patterns of some sizes: recall small 83.0 %, medium 43.5 % (target 0.95)")
    assert "large" not in warning


def test_detector_union_card_says_any_member_flags():
    card = _detector_card({"small": 0.9})
    assert not any("union" in t for t in card_summary(card))
    card["training"] = {"detector": {"union": [{"checkpoint": "a.pt"}, {"checkpoint": "b.pt"}]}}
    assert "A union of 2 detectors in one file: a scan is flagged when any of them finds a pattern." in card_summary(card)


def test_detector_card_says_which_contrasts_slip_through():
    card = _detector_card({"small": 0.9})
    card["metrics"]["recall_by_contrast"] = {"bins": [
        {"from": 0.0, "to": 0.1, "images": 40, "recall": 0.25}, {"from": 0.1, "to": 0.2, "images": 0, "recall": None},
        {"from": 0.2, "to": 0.4, "images": 300, "recall": 0.9}, {"from": 0.4, "to": 1.01, "images": 316, "recall": 1.0}]}
    line = [t for t in card_summary(card) if t.startswith("Recall by contrast")]
    assert line == ["Recall by contrast with the pixels a pattern covers: 0-0.1: 25.0 % of 40, 0.2-0.4: 90.0 % of "
                    "300, >= 0.4: 100.0 % of 316."]  # the empty bin is left out


def test_warning_thresholds():
    assert card_warnings(_detector_card({"small": 0.86, "medium": 0.96, "large": 0.95})) == []
    [w] = card_warnings(_detector_card({"small": 0.84, "medium": 0.96, "large": 0.95}))
    assert "small 84.0 %" in w
    [w] = card_warnings(_detector_card(None))
    assert "no recall per pattern size" in w
    ws = card_warnings(_detector_card({"small": 0.9}, fpr=0.17))
    assert ws == ["17.0 % of clean scans are flagged for review."]
    card = _detector_card({"small": 0.9})
    card["metrics"]["creeper"] = {"corner": {"recall": 0.16}, "random": {"recall": 0.9}}
    assert "creeper trigger (never trained on): recall 16.0 % in the corner, 90.0 % at random" in " ".join(
        card_summary(card))
    assert card_warnings(card) == ["Misses the §6.1 creeper trigger: recall corner 16.0 %; a backdoor drill's "
                                   "poisoned scans often pass."]
    card["metrics"]["creeper"].update({"white_corner": {"recall": 0.2}, "white_random": {"recall": 0.95}})
    assert "at full contrast (white on black): recall 20.0 % in the corner, 95.0 % at random" in " ".join(
        card_summary(card))
    assert card_warnings(card) == ["Misses the §6.1 creeper trigger: recall corner 16.0 %, corner (full contrast) "
                                   "20.0 %; a backdoor drill's poisoned scans often pass."]
    assert card_warnings({"role": "classifier", "metrics": {"test": {"accuracy": 0.9}}}) == []
    assert card_summary({}) == ["No readable model card."]


@pytest.mark.parametrize("name", ["cnn_clean", "cnn_fgsm", "cnn_pgd", "ensemble", "pattern_detector", "squeeze_check"])
def test_every_shipped_card_reads_as_sentences(name):
    path = MODELS / f"{name}.card.json"
    if not path.is_file():
        pytest.skip(f"{path} is not shipped in this checkout")
    card = json.loads(path.read_text())
    lines = card_summary(card)
    assert len(lines) >= 3 and all(line.endswith(".") for line in lines)
    if card["role"] in ("classifier", "ensemble"):
        assert f"Testing accuracy {100 * card['metrics']['test']['accuracy']:.1f} %" in " ".join(lines)
    if card["role"] == "ensemble":
        assert any(line.startswith(("Members (weighted mean of their logits): ", "Members (logits summed with weights): "))
                   for line in lines)


def test_an_ensemble_card_says_how_its_members_are_combined():
    members = [{"name": "CNN_PGD", "weight": 1.0}, {"name": "ResNet18_PGD", "weight": 8.0}]
    pytest.importorskip("torch", reason="the rule new cards carry is written by training (torch)")
    from training.models import ENSEMBLE_RULE

    mean = {"role": "ensemble", "ensemble": {"members": members, "rule": ENSEMBLE_RULE}}
    old = {"role": "ensemble", "ensemble": {"members": members, "rule": "logits = sum over members of weight * "
                                            "member logits (paper §5.2)"}}
    assert "Members (weighted mean of their logits): CNN_PGD x1, ResNet18_PGD x8." in card_summary(mean)
    assert "Members (logits summed with weights): CNN_PGD x1, ResNet18_PGD x8." in card_summary(old)


def test_a_calibrated_card_says_where_the_closer_look_flag_is_and_what_it_caught():
    curve = {"test": {"0.60": {"flagged": 17, "errors_caught": 5, "errors": 35, "images": 1311},
                      "0.95": {"flagged": 199, "errors_caught": 31, "errors": 35, "images": 1311}}}
    card = {"role": "ensemble", "low_confidence": 0.95, "temperature": 1.0,
            "calibration": {"low_confidence": {"threshold": 0.95, "catch_errors": 0.8, "curve": curve}}}
    assert ("Low confidence (needs a closer look) below 95.0 % top probability, set to catch 80.0 % of the validation "
            "errors; on Testing it flags 199 of 1311 scans and catches 31 of 35 errors.") in card_summary(card)
    card["temperature"] = 1.5
    assert any(t.endswith("Confidences are softmax(logits / 1.5) (temperature fitted on validation).")
               for t in card_summary(card))
    assert not any("closer look" in t for t in card_summary({"role": "ensemble"}))
    # chosen for either flag (calibrate --flag-rule either): the sentence names both and quotes their union
    card["calibration"]["low_confidence"].update(flag_rule="either", curve_either={"test": {"0.95": {
        "flagged": 234, "errors_caught": 32, "errors": 35, "images": 1311}}})
    assert any(t.startswith("Needs a closer look: top probability below 95.0 % or members disagree, set to catch "
                            "80.0 % of the validation errors; on Testing they flag 234 of 1311 scans and catch 32 of "
                            "35 errors.") for t in card_summary(card))


def test_one_attack_measured_on_several_samples_is_quoted_from_the_largest():
    """A worst case measured on 128, then 384, then all 1311 Testing scans: the Models page (its
    sentence and its "Under attack" column) quotes the full split, even where a subset read lower."""
    from breakfix_desktop.core.model_cards import robustness_line, strongest_attack

    def row(n, acc, attack="worst case"):
        return {"attack": attack, "eps": 0.01, "alpha": 0.0025, "steps": 20, "restarts": 2, "n": n,
                "accuracy": acc, "label": "worst case of FGSM and 2 x PGD-20",
                "scans": "all Testing scans" if n == 1311 else "stratified Testing subset"}

    card = {"role": "ensemble", "metrics": {"robustness": {"model": [row(128, 0.961), row(384, 0.940), row(1311, 0.95)]}}}
    assert strongest_attack(card)["n"] == 1311
    assert robustness_line(card) == "Accuracy under white-box attack on Testing: worst case of FGSM and 2 x PGD-20 95.0 %."
    card["metrics"]["robustness"]["model"].pop()
    assert strongest_attack(card)["n"] == 384
    assert robustness_line(card).endswith("94.0 % (384 scans).")
