"""Measured robustness on a model card (training.card_robustness, ``card-robustness``) and on the
Models page's sentences (core.model_cards)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from breakfix_desktop.core.hashing import sha256_file
from breakfix_desktop.core.model_cards import ROBUST_WARN_BELOW, card_summary, card_warnings
from training.card_robustness import CardRobustnessError, attach_robustness


def _files(tmp_path):
    """Three fake checkpoint files and an ensemble file (their bytes differ, so their hashes do)."""
    paths = {}
    for name in ("ens.json", "cnn.pt", "resnet.pt", "other.pt"):
        paths[name] = tmp_path / "runs" / name
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        paths[name].write_bytes(name.encode() * 10)
    return paths


def _ensemble_card(tmp_path, paths):
    card = {"format": "breakfix-model-card/1", "name": "ensemble", "role": "ensemble", "sha256": "ab" * 32,
            "metrics": {"test": {"accuracy": 0.963, "n": 1311}},
            "ensemble": {"sha256": sha256_file(paths["ens.json"]), "members": [
                {"name": "CNN_PGD", "sha256": sha256_file(paths["cnn.pt"]), "weight": 1.0},
                {"name": "ResNet18_PGD", "sha256": sha256_file(paths["resnet.pt"]), "weight": 2.0}]}}
    path = tmp_path / "ensemble.card.json"
    path.write_text(json.dumps(card))
    return path


def _report(tmp_path, name, drill, results, models, *, quick=False, record=True, **settings):
    report = {"format": "breakfix-drill-report/1", "drill": drill, "quick": quick, "finished": "2026-12-03T13:00:00+0000",
              "settings": {"models": models, "strong_attack": {"steps": 20, "restarts": 2, "eps": 0.01, "alpha": 0.0025},
                           "random_start": True, "max_test_images": None, **settings},
              "results": results, "missing": {}}
    if record:
        report["model_files"] = {n: {"path": p, "sha256": sha256_file(tmp_path / p)} for n, p in models.items()}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(report))
    return path


def test_rows_go_to_the_ensemble_and_its_members_by_hash(tmp_path):
    paths = _files(tmp_path)
    card_path = _ensemble_card(tmp_path, paths)
    models = {"Ensemble": "runs/ens.json", "ResNet_PGD": "runs/resnet.pt", "CNN_clean": "runs/other.pt"}
    pgd = _report(tmp_path, "pgd", "table4-pgd", {
        "Ensemble": {"clean": {"accuracy": 0.97, "n": 1311}, "0.01/0.001/5": {"accuracy": 0.91, "n": 1311}},
        "ResNet_PGD": {"clean": {"accuracy": 0.972, "n": 1311}, "0.01/0.001/5": {"accuracy": 0.92, "n": 1311}},
        "CNN_clean": {"clean": {"accuracy": 0.94, "n": 1311}, "0.01/0.001/5": {"accuracy": 0.24, "n": 1311}}}, models)
    fgsm = _report(tmp_path, "fgsm", "table3-fgsm", {
        "Ensemble": {"clean": {"accuracy": 0.97, "n": 1311}, "0.1": {"accuracy": 0.5, "n": 1311},
                     "0.01": {"accuracy": 0.8, "n": 1311}}}, {"Ensemble": "runs/ens.json"}, record=False)
    worst = _report(tmp_path, "worst", "table4-pgd", {
        "Ensemble": {"clean": {"accuracy": 0.98, "n": 128}, "PGD-20 x2 worst case": {"accuracy": 0.45, "n": 128}}},
        {"Ensemble": "runs/ens.json"}, max_test_images=128, settings_grid=[])

    section = attach_robustness(card_path, [pgd, fgsm, worst], root=tmp_path)
    card = json.loads(card_path.read_text())
    assert card["metrics"]["robustness"] == section and card["metrics"]["test"]["accuracy"] == 0.963  # rest kept
    labels = {r["label"]: r["accuracy"] for r in section["model"]}
    assert labels == {"PGD eps 0.01, alpha 0.001, 5 steps": 0.91, "FGSM eps 0.1": 0.5, "FGSM eps 0.01": 0.8,
                      "worst case of FGSM and 2 x PGD-20 (eps 0.01, alpha 0.0025)": 0.45}
    [member] = section["members"]["ResNet18_PGD"]  # ResNet_PGD in the drill is the ResNet18_PGD member
    assert member["accuracy"] == 0.92 and member["report_model"] == "ResNet_PGD"
    assert "CNN_clean" not in json.dumps(section["members"])  # not built into this card
    wc = [r for r in section["model"] if r["attack"] == "worst case"][0]
    assert wc["n"] == 128 and wc["scans"] == "stratified Testing subset" and wc["restarts"] == 2
    assert wc["clean_accuracy"] == 0.98 and wc["report"] == str(worst)

    # attaching again replaces the same rows instead of piling them up
    again = attach_robustness(card_path, [pgd, worst], root=tmp_path)
    assert len(again["model"]) == 4 and len(again["members"]["ResNet18_PGD"]) == 1

    # the sentence and the warning of the Models page
    text = " ".join(card_summary(card))
    assert ("Accuracy under white-box attack on Testing: FGSM eps 0.1 50.0 %; FGSM eps 0.01 80.0 %; PGD eps 0.01, "
            "alpha 0.001, 5 steps 91.0 %; worst case of FGSM and 2 x PGD-20 (eps 0.01, alpha 0.0025) 45.0 % "
            "(128 scans).") in text
    sub = dict(section["model"][0], n=256, scans="stratified Testing subset", accuracy=0.1)
    card["metrics"]["robustness"]["model"].append(sub)  # the same PGD on fewer scans: the 1311 row is shown
    assert " ".join(card_summary(card)).count("PGD eps 0.01, alpha 0.001, 5 steps 91.0 %;") == 1
    [warning] = card_warnings(card)
    assert warning.startswith("Under the strongest attack measured (worst case of FGSM and 2 x PGD-20") and \
        "only 45.0 % of its answers hold" in warning


def test_a_report_of_other_models_is_refused_and_the_card_untouched(tmp_path):
    paths = _files(tmp_path)
    card_path = _ensemble_card(tmp_path, paths)
    before = card_path.read_text()
    other = _report(tmp_path, "other", "table4-pgd", {"CNN_clean": {"clean": {"accuracy": 0.9, "n": 10},
                                                                   "0.01/0.001/5": {"accuracy": 0.2, "n": 10}}},
                    {"CNN_clean": "runs/other.pt"})
    with pytest.raises(CardRobustnessError, match=r"other\.json: none of its models was built into ensemble"):
        attach_robustness(card_path, [other], root=tmp_path)
    # a file changed since the drill ran: its recorded hash decides, not today's bytes
    good = _report(tmp_path, "good", "table4-pgd", {"Ensemble": {"clean": {"accuracy": 0.9, "n": 10},
                                                                "0.01/0.001/5": {"accuracy": 0.7, "n": 10}}},
                   {"Ensemble": "runs/ens.json"})
    paths["ens.json"].write_bytes(b"retrained")
    stale = _report(tmp_path, "stale", "table4-pgd", json.loads(good.read_text())["results"],
                    {"Ensemble": "runs/ens.json"})
    with pytest.raises(CardRobustnessError, match="stale.json"):
        attach_robustness(card_path, [stale], root=tmp_path)
    quick = _report(tmp_path, "quick", "table4-pgd", {}, {}, quick=True)
    with pytest.raises(CardRobustnessError, match="quick run"):
        attach_robustness(card_path, [quick], root=tmp_path)
    fig = tmp_path / "fig.json"
    fig.write_text(json.dumps({"format": "breakfix-drill-report/1", "drill": "fig6-drunk-curves"}))
    with pytest.raises(CardRobustnessError, match="not a table3-fgsm / table4-pgd report"):
        attach_robustness(card_path, [fig], root=tmp_path)
    assert card_path.read_text() == before
    attach_robustness(card_path, [good], root=tmp_path)  # recorded before the file changed: still matches
    assert json.loads(card_path.read_text())["metrics"]["robustness"]["model"][0]["accuracy"] == 0.7
    det = tmp_path / "det.card.json"
    det.write_text(json.dumps({"role": "detector"}))
    with pytest.raises(CardRobustnessError, match="role 'detector'"):
        attach_robustness(det, [good], root=tmp_path)


def test_a_classifier_card_matches_its_source_checkpoint(tmp_path):
    paths = _files(tmp_path)
    card_path = tmp_path / "cnn_pgd.card.json"
    card_path.write_text(json.dumps({"name": "cnn_pgd", "role": "classifier", "sha256": "cd" * 32, "metrics": {},
                                     "training": {"source_checkpoint": {"path": "runs/cnn.pt",
                                                                        "sha256": sha256_file(paths["cnn.pt"])}}}))
    rep = _report(tmp_path, "fgsm", "table3-fgsm", {"CNN_PGD": {"clean": {"accuracy": 0.88, "n": 1311},
                                                               "0.01": {"accuracy": 0.63, "n": 1311}}},
                  {"CNN_PGD": "runs/cnn.pt"})
    section = attach_robustness(card_path, [rep], root=tmp_path)
    assert [(r["label"], r["accuracy"], r["scans"]) for r in section["model"]] == [("FGSM eps 0.01", 0.63,
                                                                                  "all Testing scans")]
    card = json.loads(card_path.read_text())
    assert "FGSM eps 0.01 63.0 %." in " ".join(card_summary(card)) and len(card_warnings(card)) == 1
    card["metrics"]["robustness"]["model"][0]["accuracy"] = ROBUST_WARN_BELOW
    assert card_warnings(card) == []  # at the bar: no warning


def test_the_cli_writes_the_card_and_refuses_a_mismatch(tmp_path, monkeypatch, capsys):
    from training.cli import main

    paths = _files(tmp_path)
    card_path = _ensemble_card(tmp_path, paths)
    rep = _report(tmp_path, "pgd", "table4-pgd", {"Ensemble": {"clean": {"accuracy": 0.97, "n": 1311},
                                                              "0.01/0.001/5": {"accuracy": 0.906, "n": 1311}}},
                  {"Ensemble": "runs/ens.json"})
    monkeypatch.chdir(tmp_path)  # report paths are relative to the current folder
    assert main(["--events", "none", "card-robustness", "--card", str(card_path), "--report", str(rep)]) == 0
    assert "PGD eps 0.01, alpha 0.001, 5 steps: 0.906 on 1311 scans (table4-pgd)" in capsys.readouterr().out
    other = _report(tmp_path, "other", "table4-pgd", {"X": {"clean": {"accuracy": 1.0, "n": 1}}}, {"X": "runs/other.pt"})
    with pytest.raises(SystemExit) as exc:
        main(["--events", "none", "card-robustness", "--card", str(card_path), "--report", str(other)])
    assert exc.value.code == 2
    assert "none of its models was built into" in capsys.readouterr().err


def test_the_evasion_drill_records_the_hash_of_every_attacked_file(tmp_path):
    from training.drills import create_drill

    paths = _files(tmp_path)
    drill = create_drill("table3-fgsm")
    ctx = SimpleNamespace(settings={"models": {"CNN_clean": "", "Ensemble": str(paths["ens.json"]),
                                               "ResNet_PGD": str(tmp_path / "absent.pt")}})
    files = drill.model_files(ctx, {"CNN_clean": object(), "Ensemble": object()})
    assert files == {"Ensemble": {"path": str(paths["ens.json"]), "sha256": sha256_file(paths["ens.json"])}}


def _rebuilt_member(path, onnx_sha, member):
    """A checkpoint file as ``import-onnx --member`` writes it (only the provenance matters here)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "breakfix-checkpoint/1", "provenance": {"imported_from": {
        "onnx": "resources/models/ensemble.onnx", "sha256": onnx_sha, "member": member}}}, path)
    return path


@pytest.mark.parametrize("case", ["ok", "other_file", "wrong_weight", "missing_member"])
def test_an_ensemble_rebuilt_from_the_shipped_graph_links_to_its_card(tmp_path, case):
    """The training checkpoints are gone; the members rebuilt by ``import-onnx --member`` from the
    card's own file stand for it, but only all of them, from that file, with the card's weights."""
    paths = _files(tmp_path)
    card_path = _ensemble_card(tmp_path, paths)
    shipped = json.loads(card_path.read_text())["sha256"]
    src = {"other_file": "cd" * 32}.get(case, shipped)
    _rebuilt_member(tmp_path / "runs" / "rb" / "CNN_PGD.pt", src, "CNN_PGD")
    _rebuilt_member(tmp_path / "runs" / "rb" / "ResNet18_PGD.pt", shipped, "ResNet18_PGD")
    members = [{"name": "CNN_PGD", "checkpoint": "CNN_PGD.pt", "weight": 1.0},
               {"name": "ResNet18_PGD", "checkpoint": "ResNet18_PGD.pt", "weight": 3.0 if case == "wrong_weight" else 2.0}]
    if case == "missing_member":
        members = members[1:]
    (tmp_path / "runs" / "rb" / "ensemble.json").write_text(json.dumps({"format": "breakfix-ensemble/1", "members": members}))
    models = {"Ensemble": "runs/rb/ensemble.json", "ResNet_PGD": "runs/rb/ResNet18_PGD.pt"}
    pgd = _report(tmp_path, "pgd", "table4-pgd", {
        "Ensemble": {"clean": {"accuracy": 0.97, "n": 1311}, "0.01/0.001/5": {"accuracy": 0.93, "n": 1311}},
        "ResNet_PGD": {"clean": {"accuracy": 0.966, "n": 1311}, "0.01/0.001/5": {"accuracy": 0.925, "n": 1311}}}, models)
    section = attach_robustness(card_path, [pgd], root=tmp_path)
    assert [r["accuracy"] for r in section["members"]["ResNet18_PGD"]] == [0.925]  # a rebuilt member always links
    if case == "ok":
        assert [(r["label"], r["accuracy"]) for r in section["model"]] == [("PGD eps 0.01, alpha 0.001, 5 steps", 0.93)]
    else:
        assert section["model"] == []  # not the shipped ensemble: its rows stay off the card's model rows
