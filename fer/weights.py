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
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format: a zip holding data.pkl


def pickle_kind(data: bytes) -> str | None:
    """What pickle-bearing file ``data`` starts as (a PyTorch ``.pt`` zip, a pickle stream), or None.

    Pickle protocols 2–5 start with ``0x80 <protocol>``; ``torch.save`` (PyTorch ≥ 1.6) writes a
    zip archive whose ``*/data.pkl`` is a pickle. A zip without a ``.pkl`` member is not reported.
    """
    if data[:2] in PICKLE_MAGIC[:4]:
        return f"a Python pickle (protocol {data[1]})"
    if data[:4] == ZIP_MAGIC:
        import io
        import zipfile

        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
        pkl = [n for n in names if n.endswith(".pkl")]
        if pkl:
            return f"a PyTorch torch.save (.pt) file: a zip holding the pickle {pkl[0]}"
    return None


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
    if (kind := pickle_kind(data)) is not None:
        raise CheckpointError(f"{path.name}: refused: this is {kind}; for safety only "
                              f"safetensors weights are accepted (pickle can run code)")
    if data[:4] == ZIP_MAGIC:
        raise CheckpointError(f"{path.name}: a zip archive, not a safetensors file")
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

    Raises CheckpointError naming the file and how many keys are missing / unexpected (with the
    first of each, sorted), or the first mis-shaped tensor with both shapes (e.g. weights of
    another architecture, or renamed keys), or a tensor holding NaN or infinity.
    """
    tensors, meta = load_tensors(path)
    if meta.get("model") not in (None, model_name):
        raise CheckpointError(f"{Path(path).name}: weights are for model {meta['model']!r}, "
                              f"expected {model_name!r}")
    model = create_model(model_name)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in tensors)
    unexpected = sorted(k for k in tensors if k not in expected)
    if missing or unexpected:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")
        parts = ([f"{len(missing)} missing ({some(missing)})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected ({some(unexpected)})"] if unexpected else [])
        raise CheckpointError(f"{Path(path).name}: keys do not match {model_name}: "
                              f"{'; '.join(parts)} (weights of another model, or renamed keys?)")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{Path(path).name}: tensor {k} has shape {tuple(tensors[k].shape)}, "
                                  f"{model_name} expects {tuple(v.shape)}")
        if tensors[k].is_floating_point() and not bool(torch.isfinite(tensors[k]).all()):
            raise CheckpointError(f"{Path(path).name}: tensor {k} holds NaN or infinite values")
    model.load_state_dict({k: t.to(expected[k].dtype) for k, t in tensors.items()})
    return model.eval()
