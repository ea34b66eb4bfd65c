"""Three results a student derives by hand, each computed here beside PyTorch's own answer.

- Conv output size ⌊(W + 2P − D·(K−1) − 1)/S⌋ + 1, checked by running ``torch.nn.Conv2d``.
- BatchNorm backward (Ioffe & Szegedy 2015, arXiv:1502.03167): the closed-form gradients in
  NumPy float64 beside autograd's, for a loss l = Σ y ⊙ R with a fixed random R (so ∂l/∂y = R).
- Softmax + cross-entropy: ∂L/∂z = ŷ − y, beside autograd and central finite differences.

``FORMULAS`` holds each formula's LaTeX (for ``st.latex``) and a short plain-language reading.
Everything returns plain numbers and NumPy arrays; pages only draw. The layer-by-layer shape
and receptive-field table is ``fer.models.architecture``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fer.errors import ConfigError
from fer.models import InputSizeError

MAX_CONV_SIZE = 4096  # pixels per axis the torch check will allocate
MAX_GRID = 64  # cells per axis of the sliding-window picture


# ----------------------------------------------------------------------------- conv output size

def conv_output_size(w: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> int:
    """Output length of a convolution along one axis: ⌊(W + 2P − D·(K−1) − 1)/S⌋ + 1.

    Args: ``w`` input length (pixels, ≥ 1), ``k`` kernel size (≥ 1), ``s`` stride (≥ 1),
    ``p`` zero padding on each side (≥ 0), ``d`` dilation (≥ 1); all ints.
    Raises ConfigError naming the argument that is not an int in range, and InputSizeError when
    the dilated kernel D·(K−1)+1 is wider than the padded input W + 2P (the output would be
    empty). Source: PyTorch ``torch.nn.Conv2d`` documentation (shape section); Dumoulin &
    Visin 2016, "A guide to convolution arithmetic for deep learning", arXiv:1603.07285.
    """
    return conv_output_rule(w, k, s, p, d)["output"]


def conv_output_rule(w: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> dict:
    """The conv output-size rule along one axis, step by step (arguments as ``conv_output_size``).

    Returns a dict of ints: ``input``, ``kernel``, ``stride``, ``padding``, ``dilation``,
    ``padded`` (W + 2P), ``span`` (D·(K−1) + 1, pixels one window covers), ``numerator``
    (W + 2P − D·(K−1) − 1), ``quotient`` (⌊numerator / S⌋), ``remainder`` (numerator mod S:
    the padded pixels after the last window, never covered), ``output`` (quotient + 1); and
    ``floor_matters`` (bool: the division is not exact, so the floor drops ``remainder`` pixels).
    Raises as ``conv_output_size``.
    """
    for name, v, low in (("w", w, 1), ("k", k, 1), ("s", s, 1), ("p", p, 0), ("d", d, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigError(f"conv size argument {name}={v!r}: expected an integer ≥ {low}")
    w, k, s, p, d = int(w), int(k), int(s), int(p), int(d)
    span = d * (k - 1) + 1
    numerator = w + 2 * p - span
    if numerator < 0:
        raise InputSizeError(f"conv size: the kernel spans {span} pixels (D·(K−1)+1 = "
                             f"{d}·{k - 1}+1) but the padded input is only {w + 2 * p} "
                             f"(W+2P = {w}+2·{p}): the output would be empty")
    quotient, remainder = divmod(numerator, s)
    return dict(input=w, kernel=k, stride=s, padding=p, dilation=d, padded=w + 2 * p, span=span,
                numerator=numerator, quotient=quotient, remainder=remainder,
                output=quotient + 1, floor_matters=remainder != 0)


def check_conv2d(height: int, width: int, kernel, stride=1, padding=0, dilation=1) -> dict:
    """The rule on both axes beside the shape ``torch.nn.Conv2d`` really gives.

    ``kernel``, ``stride``, ``padding``, ``dilation``: an int for both axes or an (h, w) pair.
    A 1→1-channel float32 Conv2d without bias runs on zeros of shape (1, 1, height, width).
    Returns a dict: ``formula`` and ``torch`` ((out_h, out_w) ints), ``match`` (bool),
    ``floor_matters`` (bool, on either axis), ``axes`` ({"height": rule, "width": rule}, the
    ``conv_output_rule`` dicts). Raises ConfigError for an argument out of range or an axis
    longer than ``MAX_CONV_SIZE``, and InputSizeError naming the axis when its output is empty.
    """
    k, s, p, d = (_pair(v, n) for v, n in ((kernel, "kernel"), (stride, "stride"),
                                           (padding, "padding"), (dilation, "dilation")))
    axes = {}
    for a, (axis, n) in enumerate((("height", height), ("width", width))):
        if isinstance(n, (int, np.integer)) and n > MAX_CONV_SIZE:
            raise ConfigError(f"conv check {axis}={n}: at most {MAX_CONV_SIZE} pixels")
        try:
            axes[axis] = conv_output_rule(n, k[a], s[a], p[a], d[a])
        except InputSizeError as e:
            raise InputSizeError(f"{axis} axis: {e}") from e
        except ConfigError as e:
            raise ConfigError(f"{axis} axis: {e}") from e
    conv = torch.nn.Conv2d(1, 1, k, s, p, d, bias=False)
    with torch.no_grad():
        out = conv(torch.zeros(1, 1, int(height), int(width))).shape[2:]
    formula = (axes["height"]["output"], axes["width"]["output"])
    got = (int(out[0]), int(out[1]))
    return dict(formula=formula, torch=got, match=formula == got, axes=axes,
                floor_matters=any(r["floor_matters"] for r in axes.values()))


def sliding_windows(height: int, width: int, kernel, stride=1, padding=0, dilation=1) -> dict:
    """Data for a picture of the kernel sliding over the zero-padded input grid.

    Arguments as ``check_conv2d``. Coordinates are (row, col) cells of the padded grid, 0-based
    from the top-left, rows going down; the real input occupies rows P_h … P_h+H−1.
    Returns a dict: ``padded_shape`` and ``output_shape`` ((h, w) ints); ``cells`` (list of
    dicts row, col, ``kind`` "input" or "padding", ``covered`` bool: inside at least one
    window; uncovered cells are what the floor drops); ``corners`` (list of dicts row, col,
    out_row, out_col: the top-left cell of each window, one per output pixel, in output
    order); ``taps`` (list of dicts row, col: the cells the first window reads, dilation
    included). Raises as ``check_conv2d``, and ConfigError when the padded grid has more than
    ``MAX_GRID`` cells per axis (the picture would be unreadable).
    """
    k, s, p, d = (_pair(v, n) for v, n in ((kernel, "kernel"), (stride, "stride"),
                                           (padding, "padding"), (dilation, "dilation")))
    rules = [conv_output_rule(n, k[a], s[a], p[a], d[a]) for a, n in enumerate((height, width))]
    ph, pw = rules[0]["padded"], rules[1]["padded"]
    if max(ph, pw) > MAX_GRID:
        raise ConfigError(f"sliding-window picture: padded grid {ph}×{pw} has more than "
                          f"{MAX_GRID} cells per axis")
    oh, ow = rules[0]["output"], rules[1]["output"]
    taps = [(i * d[0], j * d[1]) for i in range(k[0]) for j in range(k[1])]
    corners = [(r * s[0], c * s[1], r, c) for r in range(oh) for c in range(ow)]
    covered = {(r + i, c + j) for r, c, _, _ in corners for i, j in taps}
    cells = [dict(row=r, col=c, covered=(r, c) in covered,
                  kind="input" if p[0] <= r < p[0] + height and p[1] <= c < p[1] + width
                  else "padding")
             for r in range(ph) for c in range(pw)]
    return dict(padded_shape=(ph, pw), output_shape=(oh, ow), cells=cells,
                corners=[dict(row=r, col=c, out_row=i, out_col=j) for r, c, i, j in corners],
                taps=[dict(row=i, col=j) for i, j in taps])


def _pair(v, name: str) -> tuple:
    """(h, w) from an int or a pair; ConfigError naming ``name`` otherwise."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ConfigError(f"conv {name}={v!r}: expected an int or an (h, w) pair")
        return tuple(v)
    return (v, v)


# ----------------------------------------------------------------------------- BatchNorm backward

def batchnorm_backward(m: int = 8, features: int = 4, seed: int = 0, eps: float = 1e-5) -> dict:
    """BatchNorm's backward pass by the closed-form formulas, beside autograd's, in float64.

    A mini-batch x (m, features) ~ N(3, 2²), scale γ ~ U(0.5, 1.5), shift β ~ N(0, 1) and an
    upstream gradient R ~ N(0, 1) (all float64, from ``numpy.random.default_rng(seed)``); the
    loss is l = Σ y ⊙ R with y = γ·x̂ + β, so ∂l/∂y = R. The formulas (``FORMULAS['bn_*']``)
    run in NumPy. Autograd runs two graphs in torch float64: an explicit one (μ, σ², x̂ as
    tensors whose gradients are kept: ∂l/∂μ is the total derivative, through σ² too) for the
    intermediates, and ``torch.nn.functional.batch_norm(training=True, eps=eps)`` for x, γ, β.

    Returns a dict: ``x``, ``gamma``, ``beta``, ``upstream`` (R), ``y`` (NumPy float64 arrays,
    (m, features) or (features,)), ``mean``, ``var`` (biased, /m) (features,), ``eps``,
    ``forward_max_abs_diff`` (y against torch's BN output), and ``gradients``: an ordered dict
    keyed ``x_hat`` (m, f), ``var`` (f,), ``mean`` (f,), ``x`` (m, f), ``gamma`` (f,), ``beta``
    (f,), each {``formula``, ``autograd``: arrays; ``max_abs_diff``: float}; and
    ``max_abs_diff`` (float, over all of them). Raises ConfigError naming ``m`` (2 … 4096: BN
    in training mode needs two samples), ``features`` (1 … 256) or ``eps`` (> 0).
    Source: Ioffe & Szegedy 2015, "Batch Normalization", arXiv:1502.03167, section 3.
    """
    _int_in("m", m, 2, 4096)
    _int_in("features", features, 1, 256)
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ConfigError(f"batchnorm eps={eps!r}: expected a number > 0")
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, (m, features))
    gamma = rng.uniform(0.5, 1.5, features)
    beta = rng.normal(0.0, 1.0, features)
    R = rng.normal(0.0, 1.0, (m, features))

    # Forward, as in Algorithm 1 of the paper.
    mu = x.mean(0)
    var = ((x - mu) ** 2).mean(0)
    inv = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv
    y = gamma * x_hat + beta
    # Backward, the chain rule of section 3, with ∂l/∂y = R.
    g_xhat = R * gamma
    g_var = (g_xhat * (x - mu)).sum(0) * -0.5 * inv ** 3
    g_mu = (g_xhat * -inv).sum(0) + g_var * (-2.0 * (x - mu)).sum(0) / m
    g_x = g_xhat * inv + g_var * 2.0 * (x - mu) / m + g_mu / m
    g_gamma = (R * x_hat).sum(0)
    g_beta = R.sum(0)

    auto = _batchnorm_autograd(x, gamma, beta, R, eps)
    formula = dict(x_hat=g_xhat, var=g_var, mean=g_mu, x=g_x, gamma=g_gamma, beta=g_beta)
    grads = {k: dict(formula=v, autograd=auto[k], max_abs_diff=_maxdiff(v, auto[k]))
             for k, v in formula.items()}
    return dict(x=x, gamma=gamma, beta=beta, upstream=R, y=y, mean=mu, var=var, eps=eps,
                forward_max_abs_diff=_maxdiff(y, auto["y"]), gradients=grads,
                max_abs_diff=max(g["max_abs_diff"] for g in grads.values()))


def _batchnorm_autograd(x, gamma, beta, R, eps) -> dict:
    """Autograd's gradients of l = Σ BN(x) ⊙ R: intermediates from an explicit graph, x/γ/β
    from torch's own batch_norm."""
    xt = torch.tensor(x, requires_grad=True)
    mu = xt.mean(0)
    var = ((xt - mu) ** 2).mean(0)
    x_hat = (xt - mu) / torch.sqrt(var + eps)
    for t in (mu, var, x_hat):
        t.retain_grad()
    Rt = torch.tensor(R)
    (x_hat * torch.tensor(gamma) * Rt).sum().backward()

    x2 = torch.tensor(x, requires_grad=True)
    g = torch.tensor(gamma, requires_grad=True)
    b = torch.tensor(beta, requires_grad=True)
    y = F.batch_norm(x2, None, None, g, b, training=True, eps=eps)
    (y * Rt).sum().backward()
    return dict(x_hat=x_hat.grad.numpy(), var=var.grad.numpy(), mean=mu.grad.numpy(),
                x=x2.grad.numpy(), gamma=g.grad.numpy(), beta=b.grad.numpy(),
                y=y.detach().numpy())


# ----------------------------------------------------------------------------- softmax + CE

def softmax_cross_entropy_gradient(classes: int = 7, batch: int = 1, seed: int = 0,
                                   scale: float = 2.0, fd_step: float = 1e-6) -> dict:
    """∂L/∂z = ŷ − y for softmax + cross-entropy, beside autograd and finite differences.

    Logits z (batch, classes) ~ N(0, scale²) and true classes t (batch,) uniform in
    0 … classes−1, from ``numpy.random.default_rng(seed)``; float64 throughout. The loss sums
    over the batch, L = Σ_n −log ŷ[n, t_n] (PyTorch's default ``reduction="mean"`` would divide
    every gradient by ``batch``), so each row's gradient is ŷ − y: ŷ_c − 1 < 0 for the true
    class, ŷ_j > 0 for the others, and each row sums to 0.

    Returns a dict: ``logits`` (batch, classes), ``target`` (batch,) int64, ``probs`` (ŷ, rows
    sum to 1), ``onehot`` (y), ``loss`` (float, the formula) and ``loss_torch`` (float,
    ``F.cross_entropy(reduction="sum")``), ``grad_formula``, ``grad_autograd``,
    ``grad_finite_difference`` (central differences with step ``fd_step``) — all (batch,
    classes) float64 — ``true_class_grad`` (batch,: ŷ_c − 1), ``max_abs_diff`` (formula vs
    autograd) and ``finite_difference_max_abs_diff`` (formula vs finite differences, ≈ 1e-9).
    Raises ConfigError naming ``classes`` (2 … 1000), ``batch`` (1 … 64), ``scale`` or
    ``fd_step`` (> 0). Source: Goodfellow, Bengio & Courville 2016, "Deep Learning", §6.2.2.3;
    Bridle 1990 (softmax).
    """
    _int_in("classes", classes, 2, 1000)
    _int_in("batch", batch, 1, 64)
    for name, v in (("scale", scale), ("fd_step", fd_step)):
        if not (isinstance(v, (int, float)) and v > 0):
            raise ConfigError(f"softmax {name}={v!r}: expected a number > 0")
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, (batch, classes))
    t = rng.integers(0, classes, batch).astype(np.int64)
    probs = _softmax(z)
    onehot = np.eye(classes)[t]
    loss = float(-np.log(probs[np.arange(batch), t]).sum())
    grad = probs - onehot

    zt = torch.tensor(z, requires_grad=True)
    lt = F.cross_entropy(zt, torch.tensor(t), reduction="sum")
    lt.backward()
    auto = zt.grad.numpy()

    fd = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = fd_step
        fd[idx] = (_ce(z + e, t) - _ce(z - e, t)) / (2 * fd_step)
    return dict(logits=z, target=t, probs=probs, onehot=onehot, loss=loss,
                loss_torch=float(lt.item()), grad_formula=grad, grad_autograd=auto,
                grad_finite_difference=fd, true_class_grad=grad[np.arange(batch), t],
                max_abs_diff=_maxdiff(grad, auto),
                finite_difference_max_abs_diff=_maxdiff(grad, fd))


def _softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax, shifted by the row max so exp never overflows."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ce(z: np.ndarray, t: np.ndarray) -> float:
    """Summed cross-entropy via log-sum-exp."""
    zmax = z.max(axis=1)
    lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
    return float((lse - z[np.arange(len(t)), t]).sum())


def _maxdiff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _int_in(name: str, v, low: int, high: int) -> None:
    """ConfigError naming ``name`` unless ``v`` is an int in [low, high]."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
        raise ConfigError(f"{name}={v!r}: expected an integer from {low} to {high}")


# ----------------------------------------------------------------------------- formulas

@dataclass(frozen=True)
class Formula:
    """One formula: LaTeX for ``st.latex`` (KaTeX), a plain-language reading, its source."""

    key: str
    section: str  # "architecture", "conv_size", "batchnorm" or "softmax"
    title: str
    latex: str
    explanation: str
    source: str


_IOFFE = "Ioffe & Szegedy 2015, arXiv:1502.03167"
_ARAUJO = "Araujo, Norris & Sim 2019, 'Computing Receptive Fields of CNNs', Distill"
_CONV = "Dumoulin & Visin 2016, arXiv:1603.07285; torch.nn.Conv2d documentation"
_GBC = "Goodfellow, Bengio & Courville 2016, 'Deep Learning', §6.2.2.3"

FORMULAS: dict[str, Formula] = {f.key: f for f in (
    Formula("conv_params", "architecture", "Parameters of a conv layer",
            r"\#\text{params} = C_\text{out}\,(C_\text{in}\,K_h K_w + 1)",
            "Each output channel has one K×K filter per input channel plus one bias. The count "
            "does not depend on the image size, which is why convolutions are cheap compared "
            "with a fully connected layer on the same image.", _CONV),
    Formula("linear_params", "architecture", "Parameters of a fully connected layer",
            r"\#\text{params} = N_\text{out}\,(N_\text{in} + 1)",
            "Every output unit has one weight per input plus a bias. In seed_cnn the layer "
            "1152→256 alone holds 295,168 of the 538,951 parameters.", _CONV),
    Formula("receptive_field", "architecture", "Receptive field and jump",
            r"r_\ell = r_{\ell-1} + D_\ell\,(K_\ell - 1)\, j_{\ell-1}, \qquad "
            r"j_\ell = j_{\ell-1}\, S_\ell, \qquad r_0 = j_0 = 1",
            "The jump j is how many input pixels apart two neighbouring units of a layer are; "
            "every stride multiplies it. A kernel of size K sees K−1 more neighbours, each j "
            "input pixels apart, so it grows the receptive field by (K−1)·j: pooling early "
            "makes later kernels see much more of the face.", _ARAUJO),
    Formula("conv_macs", "architecture", "Forward cost of a conv layer",
            r"\text{MACs} = C_\text{out} H_\text{out} W_\text{out} \cdot C_\text{in} K_h K_w, "
            r"\qquad \text{FLOPs} \approx 2\,\text{MACs}",
            "Every output value is a sum of C_in·K_h·K_w products, one multiply-accumulate "
            "each. Unlike the parameter count, this grows with the image: doubling the input "
            "side quadruples it.", _CONV),
    Formula("conv_output_size", "conv_size", "Conv output size (per axis)",
            r"W_\text{out} = \left\lfloor \frac{W + 2P - D\,(K - 1) - 1}{S} \right\rfloor + 1",
            "Pad the input with P zeros on each side; a kernel dilated by D spans D·(K−1)+1 "
            "pixels. Count how many times it fits when moved S pixels at a time: the first "
            "position plus one per whole stride. When the division is not exact the floor "
            "drops the last few pixels, which no window ever reads.", _CONV),
    Formula("bn_forward", "batchnorm", "BatchNorm forward (training mode)",
            r"\mu_\mathcal{B} = \frac{1}{m}\sum_{i=1}^{m} x_i, \quad "
            r"\sigma^2_\mathcal{B} = \frac{1}{m}\sum_{i=1}^{m} (x_i - \mu_\mathcal{B})^2, \quad "
            r"\hat{x}_i = \frac{x_i - \mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}, "
            r"\quad y_i = \gamma \hat{x}_i + \beta",
            "Each feature is centred and scaled with the mean and (biased) variance of the "
            "current mini-batch, then given a learnt scale γ and shift β. Because μ and σ² "
            "depend on every sample, each x_i influences every y in the batch.", _IOFFE),
    Formula("bn_dxhat", "batchnorm", "∂l/∂x̂",
            r"\frac{\partial \ell}{\partial \hat{x}_i} = \frac{\partial \ell}{\partial y_i}"
            r"\cdot \gamma",
            "y is γ·x̂ + β, so a change in x̂ reaches the loss multiplied by γ. Everything "
            "else is built from this.", _IOFFE),
    Formula("bn_dvar", "batchnorm", "∂l/∂σ²",
            r"\frac{\partial \ell}{\partial \sigma^2_\mathcal{B}} = \sum_{i=1}^{m} "
            r"\frac{\partial \ell}{\partial \hat{x}_i}\,(x_i - \mu_\mathcal{B})\cdot "
            r"\frac{-1}{2}\,(\sigma^2_\mathcal{B} + \epsilon)^{-3/2}",
            "The variance sits in the denominator of every x̂_i, so its gradient sums the "
            "contributions of all m samples. Differentiating (σ²+ε)^(−1/2) gives the −½ and "
            "the power −3/2.", _IOFFE),
    Formula("bn_dmu", "batchnorm", "∂l/∂μ",
            r"\frac{\partial \ell}{\partial \mu_\mathcal{B}} = \left(\sum_{i=1}^{m} "
            r"\frac{\partial \ell}{\partial \hat{x}_i} \cdot "
            r"\frac{-1}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}\right) + "
            r"\frac{\partial \ell}{\partial \sigma^2_\mathcal{B}} \cdot "
            r"\frac{\sum_{i=1}^{m} -2\,(x_i - \mu_\mathcal{B})}{m}",
            "The mean reaches the loss twice: directly through every x̂_i, and through the "
            "variance. The second term is zero in exact arithmetic, because deviations from "
            "the mean sum to zero, but it belongs to the chain rule.", _IOFFE),
    Formula("bn_dx", "batchnorm", "∂l/∂x",
            r"\frac{\partial \ell}{\partial x_i} = \frac{\partial \ell}{\partial \hat{x}_i} "
            r"\cdot \frac{1}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}} + "
            r"\frac{\partial \ell}{\partial \sigma^2_\mathcal{B}} \cdot "
            r"\frac{2\,(x_i - \mu_\mathcal{B})}{m} + "
            r"\frac{\partial \ell}{\partial \mu_\mathcal{B}} \cdot \frac{1}{m}",
            "Each input x_i moves its own x̂_i, the batch variance and the batch mean, so its "
            "gradient has three terms. The last two are shared across the batch, which is how "
            "BatchNorm couples the samples.", _IOFFE),
    Formula("bn_dgamma", "batchnorm", "∂l/∂γ",
            r"\frac{\partial \ell}{\partial \gamma} = \sum_{i=1}^{m} "
            r"\frac{\partial \ell}{\partial y_i} \cdot \hat{x}_i",
            "γ multiplies every x̂_i, so its gradient adds up the upstream gradient times x̂ "
            "over the batch.", _IOFFE),
    Formula("bn_dbeta", "batchnorm", "∂l/∂β",
            r"\frac{\partial \ell}{\partial \beta} = \sum_{i=1}^{m} "
            r"\frac{\partial \ell}{\partial y_i}",
            "β is added to every output, so its gradient is just the upstream gradient summed "
            "over the batch.", _IOFFE),
    Formula("softmax", "softmax", "Softmax",
            r"\hat{y}_k = \frac{e^{z_k}}{\sum_{j=1}^{K} e^{z_j}}",
            "Softmax turns the K logits into probabilities: all positive, summing to 1, and "
            "the largest logit gets the largest share. Adding the same number to every logit "
            "changes nothing, which is why code subtracts the maximum first.", _GBC),
    Formula("cross_entropy", "softmax", "Cross-entropy with a one-hot target",
            r"L = -\sum_{k=1}^{K} y_k \log \hat{y}_k = -\log \hat{y}_c",
            "With a one-hot target y only the true class c counts, so the loss is minus the "
            "log of the probability given to the right answer: 0 when the model is sure and "
            "right, large when it is sure and wrong.", _GBC),
    Formula("softmax_ce_grad", "softmax", "Gradient with respect to the logits",
            r"\frac{\partial L}{\partial z_k} = \hat{y}_k - y_k = "
            r"\begin{cases} \hat{y}_c - 1 & k = c \\ \hat{y}_k & k \ne c \end{cases}",
            "Pushing down the loss raises the true class's logit (its gradient ŷ_c − 1 is "
            "negative) and lowers every other logit in proportion to the probability it "
            "wrongly takes. The gradients sum to zero, and the better the prediction, the "
            "smaller they are.", _GBC),
)}


def formulas(section: str) -> list[Formula]:
    """The formulas of one section, in display order; ConfigError naming the known sections."""
    found = [f for f in FORMULAS.values() if f.section == section]
    if not found:
        known = sorted({f.section for f in FORMULAS.values()})
        raise ConfigError(f"formula section {section!r}: expected one of {', '.join(known)}")
    return found
