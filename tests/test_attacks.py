"""The paper's attacks (training/attacks/): closed forms, invariants, determinism, peer check.

Every test uses tiny models (a Linear or a 2-block CNN of width 4) on 8x8 to 32x32 inputs.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from breakfix_desktop.core.labels import CLASS_NAMES
from breakfix_desktop.core.preprocess import NORM_MEAN, NORM_STD
from training.attacks import FGSM, PGD, Backdoor, DrunkOptimizer, FoolingLoss, NoisyLoss, load_trigger
from training.attacks.make_trigger import CREEPER_PATH, creeper_pattern
from training.models import VGGLikeCNN

NOTUMOR = CLASS_NAMES.index("notumor")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to a busy machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- helpers
def linear_model(size: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 4))


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return VGGLikeCNN(blocks=2, width=4, hidden=8, pool=2, dropout=0.5)


class SumEnsemble(nn.Module):
    """An ensemble summing its members' logits (as the defended app does)."""

    def __init__(self, *members: nn.Module):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return sum(m(x) for m in self.members)


def batch(n: int = 6, size: int = 8, seed: int = 0, lo: float = 0.2, hi: float = 0.8):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, 3, size, size, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def fgsm_closed_form(weight, bias, x, y, eps, target=None):
    """Eq. 1 for logits = W x + b: grad_x mean CE = W^T (softmax(z) - onehot(label)) / N."""
    flat = x.flatten(1).double()
    z = flat @ weight.double().T + bias.double()
    label = y if target is None else torch.full_like(y, target)
    grad = (torch.softmax(z, 1) - F.one_hot(label, 4).double()) @ weight.double() / len(x)
    step = grad.sign() if target is None else -grad.sign()
    return (flat + eps * step).float().view_as(x).clamp(0, 1)


def ce(model, x, labels):
    """Mean cross-entropy in eval mode (the mode the attacks craft in); the model's mode is kept."""
    training = model.training
    model.eval()
    with torch.no_grad():
        out = F.cross_entropy(model(x), labels).item()
    model.train(training)
    return out


# --------------------------------------------------------------------------- FGSM
@pytest.mark.parametrize("eps", [0.0, 0.01, 0.1])
def test_fgsm_equals_closed_form_on_linear_model(eps):
    model = linear_model()
    x, y = batch()
    lin = model[1]
    adv = FGSM(model, eps=eps)(x, y)
    expected = fgsm_closed_form(lin.weight.detach(), lin.bias.detach(), x, y, eps)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    assert (adv - x).abs().max() <= eps + 1e-6


def test_fgsm_targeted_equals_closed_form_and_lowers_target_loss():
    model = linear_model(seed=1)
    x, y = batch(seed=1)
    lin = model[1]
    adv = FGSM(model, eps=0.01, targeted=True)(x, y)  # target_class defaults to notumor
    expected = fgsm_closed_form(lin.weight.detach(), lin.bias.detach(), x, y, 0.01, target=NOTUMOR)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    target = torch.full_like(y, NOTUMOR)
    assert ce(model, adv, target) < ce(model, x, target)


def test_fgsm_on_ensemble_equals_fgsm_on_the_summed_linear_model():
    a, b = linear_model(seed=2), linear_model(seed=3)
    summed = linear_model()
    with torch.no_grad():
        summed[1].weight.copy_(a[1].weight + b[1].weight)
        summed[1].bias.copy_(a[1].bias + b[1].bias)
    x, y = batch(seed=2)
    expected = fgsm_closed_form(summed[1].weight.detach(), summed[1].bias.detach(), x, y, 0.02)
    torch.testing.assert_close(FGSM(SumEnsemble(a, b), eps=0.02)(x, y), expected, rtol=0, atol=1e-6)


def test_attack_call_contract():
    model = tiny_cnn()
    model.train()
    model.features[1].eval()  # a submodule in its own mode must keep it
    x, y = batch(size=32, seed=4)
    x_before = x.clone()
    adv = PGD(model, eps=0.03, alpha=0.01, steps=2, seed=0)(x, y)
    assert torch.equal(x, x_before), "inputs must not be modified in place"
    assert not adv.requires_grad and adv.grad_fn is None
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert model.training and not model.features[1].training and model.features[0].training
    assert all(p.grad is None for p in model.parameters()), "attacks must not touch parameter grads"
    # BatchNorm running stats are not updated while crafting (model is in eval mode)
    stats = model.features[1].running_mean.clone()
    model.features[1].train()
    FGSM(model, eps=0.01)(x, y)
    assert torch.equal(model.features[1].running_mean, stats)


def test_attack_rejects_non_pixels_and_uses_predictions_without_labels():
    model = linear_model()
    x, _ = batch()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FGSM(model, eps=0.01)(x * 3, None)
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert torch.equal(FGSM(model, eps=0.01)(x), FGSM(model, eps=0.01)(x, pred))


def test_untargeted_raises_loss_targeted_by_label_lowers_it():
    model = tiny_cnn(seed=5)
    x, y = batch(n=8, size=32, seed=5)
    assert ce(model, FGSM(model, eps=0.03)(x, y), y) > ce(model, x, y)
    targets = (y + 1) % 4
    attack = PGD(model, eps=0.03, alpha=0.01, steps=3, random_start=False).set_mode_targeted(None)
    assert ce(model, attack(x, targets), targets) < ce(model, x, targets)
    to_notumor = PGD(model, eps=0.03, alpha=0.01, steps=3, targeted=True, seed=0)
    t = torch.full_like(y, NOTUMOR)
    assert ce(model, to_notumor(x, y), t) < ce(model, x, t)


# --------------------------------------------------------------------------- PGD
@pytest.mark.parametrize("eps", [0.0, 0.004, 0.03, 0.3])
@pytest.mark.parametrize("steps", [1, 3, 7])
def test_pgd_stays_in_eps_ball_and_pixel_range(eps, steps):
    model = tiny_cnn()
    x, y = batch(n=4, size=32, seed=steps, lo=0.0, hi=1.0)
    x[0, :, :4, :4] = 0.0  # pixels at the edges of [0, 1]
    x[1, :, :4, :4] = 1.0
    adv = PGD(model, eps=eps, alpha=max(eps, 1e-3) / 2, steps=steps, random_start=True, seed=0)(x, y)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert (adv - x).abs().max().item() <= eps + 1e-6


def test_pgd_one_step_equals_fgsm_exactly():
    for model in (linear_model(size=32), tiny_cnn()):
        x, y = batch(n=5, size=32, seed=7, lo=0.0, hi=1.0)
        for kwargs in ({}, {"targeted": True}):
            fgsm = FGSM(model, eps=0.02, **kwargs)(x, y)
            pgd = PGD(model, eps=0.02, alpha=0.02, steps=1, random_start=False, **kwargs)(x, y)
            assert torch.equal(pgd, fgsm)


def test_pgd_random_start_is_seeded():
    model = tiny_cnn()
    x, y = batch(n=3, size=32, seed=8)
    a = PGD(model, eps=0.03, alpha=0.01, steps=2, seed=11)(x, y)
    b = PGD(model, eps=0.03, alpha=0.01, steps=2, seed=11)(x, y)
    c = PGD(model, eps=0.03, alpha=0.01, steps=2, seed=12)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pgd_is_stronger_than_fgsm_at_same_budget():
    model = tiny_cnn(seed=9)
    x, y = batch(n=8, size=32, seed=9)
    loss_fgsm = ce(model, FGSM(model, eps=0.02)(x, y), y)
    loss_pgd = ce(model, PGD(model, eps=0.02, alpha=0.005, steps=10, random_start=False)(x, y), y)
    assert loss_pgd >= loss_fgsm - 1e-6


# --------------------------------------------------------------------------- peer check
def test_fgsm_and_pgd_agree_with_torchattacks():
    torchattacks = pytest.importorskip(
        "torchattacks", reason="torchattacks (test-only peer, pip install torchattacks) is not installed")
    model = tiny_cnn(seed=10).eval()
    x, y = batch(n=6, size=32, seed=10, lo=0.0, hi=1.0)
    torch.testing.assert_close(FGSM(model, eps=0.01)(x, y), torchattacks.FGSM(model, eps=0.01)(x, y),
                               rtol=0, atol=1e-6)
    ours = PGD(model, eps=0.01, alpha=0.002, steps=5, random_start=False)(x, y)
    peer = torchattacks.PGD(model, eps=0.01, alpha=0.002, steps=5, random_start=False)(x, y)
    torch.testing.assert_close(ours, peer, rtol=0, atol=1e-6)
    targets = (y + 1) % 4  # targeted, labels are the targets
    peer_t = torchattacks.PGD(model, eps=0.01, alpha=0.002, steps=5, random_start=False)
    peer_t.set_mode_targeted_by_label(quiet=True)
    ours_t = PGD(model, eps=0.01, alpha=0.002, steps=5, random_start=False, targeted=True, target_class=None)
    torch.testing.assert_close(ours_t(x, targets), peer_t(x, targets), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- losses
def test_fooling_loss_on_hand_built_logits():
    logits = torch.tensor([
        [2.0, 0.0, 0.0, 0.0],  # label glioma, predicted glioma: correct, kept
        [0.0, 0.0, 3.0, 0.0],  # label notumor, predicted notumor: correct target, x reduce_factor
        [0.0, 1.0, 0.0, 0.0],  # label pituitary, predicted meningioma: wrong -> 0
        [0.0, 0.0, 1.0, 0.0],  # label glioma, predicted notumor: wrong -> 0
    ], requires_grad=True)
    y = torch.tensor([0, 2, 3, 0])
    loss_fn = FoolingLoss(reduce_factor=0.01, target_class="notumor")
    ce0 = math.log(1 + 3 * math.exp(-2))
    ce1 = math.log(1 + 3 * math.exp(-3))
    per = loss_fn.per_sample(logits, y)
    torch.testing.assert_close(per, torch.tensor([ce0, 0.01 * ce1, 0.0, 0.0]), rtol=0, atol=1e-7)
    loss = loss_fn(logits, y)
    assert loss.item() == pytest.approx((ce0 + 0.01 * ce1) / 4, abs=1e-7)
    loss.backward()
    assert torch.equal(logits.grad[2:], torch.zeros(2, 4)), "misclassified samples give no gradient"
    assert logits.grad[0].abs().sum() > 0
    # reduce_factor 1 and all correct = plain cross-entropy
    ok = torch.tensor([[3.0, 0, 0, 0], [0, 0, 2.0, 0]])
    torch.testing.assert_close(FoolingLoss(1.0)(ok, torch.tensor([0, 2])), F.cross_entropy(ok, torch.tensor([0, 2])))


def test_noisy_loss_zero_strength_is_cross_entropy_and_noise_changes_it():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (16,), generator=g)
    assert torch.equal(NoisyLoss(strength=0.0)(logits, y), F.cross_entropy(logits, y))
    noisy = NoisyLoss(strength=1.2, seed=3)
    a = noisy(logits, y)
    assert not torch.isclose(a, F.cross_entropy(logits, y))
    assert torch.equal(a, NoisyLoss(strength=1.2, seed=3)(logits, y)), "seeded noise is reproducible"
    assert not torch.equal(a, noisy(logits, y)), "fresh noise on every call"
    a.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# --------------------------------------------------------------------------- DrunkOptimizer
def toy_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 10, generator=g)
    w_true = torch.randn(10, 1, generator=g)
    return x, x @ w_true


def run_steps(opt, model, x, y, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_drunk_optimizer_at_zero_strength_is_bit_identical_to_adam():
    x, y = batch(n=8, size=8, seed=12)
    plain = tiny_cnn()
    drunk_model = copy.deepcopy(plain)
    adam = torch.optim.Adam(plain.parameters(), lr=1e-2, weight_decay=1e-4)
    drunk = DrunkOptimizer(torch.optim.Adam(drunk_model.parameters(), lr=1e-2, weight_decay=1e-4),
                           scale_strength=0.0, perturbation_strength=0.0)
    for step in range(5):
        for model, opt in ((plain, adam), (drunk_model, drunk)):
            torch.manual_seed(step)  # same dropout masks for both
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for p, q in zip(plain.parameters(), drunk_model.parameters()):
        assert torch.equal(p, q)


def test_drunk_optimizer_scale_strength_3_slows_training():
    x, y = toy_problem()
    finals = {}
    for scale in (0.0, 3.0):
        torch.manual_seed(0)
        model = nn.Linear(10, 1)
        opt = DrunkOptimizer(torch.optim.Adam(model.parameters(), lr=0.05), scale_strength=scale,
                             perturbation_strength=0.0)
        losses = run_steps(opt, model, x, y, 60)
        finals[scale] = (losses[0], losses[-1])
    start, clean = finals[0.0]
    assert clean < 0.05 * start  # the toy problem is easy for plain Adam
    assert finals[3.0][1] > 10 * clean and finals[3.0][1] > start  # reversed gradients: it gets worse


def test_drunk_optimizer_scale_one_freezes_and_noise_perturbs():
    x, y = toy_problem(1)
    torch.manual_seed(0)
    model = nn.Linear(10, 1)
    before = [p.clone() for p in model.parameters()]
    run_steps(DrunkOptimizer(torch.optim.Adam(model.parameters(), lr=0.05), 1.0, 1.0), model, x, y, 5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # perturbation: g' - g has norm p * ||g||
    model.zero_grad()
    F.mse_loss(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt = DrunkOptimizer(torch.optim.SGD(model.parameters(), lr=0.0), scale_strength=0.0, perturbation_strength=0.5)
    opt.corrupt_gradients()
    for g, p in zip(grads, model.parameters()):
        assert torch.linalg.vector_norm(p.grad - g).item() == pytest.approx(0.5 * torch.linalg.vector_norm(g).item(), rel=1e-5)


def test_drunk_optimizer_state_dict_round_trip():
    x, y = toy_problem(2)

    def fresh(seed):
        torch.manual_seed(0)
        model = nn.Linear(10, 1)
        return model, DrunkOptimizer(torch.optim.Adam(model.parameters(), lr=0.01), 0.5, 1.0, seed=seed)

    model, opt = fresh(seed=7)
    run_steps(opt, model, x, y, 3)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    assert saved_opt["drunk"]["seed"] == 7 and saved_opt["drunk"]["drunk_steps"] == 3
    expected = run_steps(opt, model, x, y, 3)
    expected_params = [p.clone() for p in model.parameters()]

    model2, opt2 = fresh(seed=99)  # seed and RNG state come from the state dict
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    assert opt2.seed == 7 and opt2.scale_strength == 0.5
    assert run_steps(opt2, model2, x, y, 3) == expected
    assert all(torch.equal(a, b) for a, b in zip(expected_params, model2.parameters()))
    # a plain inner-optimizer state dict loads too
    opt2.load_state_dict(torch.optim.Adam(model2.parameters(), lr=0.123).state_dict())
    assert opt2.param_groups[0]["lr"] == 0.123


def test_drunk_optimizer_with_schedulers_and_trainer(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from training.engine import TrainConfig, Trainer

    model = tiny_cnn()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    drunk = DrunkOptimizer(adam, 3.0, 1.0)
    assert drunk.param_groups is adam.param_groups and drunk.state is adam.state
    for opt in (adam, drunk):  # a scheduler on the inner optimizer or on the wrapper
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
        sched.step(1.0)
        sched.step(0.5)
    assert drunk.param_groups[0]["lr"] == pytest.approx(2.5e-4)

    x, y = batch(n=8, size=32, seed=13)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    cfg = TrainConfig(arch="cnn", epochs=2, batch_size=4, lr=1e-3, device="cpu", plateau_patience=0)
    trainer = Trainer(tiny_cnn(), cfg, loader, loss_fn=NoisyLoss(0.5, seed=0),
                      optimizer_wrapper=lambda o: DrunkOptimizer(o, 3.0, 1.0, seed=1),
                      checkpoint_path=tmp_path / "ckpt.pt")
    history = trainer.fit()
    assert len(history) == 2 and isinstance(trainer.optimizer, DrunkOptimizer)
    state = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert state["optimizer"]["drunk"]["drunk_steps"] == 4
    assert history[-1]["lr"] == trainer.optimizer.param_groups[0]["lr"]


# --------------------------------------------------------------------------- Backdoor
class ToyImages(torch.utils.data.Dataset):
    """Random 3 x 32 x 32 images with fixed labels (like MRIDataset: ``.labels`` and (x, y) items)."""

    def __init__(self, counts=(5, 7, 6, 9), size=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])
        self.labels = self.labels[torch.randperm(len(self.labels), generator=g)]
        self.images = torch.rand(len(self.labels), 3, size, size, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def test_shipped_trigger_is_the_creeper_face():
    assert CREEPER_PATH.is_file()
    pattern = load_trigger("creeper")
    assert pattern.shape == (8, 8)
    assert torch.equal(pattern, torch.from_numpy(creeper_pattern()))
    assert pattern[0].eq(1).all() and pattern[2, 1] == 0 and pattern[4, 3] == 0  # light face, dark eyes/nose


def test_backdoor_poisons_exactly_the_requested_images():
    ds = ToyImages()
    labels = ds.labels.tolist()
    bd = Backdoor(seed=0)
    train = bd.poison(ds, "train")
    assert train.poisoned_indices == [i for i, c in enumerate(labels) if c == NOTUMOR]
    test = bd.poison(ds, "test")
    others = [i for i, c in enumerate(labels) if c != NOTUMOR]
    assert len(test.poisoned_indices) == round(0.3 * len(others)) == 6
    assert set(test.poisoned_indices) <= set(others)
    assert not any(labels[i] == NOTUMOR for i in test.poisoned_indices)
    assert test.poisoned_indices == Backdoor(seed=0).poison(ds, "test").poisoned_indices  # deterministic
    assert any(Backdoor(seed=s).poison(ds, "test").poisoned_indices != test.poisoned_indices for s in (1, 2, 3))
    assert len(Backdoor(train_poison_rate=0.5).poison(ds, "train").poisoned_indices) == round(0.5 * 6)
    assert Backdoor(test_poison_rate=0.0).poison(ds, "test").poisoned_indices == []
    summary = test.summary()
    assert summary["poisoned"] == 6 and summary["poisoned_per_class"]["notumor"] == 0
    # labels are never changed
    assert [int(test[i][1]) for i in range(len(ds))] == labels


def test_backdoor_trigger_pixels_and_nothing_else():
    ds = ToyImages()
    originals = ds.images.clone()
    test = Backdoor().poison(ds, "test")
    expected_patch = (NORM_MEAN + NORM_STD * 2.0 * torch.from_numpy(creeper_pattern())).clamp(0, 1)
    assert expected_patch.max().item() == pytest.approx(NORM_MEAN + 2 * NORM_STD)
    for i in range(len(ds)):
        x, _ = test[i]
        if test.is_poisoned(i):
            for c in range(3):
                torch.testing.assert_close(x[c, -8:, -8:], expected_patch, rtol=0, atol=1e-7)
            mask = torch.ones_like(x, dtype=torch.bool)
            mask[:, -8:, -8:] = False
            assert torch.equal(x[mask], originals[i][mask])
        else:
            assert torch.equal(x, originals[i])
    assert torch.equal(ds.images, originals), "the source tensors are never modified"


def test_backdoor_pixel_units_random_location_and_transform_form():
    x = torch.rand(3, 32, 32)
    pixel = Backdoor(units="pixel", intensity=0.9).apply(x)
    torch.testing.assert_close(pixel[1, -8:, -8:], 0.9 * torch.from_numpy(creeper_pattern()))
    rand = Backdoor(location="random", seed=4)
    a, b = rand.apply(x, index=5), rand.apply(x, index=5)
    assert torch.equal(a, b), "the random place is fixed by (seed, index)"
    changed = (a != x).any(0)
    rows, cols = changed.nonzero(as_tuple=True)
    assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8
    places = {rand.position(32, 32, i) for i in range(20)}
    assert len(places) > 1 and all(0 <= t <= 24 and 0 <= l <= 24 for t, l in places)
    stamped = Backdoor()(x.unsqueeze(0).expand(2, -1, -1, -1))  # transform form, batched
    assert stamped.shape == (2, 3, 32, 32) and torch.equal(stamped[0], stamped[1])
    with pytest.raises(ValueError, match="does not fit"):
        Backdoor().apply(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="'intensity'"):
        Backdoor(units="pixel", intensity=2.0)


def test_backdoor_on_mri_dataset_leaves_files_unchanged(make_dataset):
    from breakfix_desktop.core.hashing import sha256_file
    from training.data import MRIDataset, scan_split

    root = make_dataset(per_class=3, test_per_class=2, size=32)
    split = scan_split(root, "Testing")
    digests = [sha256_file(s.path) for s in split.samples]
    ds = MRIDataset(split, workers=1)
    clean = [ds[i][0].clone() for i in range(len(ds))]
    poisoned = Backdoor(seed=1).poison(ds, "test")
    assert len(poisoned.poisoned_indices) == round(0.3 * 6)
    for i in range(len(ds)):
        x, y = poisoned[i]
        assert int(y) == int(ds.labels[i])
        assert torch.equal(x, clean[i]) != poisoned.is_poisoned(i)
        assert torch.equal(ds[i][0], clean[i]), "the in-memory data set is unchanged"
    assert [sha256_file(s.path) for s in split.samples] == digests
