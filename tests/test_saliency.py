"""Saliency methods: every METHODS entry on every registered model; exact values on a linear model,
finite differences and a hand-written Grad-CAM on tiny models; models left exactly as they were
(modes, requires_grad, hooks, BatchNorm buffers, predictions), also after an exception; the
ensemble's mean and spread; cascading randomisation changes the maps and never the original."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fer.data.synthetic import render_face
from fer.explain.base import explaining
from fer.explain.saliency import (
    METHODS,
    cam_layer,
    cascade_layers,
    ensemble_maps,
    fast_copy,
    last_conv,
    randomized,
    rank_correlation,
)
from fer.models import create_model, list_models, model_spec
from fer.weights import load_model

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-demo"


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def model(name: str = "seed_cnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = create_model(name)
    # Non-trivial BatchNorm statistics, so that train-mode use would visibly change them.
    with torch.no_grad():
        m.train()(images(16, seed + 1))
    return m.eval()


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    return load_model(DEMO / "members" / "m00.safetensors", "seed_cnn")


class Linear(nn.Module):
    """score = W x + b on the flattened image: every method has a closed form."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(48 * 48, 7)

    def forward(self, x):
        return self.fc(x.flatten(1))


class TinyConv(nn.Module):
    """A smooth conv net (tanh), small enough for finite differences in float64."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 5, stride=4, padding=2)
        self.fc = nn.Linear(3 * 12 * 12, 7)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


# ---------------------------------------------------------------- the registry walk
@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("key", list(METHODS))
def test_every_method_returns_finite_n_48_48_float32(name, key):
    x, t = images(2), torch.tensor([3, 5])
    maps = METHODS[key](model(name), x, t)
    assert maps.shape == (2, 48, 48) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    if not METHODS[key].signed:
        assert (maps >= 0).all()


def test_methods_reject_bad_shapes_and_targets():
    m = Linear()
    with pytest.raises(ValueError, match=r"\(N, 1, 48, 48\)"):
        METHODS["gradient"](m, torch.rand(2, 48, 48), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="2 images"):
        METHODS["gradient"](m, images(2), torch.tensor([0]))
    with pytest.raises(ValueError, match="0..6"):
        METHODS["gradient"](m, images(1), torch.tensor([7]))


# ---------------------------------------------------------------- exact values
def test_linear_model_closed_forms():
    m, x, t = Linear(), images(2), torch.tensor([2, 6])
    w = m.fc.weight.detach()[t].reshape(2, 48, 48)
    torch.testing.assert_close(METHODS["gradient"](m, x, t), w.abs())
    torch.testing.assert_close(METHODS["smoothgrad"](m, x, t), w.abs())  # noise cannot move a constant gradient
    # IG from black of a linear score: w * x exactly (the quadrature weights sum to 1).
    torch.testing.assert_close(METHODS["integrated_gradients"](m, x, t), w * x[:, 0], rtol=1e-4, atol=1e-6)


def test_vanilla_gradient_equals_finite_differences():
    m, x, t = TinyConv(), images(1, seed=3), torch.tensor([4])
    maps = METHODS["gradient"](m, x, t)[0].double()
    m64, x64 = TinyConv().double(), x.double()
    rng = np.random.default_rng(0)
    eps = 1e-5
    for i, j in rng.integers(0, 48, size=(25, 2)):
        plus, minus = x64.clone(), x64.clone()
        plus[0, 0, i, j] += eps
        minus[0, 0, i, j] -= eps
        with torch.no_grad():
            fd = (m64(plus)[0, 4] - m64(minus)[0, 4]) / (2 * eps)
        assert maps[i, j].item() == pytest.approx(abs(fd.item()), rel=1e-3, abs=1e-6)


def test_vanilla_gradient_equals_plain_autograd_on_seed_cnn():
    m, x, t = model(), images(3), torch.tensor([0, 3, 6])
    xx = x.clone().requires_grad_(True)
    m(xx).gather(1, t[:, None]).sum().backward()
    torch.testing.assert_close(METHODS["gradient"](m, x, t), xx.grad[:, 0].abs())


def test_integrated_gradients_completeness_on_a_smooth_model():
    m, x, t = TinyConv(), images(2, seed=5), torch.tensor([1, 2])
    maps = METHODS["integrated_gradients"](m, x, t)
    with torch.no_grad():
        gap = m(x).gather(1, t[:, None])[:, 0] - m(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(maps.sum((1, 2)), gap, rtol=1e-3, atol=1e-4)


def test_grad_cam_matches_a_hand_written_grad_cam_shape_and_is_non_negative():
    m, x, t = model(), images(2), torch.tensor([1, 3])
    assert cam_layer(m) == "features.3.1"  # the LeakyReLU after the last conv, features.3.0
    store = {}
    h = m.get_submodule("features.3.1").register_forward_hook(lambda mod, i, o: store.update(a=o))
    a_out = m(x)
    h.remove()
    a = store["a"]  # (2, 128, 6, 6)
    grads = torch.autograd.grad(a_out.gather(1, t[:, None]).sum(), a)[0]
    cam = F.relu((grads.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(48, 48), mode="bilinear", align_corners=False)[:, 0].detach()
    maps = METHODS["grad_cam"](m, x, t)
    assert maps.shape == (2, 48, 48) and (maps >= 0).all()
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_grad_cam_reads_the_activation_of_the_registry_target_layer(name):
    m = create_model(name)
    assert last_conv(m) == model_spec(name).target_layer
    conv = model_spec(name).target_layer
    assert cam_layer(m) == conv[:-1] + str(int(conv[-1]) + 1)  # the activation right after it
    assert isinstance(m.get_submodule(cam_layer(m)), (nn.ReLU, nn.LeakyReLU))


def test_grad_cam_falls_back_to_the_conv_without_an_activation_after_it():
    assert cam_layer(TinyConv()) == "conv"  # tanh is a function call there, not a module


# ---------------------------------------------------------------- the model is left alone
def snapshot(m: nn.Module) -> dict:
    return dict(state={k: v.clone() for k, v in m.state_dict().items()},
                modes=[mod.training for mod in m.modules()],
                flags=[p.requires_grad for p in m.parameters()],
                hooks=[(len(mod._forward_hooks), len(mod._forward_pre_hooks), len(mod._backward_hooks))
                       for mod in m.modules()],
                grads=[p.grad for p in m.parameters()])


def assert_same(m: nn.Module, before: dict) -> None:
    after = snapshot(m)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{k} changed"  # incl. BN running stats, num_batches_tracked
    assert after["modes"] == before["modes"]
    assert after["flags"] == before["flags"]
    assert after["hooks"] == before["hooks"]
    assert all(g is None for g in after["grads"]), "a parameter got a .grad"


@pytest.mark.parametrize("key", list(METHODS))
def test_a_map_changes_no_buffer_mode_flag_hook_or_prediction(key):
    m = model()
    m.train()                      # even a model left in train mode: BN must not update
    m.features[1].eval()           # mixed per-module modes come back as they were
    m.classifier[1].weight.requires_grad_(False)  # and a mix of flags
    x = images(4, seed=9)
    with torch.no_grad():
        pred_before = m.eval()(x).clone()
    m.train()
    m.features[1].eval()
    before = snapshot(m)
    METHODS[key](m, x, torch.tensor([0, 1, 2, 3]))
    assert_same(m, before)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), pred_before)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("key", list(METHODS))
def test_everything_restored_after_an_exception(key):
    m = model()
    m.train()
    m.classifier[4].bias.requires_grad_(False)
    keep = m.features[0][0].register_forward_hook(lambda *a: None)  # a user's own hook stays
    before = snapshot(m)

    def explode(mod, inputs, output):
        raise Boom("mid-forward")

    # Registered from inside the method's run (as a library would), so it is "new" to the base.
    orig_forward = m.classifier.forward

    def forward_then_hook(x):
        m.classifier[4].register_forward_hook(explode)
        return orig_forward(x)

    m.classifier.forward = forward_then_hook
    with pytest.raises(Boom):
        METHODS[key](m, images(1), torch.tensor([3]))
    del m.classifier.forward
    assert_same(m, before)
    keep.remove()


def test_explaining_restores_on_error_and_is_reentrant():
    m = model()
    m.train()
    before = snapshot(m)
    with pytest.raises(Boom), explaining(m) as hooks:
        hooks.forward(m.features[0][0], lambda *a: None)
        with explaining(m):
            assert not m.training and not any(p.requires_grad for p in m.parameters())
        assert not m.training  # the inner block put back the outer block's state
        raise Boom()
    assert_same(m, before)


def test_threads_explaining_one_model_leave_it_as_it_was():
    m = model()
    before = snapshot(m)
    errors = []

    def work(k):
        try:
            for _ in range(3):
                METHODS[k](m, images(1), torch.tensor([2]))
        except Exception as e:  # noqa: BLE001 - a thread cannot raise into the test: collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in ("gradient", "grad_cam", "gradient")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert_same(m, before)


# ---------------------------------------------------------------- the ensemble
def test_ensemble_maps_mean_std_and_normalise():
    models = [model(seed=s) for s in range(3)]
    before = [snapshot(mm) for mm in models]
    x, t = images(2), torch.tensor([3, 4])
    out = ensemble_maps(models, x, t, "gradient")
    assert out["maps"].shape == (3, 2, 48, 48) and out["mean"].shape == out["std"].shape == (2, 48, 48)
    direct = np.stack([METHODS["gradient"](mm, x, t).numpy() for mm in models])
    np.testing.assert_allclose(out["maps"], direct, rtol=1e-4, atol=1e-7)  # the channels-last copy agrees
    np.testing.assert_allclose(out["mean"], direct.mean(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["std"], direct.std(0), rtol=1e-3, atol=1e-7)
    norm = ensemble_maps(models, x, t, "gradient", normalise=True)
    np.testing.assert_allclose(np.abs(norm["maps"]).max(axis=(2, 3)), 1.0, rtol=1e-6)
    for mm, b in zip(models, before):
        assert_same(mm, b)
    assert fast_copy(models[0]) is fast_copy(models[0]) and fast_copy(models[0]) is not models[0]
    with pytest.raises(KeyError, match="known: gradient"):
        ensemble_maps(models, x, t, "lime")


# ---------------------------------------------------------------- sanity check
def test_cascade_order_is_top_down():
    assert cascade_layers(create_model("seed_cnn")) == [
        "classifier.4", "classifier.1", "features.3.0", "features.2.0", "features.1.0", "features.0.0"]


@pytest.mark.parametrize("key", list(METHODS))
def test_randomisation_changes_the_maps_and_not_the_model(trained, key):
    before = snapshot(trained)
    x = torch.from_numpy(np.stack([render_face(3, np.random.default_rng(s), 1.0) for s in (0, 1)]))[:, None]
    t = torch.tensor([3, 3])
    original = METHODS[key](trained, x, t).numpy()
    layers = cascade_layers(trained)
    last = original
    for top in (1, 3, len(layers)):
        rnd = randomized(trained, top)
        maps = METHODS[key](rnd, x, t).numpy()
        assert not np.allclose(maps, original), f"{key}: top {top} randomised, same maps"
        assert not np.allclose(maps, last)
        last = maps
    assert_same(trained, before)
    # All layers random: the map no longer ranks pixels like the trained one (Adebayo et al.).
    assert rank_correlation(original[0], last[0]) < 0.9


def test_randomized_is_deterministic_and_cascades():
    m = model()
    a, b = randomized(m, 2), randomized(m, 2)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    three = randomized(m, 3)
    sd0, sd2, sd3 = m.state_dict(), a.state_dict(), three.state_dict()
    assert torch.equal(sd2["classifier.4.weight"], sd3["classifier.4.weight"])  # same random layer later
    assert not torch.equal(sd0["classifier.4.weight"], sd2["classifier.4.weight"])
    assert torch.equal(sd0["features.3.0.weight"], sd2["features.3.0.weight"])  # below: still trained
    assert not torch.equal(sd0["features.3.0.weight"], sd3["features.3.0.weight"])
    assert torch.equal(sd3["features.3.2.running_var"], torch.ones(128))  # its BatchNorm reset too
    assert torch.equal(sd0["features.2.2.running_var"], sd3["features.2.2.running_var"])
    with pytest.raises(ValueError, match="0..6"):
        randomized(m, 7)


def test_rank_correlation():
    a = np.arange(16.0).reshape(4, 4)
    assert rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(np.array([0, 0, 0, 1.0]), np.array([0, 0, 0, 5.0])) == pytest.approx(1.0)  # ties
    assert np.isnan(rank_correlation(np.zeros(4), a.ravel()[:4]))
