"""Model zoo: shapes, in-graph normalisation, ResNet weights loading and offline behaviour."""

from __future__ import annotations

import pytest
import torch

from training.models import Normalize, OfflineError, build_model, count_parameters


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "resnet50"])
def test_forward_shape(arch):
    m = build_model(arch).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 4)


def test_cnn_is_small_and_vgg_like():
    m = build_model("cnn")
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert len(convs) == 3 and all(c.kernel_size == (3, 3) for c in convs)
    assert count_parameters(m) < 2_000_000
    assert len(build_model("cnn", blocks=4).backbone.features) == 16


def test_normalize_in_graph():
    n = Normalize()
    x = torch.full((1, 3, 2, 2), 0.1855)
    assert torch.allclose(n(x), torch.zeros_like(x), atol=1e-6)


def test_finetune_trains_only_layer4_and_fc():
    m = build_model("resnet50", finetune=True)
    trainable = {n.split(".")[1] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}


def test_local_weights_loaded(tmp_path):
    src = build_model("resnet18").backbone
    torch.nn.init.constant_(src.conv1.weight, 0.123)
    path = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), path)
    m = build_model("resnet18", weights=str(path))
    assert torch.allclose(m.backbone.conv1.weight, torch.full_like(m.backbone.conv1.weight, 0.123))
    assert m.backbone.fc.out_features == 4


def test_never_downloads():
    with pytest.raises(OfflineError, match="offline"):
        build_model("resnet18", weights="imagenet")
    with pytest.raises(FileNotFoundError, match="offline"):
        build_model("resnet18", weights="/no/such/file.pth")
    with pytest.raises(ValueError, match="ResNets only"):
        build_model("cnn", finetune=True)
