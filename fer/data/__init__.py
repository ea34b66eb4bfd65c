"""Datasets: ``load_dataset(source)`` → :class:`FaceDataset`, whatever copy of FER2013 a user has.

``source`` is a path to a Kaggle ``fer2013.csv`` (plain, ``.gz`` or ``.zip``) or the word
``synthetic`` (the embedded default, procedurally drawn faces). Parsed real files are cached as
``.npz`` keyed by the file's SHA-256, so the 300 MB CSV is parsed once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer.errors import DataFormatError

SPLITS = ("train", "public_test", "private_test")
SYNTHETIC = "synthetic"


@dataclass
class FaceDataset:
    """Faces, labels and the split of each row.

    images: uint8 ``(N, 48, 48)``, 0..255 gray. labels: int64 ``(N,)`` in 0..6 (-1 = unlabelled).
    splits: unicode ``(N,)`` in {train, public_test, private_test}.
    provenance: dict with at least ``source`` (what the user gave), ``format``, ``sha256``
    (content hash, or a description of the generator for synthetic) and ``synthetic`` (bool).
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.shape[1:] != (48, 48) or self.images.dtype != np.uint8:
            raise DataFormatError(f"images must be uint8 (N,48,48), got {self.images.dtype} "
                                  f"{self.images.shape}")
        if self.labels.shape != (n,) or self.splits.shape != (n,):
            raise DataFormatError(f"labels {self.labels.shape} and splits {self.splits.shape} "
                                  f"must both be ({n},)")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def id(self) -> str:
        """Short stable name: ``synthetic-seed0`` or ``<file stem>-<first 12 hex of sha256>``."""
        return self.provenance.get("id", "dataset")

    @property
    def is_synthetic(self) -> bool:
        return bool(self.provenance.get("synthetic", False))

    def indices(self, split: str) -> np.ndarray:
        """Row indices (int64, ascending) of one split; empty when the split has no rows."""
        return np.flatnonzero(self.splits == split).astype(np.int64)

    def counts(self) -> dict[str, np.ndarray]:
        """Per split, the number of faces of each class: ``{split: int64 (7,)}``."""
        out = {}
        for s in SPLITS:
            lab = self.labels[self.splits == s]
            out[s] = np.bincount(lab[lab >= 0], minlength=7).astype(np.int64)
        return out


def default_cache_dir() -> Path:
    """``$FER_CACHE`` or ``~/.cache/fer-ensemble-lab``."""
    return Path(os.environ.get("FER_CACHE", Path.home() / ".cache" / "fer-ensemble-lab"))


def load_dataset(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> FaceDataset:
    """Load a dataset by path or by the word ``synthetic``.

    Args:
        source: ``"synthetic"`` (optionally ``"synthetic:SEED"``) or a path to Kaggle's
            ``fer2013.csv`` / ``.csv.gz`` / ``.zip`` (columns ``emotion,pixels,Usage``, see
            https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge/data).
        cache_dir: where parsed files are cached (default :func:`default_cache_dir`).

    Returns: a :class:`FaceDataset`.
    Raises: DataFormatError naming the file, row and field when the file is missing or malformed.
    """
    text = str(source).strip()
    if text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        from fer.data.synthetic import make_synthetic

        seed = int(text.split(":", 1)[1]) if ":" in text else 0
        images, labels, splits = make_synthetic(seed=seed)
        return FaceDataset(images, labels, splits, dict(
            source=text, format="synthetic", sha256=f"synthetic-seed{seed}", synthetic=True,
            id=f"synthetic-seed{seed}",
            description="Procedurally drawn 48x48 faces (the embedded default, not real data)"))
    path = Path(text).expanduser()
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder (expected a FER2013 CSV such as "
                              f"fer2013.csv, or the word 'synthetic')")
    from fer.data.cache import cached_parse
    from fer.data.kaggle import read_fer2013_csv

    return cached_parse(path, read_fer2013_csv, Path(cache_dir) if cache_dir else default_cache_dir())
