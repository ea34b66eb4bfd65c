"""Weights on disk: safetensors only (a file a user hands in is never unpickled).

Format: https://huggingface.co/docs/safetensors — a JSON header plus raw tensors. We store the
model's ``state_dict`` and, in the header's ``__metadata__`` (strings only), ``model`` (registry
name) and free-form JSON under ``fer``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from fer.errors import CheckpointError
from fer.models import create_model
from fer.runs import atomic_write_bytes

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomically write ``tensors`` (contiguous CPU copies are made) with JSON ``metadata``."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"fer": json.dumps(metadata or {})}
    atomic_write_bytes(Path(path), st_save(flat, metadata=meta))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and JSON metadata of a safetensors file written by :func:`save_tensors`.

    Raises CheckpointError for a missing, truncated, corrupt or pickled (``.pt``) file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read weights ({e.strerror or e})") from e
    if data[:2] in PICKLE_MAGIC or data[:4] in PICKLE_MAGIC:
        raise CheckpointError(f"{path.name}: this is a pickle/PyTorch .pt file; for safety only "
                              f"safetensors weights are accepted (pickle can run code)")
    try:
        tensors = st_load(data)
        import safetensors

        with safetensors.safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{path.name}: not a valid safetensors file (corrupt or truncated: {e})") from e
    try:
        meta = json.loads(header.get("fer", "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path.name}: metadata 'fer' is not JSON ({e})") from e
    return tensors, meta


def save_model(path: Path, model: nn.Module, model_name: str, metadata: dict | None = None,
               dtype: torch.dtype | None = None) -> None:
    """Save a model's state_dict (floating tensors cast to ``dtype`` when given)."""
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
          for k, v in model.state_dict().items()}
    save_tensors(path, sd, dict(metadata or {}, model=model_name))


def load_model(path: Path, model_name: str) -> nn.Module:
    """A ``model_name`` model with the weights of ``path``, in eval mode, float32.

    Raises CheckpointError naming the file and the first missing, unexpected or mis-shaped key
    (e.g. weights of another architecture, or renamed keys).
    """
    tensors, meta = load_tensors(path)
    if meta.get("model") not in (None, model_name):
        raise CheckpointError(f"{Path(path).name}: weights are for model {meta['model']!r}, "
                              f"expected {model_name!r}")
    model = create_model(model_name)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{Path(path).name}: keys do not match {model_name}: "
                              f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
                              f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{Path(path).name}: tensor {k} has shape {tuple(tensors[k].shape)}, "
                                  f"{model_name} expects {tuple(v.shape)}")
    model.load_state_dict({k: t.to(expected[k].dtype) for k, t in tensors.items()})
    return model.eval()
