"""Conv output-size rule, BatchNorm backward and softmax + cross-entropy against PyTorch."""

import itertools

import numpy as np
import pytest
import torch

from fer.derivations import (FORMULAS, batchnorm_backward, check_conv2d, conv_output_rule,
                             conv_output_size, formulas, softmax_cross_entropy_gradient,
                             sliding_windows)
from fer.errors import ConfigError
from fer.models import InputSizeError


def _torch_len(w, k, s, p, d):
    conv = torch.nn.Conv2d(1, 1, k, s, p, d, bias=False)
    with torch.no_grad():
        return conv(torch.zeros(1, 1, w, w)).shape[-1]


def test_conv_rule_equals_torch_over_a_grid():
    inexact = dilated = 0
    for w, k, s, p, d in itertools.product((1, 5, 7, 8, 11, 48), (1, 2, 3, 5), (1, 2, 3),
                                          (0, 1, 2), (1, 2, 3)):
        if w + 2 * p < d * (k - 1) + 1:
            with pytest.raises(InputSizeError, match="output would be empty"):
                conv_output_size(w, k, s, p, d)
            with pytest.raises(RuntimeError):
                _torch_len(w, k, s, p, d)
            continue
        rule = conv_output_rule(w, k, s, p, d)
        assert rule["output"] == _torch_len(w, k, s, p, d), (w, k, s, p, d)
        inexact += rule["floor_matters"]
        dilated += d > 1
    assert inexact > 100 and dilated > 100  # the grid really exercises floor and dilation


@pytest.mark.parametrize("h, w, k, s, p, d", [
    (7, 9, (3, 2), (2, 3), (1, 0), (2, 1)),
    (48, 40, (5, 1), (1, 2), (2, 0), 1),
    (10, 31, 3, (3, 4), (0, 2), (1, 3)),
    (5, 64, (1, 7), 2, (0, 3), (1, 2)),
])
def test_conv_check_per_axis(h, w, k, s, p, d):
    out = check_conv2d(h, w, k, s, p, d)
    assert out["match"] and out["formula"] == out["torch"]
    conv = torch.nn.Conv2d(1, 1, k, s, p, d)
    assert out["torch"] == tuple(conv(torch.zeros(1, 1, h, w)).shape[2:])


def test_conv_rule_by_hand():
    # seed_cnn's first conv: (48 + 4 − 4 − 1)/1 + 1 = 48, exact.
    assert conv_output_rule(48, 5, 1, 2) == dict(
        input=48, kernel=5, stride=1, padding=2, dilation=1, padded=52, span=5, numerator=47,
        quotient=47, remainder=0, output=48, floor_matters=False)
    # Stride 2: 47/2 = 23 rem 1, so the floor drops one padded pixel → 24.
    r = conv_output_rule(48, 5, 2, 2)
    assert (r["quotient"], r["remainder"], r["output"], r["floor_matters"]) == (23, 1, 24, True)
    # Dilation 3 turns a 3-kernel into a 7-wide span: (7 − 6 − 1)/1 + 1 = 1.
    assert conv_output_size(7, 3, d=3) == 1
    c = check_conv2d(7, 9, (3, 2), (2, 3), (1, 0), (2, 1))
    assert c["formula"] == (3, 3) and c["floor_matters"]
    assert not c["axes"]["height"]["floor_matters"] and c["axes"]["width"]["remainder"] == 1


def test_conv_rule_errors():
    with pytest.raises(InputSizeError, match=r"spans 5 pixels.*padded input is only 2"):
        conv_output_size(2, 5)
    with pytest.raises(ConfigError, match="s=0"):
        conv_output_size(8, 3, s=0)
    with pytest.raises(ConfigError, match="p=-1"):
        conv_output_size(8, 3, p=-1)
    with pytest.raises(ConfigError, match="k=2.5"):
        conv_output_size(8, 2.5)
    with pytest.raises(InputSizeError, match="^width axis"):
        check_conv2d(8, 2, 3)
    with pytest.raises(ConfigError, match="kernel"):
        check_conv2d(8, 8, (3, 3, 3))


def test_sliding_windows_exact_division():
    sw = sliding_windows(5, 5, 3, 2, 1)
    assert sw["padded_shape"] == (7, 7) and sw["output_shape"] == (3, 3)
    assert [(c["row"], c["col"]) for c in sw["corners"]][:4] == [(0, 0), (0, 2), (0, 4), (2, 0)]
    assert sw["corners"][-1] == dict(row=4, col=4, out_row=2, out_col=2)
    assert all(c["covered"] for c in sw["cells"])
    kinds = {(c["row"], c["col"]): c["kind"] for c in sw["cells"]}
    assert kinds[(0, 0)] == "padding" and kinds[(1, 1)] == "input" and kinds[(6, 6)] == "padding"
    assert sum(k == "input" for k in kinds.values()) == 25


def test_sliding_windows_floor_leaves_cells_unread():
    sw = sliding_windows(6, 6, 3, 2)  # (6 − 3)/2 = 1 rem 1: last row and column never read
    assert sw["output_shape"] == (2, 2)
    assert {(c["row"], c["col"]) for c in sw["cells"] if not c["covered"]} == \
        {(5, j) for j in range(6)} | {(i, 5) for i in range(6)}


def test_sliding_windows_dilated_taps_and_limit():
    sw = sliding_windows(5, 5, 2, 1, 0, 2)
    assert [(t["row"], t["col"]) for t in sw["taps"]] == [(0, 0), (0, 2), (2, 0), (2, 2)]
    assert sw["output_shape"] == (3, 3)
    with pytest.raises(ConfigError, match="more than 64"):
        sliding_windows(48, 48, 3, 1, 10)


@pytest.mark.parametrize("m, features, eps", [(8, 4, 1e-5), (2, 1, 1e-5), (32, 3, 1e-3)])
def test_batchnorm_formulas_equal_autograd(m, features, eps):
    bn = batchnorm_backward(m, features, seed=m, eps=eps)
    assert list(bn["gradients"]) == ["x_hat", "var", "mean", "x", "gamma", "beta"]
    for name, g in bn["gradients"].items():
        assert g["formula"].dtype == np.float64 and g["formula"].shape == g["autograd"].shape
        assert g["max_abs_diff"] < 1e-6, name
        np.testing.assert_allclose(g["formula"], g["autograd"], rtol=0, atol=1e-6)
    assert bn["max_abs_diff"] < 1e-6 and bn["forward_max_abs_diff"] < 1e-9
    assert bn["gradients"]["x"]["formula"].shape == (m, features)
    assert bn["gradients"]["var"]["formula"].shape == (features,)


def test_batchnorm_gradients_real_values():
    bn = batchnorm_backward(8, 4, seed=0)
    g, R = bn["gradients"], bn["upstream"]
    np.testing.assert_allclose(g["beta"]["formula"], R.sum(0), atol=1e-12)
    np.testing.assert_allclose(g["x_hat"]["formula"], R * bn["gamma"], atol=1e-12)
    # ∂l/∂x sums to 0 over the batch: shifting a feature's whole batch leaves x̂ unchanged.
    # (Scaling does not, exactly: ε breaks the scale invariance.)
    np.testing.assert_allclose(g["x"]["formula"].sum(0), 0, atol=1e-12)
    assert np.abs(g["var"]["formula"]).min() > 1e-4  # not a trivially zero gradient
    # An independent check: central finite differences of l(x) = Σ BN(x) ⊙ R.
    def loss(x):
        xh = (x - x.mean(0)) / np.sqrt(x.var(0) + bn["eps"])
        return float(((bn["gamma"] * xh + bn["beta"]) * R).sum())
    fd = np.zeros_like(bn["x"])
    for i, j in np.ndindex(fd.shape):
        e = np.zeros_like(fd)
        e[i, j] = 1e-6
        fd[i, j] = (loss(bn["x"] + e) - loss(bn["x"] - e)) / 2e-6
    np.testing.assert_allclose(g["x"]["formula"], fd, atol=1e-6)


def test_batchnorm_argument_errors():
    with pytest.raises(ConfigError, match="m=1"):
        batchnorm_backward(m=1)
    with pytest.raises(ConfigError, match="features=0"):
        batchnorm_backward(features=0)
    with pytest.raises(ConfigError, match="eps=0"):
        batchnorm_backward(eps=0)


@pytest.mark.parametrize("classes, batch", [(7, 1), (7, 5), (2, 3)])
def test_softmax_cross_entropy_gradient_equals_autograd(classes, batch):
    out = softmax_cross_entropy_gradient(classes, batch, seed=classes + batch)
    assert out["grad_formula"].shape == (batch, classes) and out["logits"].dtype == np.float64
    assert out["max_abs_diff"] < 1e-6 and out["finite_difference_max_abs_diff"] < 1e-6
    np.testing.assert_allclose(out["grad_formula"], out["grad_autograd"], rtol=0, atol=1e-6)
    assert out["loss"] == pytest.approx(out["loss_torch"], abs=1e-9)
    np.testing.assert_allclose(out["probs"].sum(1), 1, atol=1e-12)
    np.testing.assert_allclose(out["grad_formula"].sum(1), 0, atol=1e-12)
    rows = np.arange(batch)
    t = out["target"]
    assert (out["true_class_grad"] < 0).all()  # ŷ_c − 1
    np.testing.assert_allclose(out["true_class_grad"], out["probs"][rows, t] - 1, atol=1e-15)
    others = np.ones((batch, classes), bool)
    others[rows, t] = False
    assert (out["grad_formula"][others] > 0).all()
    np.testing.assert_array_equal(out["grad_formula"][others], out["probs"][others])


def test_softmax_loss_real_value():
    out = softmax_cross_entropy_gradient(7, 1, seed=0)
    z, c = out["logits"][0], out["target"][0]
    assert out["loss"] == pytest.approx(np.log(np.exp(z).sum()) - z[c], abs=1e-12)
    with pytest.raises(ConfigError, match="classes=1"):
        softmax_cross_entropy_gradient(classes=1)


def test_formulas_have_latex_and_short_explanations():
    assert {f.section for f in FORMULAS.values()} == {"architecture", "conv_size", "batchnorm",
                                                     "softmax"}
    assert [f.key for f in formulas("batchnorm")] == ["bn_forward", "bn_dxhat", "bn_dvar",
                                                       "bn_dmu", "bn_dx", "bn_dgamma",
                                                       "bn_dbeta"]
    for f in FORMULAS.values():
        assert f.latex.count("{") == f.latex.count("}"), f.key
        assert f.source and f.title
        assert 1 <= f.explanation.count(". ") + 1 <= 3, f.key  # two or three sentences
    assert r"\left\lfloor" in FORMULAS["conv_output_size"].latex
    with pytest.raises(ConfigError, match="batchnorm"):
        formulas("nope")
