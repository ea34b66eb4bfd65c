"""Classification metrics: confusion matrix (rows = true class, columns = predicted)."""

from __future__ import annotations

import numpy as np

from fer.labels import NUM_CLASSES


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts int64 ``(C, C)``: entry [i, j] is the number of faces of true class i predicted j.

    Raises ValueError when the arrays differ in length or hold a class outside 0..C-1.
    """
    labels, pred = np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if labels.shape != pred.shape:
        raise ValueError(f"labels {labels.shape} and predictions {pred.shape} differ in shape")
    for name, a in (("labels", labels), ("predictions", pred)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} hold a class outside 0..{num_classes - 1}")
    return np.bincount(labels * num_classes + pred, minlength=num_classes ** 2).reshape(
        num_classes, num_classes).astype(np.int64)


def per_class_scores(labels: np.ndarray, pred: np.ndarray,
                     num_classes: int = NUM_CLASSES) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class, one-vs-rest, from the confusion matrix.

    Args: labels, pred int ``(N,)`` classes in 0..C-1 (true, predicted).
    Returns: dict ``precision``, ``recall``, ``f1`` float64 ``(C,)`` in [0, 1] and ``support``
        int64 ``(C,)`` (faces of each true class). precision_c = TP / (TP + FP) (column c of the
        confusion matrix), recall_c = TP / (TP + FN) (row c), F1 = their harmonic mean. A ratio
        with a zero denominator (class never predicted, or absent) is 0.0, as scikit-learn's
        ``precision_recall_fscore_support(..., zero_division=0)``.
    Raises ValueError as :func:`confusion_matrix`.
    """
    cm = confusion_matrix(labels, pred, num_classes).astype(np.float64)
    tp, predicted, support = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(num_classes), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(num_classes), where=denom > 0)
    return dict(precision=precision, recall=recall, f1=f1, support=support.astype(np.int64))


# ---------------------------------------------------------------- calibration
NLL_FLOOR = 1e-12  # a probability below this counts as this: one face ruled out costs 27.6 nats


def _check_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated float ``(N, C)`` probabilities and int64 ``(N,)`` labels (ValueError otherwise)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1] or len(labels) == 0:
        raise ValueError(f"probs {probs.shape} must be (N, C) and labels {labels.shape} (N,), N > 0")
    if not np.issubdtype(probs.dtype, np.floating) or not np.isfinite(probs).all():
        raise ValueError("probs must be finite floats (NaN marks a face the member never saw)")
    if probs.min() < 0 or probs.max() > 1 or np.abs(probs.sum(axis=1) - 1).max() > 1e-3:
        raise ValueError("probs must be probabilities: each in [0, 1], each row summing to 1")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels hold a class outside 0..{probs.shape[1] - 1}")
    return probs, labels


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the true class: mean of ``-log p[n, labels[n]]``.

    Args: probs float ``(N, C)`` probabilities (rows sum to 1), labels int ``(N,)``.
    Returns: float >= 0; 0 only when every true class has probability 1. Probabilities below
        ``NLL_FLOOR`` (1e-12) count as 1e-12, so a face every member rules out costs 27.6 nats
        instead of infinity. Computed in float64.
    Raises ValueError on shapes, non-finite values, non-probabilities or labels outside 0..C-1.
    Source: the proper scoring rule used by Guo et al. 2017, arXiv:1706.04599, section 2.
    """
    probs, labels = _check_probs(probs, labels)
    p = probs[np.arange(len(labels)), labels].astype(np.float64)
    return float(-np.log(np.maximum(p, NLL_FLOOR)).mean())


def _binned(confidence: np.ndarray, correct: np.ndarray, n_bins: int):
    """Per-(row, bin) flat index (rows * N,) intp, float confidence, bool correct, rows, N.

    The bin of a confidence c is ceil(B c) - 1 (in c's float dtype: float32 or float64),
    clipped to 0..B-1: bin m holds (m/B, (m+1)/B]. Raises ValueError on mismatched shapes,
    N = 0 or n_bins < 1.
    """
    conf = np.asarray(confidence)
    correct = np.asarray(correct, dtype=bool)
    if conf.shape != correct.shape or conf.ndim < 1 or conf.shape[-1] == 0 or n_bins < 1:
        raise ValueError(f"confidence {conf.shape} and correct {correct.shape} must share a "
                         f"shape (..., N) with N > 0, and n_bins ({n_bins}) must be >= 1")
    rows, n = conf.size // conf.shape[-1], conf.shape[-1]
    if conf.dtype not in (np.float32, np.float64):
        conf = conf.astype(np.float64)
    t = np.multiply(conf, conf.dtype.type(n_bins)).reshape(rows, n)
    np.ceil(t, out=t)
    np.clip(t, 1, n_bins, out=t)
    b = t.astype(np.intp)
    b += (np.arange(rows) * n_bins - 1)[:, None]  # row offset, and ceil - 1
    return b.ravel(), conf, correct, rows, n


def calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Expected calibration error, batched over leading axes: float64 ``(...)`` in [0, 1].

    Args: as :func:`calibration_bins`. ECE = sum over bins m of |B_m|/N * |acc(B_m) - conf(B_m)|,
    computed as sum_m |sum over faces in B_m of (correct - confidence)| / N.
    Raises ValueError as :func:`calibration_bins`.
    Source: Guo et al. 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599, eq. 3.
    """
    flat, conf, correct, rows, n = _binned(confidence, correct, n_bins)
    gap = np.bincount(flat, weights=np.subtract(correct, conf, dtype=np.float64).ravel(),
                      minlength=rows * n_bins)
    return np.abs(gap.reshape(*conf.shape[:-1], n_bins)).sum(axis=-1) / n


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability-diagram bins of confidences, batched over any leading axes.

    Args: confidence float ``(..., N)`` in [0, 1] (probability of the predicted class);
        correct bool ``(..., N)`` (prediction == true class); n_bins >= 1 equal-width bins.
    Returns: dict ``edges`` float64 ``(n_bins + 1,)`` = linspace(0, 1); ``count`` int64
        ``(..., n_bins)``; ``confidence`` and ``accuracy`` float64 ``(..., n_bins)``, the mean
        confidence and the fraction correct of the faces in each bin (NaN for an empty bin);
        ``ece`` float64 ``(...)``, :func:`calibration_error`. Bin m holds the confidences in
        (m/B, (m+1)/B] as in the paper (computed as ceil(B * conf) - 1 in the confidence's
        float dtype); a confidence of exactly 0 goes to the first bin.
    Raises ValueError on mismatched shapes, N = 0 or n_bins < 1.
    Source: Guo et al. 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599,
    section 2 (reliability diagrams) and eq. 3.
    """
    flat, conf, correct, rows, _ = _binned(confidence, correct, n_bins)
    size, shape = rows * n_bins, (*conf.shape[:-1], n_bins)
    count = np.bincount(flat, minlength=size).reshape(shape)
    conf_sum = np.bincount(flat, weights=conf.ravel().astype(np.float64), minlength=size).reshape(shape)
    right = np.bincount(flat, weights=correct.ravel(), minlength=size).reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = conf_sum / count, right / count
    return dict(edges=np.linspace(0.0, 1.0, n_bins + 1), count=count.astype(np.int64),
                confidence=mean_conf, accuracy=acc, ece=calibration_error(conf, correct, n_bins))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability diagram of a classifier (a member, or an ensemble's soft vote).

    Args: probs float ``(N, C)`` probabilities, labels int ``(N,)``, n_bins equal-width bins.
    Returns: :func:`calibration_bins` of the arg-max confidence (``edges`` (n_bins+1,),
        ``count``, ``confidence``, ``accuracy`` (n_bins,), ``ece`` a float64 scalar array).
        The prediction is the arg-max (lowest index on ties).
    Raises ValueError as :func:`nll`.
    Source: Guo et al. 2017, arXiv:1706.04599, section 2 (reliability diagrams, ECE).
    """
    probs, labels = _check_probs(probs, labels)
    return calibration_bins(probs.max(axis=1), probs.argmax(axis=1) == labels, n_bins)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE of arg-max predictions with ``n_bins`` equal-width confidence bins, in [0, 1].

    Args/raises as :func:`reliability_bins`. Source: Guo et al. 2017, arXiv:1706.04599, eq. 3
    (15 bins in the paper's tables).
    """
    return float(reliability_bins(probs, labels, n_bins)["ece"])


def row_normalised(cm: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix divided by its sum: float64 ``(C, C)``, entry [i, j] the
    fraction of true class i predicted j (per-class recall on the diagonal); a row without faces
    is all 0."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
