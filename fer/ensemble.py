"""Seeded ensembles: member splits, majority vote, soft vote, and ensemble size curves.

Members differ only by their seed: member k of a run with base seed S has seed ``S + k``, which
alone picks its train/validation split (:func:`member_split`), its initial weights and its batch
order. They vote: majority vote over arg-max predictions, or soft vote over mean probabilities.
:func:`size_curve` asks what an ensemble of k members would score, for every k, from one trained
pool of M members, by scoring many k-subsets of the pool at once (:func:`subset_scores`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from threadpoolctl import threadpool_limits

from fer.labels import NUM_CLASSES
from fer.metrics import NLL_FLOOR, calibration_error, reliability_bins


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


# ---------------------------------------------------------------- ensemble size curves
def k_subsets(m: int, k: int, max_subsets: int = 200, seed: int = 0) -> np.ndarray:
    """Which k-member ensembles of a pool of ``m`` members to score: int64 ``(S, k)``.

    Every subset (``itertools.combinations`` order, S = C(m, k)) when C(m, k) <= max_subsets;
    otherwise S = max_subsets distinct subsets drawn uniformly at random (each draw a uniform
    k-subset, repeats rejected), from a generator seeded by (seed, m, k) so one k's sample does
    not depend on which other k were asked for. Each row is ascending; rows are in
    lexicographic order.

    Raises ValueError unless 1 <= k <= m and max_subsets >= 1.
    """
    if not 1 <= k <= m or max_subsets < 1:
        raise ValueError(f"need 1 <= k <= m and max_subsets >= 1, got m={m}, k={k}, "
                         f"max_subsets={max_subsets}")
    if math.comb(m, k) <= max_subsets:
        return np.array(list(itertools.combinations(range(m), k)), dtype=np.int64).reshape(-1, k)
    rng = np.random.default_rng([seed, m, k])
    seen: set[tuple[int, ...]] = set()
    while len(seen) < max_subsets:
        draw = np.sort(rng.random((max_subsets, m)).argsort(axis=1)[:, :k], axis=1)
        for row in map(tuple, draw.tolist()):
            if len(seen) < max_subsets:
                seen.add(row)
    return np.array(sorted(seen), dtype=np.int64)


def pairwise_disagreement(probs: np.ndarray) -> np.ndarray:
    """Fraction of faces on which two members' arg-max predictions differ: float64 ``(M, M)``.

    Args: probs float ``(M, N, C)``. Returns a symmetric matrix in [0, 1] with a zero diagonal;
    its mean over the M(M-1) off-diagonal entries is the pool's mean pairwise disagreement.
    Source: the disagreement measure of Kuncheva & Whitaker 2003, "Measures of diversity in
    classifier ensembles", Machine Learning 51:181-207.
    """
    probs = np.asarray(probs)
    votes = probs.argmax(axis=2)  # (M, N)
    onehot = (votes[:, None, :] == np.arange(probs.shape[2])[None, :, None])  # (M, C, N)
    flat = onehot.reshape(len(votes), -1).astype(np.float64)
    return 1.0 - (flat @ flat.T) / votes.shape[1]


def _one_blas_thread():
    """NumPy's BLAS on this thread only for the size-curve matmuls (threadpoolctl).

    The matmuls are short and skinny: BLAS worker threads gain little on an idle machine and,
    beside a training worker, spin for a core they cannot get (5.7 s instead of 0.7 s for the
    25-member curve, measured).
    """
    return threadpool_limits(limits=1, user_api="blas")


def _pool(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Validated float32 pool, also laid out class-major for matmuls over member masks."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim != 3 or labels.shape != probs.shape[1:2] or probs.shape[0] == 0 or len(labels) == 0:
        raise ValueError(f"probs {probs.shape} must be (M, N, C) and labels {labels.shape} (N,), "
                         f"M, N > 0")
    if not np.issubdtype(probs.dtype, np.floating) or not np.isfinite(probs).all():
        raise ValueError("probs must be finite floats (NaN marks a face a member never saw: "
                         "validation faces differ per member and cannot be voted on)")
    if probs.min() < 0 or probs.max() > 1 or np.abs(probs.sum(axis=2) - 1).max() > 1e-3:
        raise ValueError("probs must be probabilities: each in [0, 1], each row summing to 1")
    labels = labels.astype(np.int64)
    m, n, c = probs.shape
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels hold a class outside 0..{c - 1}")
    probs = probs.astype(np.float32, copy=False)
    votes = probs.argmax(axis=2)  # (M, N)
    return dict(
        m=m, n=n, c=c, labels=labels, raw=probs, raw_votes=votes,
        probs=np.ascontiguousarray(probs.transpose(0, 2, 1)).reshape(m, c * n),  # (M, C*N)
        votes=(votes[:, None, :] == np.arange(c)[None, :, None]).astype(np.float32).reshape(m, c * n),
        right=(votes == labels).astype(np.float32),  # (M, N)
        p_true=probs[:, np.arange(n), labels],  # (M, N)
        other=(np.arange(c)[:, None] != labels[None]).astype(np.float32),  # (C, N) 0 at the label
        disagree=pairwise_disagreement(probs))


def _scores(pool: dict, subsets: np.ndarray, n_bins: int, chunk_elements: int) -> dict[str, np.ndarray]:
    """:func:`subset_scores` on a prepared pool and validated subsets."""
    m, n, c = pool["m"], pool["n"], pool["c"]
    subsets = np.sort(subsets, axis=1)
    s_total, k = subsets.shape
    mask = np.zeros((s_total, m), dtype=np.float32)
    mask[np.arange(s_total)[:, None], subsets] = 1
    out = {key: np.empty(s_total) for key in ("majority", "soft", "oracle", "disagreement", "nll", "ece")}
    kf = np.float32(k)
    # Any float32 sum of k probabilities, in any order, is within (k-1) 2^-24 (relative) of the
    # exact sum: values closer than `tol` may compare differently here and in a loop over
    # subsets, and are redone exactly by _exact_fixup.
    tol = np.float32(8 * k * 2.0 ** -24)
    step = max(1, min(s_total, chunk_elements // (c * n)))
    if pool.get("buf") is None or len(pool["buf"]) < step:
        pool["buf"] = np.empty((step, c * n), dtype=np.float32)  # reused over chunks and k
    class_offsets = np.arange(c) * n
    for lo in range(0, s_total, step):
        w = mask[lo:lo + step]  # (s, M) 0/1
        s, sl = len(w), slice(lo, lo + len(w))
        # Majority vote: right when the true class has more votes than any other; on a tie in
        # votes, when its mean probability beats every tied class (majority_vote's rule).
        n_right = w @ pool["right"]  # (s, N) members right = votes for the true class
        counts = np.matmul(w, pool["votes"], out=pool["buf"][:s]).reshape(s, c, n)
        counts *= pool["other"]  # the true class's votes set to 0
        rival_votes = counts.max(axis=1)  # (s, N)
        major_right = n_right > rival_votes
        ties = np.flatnonzero(n_right == rival_votes)  # into (s, N)
        at = ((ties // n) * (c * n) + ties % n)[:, None] + class_offsets  # (T, C) into (s, C, N)
        tied = counts.ravel().take(at) == rival_votes.ravel().take(ties)[:, None]  # (T, C)
        # Soft vote: right when the true class's mean beats every other class's mean.
        p_true = w @ pool["p_true"]
        p_true /= kf  # (s, N) soft-vote probability of the true class
        sums = np.matmul(w, pool["probs"], out=pool["buf"][:s]).reshape(s, c, n)
        tie_rival = (sums.ravel().take(at) * tied).max(axis=1) / kf  # (T,) best tied rival
        sums *= pool["other"]
        rival = sums.max(axis=1)
        rival /= kf  # dividing after the max gives the max of the means
        soft_right = p_true > rival
        conf = np.maximum(p_true, rival)  # soft vote's confidence
        tie_p = p_true.ravel().take(ties)
        major_right.ravel()[ties] = tie_p > tie_rival
        # Near-ties (exact ties included, where the lowest index wins) and confidences near a
        # bin edge: redone exactly.
        gap = np.abs(p_true - rival)
        near = gap <= tol * conf
        near.ravel()[ties] |= np.abs(tie_p - tie_rival) <= tol * np.maximum(tie_p, tie_rival)
        edge = conf * np.float32(n_bins)
        np.abs(edge - np.rint(edge), out=gap)
        near |= gap <= tol * edge
        _exact_fixup(pool, subsets[sl], near, soft_right, major_right, conf, p_true)
        out["majority"][sl] = major_right.mean(axis=1)
        out["soft"][sl] = soft_right.mean(axis=1)
        out["oracle"][sl] = (n_right > 0).mean(axis=1)
        log_p = np.log(np.maximum(p_true, NLL_FLOOR, dtype=np.float64))
        out["nll"][sl] = -log_p.mean(axis=1)
        out["ece"][sl] = calibration_error(conf, soft_right, n_bins)
        wd = w.astype(np.float64)
        out["disagreement"][sl] = (((wd @ pool["disagree"]) * wd).sum(axis=1) / (k * (k - 1))
                                   if k > 1 else np.nan)
    return out


def _exact_fixup(pool: dict, subsets: np.ndarray, near: np.ndarray, soft_right: np.ndarray,
                 major_right: np.ndarray, conf: np.ndarray, p_true: np.ndarray) -> None:
    """Redo the (subset, face) pairs marked ``near`` as soft_vote/majority_vote do (in place).

    The means are summed member by member in ascending order in float32, as
    ``probs[subset].mean(axis=0)`` does, so near-ties resolve exactly as in those functions.
    """
    flat = np.flatnonzero(near)
    if len(flat) == 0:
        return
    rows, faces = np.divmod(flat, near.shape[1])
    members, labels, c = subsets[rows], pool["labels"][faces], pool["c"]
    mean = pool["raw"][members[:, 0], faces].copy()  # (F, C)
    counts = np.zeros((len(rows), c), dtype=np.int64)
    at = np.arange(len(rows))
    counts[at, pool["raw_votes"][members[:, 0], faces]] += 1
    for j in range(1, members.shape[1]):
        mean += pool["raw"][members[:, j], faces]
        counts[at, pool["raw_votes"][members[:, j], faces]] += 1
    mean /= np.float32(members.shape[1])
    soft_right[rows, faces] = mean.argmax(axis=1) == labels
    tied = np.where(counts == counts.max(axis=1, keepdims=True), mean, -np.inf)
    major_right[rows, faces] = tied.argmax(axis=1) == labels
    conf[rows, faces] = mean.max(axis=1)
    p_true[rows, faces] = mean[at, labels]


def subset_scores(probs: np.ndarray, labels: np.ndarray, subsets: np.ndarray, n_bins: int = 15,
                  chunk_elements: int = 1_000_000) -> dict[str, np.ndarray]:
    """Scores of many equal-size ensembles drawn from one pool, vectorised over the ensembles.

    Args:
        probs: float ``(M, N, C)`` member probabilities (each row sums to 1); scored in float32.
        labels: int ``(N,)`` true classes in 0..C-1.
        subsets: int ``(S, k)`` member indices, k distinct members per row (e.g. :func:`k_subsets`).
        n_bins: equal-width confidence bins for the ECE.
        chunk_elements: subsets are scored in chunks of about this many (subset, class, face)
            values, bounding memory to ~10 bytes each (default ~10 MB, ~40 subsets of 3,589
            faces).
    Returns: dict of float64 ``(S,)``, one value per ensemble:
        ``majority``, ``soft``: accuracy in [0, 1] of the majority vote (tie rule of
        :func:`majority_vote`: most member votes; among tied classes the highest mean
        probability of the ensemble's members; then the lowest class index) and of the soft vote
        (arg-max of the members' mean probability, lowest index on ties). Identical to calling
        :func:`majority_vote` / :func:`soft_vote` on ``probs[sorted(row)]`` for float32 probs
        (the checkpoints' dtype); other float dtypes are rounded to float32 first.
        ``oracle``: fraction of faces at least one member gets right (an upper bound of any vote).
        ``disagreement``: mean over the k(k-1)/2 member pairs of the fraction of faces on which
        the pair's arg-max predictions differ (NaN when k = 1).
        ``nll``: soft vote's mean negative log-likelihood in nats (:func:`fer.metrics.nll`).
        ``ece``: soft vote's expected calibration error (:func:`fer.metrics.calibration_bins`).
    Raises ValueError on bad shapes, non-finite or non-probability ``probs`` (a validation split
    with NaN for unseen faces), labels outside 0..C-1, or a subset row with a repeated or
    out-of-range member.
    Sources: Guo et al. 2017 (arXiv:1706.04599) for ECE; Kuncheva & Whitaker 2003 for
    disagreement.
    """
    pool = _pool(probs, labels)
    with _one_blas_thread():
        return _scores(pool, _check_subsets(subsets, pool["m"]), n_bins, chunk_elements)


def _check_subsets(subsets: np.ndarray, m: int) -> np.ndarray:
    """Validated int64 ``(S, k)`` subsets of ``range(m)`` (ValueError otherwise)."""
    subsets = np.asarray(subsets)
    if subsets.ndim != 2 or subsets.shape[0] == 0 or subsets.shape[1] == 0 or \
            not np.issubdtype(subsets.dtype, np.integer):
        raise ValueError(f"subsets {subsets.shape} must be a non-empty int (S, k) array")
    if subsets.min() < 0 or subsets.max() >= m:
        raise ValueError(f"subsets name a member outside 0..{m - 1}")
    srt = np.sort(subsets, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        raise ValueError("a subset names the same member twice")
    return subsets.astype(np.int64)


def _stats(x: np.ndarray) -> dict[str, float]:
    """mean, population std (ddof 0), min, max of a 1-D array, as Python floats."""
    return dict(mean=float(x.mean()), std=float(x.std()), min=float(x.min()), max=float(x.max()))


def size_curve(probs: np.ndarray, labels: np.ndarray, max_subsets: int = 200, seed: int = 0,
               n_bins: int = 15) -> list[dict]:
    """Accuracy and calibration of a k-member ensemble for every k = 1..M, from one pool.

    For each k the ensembles are :func:`k_subsets` (all C(M, k) subsets when that is at most
    ``max_subsets``, else a seeded sample of ``max_subsets`` distinct ones), scored by
    :func:`subset_scores`. Size 1 is each member alone, exactly; size M is the whole pool.

    Args: probs float ``(M, N, C)`` member probabilities; labels int ``(N,)``; max_subsets >= 1;
        seed for the sampled subsets; n_bins for the ECE (15 as in Guo et al.).
    Returns: JSON-ready list of M dicts, one per k::

        {"k": k, "subsets": S, "exhaustive": S == C(M, k),
         "majority": {"mean", "std", "min", "max"},  # accuracy over the S ensembles, in [0, 1]
         "soft": {...}, "oracle": {...}, "nll": {...}, "ece": {...},  # same four statistics
         "disagreement": {...} or None for k = 1}

        std is the population std over the S ensembles (ddof 0; 0 at k = M). It describes the
        spread between ensembles drawn from this pool, not a confidence interval for retrained
        ones. Mean disagreement is the pool's mean pairwise disagreement at every k when all
        subsets are used (each pair is equally represented); sampled k only approximate it.
    Raises ValueError as :func:`subset_scores` and :func:`k_subsets`.
    """
    pool = _pool(probs, labels)
    rows = []
    for k in range(1, pool["m"] + 1):
        subsets = k_subsets(pool["m"], k, max_subsets, seed)
        with _one_blas_thread():
            sc = _scores(pool, subsets, n_bins, 1_000_000)
        rows.append(dict(k=k, subsets=len(subsets), exhaustive=len(subsets) == math.comb(pool["m"], k),
                         **{name: _stats(sc[name]) for name in ("majority", "soft", "oracle", "nll", "ece")},
                         disagreement=_stats(sc["disagreement"]) if k > 1 else None))
    return rows


def member_vs_ensemble_reliability(probs: np.ndarray, labels: np.ndarray, member: int = 0,
                                   n_bins: int = 15) -> dict[str, dict]:
    """Reliability-diagram bins of one member and of the whole pool's soft vote.

    Args: probs float ``(M, N, C)``, labels int ``(N,)``, member index in 0..M-1, n_bins.
    Returns: ``{"member": bins, "ensemble": bins}``, each :func:`fer.metrics.reliability_bins`
        (``edges`` (n_bins+1,), per bin ``confidence`` mean, ``accuracy``, ``count``; ``ece``).
    Raises ValueError for a member outside 0..M-1 or as :func:`fer.metrics.reliability_bins`.
    Source: Guo et al. 2017, arXiv:1706.04599, figure 1.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or not 0 <= member < probs.shape[0]:
        raise ValueError(f"member {member} is not in 0..{probs.shape[0] - 1 if probs.ndim == 3 else '?'} "
                         f"of probs {probs.shape}")
    return dict(member=reliability_bins(probs[member], labels, n_bins),
                ensemble=reliability_bins(probs.mean(axis=0), labels, n_bins))
