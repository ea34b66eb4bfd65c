"""Model registry (``seed_cnn``, ``simple_cnn``) and a per-layer summary.

The name you type is the function you grep: ``create_model("seed_cnn")`` calls ``seed_cnn()``.
Every model takes float32 ``(N, 1, 48, 48)`` images scaled to 0..1 and returns ``(N, 7)`` logits.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from fer.errors import ConfigError
from fer.labels import NUM_CLASSES


@dataclass(frozen=True)
class ModelSpec:
    """What the app needs to know about a registered model besides its weights."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    target_layer: str  # dotted module name of the last conv layer (Grad-CAM, filters)
    source: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(target_layer: str, source: str, input_shape=(1, 48, 48)):
    """Decorator: add a model-building function to the registry under its own name."""

    def wrap(fn):
        _REGISTRY[fn.__name__] = ModelSpec(fn.__name__, fn, tuple(input_shape), NUM_CLASSES,
                                           target_layer, source)
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, in registration order."""
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered model. Raises ConfigError naming the known models."""
    if name not in _REGISTRY:
        raise ConfigError(f"model {name!r} is not registered; known models: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_model(name: str) -> nn.Module:
    """A freshly initialised model by registry name (initialisation uses torch's global RNG)."""
    return model_spec(name).build()


def _block(c_in: int, c_out: int, k: int, act: nn.Module) -> nn.Sequential:
    # Conv -> activation -> BN -> pool, the order of the course model this app reproduces.
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2), act, nn.BatchNorm2d(c_out),
                         nn.MaxPool2d(2))


def _net(features: nn.Module, classifier: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


@register_model(target_layer="features.3.0",
                source="Course-report CNN for FER2013 (4 conv blocks, ensembles of seeded members)")
def seed_cnn() -> nn.Module:
    """4 conv blocks 32/64/128/128 (LeakyReLU 0.05, BN, MaxPool) + FC 1152→256→7.

    Shapes: (N,1,48,48) → 32×24×24 → 64×12×12 → 128×6×6 → 128×3×3 → 1152 → 256 → (N,7).
    """
    return _net(
        nn.Sequential(
            _block(1, 32, 5, nn.LeakyReLU(0.05)),
            _block(32, 64, 3, nn.LeakyReLU(0.05)),
            _block(64, 128, 3, nn.LeakyReLU(0.05)),
            _block(128, 128, 3, nn.LeakyReLU(0.05)),
        ),
        nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.BatchNorm1d(256),
            nn.Linear(256, NUM_CLASSES),
        ),
    )


@register_model(target_layer="features.2.0",
                source="Wider 3-block CNN (64/128/512) with global average pooling")
def simple_cnn() -> nn.Module:
    """3 conv blocks 64/128/512 (ReLU, BN, MaxPool) + global average pool + FC 512→256→7.

    Shapes: (N,1,48,48) → 64×24×24 → 128×12×12 → 512×6×6 → 512 → 256 → (N,7).
    """
    return _net(
        nn.Sequential(
            _block(1, 64, 3, nn.ReLU()),
            _block(64, 128, 3, nn.ReLU()),
            _block(128, 512, 3, nn.ReLU()),
        ),
        nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(256, NUM_CLASSES),
        ),
    )


def summarize(model: nn.Module, input_shape: tuple[int, int, int] = (1, 48, 48)) -> list[dict]:
    """One row per leaf layer of ``model`` run on a zero batch of ``input_shape`` (C, H, W).

    Returns dicts with keys ``name``, ``type``, ``kernel``, ``stride``, ``padding`` (ints or None),
    ``output_shape`` (tuple, no batch axis), ``params`` (int), ``receptive_field`` and ``jump``
    (input pixels; the receptive field of one output unit and the input-pixel distance between
    neighbouring output units, Araujo et al. 2019 "Computing Receptive Fields of CNNs", Distill).
    The model is run in eval mode and put back in its previous mode.
    """
    rows: list[dict] = []
    rf, jump = 1, 1
    hooks = []

    def hook(module, _inputs, output, name):
        nonlocal rf, jump
        k = s = p = None
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = (_first(getattr(module, a)) for a in ("kernel_size", "stride", "padding"))
            d = _first(getattr(module, "dilation", 1))
            rf += (d * (k - 1)) * jump
            jump *= s
        rows.append(dict(name=name, type=type(module).__name__, kernel=k, stride=s, padding=p,
                         output_shape=tuple(output.shape[1:]),
                         params=sum(p_.numel() for p_ in module.parameters(recurse=False)),
                         receptive_field=rf, jump=jump))

    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            hooks.append(module.register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def _first(v) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)
