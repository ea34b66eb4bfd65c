"""Predictions for unlabelled rows (a homework ``test.csv``) → a submission CSV ``id,label``.

The layout is the one course/Kaggle-style graders read: header ``id,label``, one line per test
row, ``label`` the predicted FER2013 class index 0..6 (see :mod:`fer.labels`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fer.data import UNLABELLED_SPLIT, FaceDataset
from fer.errors import DataFormatError


def unlabelled_rows(ds: FaceDataset) -> tuple[np.ndarray, np.ndarray]:
    """(row indices int64 ``(T,)``, ids int64 ``(T,)``) of the unlabelled ``test`` rows.

    Raises DataFormatError when the dataset has no unlabelled rows or no ids.
    """
    rows = ds.indices(UNLABELLED_SPLIT)
    if len(rows) == 0 or ds.row_ids is None:
        raise DataFormatError(f"dataset {ds.id}: no unlabelled test rows with ids (expected a homework "
                              f"test.csv with columns id,feature)")
    return rows, ds.row_ids[rows]


def submission_csv(ids: np.ndarray, labels: np.ndarray) -> str:
    """The text of a submission: ``id,label`` header, then one ``<id>,<label>`` line per row.

    Args: ids int ``(T,)`` (unique); labels int ``(T,)`` predicted classes 0..6.
    Raises DataFormatError when the lengths differ, an id repeats or a label is outside 0..6.
    """
    ids = np.asarray(ids)
    labels = np.asarray(labels)
    if ids.shape != labels.shape or ids.ndim != 1:
        raise DataFormatError(f"submission: ids {ids.shape} and labels {labels.shape} must both be (T,)")
    if len(np.unique(ids)) != len(ids):
        raise DataFormatError("submission: ids repeat; expected one prediction per test id")
    bad = np.flatnonzero((labels < 0) | (labels > 6))
    if len(bad):
        raise DataFormatError(f"submission: label for id {ids[bad[0]]} is {labels[bad[0]]}, expected 0..6")
    lines = [f"{int(i)},{int(y)}" for i, y in zip(ids, labels)]
    return "id,label\n" + "\n".join(lines) + "\n"


def write_submission(path: str | os.PathLike, ids: np.ndarray, labels: np.ndarray) -> Path:
    """Write :func:`submission_csv` to ``path`` atomically; returns the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(submission_csv(ids, labels))
    os.replace(tmp, path)
    return path
