"""Weight averaging of checkpoints (``python -m training average``, training.averaging)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from breakfix_desktop.core import protocol as proto
from breakfix_desktop.core.hashing import sha256_file
from training.averaging import average_checkpoints
from training.models import build_model, load_model

TINY = {"blocks": 2, "width": 4, "hidden": 16, "pool": 4, "dropout": 0.0}
ROOT = Path(__file__).resolve().parent.parent


def _checkpoint(path: Path, seed: int, epoch: int, kwargs=TINY) -> Path:
    torch.manual_seed(seed)
    model = build_model("cnn", **kwargs).train()
    with torch.no_grad():  # BatchNorm statistics that differ from seed to seed
        model(torch.rand(8, 3, 224, 224) * (seed + 1))
    torch.save({"format": "breakfix-checkpoint/1", "config": {"arch": "cnn", "model_kwargs": kwargs, "seed": 0},
                "epoch": epoch, "model": model.state_dict(), "provenance": {"note": f"seed {seed}"}}, path)
    return path


def test_average_is_the_mean_of_weights_and_batchnorm_statistics(tmp_path):
    paths = [_checkpoint(tmp_path / f"e{i}.pt", seed=i, epoch=i + 1) for i in range(3)]
    states = [torch.load(p, weights_only=False)["model"] for p in paths]
    avg = average_checkpoints(paths)
    floats = [k for k, v in states[0].items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats) and any("running_var" in k for k in floats)
    for k in floats:
        want = sum(s[k] for s in states) / 3
        torch.testing.assert_close(avg["model"][k], want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(avg["model"][k], states[0][k]) or torch.allclose(states[1][k], states[0][k])
    # the last checkpoint's config and epoch; every input in the provenance with its SHA-256
    assert avg["epoch"] == 3 and avg["config"]["arch"] == "cnn"
    inputs = avg["provenance"]["averaged"]["checkpoints"]
    assert [i["sha256"] for i in inputs] == [sha256_file(p) for p in paths]
    assert [i["epoch"] for i in inputs] == [1, 2, 3] and inputs[2]["provenance"] == {"note": "seed 2"}


def test_average_refuses_other_architectures_and_a_single_file(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", 0, 1)
    b = _checkpoint(tmp_path / "b.pt", 1, 1, kwargs={**TINY, "width": 8})
    with pytest.raises(ValueError, match="b.pt: architecture"):
        average_checkpoints([a, b])
    with pytest.raises(ValueError, match="two or more"):
        average_checkpoints([a])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable checkpoint"):
        average_checkpoints([a, tmp_path / "junk.pt"])


def test_cli_average_writes_a_loadable_checkpoint(tmp_path):
    paths = [str(_checkpoint(tmp_path / f"e{i}.pt", seed=i, epoch=i + 1)) for i in range(2)]
    out = tmp_path / "avg" / "mean.pt"
    cmd = [sys.executable, "-m", "training", "--events", "json", "average", "--out", str(out), *paths]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = list(proto.iter_events(res.stdout.splitlines()))[-1]["summary"]
    assert summary == {"checkpoint": str(out), "sha256": sha256_file(out), "averaged": 2}
    model = load_model(out)
    x = torch.rand(2, 3, 224, 224)
    assert model(x).shape == (2, 4)
    # an existing output is not overwritten silently
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "--overwrite" in res.stderr
