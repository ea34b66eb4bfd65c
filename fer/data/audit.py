"""Data audit: blank and near-constant images, exact duplicates, cross-split leakage, class balance.

Run on the real FER2013 (shared/data/SOURCES.md lists what it must find): 12 all-black images,
15 with pixel std < 10, 1,516 groups of identical images holding 3,369 rows (1,853 redundant),
57 groups with conflicting labels, 557 groups spanning splits; 280 PublicTest and 288
PrivateTest rows have a copy in Training, 44 PrivateTest rows one in PublicTest.

Exact duplicates are found by viewing each 2304-byte image as one opaque value and sorting
(``np.unique`` on a void dtype): exact byte equality, no hashing collisions, no Python loop over
pixels. ``python -m fer audit --data SOURCE --json`` prints :attr:`Audit.summary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fer.data import SPLITS, UNLABELLED_SPLIT, FaceDataset
from fer.labels import CLASS_NAMES

NEAR_CONSTANT_STD = 10.0  # pixel standard deviation (gray levels 0..255) below which an image is flagged
SPLIT_ORDER = (*SPLITS, UNLABELLED_SPLIT)
# Rows a training run can leave out (see training_exclusions): what each kind means.
EXCLUSION_KINDS = {
    "near_constant": "pixel std below NEAR_CONSTANT_STD (blank or flat: no face)",
    "conflicting": "an exact copy carries another label",
    "leaked": "an exact copy is in a test split (public_test, private_test, test)",
    "redundant": "a later exact copy of an earlier row of the same split",
}


@dataclass
class Audit:
    """What :func:`audit` found: a JSON-ready ``summary`` plus row-index arrays for thumbnails.

    std: float32 ``(N,)`` pixel standard deviation of each image (gray levels).
    group: int64 ``(N,)`` exact-duplicate group of each row, -1 for a unique image; groups are
        numbered 0..G-1 in order of their first row.
    groups: list of G int64 arrays, the rows of each group (ascending).
    blank: int64 rows whose pixels are all equal (std 0). near_constant: rows with std below
        the threshold (blank included). conflicting: group ids whose labelled rows disagree.
    cross_split: group ids spanning more than one split.
    leaked: ``{(split, other): rows of split with an exact copy in other}`` for each split that
        comes after ``other`` in train, public_test, private_test, test.
    """

    summary: dict
    std: np.ndarray
    group: np.ndarray
    groups: list[np.ndarray]
    blank: np.ndarray
    near_constant: np.ndarray
    conflicting: np.ndarray
    cross_split: np.ndarray
    leaked: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def pairs(self, group_ids: np.ndarray | None = None) -> np.ndarray:
        """int64 ``(P, 2)`` (first row, other row) of every copy in the given groups (default all)."""
        ids = range(len(self.groups)) if group_ids is None else group_ids
        out = [(g[0], r) for i in ids for g in (self.groups[int(i)],) for r in g[1:]]
        return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def pixel_std(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Population standard deviation of each image's pixels: uint8 ``(N,48,48)`` → float32 ``(N,)``."""
    flat = images.reshape(len(images), -1)
    out = np.empty(len(images), dtype=np.float32)
    for lo in range(0, len(flat), chunk):
        out[lo:lo + chunk] = flat[lo:lo + chunk].astype(np.float32).std(axis=1)
    return out


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """Exact-duplicate group of each image: int64 ``(N,)``, -1 when unique, else 0..G-1 by first row."""
    n = len(images)
    flat = np.ascontiguousarray(images.reshape(n, -1))
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    dup = counts[inverse] > 1
    group = np.full(n, -1, dtype=np.int64)
    # renumber the duplicated unique values by their first row
    dup_values = np.flatnonzero(counts > 1)
    order = dup_values[np.argsort(first[dup_values], kind="stable")]
    rank = np.full(len(counts), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    group[dup] = rank[inverse[dup]]
    return group


def audit(ds: FaceDataset, near_constant_std: float = NEAR_CONSTANT_STD) -> Audit:
    """Audit a dataset (see the module docstring). Cost: ~1 s for FER2013's 35,887 images."""
    n = len(ds)
    std = pixel_std(ds.images)
    flat = ds.images.reshape(n, -1)
    blank = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1)).astype(np.int64)
    near = np.flatnonzero(std < near_constant_std).astype(np.int64)
    group = duplicate_groups(ds.images)
    g_rows = np.flatnonzero(group >= 0)
    g_rows = g_rows[np.argsort(group[g_rows], kind="stable")]
    n_groups = int(group.max()) + 1 if len(g_rows) else 0
    bounds = np.searchsorted(group[g_rows], np.arange(n_groups + 1))
    groups = [g_rows[bounds[i]:bounds[i + 1]] for i in range(n_groups)]
    # unlabelled rows (-1, a homework test.csv) conflict with nothing
    conflicting = np.array([i for i, g in enumerate(groups) if len(np.unique(ds.labels[g][ds.labels[g] >= 0])) > 1],
                           dtype=np.int64)
    cross = np.array([i for i, g in enumerate(groups) if len(np.unique(ds.splits[g])) > 1], dtype=np.int64)
    present = [s for s in SPLIT_ORDER if (ds.splits == s).any()]
    leaked = {}
    for j, split in enumerate(present):
        for other in present[:j]:
            leaked[(split, other)] = rows_with_copy_in(ds, group, split, other)
    summary = _summary(ds, std, near_constant_std, blank, near, groups, conflicting, cross, leaked, present)
    return Audit(summary, std, group, groups, blank, near, conflicting, cross, leaked)


def rows_with_copy_in(ds: FaceDataset, group: np.ndarray, split: str, other: str) -> np.ndarray:
    """Rows of ``split`` whose exact copy is in ``other`` (int64, ascending)."""
    in_other = np.unique(group[(ds.splits == other) & (group >= 0)])
    rows = np.flatnonzero((ds.splits == split) & (group >= 0))
    return rows[np.isin(group[rows], in_other)].astype(np.int64)


def leaked_pairs(ds: FaceDataset, result: Audit, split: str, other: str) -> np.ndarray:
    """int64 ``(P, 2)``: each leaked row of ``split`` (``result.leaked[(split, other)]``, ascending)
    beside its copy in ``other`` (the first row of ``other`` holding the same image).

    Empty ``(0, 2)`` when nothing leaked or the pair of splits is not in ``result.leaked``.
    """
    rows = result.leaked.get((split, other), np.empty(0, dtype=np.int64))
    cand = np.flatnonzero((ds.splits == other) & (result.group >= 0))
    ids, first = np.unique(result.group[cand], return_index=True)
    copies = cand[first[np.searchsorted(ids, result.group[rows])]] if len(rows) else rows
    return np.stack([rows, copies], axis=1).astype(np.int64).reshape(-1, 2)


_EXCLUSIONS: dict[tuple, np.ndarray] = {}  # (dataset sha256, rows, kinds) -> rows, so members share one audit


def training_exclusions(ds: FaceDataset, result: Audit | None = None,
                        kinds: tuple[str, ...] = tuple(EXCLUSION_KINDS)) -> np.ndarray:
    """Train rows a run should leave out: int64 ascending row indices (see :data:`EXCLUSION_KINDS`).

    Only ``train`` rows are returned; test splits stay untouched so scores remain comparable
    with published FER2013 numbers. ``redundant`` keeps the first row of each group. Without
    ``result`` the audit runs once per dataset content (remembered by its sha256).
    """
    unknown = sorted(set(kinds) - set(EXCLUSION_KINDS))
    if unknown:
        raise ValueError(f"unknown exclusion kind(s) {unknown}; known: {list(EXCLUSION_KINDS)}")
    sha = ds.provenance.get("sha256")
    key = (sha, len(ds), tuple(sorted(kinds)))
    if result is None and sha and key in _EXCLUSIONS:
        return _EXCLUSIONS[key].copy()
    rows = _exclusions(ds, result or audit(ds), kinds)
    if result is None and sha:
        _EXCLUSIONS[key] = rows
    return rows.copy()


def _exclusions(ds: FaceDataset, result: Audit, kinds: tuple[str, ...]) -> np.ndarray:
    train = ds.splits == "train"
    flag = np.zeros(len(ds), dtype=bool)
    if "near_constant" in kinds:
        flag[result.near_constant] = True
    if "conflicting" in kinds:
        flag[np.isin(result.group, result.conflicting)] = True
    if "leaked" in kinds:
        tests = ~train
        in_test = np.unique(result.group[tests & (result.group >= 0)])
        flag |= train & np.isin(result.group, in_test) & (result.group >= 0)
    if "redundant" in kinds:
        for g in result.groups:
            t = g[train[g]]
            flag[t[1:]] = True
    return np.flatnonzero(flag & train).astype(np.int64)


def _summary(ds, std, thr, blank, near, groups, conflicting, cross, leaked, present) -> dict:
    in_groups = int(sum(len(g) for g in groups))
    counts = {}
    for s in present:
        lab = ds.labels[ds.splits == s]
        c = np.bincount(lab[lab >= 0], minlength=len(CLASS_NAMES))
        counts[s] = {name: int(k) for name, k in zip(CLASS_NAMES, c)}
        if (lab < 0).any():
            counts[s]["unlabelled"] = int((lab < 0).sum())
    return {
        "dataset": ds.id,
        "rows": len(ds),
        "thresholds": {"near_constant_std": thr},
        "class_counts": counts,
        "blank": {"count": len(blank), "rows": blank.tolist(), "labels": ds.labels[blank].tolist(),
                  "splits": ds.splits[blank].tolist()},
        "near_constant": {"count": len(near), "rows": near.tolist(),
                          "std": [round(float(x), 3) for x in std[near]]},
        "duplicates": {
            "groups": len(groups), "rows": in_groups, "redundant": in_groups - len(groups),
            "conflicting_groups": len(conflicting), "cross_split_groups": len(cross),
            "conflicting": [{"rows": groups[i].tolist(), "labels": ds.labels[groups[i]].tolist()}
                            for i in conflicting],
        },
        "leakage": {f"{a}_in_{b}": {"count": len(r), "rows": r.tolist()} for (a, b), r in leaked.items()},
    }
