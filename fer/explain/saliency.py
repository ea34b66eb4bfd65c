"""Saliency maps: where a member looks when it scores a class, per member and for the ensemble.

Every method has one signature, ``(model, images, target) → maps``: images float32
``(N, 1, 48, 48)`` in 0..1 (see :func:`fer.training.to_input`), target int64 ``(N,)`` class
indices 0..6, maps float32 ``(N, 48, 48)`` (a torch tensor on the CPU). :data:`METHODS` lists
them by key; the Saliency page's selectbox and the tests walk it. Each call runs inside
:func:`fer.explain.base.explaining`, so a model comes back with its modes, flags and hooks as
they were, and a map never changes BatchNorm statistics or predictions. The maths is Captum's
(https://captum.ai), which we checked against finite differences and exact values on linear
models (tests/test_saliency.py); the class score is the logit (pre-softmax), as in the papers.

:func:`ensemble_maps` runs one method over all members, each on a channels-last copy
(:func:`fast_copy`: same numbers, faster on CPU; benchmarks/saliency_speed.py);
:func:`randomized` builds the models of the cascading-randomisation sanity check (Adebayo et al.
2018).
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from torch import nn

from fer.explain.base import explaining, model_lock

SIZE = 48
SMOOTHGRAD_SAMPLES = 25     # noisy copies averaged per image (Smilkov et al.: 10–50 suffice)
SMOOTHGRAD_NOISE = 0.15     # σ of the Gaussian noise, 15% of the 0..1 input range (paper: 10–20%)
IG_STEPS = 50               # points on the path black → image (Gauss–Legendre, Captum's default)
SEED = 0                    # SmoothGrad noise and randomised weights are drawn from fixed seeds


@dataclass(frozen=True)
class Method:
    """A saliency method: call it as ``method(model, images, target)`` → float32 ``(N, 48, 48)``.

    ``signed``: the maps have both signs (Integrated Gradients: evidence for and against the
    class), else they are ≥ 0. ``params``: the stated settings, for captions.
    """

    key: str
    title: str
    fn: Callable[..., torch.Tensor]
    signed: bool
    source: str
    summary: str
    params: dict = field(default_factory=dict)

    def __call__(self, model: nn.Module, images, target, **kwargs) -> torch.Tensor:
        """Maps of ``images`` float (N, 1, 48, 48) 0..1 for classes ``target`` int (N,) 0..6:
        float32 ``(N, 48, 48)``; ``kwargs`` go to the method (e.g. ``samples``). The model comes
        back unchanged (:func:`fer.explain.base.explaining`). Raises ValueError for bad shapes."""
        x, t = check_inputs(images, target)
        with explaining(model):
            maps = self.fn(model, x, t, **kwargs)
        return maps.detach().reshape(len(x), SIZE, SIZE).float().cpu()


def check_inputs(images, target) -> tuple[torch.Tensor, torch.Tensor]:
    """images → float32 ``(N, 1, 48, 48)`` (a copy), target → int64 ``(N,)``; ValueError if not."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, SIZE, SIZE) or not x.is_floating_point():
        raise ValueError(f"images must be float (N, 1, {SIZE}, {SIZE}), got {x.dtype} {tuple(x.shape)}")
    t = torch.as_tensor(target).reshape(-1).long()
    if len(t) != len(x):
        raise ValueError(f"target has {len(t)} entries for {len(x)} images")
    if len(t) and (t.min() < 0 or t.max() > 6):
        raise ValueError(f"target classes must be in 0..6, got {t.tolist()}")
    return x.detach().float().clone(), t


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_(True)


def gradient(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Vanilla gradient: |∂ score_target / ∂ pixel| (Simonyan et al. 2014, arXiv:1312.6034)."""
    return Saliency(model).attribute(_leaf(images), target=target, abs=True)[:, 0]


def smoothgrad(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
               samples: int = SMOOTHGRAD_SAMPLES, noise: float = SMOOTHGRAD_NOISE,
               seed: int = SEED) -> torch.Tensor:
    """SmoothGrad: the vanilla gradient averaged over ``samples`` copies of the image with
    Gaussian noise of σ = ``noise`` (input units) added (Smilkov et al. 2017, arXiv:1706.03825).

    The noise is drawn from ``seed`` without touching torch's global random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NoiseTunnel(Saliency(model)).attribute(
            _leaf(images), nt_type="smoothgrad", nt_samples=samples, stdevs=noise,
            target=target, abs=True)[:, 0]


def integrated_gradients(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                         steps: int = IG_STEPS) -> torch.Tensor:
    """Integrated Gradients from a black image: (x − 0) · ∫₀¹ ∂score/∂x(αx) dα with ``steps``
    Gauss–Legendre points (Sundararajan et al. 2017, arXiv:1703.01365). Signed; the maps of one
    image sum to score(x) − score(black) up to the quadrature error (completeness).
    """
    return IntegratedGradients(model).attribute(
        _leaf(images), baselines=0.0, target=target, n_steps=steps, method="gausslegendre")[:, 0]


def last_conv(model: nn.Module) -> str:
    """Dotted name of the last ``Conv2d`` of ``model`` (the registry's ``target_layer``)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return names[-1]


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.PReLU)


def cam_layer(model: nn.Module) -> str:
    """The layer Grad-CAM reads: the activation right after the last conv (its rectified feature
    maps, as the paper's code does with VGG's relu5_3), or the conv itself when no activation
    module follows it (or that module is shared, so its hook would fire more than once)."""
    conv = last_conv(model)
    named = list(model.named_modules(remove_duplicate=False))
    names = [n for n, _ in named]
    nxt = names.index(conv) + 1
    if (nxt < len(named) and isinstance(named[nxt][1], _ACTIVATIONS)
            and sum(m is named[nxt][1] for _, m in named) == 1):
        return named[nxt][0]
    return conv


def grad_cam(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
             layer: str | None = None) -> torch.Tensor:
    """Grad-CAM: ReLU(Σ_k α_k A_k), A_k the feature maps of ``layer`` (default
    :func:`cam_layer`: the last conv's activations), α_k the spatial mean of ∂score/∂A_k,
    upsampled bilinearly to 48x48 (Selvaraju et al. 2017, arXiv:1610.02391). ≥ 0; coarse: the
    last conv of seed_cnn is 6x6.
    """
    module = model.get_submodule(layer or cam_layer(model))
    cam = LayerGradCam(model, module).attribute(_leaf(images), target=target,
                                                relu_attributions=True)  # (N, 1, h, w)
    return LayerAttribution.interpolate(cam, (SIZE, SIZE), interpolate_mode="bilinear")[:, 0]


_METHOD_LIST = [
    Method("gradient", "Vanilla gradient", gradient, False,
           "Simonyan, Vedaldi & Zisserman 2014, arXiv:1312.6034",
           "How much the class score changes when one pixel changes: |∂ score / ∂ pixel|."),
    Method("smoothgrad", "SmoothGrad", smoothgrad, False,
           "Smilkov et al. 2017, arXiv:1706.03825",
           f"The vanilla gradient averaged over {SMOOTHGRAD_SAMPLES} noisy copies of the face "
           f"(Gaussian noise σ = {SMOOTHGRAD_NOISE:g} of the 0–1 brightness range): less speckle.",
           dict(samples=SMOOTHGRAD_SAMPLES, noise=SMOOTHGRAD_NOISE)),
    Method("integrated_gradients", "Integrated Gradients", integrated_gradients, True,
           "Sundararajan, Taly & Yan 2017, arXiv:1703.01365",
           f"Gradients summed along the straight path from a black image to the face "
           f"({IG_STEPS} steps), times the pixel: red pixels push the score up, blue down; "
           "all pixels together add up to score(face) − score(black).",
           dict(steps=IG_STEPS, baseline="black")),
    Method("grad_cam", "Grad-CAM", grad_cam, False,
           "Selvaraju et al. 2017, arXiv:1610.02391",
           "The last conv layer's feature maps (after its activation), weighted by how much the "
           "class score depends on each, summed and kept where positive; 6×6, upsampled to 48×48.",
           dict(layer="last conv, after its activation")),
]
METHODS: dict[str, Method] = {m.key: m for m in _METHOD_LIST}


# ---------------------------------------------------------------- the ensemble
@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block, then put back.

    One face through one small member is too little work to split across threads: on this
    2-core machine, beside a training worker, the threads spin for a core they cannot get
    (vanilla gradient of 15 members: 2.6 s with 2 threads, 0.11 s with 1, measured in
    benchmarks/saliency_speed.py). Same reasoning as fer.ensemble's one BLAS thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_FAST: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def fast_copy(model: nn.Module) -> nn.Module:
    """An eval-mode channels-last copy of ``model``, made once per model and kept while it lives.

    Same weights, same outputs up to float rounding, faster on CPU (oneDNN's channels-last
    convolutions: ~1.5–2x here, benchmarks/saliency_speed.py). The copy is what the maps are
    computed on, so the shared model is not even touched. Valid because cached members are
    never changed in place (app_pages/ui.py: run_members); a changed model needs a new object.
    """
    with model_lock(model):
        fast = _FAST.get(model)
        if fast is None:
            fast = _FAST[model] = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        return fast


def ensemble_maps(models: Sequence[nn.Module], images, target, method: str = "gradient",
                  normalise: bool = False) -> dict[str, np.ndarray]:
    """One method's maps for every member, their mean and their per-pixel spread.

    Args:
        models: the members (left unchanged; see :func:`fer.explain.base.explaining`).
        images: float32 ``(N, 1, 48, 48)`` in 0..1.
        target: int64 ``(N,)``: the class each image's maps explain, the same for all members.
        method: a key of :data:`METHODS`.
        normalise: divide each member's map of an image by its largest |value| first, so every
            member counts equally in the mean and spread (raw gradients differ in scale).

    Returns: ``maps`` float32 ``(M, N, 48, 48)``; ``mean`` and ``std`` float32 ``(N, 48, 48)``,
    the mean and the population standard deviation (ddof 0) over members, pixel by pixel.
    Raises KeyError naming the known methods for an unknown ``method``.
    """
    if method not in METHODS:
        raise KeyError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}")
    if not len(models):
        raise ValueError("ensemble_maps needs at least one member")
    fn = METHODS[method]
    with one_torch_thread():
        maps = torch.stack([fn(fast_copy(model), images, target) for model in models]).numpy()  # (M, N, 48, 48)
    if normalise:
        peak = np.abs(maps).max(axis=(2, 3), keepdims=True)
        maps = maps / np.where(peak > 0, peak, 1)
    return dict(maps=maps.astype(np.float32), mean=maps.mean(0).astype(np.float32),
                std=maps.std(0).astype(np.float32))


# ---------------------------------------------------------------- sanity check
_WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d)


def cascade_layers(model: nn.Module) -> list[str]:
    """Names of the conv and linear layers from the top (logits) down: the randomisation order."""
    return [n for n, m in model.named_modules() if isinstance(m, _WEIGHT_LAYERS)][::-1]


def randomized(model: nn.Module, top: int, seed: int = SEED) -> nn.Module:
    """A copy of ``model`` whose top ``top`` conv/linear layers are re-initialised, plus every
    BatchNorm after the lowest of them: cascading randomisation (Adebayo et al. 2018, "Sanity
    Checks for Saliency Maps", arXiv:1810.03292).

    Re-initialised means PyTorch's default initialisation, as a new untrained model has (BatchNorm:
    scale 1, shift 0, running mean 0 and variance 1). Each layer's new weights come from
    ``seed`` and the layer's position, so a layer keeps the same random weights at every later
    stage. ``model`` is deep-copied, never changed; the copy is in eval mode.
    Raises ValueError unless 0 ≤ top ≤ number of conv/linear layers.
    """
    names = cascade_layers(model)
    if not 0 <= top <= len(names):
        raise ValueError(f"top must be in 0..{len(names)}, got {top}")
    clone = copy.deepcopy(model).eval()
    if top == 0:
        return clone
    modules = list(clone.named_modules())
    lowest = next(i for i, (n, _) in enumerate(modules) if n == names[top - 1])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for pos, (_, m) in enumerate(modules[lowest:], start=lowest):
            if isinstance(m, _WEIGHT_LAYERS + _NORM_LAYERS):
                torch.manual_seed(seed * 100_003 + pos)
                m.reset_parameters()
    return clone


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape (ties get their mean rank);
    Adebayo et al. compare a map with its randomised-model map this way. NaN if one is constant.
    """
    ra, rb = _ranks(np.asarray(a, np.float64).ravel()), _ranks(np.asarray(b, np.float64).ravel())
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
