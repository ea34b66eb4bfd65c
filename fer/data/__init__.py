"""Datasets: ``load_dataset(source)`` → :class:`FaceDataset`, whatever copy of FER2013 a user has.

``source`` is the word ``synthetic`` (the embedded default, procedurally drawn faces) or a path.
What a path holds is told from its content and structure, not its name (see
:mod:`fer.data.formats`): Kaggle's ``fer2013.csv``, ``icml_face_data.csv``, a course homework
``train.csv`` (``label,feature``) / ``test.csv`` (``id,feature``), FER+ ``fer2013new.csv`` beside
a FER2013 CSV, folders of images (``train/angry/*.png`` …), and ``.gz`` / ``.zip`` / ``.tar``
archives of any of these. Parsed sources are cached as ``.npz`` (see :mod:`fer.data.cache`), so
the 300 MB CSV is parsed once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer.errors import DataFormatError, DataPathError

SPLITS = ("train", "public_test", "private_test")
UNLABELLED_SPLIT = "test"  # rows of a homework test.csv: label -1, predicted and exported, never scored
SYNTHETIC = "synthetic"
UNKNOWN_CLASS_POLICIES = ("refuse", "exclude")
DATA_ROOT_ENV = "FER_DATA_ROOT"  # on a shared server: the folder typed data paths must lie in


@dataclass
class FaceDataset:
    """Faces, labels and the split of each row, plus optional per-row extras.

    images: uint8 ``(N, 48, 48)``, 0..255 gray. labels: int64 ``(N,)`` in 0..6 (-1 = unlabelled).
    splits: unicode ``(N,)`` in {train, public_test, private_test, test} (``test`` = unlabelled
    rows of a homework ``test.csv``).
    provenance: dict with at least ``source`` (what the user gave), ``format``, ``sha256``
    (content hash, or a description of the generator for synthetic) and ``synthetic`` (bool).

    Optional (None when the source has no such thing), each with N rows:
    row_ids: int64 ``(N,)``, the row's identifier in its source: the ``id`` column of a
        ``test.csv``, else the 0-based data row of the source CSV (FER+ rows keep their
        ``fer2013.csv`` row). Used to export predictions as a submission (:mod:`fer.data.submission`).
    votes: uint8 ``(N, 10)``, FER+ crowd votes in the order of :data:`fer.data.ferplus.VOTE_COLUMNS`
        (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF).
    fer2013_labels: int64 ``(N,)``, FER2013's own label when ``labels`` come from elsewhere (FER+).
    files: unicode ``(N,)``, the image's path inside the folder or archive it was read from.
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    provenance: dict = field(default_factory=dict)
    row_ids: np.ndarray | None = None
    votes: np.ndarray | None = None
    fer2013_labels: np.ndarray | None = None
    files: np.ndarray | None = None

    OPTIONAL = ("row_ids", "votes", "fer2013_labels", "files")

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.shape[1:] != (48, 48) or self.images.dtype != np.uint8:
            raise DataFormatError(f"images must be uint8 (N,48,48), got {self.images.dtype} "
                                  f"{self.images.shape}")
        if self.labels.shape != (n,) or self.splits.shape != (n,):
            raise DataFormatError(f"labels {self.labels.shape} and splits {self.splits.shape} "
                                  f"must both be ({n},)")
        for name in self.OPTIONAL:
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise DataFormatError(f"{name} has {len(value)} rows, expected {n} (one per image)")

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

    def split_names(self) -> list[str]:
        """The splits present, in the order train, public_test, private_test, test."""
        present = set(np.unique(self.splits).tolist())
        return [s for s in (*SPLITS, UNLABELLED_SPLIT) if s in present]

    def counts(self) -> dict[str, np.ndarray]:
        """Per labelled split, the number of faces of each class: ``{split: int64 (7,)}``."""
        out = {}
        for s in SPLITS:
            lab = self.labels[self.splits == s]
            out[s] = np.bincount(lab[lab >= 0], minlength=7).astype(np.int64)
        return out

    def take(self, rows: np.ndarray) -> FaceDataset:
        """A new dataset of ``rows`` (int64 indices), extras included, provenance copied."""
        rows = np.asarray(rows, dtype=np.int64)
        extras = {k: (None if getattr(self, k) is None else getattr(self, k)[rows]) for k in self.OPTIONAL}
        return FaceDataset(self.images[rows], self.labels[rows], self.splits[rows], dict(self.provenance),
                           **extras)


def default_cache_dir() -> Path:
    """``$FER_CACHE`` or ``~/.cache/fer-ensemble-lab``."""
    return Path(os.environ.get("FER_CACHE", Path.home() / ".cache" / "fer-ensemble-lab"))


def is_synthetic_source(source: str | os.PathLike) -> bool:
    """True for the word ``synthetic`` or ``synthetic:SEED`` (the embedded faces, no file)."""
    text = str(source).strip()
    return text == SYNTHETIC or text.startswith(SYNTHETIC + ":")


def data_root() -> Path | None:
    """``$FER_DATA_ROOT`` made absolute (``~`` expanded, symlinks followed), or None when unset."""
    text = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(text).expanduser().resolve() if text else None


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == f or path.is_relative_to(f) for f in folders)


def check_allowed_source(source: str | os.PathLike, also: tuple[str | os.PathLike, ...] = ()) -> str:
    """A data source typed into the app, checked against ``$FER_DATA_ROOT`` (shared servers).

    The app's text fields take paths on the server's disk; on a classroom server a teacher sets
    ``FER_DATA_ROOT`` so that they can only reach the course data, not ``/etc`` or another
    student's home. The command line is not checked (its user has the filesystem anyway).

    Args:
        source: ``synthetic`` / ``synthetic:SEED``, or a path (str or PathLike; ``~`` expanded).
        also: further allowed folders, e.g. where the app itself stores uploads.
    Returns: ``synthetic[:SEED]`` unchanged; else the path made absolute with ``..`` and symlinks
        resolved (``Path.resolve``), as a string.
    Raises: DataPathError naming the path, what it resolves to and the root, when
        ``FER_DATA_ROOT`` is set and the resolved path lies outside it and outside ``also``.
    """
    text = str(source).strip()
    if is_synthetic_source(text):
        return text
    resolved = Path(text).expanduser().resolve()
    root = data_root()
    if root is None or _inside(resolved, [root, *(Path(a).expanduser().resolve() for a in also)]):
        return str(resolved)
    via = "" if str(resolved) == text else f" (it resolves to {resolved})"
    raise DataPathError(f"{text}: refused{via}; on this server data paths must lie inside {root} "
                        f"(FER_DATA_ROOT). Put the file there, or upload it on the Train page")


def path_allowed(source: str | os.PathLike, also: tuple[str | os.PathLike, ...] = ()) -> bool:
    """True when :func:`check_allowed_source` accepts ``source`` (no error raised)."""
    try:
        check_allowed_source(source, also)
    except DataPathError:
        return False
    return True


def load_dataset(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
                 unknown_classes: str = "refuse", ferplus: str | os.PathLike | None = None) -> FaceDataset:
    """Load a dataset by path or by the word ``synthetic``.

    Args:
        source: ``"synthetic"`` (optionally ``"synthetic:SEED"``) or a path to a file, folder or
            archive in any format of :mod:`fer.data.formats`, e.g. Kaggle's ``fer2013.csv``
            (columns ``emotion,pixels,Usage``, see
            https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge/data).
        cache_dir: where parsed sources are cached (default :func:`default_cache_dir`).
        unknown_classes: for image folders, what to do with a class folder FER2013 lacks (e.g.
            ``contempt``): ``"refuse"`` (default: DataFormatError naming the folders) or
            ``"exclude"`` (skip them; counts in ``provenance["excluded_classes"]``).
        ferplus: path to FER+ ``fer2013new.csv`` to relabel a FER2013 CSV ``source`` with (also
            found automatically when it lies beside the FER2013 CSV or in the same folder/zip).

    Returns: a :class:`FaceDataset`.
    Raises: DataFormatError naming the file, row and field when the source is missing or malformed.
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
    if unknown_classes not in UNKNOWN_CLASS_POLICIES:
        raise DataFormatError(f"unknown_classes is {unknown_classes!r}, expected one of {UNKNOWN_CLASS_POLICIES}")
    path = Path(text).expanduser()
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder (expected a FER2013 CSV such as "
                              f"fer2013.csv, a folder of class folders of images, or the word 'synthetic')")
    from fer.data.formats import load_path

    return load_path(path, Path(cache_dir) if cache_dir else default_cache_dir(),
                     unknown_classes=unknown_classes, ferplus=Path(ferplus).expanduser() if ferplus else None)
