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


def _tiny_onnx(path, scale=2.0):
    """A one-node ONNX file (y = x * scale) with a weight initializer, enough for graph hashes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((1,), scale, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [w])
    model = helper.make_model(graph)
    entry = model.metadata_props.add()
    entry.key, entry.value = "input_range", "0..1"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_the_graph_hash_ignores_a_metadata_reseal_and_sees_the_weights(tmp_path):
    from training.export import graph_sha256, stamp_metadata

    a = _tiny_onnx(tmp_path / "a.onnx")
    before, graph = sha256_file(a), graph_sha256(a)
    stamp_metadata(a, {"temperature": "1.0", "low_confidence": "0.96"})
    assert sha256_file(a) != before and graph_sha256(a) == graph
    assert graph_sha256(_tiny_onnx(tmp_path / "b.onnx", scale=3.0)) != graph


@pytest.mark.parametrize("case", ["old_record", "old_record_same_graph", "graph_record", "other_graph", "changed_file"])
def test_members_rebuilt_before_a_reseal_link_only_with_proof_of_the_same_graph(tmp_path, case):
    """calibrate re-seals the shipped file (metadata only): members rebuilt from the earlier file still
    stand for the card when their record names its graph hash, or when that earlier file is given and
    has the card's graph; never when the attacked file changed since the drill."""
    from training.export import graph_sha256, stamp_metadata

    paths = _files(tmp_path)
    old = _tiny_onnx(tmp_path / "old" / "ensemble.onnx")
    old_sha, graph = sha256_file(old), graph_sha256(old)
    shipped = _tiny_onnx(tmp_path / "ensemble.onnx")
    stamp_metadata(shipped, {"temperature": "1.0"})
    card_path = _ensemble_card(tmp_path, paths)
    card = json.loads(card_path.read_text())
    card.update(file="ensemble.onnx", sha256=sha256_file(shipped))  # no graph_sha256: computed from the file
    card_path.write_text(json.dumps(card))
    record = {"graph_sha256": graph} if case == "graph_record" else {}
    for name in ("CNN_PGD", "ResNet18_PGD"):
        ckpt = _rebuilt_member(tmp_path / "runs" / "rb" / f"{name}.pt", old_sha, name)
        if record:
            import torch

            state = torch.load(ckpt, weights_only=False)
            state["provenance"]["imported_from"].update(record)
            torch.save(state, ckpt)
    members = [{"name": "CNN_PGD", "checkpoint": "CNN_PGD.pt", "weight": 1.0},
               {"name": "ResNet18_PGD", "checkpoint": "ResNet18_PGD.pt", "weight": 2.0}]
    (tmp_path / "runs" / "rb" / "ensemble.json").write_text(json.dumps({"format": "breakfix-ensemble/1", "members": members}))
    worst = _report(tmp_path, "worst", "table4-pgd", {
        "Ensemble": {"clean": {"accuracy": 0.97, "n": 384}, "PGD-20 x2 worst case": {"accuracy": 0.94, "n": 384}}},
        {"Ensemble": "runs/rb/ensemble.json"}, max_test_images=384, settings_grid=[])
    if case == "changed_file":  # the ensemble file was rewritten after the drill: not what was attacked
        (tmp_path / "runs" / "rb" / "ensemble.json").write_text(json.dumps(
            {"format": "breakfix-ensemble/1", "members": members, "note": "edited"}))
    same = {"old_record_same_graph": [old], "changed_file": [old],
            "other_graph": [_tiny_onnx(tmp_path / "x" / "other.onnx", scale=5.0)]}.get(case, [])
    if case == "other_graph":
        with pytest.raises(CardRobustnessError, match="cannot stand for it"):
            attach_robustness(card_path, [worst], root=tmp_path, same_graph=same)
        return
    if case in ("old_record", "changed_file"):
        with pytest.raises(CardRobustnessError, match="none of its models was built into"):
            attach_robustness(card_path, [worst], root=tmp_path, same_graph=same)
        assert "robustness" not in json.loads(card_path.read_text())["metrics"]
        return
    section = attach_robustness(card_path, [worst], root=tmp_path, same_graph=same)
    assert [(r["attack"], r["n"], r["accuracy"]) for r in section["model"]] == [("worst case", 384, 0.94)]
    assert json.loads(card_path.read_text())["graph_sha256"] == graph  # verified from the card's file, kept


def test_the_cli_takes_an_earlier_file_as_proof_of_the_same_graph(tmp_path, monkeypatch, capsys):
    from training.cli import main

    paths = _files(tmp_path)
    card_path = _ensemble_card(tmp_path, paths)
    card = json.loads(card_path.read_text())
    shipped = _tiny_onnx(tmp_path / "ensemble.onnx")
    card.update(file="ensemble.onnx", sha256=sha256_file(shipped))
    card_path.write_text(json.dumps(card))
    rep = _report(tmp_path, "pgd", "table4-pgd", {"Ensemble": {"clean": {"accuracy": 0.97, "n": 1311},
                                                              "0.01/0.001/5": {"accuracy": 0.906, "n": 1311}}},
                  {"Ensemble": "runs/ens.json"})
    monkeypatch.chdir(tmp_path)
    other = _tiny_onnx(tmp_path / "other.onnx", scale=7.0)
    with pytest.raises(SystemExit) as exc:
        main(["--events", "none", "card-robustness", "--card", str(card_path), "--report", str(rep),
              "--same-graph", str(other)])
    assert exc.value.code == 2 and "cannot stand for it" in capsys.readouterr().err
    assert main(["--events", "none", "card-robustness", "--card", str(card_path), "--report", str(rep),
                 "--same-graph", str(shipped)]) == 0
    assert "0.906 on 1311 scans" in capsys.readouterr().out
