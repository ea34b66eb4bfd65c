"""What a conv layer's filters respond to: the dataset faces that excite each filter most (with the
receptive-field patch of the strongest unit), a gradient-ascent pattern per filter, and the
feature maps of one face.

A *filter* is one output channel of a ``Conv2d`` layer; its feature map is the layer's output,
one value per spatial position (*unit*). Feature maps and top faces use that output before the
non-linearity; the gradient ascent maximises it after (see :func:`filter_patterns`).

Every function here runs a frozen eval-mode copy of the model, taken under
:func:`fer.explain.base.explaining` (the model's lock), and reaches the layer by walking
``nn.Sequential`` containers rather than through hooks: the model given, possibly a cached one
shared by several app sessions, is only read — its BatchNorm statistics, weights, modes,
``requires_grad`` and ``.grad`` stay as they were.

Sources: top activating images, Zeiler & Fergus 2014, "Visualizing and Understanding
Convolutional Networks", arXiv:1311.2901; activation maximisation, Erhan et al. 2009 and Simonyan
et al. 2014, arXiv:1312.6034, with the jitter and blur regularisers of Olah et al. 2017, "Feature
Visualization", Distill, doi:10.23915/distill.00007; receptive fields, Araujo et al. 2019,
"Computing Receptive Fields of Convolutional Neural Networks", Distill.
"""

from __future__ import annotations

import hashlib
import io
import json
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from fer.data import FaceDataset, default_cache_dir
from fer.errors import ConfigError, RunDirError
from fer.explain.base import explaining
from fer.models import summarize
from fer.runs import Run, atomic_write_bytes
from fer.training import to_input

K_MAX = 16            # top faces stored per filter (a page shows up to this many)
CACHE_VERSION = 1     # bump when the top-k file's content changes
PATTERN_STEPS = 32    # gradient-ascent steps: 16 patterns of seed_cnn's last conv ≈ 1.7 s CPU
IMAGE_HW = 48


# ---------------------------------------------------------------- layers and receptive fields
def conv_layers(model: nn.Module) -> list[str]:
    """Dotted names of the model's ``Conv2d`` layers, input to output (e.g. ``features.3.0``)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


class Geometry(NamedTuple):
    """Where the units of one layer look in the input, per axis (height, width), in input pixels.

    Unit ``i`` along an axis sees input pixels ``offset + i·jump`` to ``offset + i·jump +
    receptive_field − 1`` (negative or ≥ 48 where it reaches into the zero padding).
    """

    receptive_field: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[int, int]
    output_hw: tuple[int, int]
    channels: int


def layer_geometry(model: nn.Module, layer: str, input_hw: int = IMAGE_HW) -> Geometry:
    """The receptive field, jump and offset of ``layer``'s units, from :func:`fer.models.summarize`.

    ``receptive_field`` and ``jump`` are the summary's; ``offset`` (the first input pixel of unit
    0) starts at 0 and moves by −padding·jump_before at every window layer (Araujo et al. 2019,
    eq. for the start of the first feature's region). Raises ConfigError when ``layer`` is not a
    leaf layer of ``model`` with a (C, H, W) output.
    """
    with explaining(model):  # summarize hooks every layer: hold the model's lock meanwhile
        rows = summarize(model, (1, input_hw, input_hw))
    offset, jump = [0, 0], [1, 1]
    for row in rows:
        if row["kernel_hw"] is not None:
            for a in (0, 1):
                offset[a] -= row["padding_hw"][a] * jump[a]
                jump[a] = row["jump_hw"][a]
        if row["name"] == layer:
            if len(row["output_shape"]) != 3:
                raise ConfigError(f"layer {layer!r}: output {row['output_shape']} is not a C×H×W map")
            c, h, w = row["output_shape"]
            return Geometry(tuple(row["receptive_field_hw"]), tuple(row["jump_hw"]), tuple(offset),
                            (h, w), c)
    raise ConfigError(f"layer {layer!r} is not a layer of this model; conv layers: "
                      f"{', '.join(conv_layers(model))}")


class Patch(NamedTuple):
    """A rectangle of input pixels: first row and column, height and width (all ints)."""

    top: int
    left: int
    height: int
    width: int


def receptive_field_patch(geometry: Geometry, row: int, col: int, image_hw: int = IMAGE_HW) -> Patch:
    """The input pixels that unit (``row``, ``col``) of a layer sees, clipped to the image.

    ``geometry`` from :func:`layer_geometry`. The unclipped patch is ``receptive_field`` pixels
    square (it counts zero padding); clipping keeps only rows/columns 0..``image_hw``−1, so a
    unit at the border has a smaller, possibly non-square patch. Raises ValueError for a unit
    outside the layer's output.
    """
    (rh, rw), (jh, jw), (oh, ow), (h, w) = (geometry.receptive_field, geometry.jump,
                                            geometry.offset, geometry.output_hw)
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"unit ({row}, {col}) is outside the layer's {h}×{w} output")
    top, left = oh + row * jh, ow + col * jw
    bottom, right = min(top + rh, image_hw), min(left + rw, image_hw)
    top, left = max(top, 0), max(left, 0)
    return Patch(top, left, bottom - top, right - left)


# ---------------------------------------------------------------- running a model up to a layer
# Element-wise activations that may follow a conv layer (the ascent's objective goes through it).
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ReLU6)


def _forward_to(model: nn.Module, x: torch.Tensor, layer: str, activated: bool = False) -> torch.Tensor:
    """The output of ``layer`` for input ``x``, running only the layers before it; with
    ``activated``, also through the element-wise activation that directly follows it in its
    ``nn.Sequential`` (when one does).

    Walks ``nn.Sequential`` containers instead of registering hooks: a hook on a model that other
    sessions share would fire (and stop) their forward passes too.
    """
    found: list[torch.Tensor] = []

    def run(module: nn.Module, x: torch.Tensor, prefix: str) -> torch.Tensor:
        if prefix != layer and isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for i, (name, child) in enumerate(children):
                x = run(child, x, f"{prefix}.{name}" if prefix else name)
                if found:
                    after = children[i + 1][1] if i + 1 < len(children) else None
                    if activated and f"{prefix}.{name}".lstrip(".") == layer and isinstance(after, ACTIVATIONS):
                        found[0] = x = after(x)
                    break
            return x
        y = module(x)
        if prefix == layer:
            found.append(y)
        return y

    run(model, x, "")
    if not found:
        names = dict(model.named_modules())
        why = ("it is not reached through nn.Sequential containers" if layer in names
               else "it is not a layer of this model")
        raise ConfigError(f"layer {layer!r}: cannot show its filters, {why}; conv layers: "
                          f"{', '.join(conv_layers(model))}")
    return found[0]


def _one_thread():
    """Torch's OpenMP pool on this thread only. Beside a training worker two OpenMP threads spin
    for a core they cannot get: a 16-filter ascent step took 1030 ms with 2 threads, 168 ms with
    one (measured, 2 cores, two trainings running)."""
    return threadpool_limits(limits=1, user_api="openmp")


def _working_copy(model: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``model`` in channels-last layout (1.4× faster convolutions on
    this CPU, measured), taken under :func:`~fer.explain.base.explaining` so that it holds no
    other session's hooks. The copy is what runs: the shared model is only read."""
    with explaining(model):
        copy = deepcopy(model)
    return copy.eval().to(memory_format=torch.channels_last)


# ---------------------------------------------------------------- feature maps and top-k faces
def feature_maps(model: nn.Module, images: np.ndarray, layer: str, batch_size: int = 256) -> np.ndarray:
    """Activations of every filter of ``layer`` for uint8 faces ``(N, 48, 48)`` (or one ``(48, 48)``).

    Returns float32 ``(N, C, h, w)`` (``(C, h, w)`` for one face): the layer's output, before its
    non-linearity for a conv layer. Raises ConfigError for an unknown layer.
    """
    one = np.ndim(images) == 2
    batch = np.asarray(images, dtype=np.uint8)[None] if one else np.asarray(images, dtype=np.uint8)
    outs = []
    work = _working_copy(model)
    with torch.no_grad(), _one_thread():
        for start in range(0, len(batch), batch_size):
            x = to_input(torch.from_numpy(batch[start:start + batch_size]), channels_last=True)
            outs.append(_forward_to(work, x, layer).float().contiguous().numpy())  # (B, C, h, w)
    maps = np.concatenate(outs) if outs else np.zeros((0, 0, 0, 0), np.float32)
    return maps[0] if one else maps


@dataclass
class TopK:
    """The ``k`` faces that excite each filter most, strongest first (ties: lower index first).

    values float32 ``(C, k)``: the filter's maximum over spatial positions on that face.
    indices int64 ``(C, k)``: face index (into the images given, or dataset rows when cached).
    rows, cols int64 ``(C, k)``: position of that maximal unit in the layer's ``h × w`` output.
    patches int64 ``(C, k, 4)``: its receptive-field patch (top, left, height, width), clipped.
    """

    values: np.ndarray
    indices: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    patches: np.ndarray
    layer: str
    source: str = "computed"   # "computed", or the cache file it was read from


def top_activating(model: nn.Module, images: np.ndarray, layer: str, k: int = K_MAX,
                   batch_size: int = 256) -> TopK:
    """For every filter of ``layer``, the ``k`` faces of uint8 ``images`` ``(N, 48, 48)`` whose
    maximum activation over spatial positions is highest, in one pass over the faces.

    Returns a :class:`TopK` with ``min(k, N)`` faces per filter. Raises ConfigError for an unknown
    layer and ValueError for no faces or ``k`` < 1. Source: Zeiler & Fergus 2014, arXiv:1311.2901.
    """
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 3 or len(images) == 0 or k < 1:
        raise ValueError(f"need uint8 faces (N, 48, 48) with N ≥ 1 and k ≥ 1, got {images.shape}, k={k}")
    geometry = layer_geometry(model, layer)
    best_v = best_i = best_p = None
    work = _working_copy(model)
    with torch.no_grad(), _one_thread():
        for start in range(0, len(images), batch_size):
            x = to_input(torch.from_numpy(images[start:start + batch_size]), channels_last=True)
            act = _forward_to(work, x, layer).float().flatten(2)                    # (B, C, h*w)
            v, p = act.max(dim=2)                                                   # (B, C)
            idx = torch.arange(start, start + len(x)).expand(v.shape[1], -1)        # (C, B)
            if best_v is None:
                cand_v, cand_i, cand_p = v.T, idx, p.T
            else:
                cand_v = torch.cat([best_v, v.T], 1)
                cand_i = torch.cat([best_i, idx], 1)
                cand_p = torch.cat([best_p, p.T], 1)
            # stable: among equal values the earlier (lower) index stays first
            order = torch.sort(cand_v, dim=1, descending=True, stable=True).indices[:, :k]
            best_v, best_i, best_p = (t.gather(1, order) for t in (cand_v, cand_i, cand_p))
    w = geometry.output_hw[1]
    rows, cols = (best_p // w).numpy(), (best_p % w).numpy()
    patches = np.array([[receptive_field_patch(geometry, r, c) for r, c in zip(rr, cc)]
                        for rr, cc in zip(rows, cols)], dtype=np.int64).reshape(*rows.shape, 4)
    return TopK(best_v.numpy().astype(np.float32), best_i.numpy().astype(np.int64),
                rows.astype(np.int64), cols.astype(np.int64), patches, layer)


# ---------------------------------------------------------------- the top-k cache of a run
def topk_cache_paths(run: Run, member: int, layer: str, split: str) -> list[Path]:
    """Where the top-k file of (member, layer, split) may live, in lookup order: the run's
    ``explain/`` folder, then ``<user cache>/explain/<run id>-<path hash>/`` (``$FER_CACHE``)."""
    name = f"topk_m{member:02d}_{layer}_{split}.npz"
    tag = hashlib.sha256(str(run.path.resolve()).encode()).hexdigest()[:10]
    return [run.path / "explain" / name, default_cache_dir() / "explain" / f"{run.id}-{tag}" / name]


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        raise RunDirError(f"{path}: cannot read the member's weights ({e.strerror or e})") from e


def _read_topk(path: Path, key: dict) -> TopK | None:
    """The TopK stored at ``path`` when its key matches ``key``, else None (missing or stale)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["key"])) != key:
                return None
            return TopK(*(z[n] for n in ("values", "indices", "rows", "cols", "patches")),
                        layer=key["layer"], source=str(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:
        raise RunDirError(f"{path}: unreadable top-k cache ({e}); delete it to recompute") from e


def cached_top_activating(run: Run, member: int, model: nn.Module, dataset: FaceDataset,
                          split: str, layer: str) -> TopK:
    """:func:`top_activating` (``k`` = :data:`K_MAX`) of member ``member`` over the ``split``
    faces of ``dataset``, computed once and kept with the run.

    ``model`` must hold that member's weights (e.g. from the app's cached members). The file
    ``explain/topk_mMM_<layer>_<split>.npz`` is keyed by the dataset's content hash, the weights
    file's SHA-256, the number of faces and :data:`CACHE_VERSION`; a stale file is recomputed.
    Shipped runs (whose folder belongs to the app) and unwritable run folders keep it in the user
    cache instead (see :func:`topk_cache_paths`). ``indices`` are rows of ``dataset``.

    Raises ValueError when the split has no faces, RunDirError when no cache folder is writable
    or a cache file is corrupt, ConfigError for an unknown layer.
    """
    rows = np.flatnonzero(dataset.splits == split)
    if len(rows) == 0:
        raise ValueError(f"the dataset has no faces in split {split!r}")
    key = dict(version=CACHE_VERSION, layer=layer, split=split, k=K_MAX, faces=int(len(rows)),
               dataset=str(dataset.provenance.get("sha256", "")),
               weights=_file_sha256(run.weights_path(member)))
    paths = topk_cache_paths(run, member, layer, split)
    for path in paths:
        found = _read_topk(path, key)
        if found is not None:
            return found
    top = top_activating(model, dataset.images[rows], layer, K_MAX)
    top.indices = rows[top.indices]
    buf = io.BytesIO()
    np.savez(buf, key=np.array(json.dumps(key)), values=top.values, indices=top.indices,
             rows=top.rows, cols=top.cols, patches=top.patches)
    targets = paths[1:] if run.shipped else paths
    for i, path in enumerate(targets):
        try:
            atomic_write_bytes(path, buf.getvalue())
            top.source = str(path)
            break
        except RunDirError:
            if i == len(targets) - 1:
                raise
    return top


# ---------------------------------------------------------------- gradient-ascent patterns
@dataclass
class Patterns:
    """Gradient-ascent images of some filters of one layer.

    images float32 ``(B, 48, 48)`` in 0..1 (the model's input scale), one per channel.
    channels int64 ``(B,)``. start, end float32 ``(B,)``: the filter's mean activation on the
    starting image and on the final one (no jitter).
    """

    images: np.ndarray
    channels: np.ndarray
    start: np.ndarray
    end: np.ndarray


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """3×3 Gaussian blur of ``(B, 1, H, W)`` with replicated borders."""
    t = torch.tensor([-1.0, 0.0, 1.0])
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = (g[:, None] * g[None, :]) / g.sum() ** 2                               # (3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel[None, None])


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image of ``(B, 1, H, W)`` moved by its own (dy, dx) pixels, borders replicated."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")                           # (B,1,H+2p,W+2p)
    r = (pad - dy)[:, None] + torch.arange(h)[None]                                 # (B, H)
    c = (pad - dx)[:, None] + torch.arange(w)[None]                                 # (B, W)
    return xp[torch.arange(b)[:, None, None], 0, r[:, :, None], c[:, None, :]][:, None]


def _mean_activation(model: nn.Module, x: torch.Tensor, layer: str, channels: torch.Tensor) -> torch.Tensor:
    """(B,) mean over positions of filter ``channels[b]`` on image ``x[b]``, after the layer's
    activation function."""
    act = _forward_to(model, x, layer, activated=True)                              # (B, C, h, w)
    return act[torch.arange(len(x)), channels].flatten(1).mean(1)


def filter_patterns(model: nn.Module, layer: str, channels, seed: int = 0,
                    steps: int = PATTERN_STEPS, step_size: float = 0.05, jitter: int = 2,
                    blur_sigma: float = 0.5, blur_every: int = 2) -> Patterns:
    """Gradient-ascent images that maximise the mean activation of each filter in ``channels``,
    all optimised together as one batch.

    The activation is the layer's output passed through the activation function that follows
    it (LeakyReLU in ``seed_cnn``), averaged over positions. Before the non-linearity a first
    conv layer is linear in the pixels and its mean is maximised by a flat black or white image;
    after it, negative responses cost little, so the image fills with the filter's pattern.

    Filter c starts from gray 0.5 plus noise (std 0.05) drawn from a generator seeded with
    ``(seed, c)``, which also draws its jitter, so the recipe of a filter's pattern does not
    depend on which other filters share the batch. The images are alike but not equal: a batch
    rounds differently, and max pooling and the activation's kink amplify that into local
    differences (``benchmarks/filter_patterns.py`` prints them). Each of
    ``steps`` steps moves every image by a random shift of up to ±``jitter`` pixels (1/24 of a
    48-pixel face), takes the gradient of the mean activation with respect to the image,
    normalises it to unit RMS per image and adds ``step_size`` times it; every ``blur_every``
    steps the image is blurred (3×3 Gaussian, ``blur_sigma`` pixels) and it is always clipped to
    0..1. Jitter and blur suppress the high-frequency noise that otherwise maximises a filter
    (Olah et al. 2017).

    A frozen eval-mode copy of the model runs; only the images get gradients (the model's
    weights, BatchNorm statistics, ``requires_grad`` and ``.grad`` are untouched). Returns
    :class:`Patterns` (``start``/``end``: that mean activation before/after). Raises ConfigError
    for an unknown layer, ValueError for a channel outside the layer.
    Source: Erhan et al. 2009; Simonyan et al. 2014, arXiv:1312.6034; Olah et al. 2017, Distill.
    """
    geometry = layer_geometry(model, layer)
    ch = torch.as_tensor(np.asarray(channels, dtype=np.int64).reshape(-1))
    if len(ch) == 0 or ch.min() < 0 or ch.max() >= geometry.channels:
        raise ValueError(f"channels must be in 0..{geometry.channels - 1} of layer {layer!r}, "
                         f"got {ch.tolist()}")
    gens = [torch.Generator().manual_seed(int(seed) * 1_000_003 + int(c)) for c in ch]
    x = torch.stack([0.5 + 0.05 * torch.randn(1, IMAGE_HW, IMAGE_HW, generator=g) for g in gens])
    shifts = torch.stack([torch.randint(-jitter, jitter + 1, (steps, 2), generator=g)
                          for g in gens])                                            # (B, steps, 2)
    work = _working_copy(model)
    with _one_thread():
        with torch.no_grad():
            start = _mean_activation(work, x, layer, ch)
        for i in range(steps):
            x.requires_grad_(True)
            moved = _shift(x, shifts[:, i, 0], shifts[:, i, 1], jitter) if jitter else x
            objective = _mean_activation(work, moved.contiguous(memory_format=torch.channels_last),
                                         layer, ch).sum()
            grad, = torch.autograd.grad(objective, x)                                # (B,1,48,48)
            with torch.no_grad():
                rms = grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
                x = x.detach() + step_size * grad / rms
                if blur_every and (i + 1) % blur_every == 0:
                    x = _gaussian_blur(x, blur_sigma)
                x = x.clamp(0.0, 1.0)
        with torch.no_grad():
            end = _mean_activation(work, x, layer, ch)
    return Patterns(x[:, 0].float().numpy(), ch.numpy(), start.float().numpy(), end.float().numpy())

