"""Seeded ensembles: member splits, majority vote, soft vote.

Members differ only by their seed: member k of a run with base seed S has seed ``S + k``, which
alone picks its train/validation split (:func:`member_split`), its initial weights and its batch
order. They vote: majority vote over arg-max predictions, or soft vote over mean probabilities.
"""

from __future__ import annotations

import numpy as np

from fer.labels import NUM_CLASSES


def member_seed(base_seed: int, member: int) -> int:
    """Seed of member ``member`` (0-based) of a run with base seed ``base_seed``."""
    return int(base_seed) + int(member)


def member_split(n_train: int, seed: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into the dataset's train split) of one member's training and validation faces.

    A seeded permutation of ``range(n_train)``; the first ``round(val_fraction * n_train)``
    positions are validation. Both arrays are int64 and sorted ascending; together they are
    exactly ``range(n_train)`` with no overlap. Same ``seed`` → same split on every machine
    (NumPy's PCG64 stream is platform-independent).

    Raises ValueError when ``val_fraction`` is not in [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n_train)
    n_val = int(round(val_fraction * n_train))
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def majority_vote(probs: np.ndarray) -> np.ndarray:
    """Majority vote of members' arg-max predictions.

    Args: probs float ``(M, N, C)`` member probabilities (or logits: only arg-max and the tie
        break use them).
    Returns: int64 ``(N,)`` the class with the most member votes.

    Tie rule: among the classes with the most votes, the one with the highest mean probability
    over all members wins (the soft vote restricted to the tied classes); if that is tied too,
    the lowest class index. Reason: a plain "lowest index" rule would favour angry (0) on
    FER2013, a class members already over-predict; the mean probability is information every
    member has already given.
    """
    probs = np.asarray(probs)
    votes = probs.argmax(axis=2)  # (M, N)
    counts = vote_counts(votes, probs.shape[2])  # (N, C)
    tied = counts == counts.max(axis=1, keepdims=True)
    mean = probs.mean(axis=0)
    return np.where(tied, mean, -np.inf).argmax(axis=1).astype(np.int64)


def vote_counts(votes: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Votes per class: int64 ``(N, C)`` from member predictions int ``(M, N)``."""
    votes = np.asarray(votes)
    m, n = votes.shape
    counts = np.zeros((n, num_classes), dtype=np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(n), (m, n)), votes), 1)
    return counts


def soft_vote(probs: np.ndarray) -> np.ndarray:
    """Soft vote: arg-max of the mean of members' probabilities ``(M, N, C)`` → int64 ``(N,)``.

    Ties (equal means) go to the lowest class index (``argmax`` convention).
    """
    return np.asarray(probs).mean(axis=0).argmax(axis=1).astype(np.int64)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``pred == labels`` (both int ``(N,)``); NaN for N = 0."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float((pred == labels).mean()) if len(labels) else float("nan")


def member_accuracies(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy of each member: float64 ``(M,)`` from probs ``(M, N, C)`` and labels ``(N,)``."""
    return (np.asarray(probs).argmax(axis=2) == np.asarray(labels)[None]).mean(axis=1)
