"""fer.explain.filters: top-k faces against a brute-force loop, receptive-field patches by hand and
against gradient support, gradient ascent (rises, deterministic, leaves the model as it was), and
the top-k cache kept with the run (written once, then read without running the model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fer.data import FaceDataset
from fer.errors import ConfigError, RunDirError
from fer.explain import filters as fl
from fer.models import create_model, model_spec
from fer.runs import Run
from fer.training import TrainConfig, create_run, to_input
from fer.weights import save_model


def tiny_model(seed: int = 0) -> nn.Module:
    """conv 3×3 → LeakyReLU → BN → maxpool 2 → conv 3×3 stride 2: a 6×12×12 last map."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.05), nn.BatchNorm2d(4), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1)))
    with torch.no_grad():  # BN statistics that are not the identity, so a change would show
        model[0][2].running_mean.uniform_(-0.2, 0.2)
        model[0][2].running_var.uniform_(0.5, 2.0)
    return model.eval()


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def snapshot(model: nn.Module) -> dict:
    return dict(state={k: v.clone() for k, v in model.state_dict().items()},
                flags=[p.requires_grad for p in model.parameters()],
                grads=[p.grad for p in model.parameters()],
                modes=[m.training for m in model.modules()],
                hooks=sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()))


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["flags"] == before["flags"] and after["modes"] == before["modes"]
    assert all(g is None for g in after["grads"]) and after["hooks"] == before["hooks"]
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


# ---------------------------------------------------------------- top-k
def test_top_activating_equals_a_brute_force_loop():
    model, images, k = tiny_model(), faces(23), 4
    top = fl.top_activating(model, images, "1.0", k=k, batch_size=5)  # 5 batches: the merge is used
    # brute force: every face alone, every filter, the maximum over positions
    values = np.zeros((23, 6), np.float32)
    where = np.zeros((23, 6), np.int64)
    with torch.no_grad():
        for i, im in enumerate(images):
            act = model[1][0](model[0](to_input(torch.from_numpy(im[None]))))[0]  # (6, 12, 12)
            for c in range(6):
                values[i, c] = act[c].max()
                where[i, c] = int(act[c].argmax())
    for c in range(6):
        order = sorted(range(23), key=lambda i: (-values[i, c], i))[:k]
        assert top.indices[c].tolist() == order
        np.testing.assert_allclose(top.values[c], values[order, c], rtol=1e-5, atol=1e-5)
        assert (top.rows[c] * 12 + top.cols[c]).tolist() == where[order, c].tolist()
    assert top.patches.shape == (6, k, 4)
    g = fl.layer_geometry(model, "1.0")
    assert tuple(top.patches[2, 0]) == fl.receptive_field_patch(g, top.rows[2, 0], top.cols[2, 0])


def test_top_activating_keeps_the_lower_index_on_ties_and_caps_k():
    model = tiny_model()
    # six identical faces in batches of the same size (a batch of another size may round
    # differently): exact ties in every batch and across the merges
    images = np.repeat(faces(1), 6, axis=0)
    top = fl.top_activating(model, images, "1.0", k=9, batch_size=2)
    assert top.indices.shape == (6, 6) and (np.ptp(top.values, axis=1) == 0).all()
    assert (top.indices == np.arange(6)).all()


def test_feature_maps_match_the_layers_run_by_hand():
    model, images = tiny_model(), faces(3)
    maps = fl.feature_maps(model, images, "0.0")
    with torch.no_grad():
        want = model[0][0](to_input(torch.from_numpy(images))).numpy()
    assert maps.shape == (3, 4, 48, 48)
    np.testing.assert_allclose(maps, want, atol=1e-6)
    assert fl.feature_maps(model, images[0], "1.0").shape == (6, 12, 12)


def test_unknown_layer_names_the_conv_layers():
    with pytest.raises(ConfigError, match="conv layers: 0.0, 1.0"):
        fl.feature_maps(tiny_model(), faces(1), "2.0")
    with pytest.raises(ConfigError, match="features.3.0"):
        fl.layer_geometry(create_model("seed_cnn"), "features.9")


# ---------------------------------------------------------------- receptive-field patches
def test_patches_of_seed_cnn_by_hand():
    model = create_model("seed_cnn")
    last = fl.layer_geometry(model, model_spec("seed_cnn").target_layer)
    # conv5 p2 (rf 5, offset −2) → pool2 (rf 6, jump 2) → conv3 p1 (rf 10, offset −2−1·2 = −4)
    # → pool (rf 12, jump 4) → conv3 p1 (rf 20, offset −4−4 = −8) → pool (rf 24, jump 8)
    # → conv3 p1 (rf 40, offset −8−8 = −16); its map is 6×6.
    assert last == fl.Geometry((40, 40), (8, 8), (-16, -16), (6, 6), 128)
    assert fl.receptive_field_patch(last, 0, 0) == (0, 0, 24, 24)       # rows −16..23 → 0..23
    assert fl.receptive_field_patch(last, 3, 2) == (8, 0, 40, 40)       # rows 8..47, cols 0..39
    assert fl.receptive_field_patch(last, 5, 5) == (24, 24, 24, 24)     # rows 24..63 → 24..47
    first = fl.layer_geometry(model, "features.0.0")
    assert first == fl.Geometry((5, 5), (1, 1), (-2, -2), (48, 48), 32)
    assert fl.receptive_field_patch(first, 10, 0) == (8, 0, 5, 3)       # cols −2..2 → 0..2
    second = fl.layer_geometry(model, "features.1.0")
    assert second[:3] == ((10, 10), (2, 2), (-4, -4))
    assert fl.receptive_field_patch(second, 1, 7) == (0, 10, 8, 10)     # rows −2..7, cols 10..19
    with pytest.raises(ValueError, match="outside"):
        fl.receptive_field_patch(last, 6, 0)


def _support(model: nn.Module, layer: str, row: int, col: int) -> tuple[int, int, int, int]:
    """Bounding box (top, left, height, width) of the input pixels unit (row, col) depends on."""
    x = torch.rand(1, 1, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    out = fl._forward_to(model, x, layer)
    grad, = torch.autograd.grad(out[0, 0, row, col], x)
    rr, cc = np.nonzero(grad[0, 0].numpy())
    return rr.min(), cc.min(), rr.max() - rr.min() + 1, cc.max() - cc.min() + 1


def test_patch_equals_the_gradient_support_of_a_linear_conv_stack():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 5, stride=2, padding=2),
                          nn.Conv2d(2, 3, 3, stride=2), nn.Conv2d(3, 2, 3, padding=1)).double().eval()
    g = fl.layer_geometry(model.float(), "3")
    model.double()
    assert g.receptive_field == (19, 19) and g.jump == (4, 4) and g.output_hw == (11, 11)
    for row, col in [(0, 0), (5, 5), (10, 3), (2, 10)]:
        assert _support(model, "3", row, col) == tuple(fl.receptive_field_patch(g, row, col))


def test_gradient_support_lies_inside_the_patch_of_seed_cnn():
    model = create_model("seed_cnn").double().eval()  # max pooling routes gradients: a subset
    g = fl.layer_geometry(model.float(), "features.2.0")
    model.double()
    for row, col in [(0, 0), (6, 6), (11, 4)]:
        top, left, h, w = fl.receptive_field_patch(g, row, col)
        st, sl, sh, sw = _support(model, "features.2.0", row, col)
        assert top <= st and left <= sl and st + sh <= top + h and sl + sw <= left + w


# ---------------------------------------------------------------- gradient ascent
def test_gradient_ascent_raises_the_activation_is_deterministic_and_leaves_the_model_alone():
    model = create_model("seed_cnn").eval()
    before = snapshot(model)
    a = fl.filter_patterns(model, "features.3.0", [0, 5, 9], seed=3, steps=12)
    assert a.images.shape == (3, 48, 48) and a.images.dtype == np.float32
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert (a.end > a.start).all(), (a.start, a.end)
    b = fl.filter_patterns(model, "features.3.0", [0, 5, 9], seed=3, steps=12)
    np.testing.assert_array_equal(a.images, b.images)
    c = fl.filter_patterns(model, "features.3.0", [0, 5, 9], seed=4, steps=12)
    assert not np.array_equal(a.images, c.images)
    assert_unchanged(model, before)
    # its end activation is what the model itself gives for the pattern: the conv's output
    # through the LeakyReLU that follows it, averaged over positions
    with torch.no_grad():
        act = model.features[:3](torch.from_numpy(a.images[:, None]))
        act = model.features[3][1](model.features[3][0](act))
    np.testing.assert_allclose(act[[0, 1, 2], [0, 5, 9]].mean((1, 2)).numpy(), a.end, rtol=1e-4, atol=1e-4)


def test_a_training_mode_model_is_put_back_with_its_batchnorm_statistics():
    model = create_model("seed_cnn").train()
    before = snapshot(model)
    fl.filter_patterns(model, "features.1.0", [1, 2], steps=3)
    fl.top_activating(model, faces(4), "features.1.0", k=2)
    fl.feature_maps(model, faces(2), "features.3.0")
    assert_unchanged(model, before)
    assert model.training


def test_bad_channels_are_refused():
    with pytest.raises(ValueError, match="0..5"):
        fl.filter_patterns(tiny_model(), "1.0", [6])


# ---------------------------------------------------------------- the cache kept with the run
def tiny_run(root: Path) -> tuple[Run, nn.Module, FaceDataset]:
    run = create_run(TrainConfig(members=1, epochs=1, dataset_id="t", dataset_sha256="t"), root / "r")
    torch.manual_seed(0)
    model = create_model("seed_cnn").eval()
    save_model(run.weights_path(0), model, "seed_cnn")
    images = faces(30)
    splits = np.array(["train"] * 20 + ["private_test"] * 10)
    ds = FaceDataset(images, np.arange(30) % 7, splits, {"sha256": "t", "source": "test"})
    return run, model, ds


def test_top_k_is_written_once_with_the_run_and_read_back_without_running_the_model(tmp_path, monkeypatch):
    run, model, ds = tiny_run(tmp_path)
    first = fl.cached_top_activating(run, 0, model, ds, "private_test", "features.3.0")
    path = run.path / "explain" / "topk_m00_features.3.0_private_test.npz"
    assert first.source == str(path) and path.exists()
    assert set(first.indices.ravel()) <= set(range(20, 30))  # dataset rows of the split
    assert first.indices.shape == (128, 10)                  # k = K_MAX capped at 10 faces
    mtime = path.stat().st_mtime_ns

    def must_not_run(*a, **k):
        raise AssertionError("the model ran although the top faces are cached")

    monkeypatch.setattr(fl, "top_activating", must_not_run)
    again = fl.cached_top_activating(run, 0, model, ds, "private_test", "features.3.0")
    assert path.stat().st_mtime_ns == mtime
    for name in ("values", "indices", "rows", "cols", "patches"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    # another split, layer or dataset is another key: it must compute
    other = FaceDataset(ds.images, ds.labels, ds.splits, {"sha256": "other"})
    with pytest.raises(AssertionError, match="cached"):
        fl.cached_top_activating(run, 0, model, other, "private_test", "features.3.0")


def test_new_weights_make_the_cache_stale(tmp_path):
    run, model, ds = tiny_run(tmp_path)
    first = fl.cached_top_activating(run, 0, model, ds, "private_test", "features.3.0")
    torch.manual_seed(5)
    retrained = create_model("seed_cnn").eval()
    save_model(run.weights_path(0), retrained, "seed_cnn")
    second = fl.cached_top_activating(run, 0, retrained, ds, "private_test", "features.3.0")
    assert not np.array_equal(first.values, second.values)


def test_an_unwritable_run_folder_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    run, model, ds = tiny_run(tmp_path)
    real_write = fl.atomic_write_bytes

    def read_only_run(path, data):
        if Path(path).is_relative_to(run.path):
            raise RunDirError(f"{path}: cannot write (read-only)")
        real_write(path, data)

    monkeypatch.setattr(fl, "atomic_write_bytes", read_only_run)
    top = fl.cached_top_activating(run, 0, model, ds, "train", "features.2.0")
    user = fl.topk_cache_paths(run, 0, "features.2.0", "train")[1]
    assert top.source == str(user) and user.exists() and user.is_relative_to(fl.default_cache_dir())
    monkeypatch.setattr(fl, "top_activating", lambda *a, **k: pytest.fail("recomputed"))
    assert fl.cached_top_activating(run, 0, model, ds, "train", "features.2.0").source == str(user)


def test_a_shipped_run_is_never_written(tmp_path, monkeypatch):
    run, model, ds = tiny_run(tmp_path)
    monkeypatch.setattr(Run, "shipped", property(lambda self: True))
    top = fl.cached_top_activating(run, 0, model, ds, "private_test", "features.0.0")
    assert not (run.path / "explain").exists()
    assert top.source == str(fl.topk_cache_paths(run, 0, "features.0.0", "private_test")[1])


def test_a_corrupt_cache_file_is_named(tmp_path):
    run, model, ds = tiny_run(tmp_path)
    path = fl.topk_cache_paths(run, 0, "features.3.0", "private_test")[0]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    with pytest.raises(RunDirError, match="topk_m00_features.3.0_private_test.npz"):
        fl.cached_top_activating(run, 0, model, ds, "private_test", "features.3.0")
