"""Worst-case robust accuracy (clean + FGSM + PGD restarts, per image) and its drill settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.attacks import FGSM, PGD
from training.robust_eval import attack_accuracy, worst_case_accuracy


def _setup(n=48, seed=0):
    """A small linear 'classifier' on 3 x 8 x 8 pixels and data it gets partly right, some of it
    close to the decision boundary (so attacks flip some images but not all)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.rand(n, 3, 8, 8)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[::4] = (y[::4] + 1) % 4  # a quarter wrong already
    return model, (x, y)


def test_worst_case_is_below_every_single_attack_and_consistent():
    model, data = _setup()
    eps, alpha = 0.03, 0.01
    res = worst_case_accuracy(model, data, eps=eps, alpha=alpha, steps=5, restarts=3, batch_size=16)
    clean = attack_accuracy(model, data)
    fgsm = attack_accuracy(model, data, FGSM(model, eps=eps))
    assert res["n"] == 48 and res["clean_accuracy"] == pytest.approx(clean) == pytest.approx(0.75)
    assert res["accuracy"] <= fgsm and res["accuracy"] <= clean
    assert 0.0 < res["accuracy"] < clean  # the attack bites, but not everything falls (a test that can fail)
    accs = [s["accuracy"] for s in res["stages"]]
    assert [s["stage"] for s in res["stages"]] == ["clean", "fgsm", "pgd-5#1", "pgd-5#2", "pgd-5#3"]
    assert accs == sorted(accs, reverse=True)  # cumulative: never goes up
    # the worst-case predictions agree with the worst-case accuracy, and wrong ones are real predictions
    assert np.mean(res["predictions"] == res["labels"]) == pytest.approx(res["accuracy"])
    assert np.array_equal(res["labels"], data[1].numpy())


def test_progress_is_reported_per_batch_with_the_accuracy_so_far():
    model, data = _setup()
    seen = []
    res = worst_case_accuracy(model, data, eps=0.03, alpha=0.01, steps=2, restarts=1, batch_size=20,
                              on_batch=lambda *a: seen.append(a))
    assert [(d, t) for d, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    right = res["predictions"] == res["labels"]
    assert [acc for _, _, acc in seen] == pytest.approx([right[:20].mean(), right[:40].mean(), right.mean()])


def test_an_image_counts_only_if_it_survives_every_restart():
    model, data = _setup()
    kw = dict(eps=0.03, alpha=0.01, steps=3, batch_size=16, seed=5)
    one = worst_case_accuracy(model, data, restarts=1, **kw)
    three = worst_case_accuracy(model, data, restarts=3, **kw)
    assert three["accuracy"] <= one["accuracy"]
    assert three["stages"][:3] == one["stages"]  # same seeds: restart 1 is the same run
    # no attack at all: the worst case is the clean accuracy
    none = worst_case_accuracy(model, data, restarts=0, fgsm=False, **kw)
    assert none["accuracy"] == none["clean_accuracy"] == pytest.approx(0.75)
    # every image fooled by the single seeded PGD run is also counted wrong by the worst case
    pgd = PGD(model, eps=0.03, alpha=0.01, steps=3, random_start=False)
    with torch.no_grad():
        fooled = (model(pgd(*data)).argmax(1) != data[1]).numpy()
    worst_wrong = three["predictions"] != three["labels"]
    assert fooled.any() and worst_wrong[fooled].mean() >= 0.9  # random starts find (nearly) all of them


def test_reproducible_and_model_mode_restored():
    model, data = _setup()
    model.train()
    a = worst_case_accuracy(model, data, eps=0.03, alpha=0.01, steps=2, restarts=2, seed=1)
    b = worst_case_accuracy(model, data, eps=0.03, alpha=0.01, steps=2, restarts=2, seed=1)
    assert a["stages"] == b["stages"] and np.array_equal(a["predictions"], b["predictions"])
    assert model.training
    with pytest.raises(ValueError, match="restarts"):
        worst_case_accuracy(model, data, eps=0.03, alpha=0.01, restarts=-1)


def test_cancel_is_honoured():
    from training.engine import Cancelled

    model, data = _setup()
    with pytest.raises(Cancelled):
        worst_case_accuracy(model, data, eps=0.03, alpha=0.01, restarts=1, should_stop=lambda: True)


# --------------------------------------------------------------------------- drill settings
def test_evasion_drills_have_the_strong_attack_setting(tmp_path):
    from breakfix_desktop.core.protocol import NullWriter
    from training.drills import DrillError, create_drill

    for name in ("table3-fgsm", "table4-pgd"):
        drill = create_drill(name)
        assert drill.settings()["strong_attack"] == {"steps": 20, "restarts": 3, "eps": 0.01, "alpha": 0.0025}
        quick = drill.settings(quick=True)["strong_attack"]
        assert quick["steps"] * quick["restarts"] < 60  # quick mode: a cheap version
        assert drill.settings({"strong_attack": {"restarts": 0}})["strong_attack"]["steps"] == 20  # partial override
        assert drill.worst_key({"steps": 20, "restarts": 3}) == "PGD-20 x3 worst case"
        assert drill.worst_key({"steps": 20, "restarts": 0}) is None
        with pytest.raises(DrillError, match="strong_attack: unknown key"):
            drill.execute(tmp_path, tmp_path / name, NullWriter(), config={"strong_attack": {"restart": 2}})
        with pytest.raises(DrillError, match="strong_attack.restarts"):
            drill.execute(tmp_path, tmp_path / name, NullWriter(), config={"strong_attack": {"restarts": -1}})


@pytest.mark.parametrize("name,key,config", [("table3-fgsm", "0.01", {"eps": [0.01]}),
                                             ("table4-pgd", "0.01/0.001/5", {"settings_grid": [[0.01, 0.001, 5]]})])
def test_worst_case_row_is_in_the_table(name, key, config):
    from training.drills import create_drill

    drill = create_drill(name)
    report = {"settings": drill.settings(config), "paper": drill.paper_result, "missing": {},
              "results": {"CNN_clean": {"clean": {"accuracy": 0.9}, key: {"accuracy": 0.5},
                                        "PGD-20 x3 worst case": {"accuracy": 0.25}}}}
    table = drill.format_table(report)
    rows = [line for line in table.splitlines()[1:] if line.split() and line.split()[0] in ("clean", key, "PGD-20")]
    assert len(rows) == 3 and len({len(r) for r in rows}) == 1  # the longer label keeps the columns aligned
    assert rows[-1].startswith("PGD-20 x3 worst case") and "0.25" in rows[-1]
    assert "per-image worst case" in table
    report["settings"] = drill.settings({**config, "strong_attack": {"restarts": 0}})
    assert "worst" not in drill.format_table(report)


def test_a_null_model_is_skipped_and_never_trained(tmp_path):
    """``--set 'models={"CNN_clean": null}'`` measures only the other columns: no training of
    CNN_clean, and the table names the skipped models."""
    from types import SimpleNamespace

    from training.drills import create_drill

    drill = create_drill("table4-pgd")

    def no_training(*args, **kwargs):
        raise AssertionError("a skipped model must not be trained")

    settings = drill.settings({"models": {"CNN_clean": None, "CNN_FGSM": None, "CNN_PGD": "",
                                          "ResNet_PGD": None, "Ensemble": str(tmp_path / "absent.json")}})
    models, missing = drill.load_models(SimpleNamespace(settings=settings, train=no_training))
    assert models == {}
    assert missing["CNN_clean"] == missing["CNN_FGSM"] == missing["ResNet_PGD"] == "skipped (set to null)"
    assert missing["CNN_PGD"] == "not given" and "absent.json not found" in missing["Ensemble"]
    # without null, a missing CNN_clean is trained by the drill (the documented default)
    settings["models"] = {"CNN_clean": ""}
    with pytest.raises(AssertionError, match="must not be trained"):
        drill.load_models(SimpleNamespace(settings=settings, train=no_training, train_config=lambda **k: {}))
