"""FER+ crowd labels (``fer2013new.csv``) joined to a FER2013 CSV by row position.

Source: E. Barsoum, C. Zhang, C. Canton Ferrer, Z. Zhang, "Training Deep Networks for Facial
Expression Recognition with Crowd-Sourced Label Distribution", ACM ICMI 2016 (arXiv:1608.01041);
file and reference code in https://github.com/microsoft/FERPlus (MIT). Header
``Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF``;
one row per ``fer2013.csv`` row, **in the same order**: join by position. The number in
``Image name`` is not the row index beyond row 58 (see shared/data/SOURCES.md), so it is never
used. Each row holds the votes of (usually) 10 taggers.

Majority rule, as FER+'s ``ferplus.py`` (``_process_data``, mode ``majority``): drop every
emotion with a single vote (outlier removal), then the emotion with the most remaining votes
wins if it holds **more than half** of them; otherwise the face is ``unknown``. Rows whose
winner is contempt (no FER2013 class), unknown or NF (not a face), and rows without a majority
(ties included), are excluded from the dataset and counted.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyarrow import csv as pacsv

from fer.data import FaceDataset
from fer.errors import DataFormatError
from fer.labels import USAGE_TO_SPLIT, class_index

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                "contempt", "unknown", "NF")
# FER+ vote column → FER2013 class index (-1: no FER2013 class)
VOTE_TO_CLASS = np.array([class_index(c) if class_index(c) is not None else -1 for c in VOTE_COLUMNS],
                         dtype=np.int64)
RULE = ("FER+ majority (Barsoum et al. 2016): drop single votes, winner needs > 50% of the rest; "
        "contempt, unknown, NF and no-majority rows (ties included) excluded")


def read_ferplus(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``fer2013new.csv`` bytes → (splits unicode ``(N,)``, votes uint8 ``(N, 10)``).

    Raises DataFormatError naming the file, row and column for a missing column, a vote that is
    not an integer 0..255, or an unknown Usage.
    """
    try:
        table = pacsv.read_csv(pa.py_buffer(data), convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in ("Usage", "Image name", *VOTE_COLUMNS)}))
    except pa.ArrowInvalid as e:
        raise DataFormatError(f"{name}: not a readable FER+ CSV ({e})") from e
    missing = [c for c in ("Usage", *VOTE_COLUMNS) if c not in table.column_names]
    if missing:
        raise DataFormatError(f"{name}: missing column(s) {', '.join(missing)}; expected the FER+ header "
                              f"Usage,Image name,{','.join(VOTE_COLUMNS)}")
    n = table.num_rows
    votes = np.empty((n, len(VOTE_COLUMNS)), dtype=np.uint8)
    for j, c in enumerate(VOTE_COLUMNS):
        text = [(v or "").strip() for v in table.column(c).to_pylist()]
        for r, t in enumerate(text):
            if not (t.isdigit() and int(t) <= 255):
                raise DataFormatError(f"{name} row {r} (line {r + 2}): {c} is {t!r}, expected a vote count 0..10")
        votes[:, j] = np.array(text, dtype=np.int64)
    usage = [(v or "").strip() for v in table.column("Usage").to_pylist()]
    splits = np.empty(n, dtype="<U12")
    for r, u in enumerate(usage):
        if u not in USAGE_TO_SPLIT:
            raise DataFormatError(f"{name} row {r} (line {r + 2}): Usage is {u!r}, expected Training, "
                                  f"PublicTest or PrivateTest")
        splits[r] = USAGE_TO_SPLIT[u]
    return splits, votes


def majority_vote(votes: np.ndarray) -> np.ndarray:
    """FER+'s majority rule over vote counts ``(N, 10)`` → winning column int64 ``(N,)``, -1 = none.

    Single votes are dropped first; the winner must hold more than half of the remaining votes
    (which also rules out ties).
    """
    v = np.where(votes > 1, votes, 0).astype(np.int64)
    top = v.argmax(axis=1)
    win = 2 * v.max(axis=1) > v.sum(axis=1)
    return np.where(win, top, -1)


def join_ferplus(fer: FaceDataset, data: bytes, name: str) -> FaceDataset:
    """Relabel ``fer`` (a FER2013 CSV dataset, all rows) with FER+ majority labels.

    Returns the rows whose FER+ winner is one of the 7 FER2013 classes, with ``labels`` = the
    FER+ majority, ``fer2013_labels`` = FER2013's label, ``votes`` uint8 ``(N, 10)``, ``row_ids``
    = the ``fer2013.csv`` row. ``provenance["ferplus"]`` counts kept and excluded rows by reason.
    Raises DataFormatError when the two files differ in length or in any row's Usage.
    """
    splits, votes = read_ferplus(data, name)
    if len(votes) != len(fer):
        raise DataFormatError(f"{name} has {len(votes)} rows but the FER2013 CSV has {len(fer)}; FER+ is "
                              f"joined by row position, so both must hold the same rows in the same order")
    differ = np.flatnonzero(splits != fer.splits)
    if len(differ):
        r = int(differ[0])
        raise DataFormatError(f"{name} row {r} (line {r + 2}): Usage is {splits[r]} but the FER2013 CSV says "
                              f"{fer.splits[r]}; the files are not in the same row order")
    winner = majority_vote(votes)
    label = np.where(winner >= 0, VOTE_TO_CLASS[np.maximum(winner, 0)], -1)
    keep = np.flatnonzero(label >= 0)
    excluded = {"no_majority": int((winner < 0).sum())}
    for j in np.flatnonzero(VOTE_TO_CLASS < 0):
        excluded[VOTE_COLUMNS[j]] = int((winner == j).sum())
    ds = fer.take(keep)
    ds.fer2013_labels = fer.labels[keep]
    ds.labels = label[keep]
    ds.votes = votes[keep]
    ds.row_ids = (fer.row_ids[keep] if fer.row_ids is not None else keep).astype(np.int64)
    ds.provenance.update(format=f"{fer.provenance.get('format', 'fer2013.csv')} + FER+ fer2013new.csv",
                         rows=len(keep),
                         ferplus=dict(file=name, rule=RULE, rows=len(fer), kept=len(keep), excluded=excluded))
    return ds
