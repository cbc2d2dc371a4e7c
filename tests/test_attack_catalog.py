"""The torch-free attack catalog, and its agreement with the torch registry."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from breakfix_desktop.core import attack_catalog as catalog
from breakfix_desktop.core.labels import CLASS_NAMES
from training.attacks import base as attack_base
from training.attacks import create_attack, get_attack_class, list_attacks

REPO = Path(__file__).resolve().parents[1]


def test_catalog_import_is_torch_free():
    code = (
        "import sys; import breakfix_desktop.core.attack_catalog as c; c.validate_params('pgd', {}); "
        "c.as_dict(); bad = [m for m in ('torch', 'PySide6') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_spec_is_well_formed():
    assert catalog.list_attacks() == ["backdoor", "drunk_optimizer", "fgsm", "fooling_loss", "noisy_loss", "pgd"]
    for name, spec in catalog.ATTACKS.items():
        assert spec.name == name and spec.kind in catalog.KINDS
        assert spec.title and spec.summary and spec.section
        names = [p.name for p in spec.params]
        assert len(names) == len(set(names))
        for p in spec.params:
            assert p.type in ("float", "int", "bool", "choice", "str"), (name, p.name)
            assert p.help, (name, p.name)
            if p.type == "choice":
                assert p.choices
            # the default itself passes validation
            assert catalog.check_value(name, p.name, p.default) == p.default
        assert catalog.validate_params(name) == spec.defaults()
    json.dumps(catalog.as_dict())  # plain data for the GUI


def test_kinds_and_paper_defaults():
    assert catalog.list_attacks("evasion") == ["fgsm", "pgd"]
    assert catalog.list_attacks("loss") == ["fooling_loss", "noisy_loss"]
    assert catalog.list_attacks("optimizer") == ["drunk_optimizer"]
    assert catalog.list_attacks("poisoning") == ["backdoor"]
    bd = catalog.validate_params("backdoor")
    assert (bd["intensity"], bd["location"], bd["target_class"], bd["test_poison_rate"], bd["train_poison_rate"]) == (
        2.0, "corner", "notumor", 0.3, 1.0)
    pgd = catalog.validate_params("pgd")
    assert (pgd["eps"], pgd["alpha"], pgd["steps"]) == (0.01, 0.001, 5)
    assert catalog.validate_params("fooling_loss")["reduce_factor"] == 0.01
    with pytest.raises(ValueError, match="kind"):
        catalog.list_attacks("bogus")


def test_validate_merges_and_coerces():
    out = catalog.validate_params("pgd", {"eps": "0.03", "steps": 10.0, "random_start": "false", "seed": ""})
    assert out["eps"] == 0.03 and out["steps"] == 10 and isinstance(out["steps"], int)
    assert out["random_start"] is False and out["seed"] is None
    assert out["alpha"] == 0.001  # default kept
    assert catalog.validate_params("fgsm", {"eps": 1})["eps"] == 1.0
    assert catalog.validate_params("fgsm", {"target_class": None})["target_class"] is None


@pytest.mark.parametrize(
    "name, params, needle",
    [
        ("pgd", {"eps": 1.5}, r"'eps' must be a number in \[0, 1\] \(got 1.5\)"),
        ("pgd", {"eps": -0.1}, r"'eps' must be a number in \[0, 1\]"),
        ("pgd", {"steps": 0}, r"'steps' must be an integer in \[1, 10000\]"),
        ("pgd", {"steps": 2.5}, r"'steps' must be an integer"),
        ("pgd", {"steps": True}, r"'steps' must be an integer"),
        ("pgd", {"random_start": 3}, r"'random_start' must be true or false"),
        ("fgsm", {"eps": "lots"}, r"'eps' must be a number"),
        ("fgsm", {"eps": float("nan")}, r"'eps'"),
        ("fgsm", {"target_class": "cat"}, r"'target_class' must be one of 'glioma'"),
        ("backdoor", {"target_class": None}, r"'target_class' must be one of"),
        ("backdoor", {"test_poison_rate": 1.3}, r"'test_poison_rate' must be a number in \[0, 1\]"),
        ("backdoor", {"location": "top-left"}, r"'location' must be one of 'corner', 'random'"),
        ("backdoor", {"units": "pixel"}, r"'intensity' must be a number in \[0, 1\] when units is 'pixel'"),
        ("drunk_optimizer", {"scale_strength": 11}, r"'scale_strength' must be a number in \[0, 10\]"),
        ("noisy_loss", {"strength": -1}, r"'strength' must be a number in \[0, 100\]"),
        ("fooling_loss", {"reduce_factor": 2}, r"'reduce_factor' must be a number in \[0, 1\]"),
        ("pgd", {"epsilon": 0.1}, r"unknown parameter\(s\) 'epsilon'; known parameters: eps, alpha"),
    ],
)
def test_validate_rejects_with_clear_message(name, params, needle):
    with pytest.raises(ValueError, match=needle) as err:
        catalog.validate_params(name, params)
    assert str(err.value).startswith(name + ":")


def test_unknown_attack():
    with pytest.raises(ValueError, match=r"unknown attack 'cw'; choose one of backdoor, drunk_optimizer"):
        catalog.validate_params("cw", {})


def test_class_choices_follow_labels():
    for name in ("backdoor", "fooling_loss", "fgsm", "pgd"):
        assert catalog.get_spec(name).param("target_class").choices == CLASS_NAMES


# --------------------------------------------------------------------------- catalog <-> torch registry
_SUBJECT = {"evasion": "model", "optimizer": "optimizer"}


def test_registry_lists_the_catalog():
    assert list_attacks() == catalog.list_attacks()
    for kind in catalog.KINDS:
        assert list_attacks(kind) == catalog.list_attacks(kind)


@pytest.mark.parametrize("name", list_attacks())
def test_registry_class_matches_catalog(name):
    spec = catalog.get_spec(name)
    cls = get_attack_class(name)
    assert cls.name == name
    sig = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    if spec.kind in _SUBJECT:
        assert sig[0].name == _SUBJECT[spec.kind]
        sig = sig[1:]
    assert [p.name for p in sig] == [p.name for p in spec.params]
    assert {p.name: p.default for p in sig} == spec.defaults(), "class defaults must equal the catalog's"
    assert cls.__doc__ and cls.__module__.split(".")[-1] in {
        "fgsm", "pgd", "noisy_loss", "fooling_loss", "drunk_optimizer", "backdoor"}
    assert "§" in sys.modules[cls.__module__].__doc__  # module docstring cites the paper section


def test_create_attack_errors():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    with pytest.raises(ValueError, match="unknown attack 'deepfool'"):
        create_attack("deepfool", model)
    with pytest.raises(ValueError, match=r"'eps' must be a number in \[0, 1\]"):
        create_attack("fgsm", model, eps=5)
    with pytest.raises(ValueError, match=r"'alpha'"):
        create_attack("pgd", model, alpha=-1)
    with pytest.raises(ValueError, match="unknown parameter"):
        create_attack("fgsm", model, epsilon=0.1)
    with pytest.raises(ValueError, match="needs the model"):
        create_attack("pgd")
    with pytest.raises(ValueError, match="takes no model"):
        create_attack("noisy_loss", model)
    with pytest.raises(ValueError, match="not in breakfix_desktop.core.attack_catalog"):
        attack_base.register("not-catalogued")


def test_create_attack_builds_each_kind():
    from training.attacks import FGSM, PGD, Backdoor, DrunkOptimizer, FoolingLoss, NoisyLoss

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    pgd = create_attack("pgd", model, eps="0.02", steps=3, targeted=True)
    assert isinstance(pgd, PGD) and (pgd.eps, pgd.steps, pgd.targeted, pgd.target_class) == (0.02, 3, True, 2)
    assert isinstance(create_attack("fgsm", model), FGSM)
    assert isinstance(create_attack("noisy_loss", strength=0.5), NoisyLoss)
    assert isinstance(create_attack("fooling_loss"), FoolingLoss)
    assert isinstance(create_attack("backdoor", seed=3), Backdoor)
    adam = torch.optim.Adam(model.parameters())
    assert isinstance(create_attack("drunk_optimizer", adam, scale_strength=1), DrunkOptimizer)
    wrapper = create_attack("drunk_optimizer", scale_strength=2)  # Trainer(optimizer_wrapper=...)
    drunk = wrapper(adam)
    assert isinstance(drunk, DrunkOptimizer) and drunk.scale_strength == 2.0 and drunk.optimizer is adam
