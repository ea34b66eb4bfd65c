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
    ``kernel``/``stride``/``padding``/``dilation``/``receptive_field``/``jump`` are the height
    axis; the added keys ``kernel_hw``, ``stride_hw``, ``padding_hw``, ``dilation_hw`` ((h, w) or
    None), ``receptive_field_hw`` and ``jump_hw`` ((h, w)) give both axes. Also added:
    ``input_shape`` (tuple, no batch axis) and ``macs`` (int, multiply-accumulates for one image;
    Conv2d and Linear only, every other layer 0; forward FLOPs ≈ 2·macs).

    Receptive-field rules, per axis: a window layer (Conv2d, Max/AvgPool2d; kernel k, stride s,
    dilation d) does rf += d·(k−1)·jump, jump ·= s; AdaptiveAvg/MaxPool2d acts as a window of
    stride ⌊in/out⌋ and kernel = its widest bin (exact when out divides in); the first Linear
    after a Flatten of a C×H×W map sees the whole map, rf += (H−1)·jump. The receptive field
    counts zero padding, so it can exceed the input size.
    The model is run in eval mode and put back in its previous mode.

    Raises InputSizeError (a ConfigError) naming the layer when ``input_shape`` is not three
    positive ints, when a window layer's output would be empty (the input is too small; the
    message gives the smallest input that gets through that layer), when the channels do not
    match, when a Linear layer's ``in_features`` differ from what the input size gives (a
    classifier built for one input size), or when the layer fails otherwise. The error's
    ``rows`` hold the rows of the layers run before it.
    """
    shape = _input_shape(input_shape)
    rows: list[dict] = []
    rf, jump = [1, 1], [1, 1]
    state: dict = {"layer": None, "flat_hw": None}
    chain: list[tuple] = []  # windows of the fixed-window layers run so far, for the size hint
    hooks = []

    def before(module, inputs, name):
        state["layer"] = name
        _check_layer_input(module, name, inputs[0], shape, rows, chain, state["flat_hw"])

    def after(module, inputs, output, name):
        x = inputs[0]
        win = _window(module, x)
        if win is not None:
            for a in (0, 1):
                k, s, _p, d, _ceil = win[a]
                rf[a] += d * (k - 1) * jump[a]
                jump[a] *= s
            if not _adaptive(module):
                chain.append(win)
        if isinstance(module, nn.Flatten) and x.dim() == 4:
            state["flat_hw"] = (tuple(x.shape[1:]), tuple(x.shape[2:]))
        elif isinstance(module, nn.Linear) and state["flat_hw"] is not None:
            for a in (0, 1):
                rf[a] += (state["flat_hw"][1][a] - 1) * jump[a]
            state["flat_hw"] = None
        hw = [tuple(w[i] for w in win) if win else None for i in range(4)]
        rows.append(dict(name=name, type=type(module).__name__,
                         kernel=_h(hw[0]), stride=_h(hw[1]), padding=_h(hw[2]),
                         output_shape=tuple(output.shape[1:]),
                         params=sum(p_.numel() for p_ in module.parameters(recurse=False)),
                         receptive_field=rf[0], jump=jump[0],
                         input_shape=tuple(x.shape[1:]), dilation=_h(hw[3]),
                         kernel_hw=hw[0], stride_hw=hw[1], padding_hw=hw[2], dilation_hw=hw[3],
                         receptive_field_hw=tuple(rf), jump_hw=tuple(jump),
                         macs=_macs(module, x, output)))

    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            hooks.append(module.register_forward_pre_hook(
                lambda m, i, n=name: before(m, i, n)))
            hooks.append(module.register_forward_hook(lambda m, i, o, n=name: after(m, i, o, n)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    except InputSizeError:
        raise
    except RuntimeError as e:  # a layer type without a pre-check; name it all the same
        raise InputSizeError(f"input {_fmt(shape)}: layer {state['layer']} failed: {e}",
                             layer=state["layer"], rows=rows) from e
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def _first(v) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


class InputSizeError(ConfigError):
    """An input size a model cannot take; ``layer`` names the layer, ``rows`` the rows before it."""

    def __init__(self, message: str, layer: str | None = None, rows: list[dict] | None = None):
        super().__init__(message)
        self.layer = layer
        self.rows = list(rows or [])


def architecture(model: nn.Module | str, input_hw: int | tuple[int, int] = 48) -> dict:
    """Everything an architecture view shows for ``model`` at an input of ``input_hw`` pixels.

    ``model`` is a registry name (built under a forked RNG, so the global seed is untouched) or
    a module (e.g. a run's member). ``input_hw`` is one size for square inputs or (height,
    width); the channels come from the model's spec or its first Conv2d (else 1).

    Returns a dict: ``model`` (str), ``input_shape`` (C, H, W), ``rows`` (``summarize`` rows;
    only the layers before the failing one when there is an error), ``totals`` (``params`` and
    ``trainable_params`` of the whole model, ints; ``macs`` and ``flops`` = 2·macs over the rows,
    ints; ``layers``, int; ``output_shape``, tuple or None when incomplete), ``diagram``
    (``block_diagram`` of the rows), ``error`` (None, or the InputSizeError message naming the
    layer) and ``error_layer`` (str or None). An input size the model cannot take is reported in
    ``error`` instead of raised, so a page can still draw the layers that fit; a malformed
    ``input_hw`` (not positive ints) still raises InputSizeError.
    """
    if isinstance(model, str):
        name, channels = model, model_spec(model).input_shape[0]
        with torch.random.fork_rng(devices=[]):
            model = create_model(name)
    else:
        name = type(model).__name__
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        channels = conv.in_channels if conv is not None else 1
    hw = (input_hw, input_hw) if isinstance(input_hw, int) else tuple(input_hw)
    shape = _input_shape((channels, *hw))
    error = error_layer = None
    try:
        rows = summarize(model, shape)
    except InputSizeError as e:
        if e.layer is None:
            raise
        rows, error, error_layer = e.rows, str(e), e.layer
    macs = sum(r["macs"] for r in rows)
    totals = dict(params=sum(p.numel() for p in model.parameters()),
                  trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                  macs=macs, flops=2 * macs, layers=len(rows),
                  output_shape=rows[-1]["output_shape"] if rows and error is None else None)
    return dict(model=name, input_shape=shape, rows=rows, totals=totals,
                diagram=block_diagram(rows, shape), error=error, error_layer=error_layer)


_SHAPING = ("Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
            "Flatten", "Linear")
_GAP = 8.0  # horizontal space between diagram boxes, in the boxes' pixel units


def block_diagram(rows: list[dict], input_shape: tuple[int, int, int]) -> list[dict]:
    """Boxes for a compact left-to-right block diagram: the input, then every layer that can
    change the shape (conv, pool, flatten, linear) or does.

    Each box is a dict: ``name``, ``type`` (str; "Input" for the first), ``channels`` (int:
    C of a C×H×W map, the length of a vector), ``label`` (str, the channels), ``shape_label``
    (str "C×H×W" or "N"), and its rectangle ``x``, ``x2``, ``y``, ``y2`` (floats). A map's box is
    W wide and H tall in input pixels, centred on y = 0; a vector is a bar 4 wide and
    min(tallest map, 4 + √N) tall. Boxes are ``_GAP`` apart. Plain data: the page draws it.
    """
    items = [("input", "Input", tuple(input_shape))]
    items += [(r["name"], r["type"], r["output_shape"]) for i, r in enumerate(rows)
              if r["type"] in _SHAPING or r["output_shape"] != (rows[i - 1]["output_shape"]
                                                                 if i else tuple(input_shape))]
    tallest = max((s[1] for _, _, s in items if len(s) == 3), default=48)
    boxes, x = [], 0.0
    for name, kind, s in items:
        if len(s) == 3:
            c, w, h = s[0], float(s[2]), float(s[1])
        else:
            c = int(torch.tensor(s).prod()) if s else 1
            w, h = 4.0, min(float(tallest), 4.0 + c ** 0.5)
        boxes.append(dict(name=name, type=kind, channels=int(c), label=str(c),
                          shape_label="×".join(map(str, s)), x=x, x2=x + w, y=-h / 2, y2=h / 2))
        x += w + _GAP
    return boxes


def _input_shape(input_shape) -> tuple[int, int, int]:
    """(C, H, W) as ints, or InputSizeError naming the field."""
    try:
        shape = tuple(int(v) for v in input_shape)
        ok = len(shape) == 3 and all(v >= 1 and v == float(u) for v, u in zip(shape, input_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputSizeError(f"input_shape {input_shape!r}: expected (channels, height, width), "
                             "three positive integers")
    return shape


def _fmt(shape) -> str:
    return "×".join(map(str, shape))


def _h(pair):
    return None if pair is None else pair[0]


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _adaptive(module: nn.Module) -> bool:
    return isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))


def _window(module: nn.Module, x: torch.Tensor):
    """Per axis (k, s, p, d, ceil_mode) of a 2-d sliding-window layer, else None."""
    if isinstance(module, nn.Conv2d):
        k, d = _pair(module.kernel_size), _pair(module.dilation)
        p = module.padding
        if isinstance(p, str):  # "valid" = 0; "same" pads d·(k−1) in all, ⌊half⌋ before
            p = (0, 0) if p == "valid" else tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        return tuple((k[a], _pair(module.stride)[a], _pair(p)[a], d[a], False) for a in (0, 1))
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        p, d = _pair(module.padding), _pair(getattr(module, "dilation", 1))
        return tuple((k[a], s[a], p[a], d[a], bool(module.ceil_mode)) for a in (0, 1))
    if _adaptive(module) and x.dim() == 4:
        out = module.output_size
        out = out if isinstance(out, (tuple, list)) else (out, out)
        win = []
        for n, o in zip(x.shape[2:], out):
            n, o = int(n), int(o if o is not None else n)
            k = max(-(-((i + 1) * n) // o) - (i * n) // o for i in range(o))  # widest bin
            win.append((k, max(n // o, 1), 0, 1, False))
        return tuple(win)
    return None


def _window_count(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length of a window layer on n pixels (PyTorch's rule, including ceil_mode)."""
    span = n + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:  # the last window must start inside the input
        out -= 1
    return out


def _smallest_input(chain: list[tuple], axis: int, limit: int = 4096) -> int | None:
    """Smallest input length for which every window in ``chain`` gives at least one output."""
    for n in range(1, limit + 1):
        m = n
        for win in chain:
            m = _window_count(m, *win[axis])
            if m < 1:
                break
        else:
            return n
    return None


def _check_layer_input(module, name, x, shape, rows, chain, flat) -> None:
    """Raise InputSizeError naming ``name`` if ``module`` cannot take ``x``."""
    head = f"input {_fmt(shape)}: layer {name} ({type(module).__name__}"
    channels = getattr(module, "in_channels", getattr(module, "num_features", None))
    if isinstance(module, (nn.Conv2d, nn.modules.batchnorm._BatchNorm)) and x.dim() >= 2 \
            and x.shape[1] != channels:
        raise InputSizeError(f"{head}) expects {channels} channels but gets {x.shape[1]}",
                             layer=name, rows=rows)
    if isinstance(module, nn.Linear) and x.shape[-1] != module.in_features:
        src = f" (a {_fmt(flat[0])} map flattened)" if flat else ""
        raise InputSizeError(f"{head}) expects {module.in_features} input features but gets "
                             f"{x.shape[-1]}{src}: its weights fix the input size",
                             layer=name, rows=rows)
    win = _window(module, x)
    if win is None or _adaptive(module):
        return
    if x.dim() != 4:
        raise InputSizeError(f"{head}) expects a (N, C, H, W) input but gets {tuple(x.shape)}",
                             layer=name, rows=rows)
    if isinstance(module, nn.Conv2d) and module.padding == "same":
        return
    out = [_window_count(int(n), *w) for n, w in zip(x.shape[2:], win)]
    if min(out) >= 1:
        return
    k, s, p, d = ("×".join(str(w[i]) for w in win) for i in range(4))
    need = [_smallest_input(chain + [win], a) for a in (0, 1)]
    hint = f"; the smallest input that gets through it is {need[0]}×{need[1]}" \
        if None not in need else ""
    raise InputSizeError(
        f"{head}, kernel {k}, stride {s}, padding {p}, dilation {d}) gets "
        f"{_fmt(x.shape[1:])} and would output {_fmt((x.shape[1], *out))}: the input is too "
        f"small{hint}", layer=name, rows=rows)


def _macs(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of a batch-1 input (Conv2d, Linear; else 0)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = _pair(module.kernel_size)
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0
