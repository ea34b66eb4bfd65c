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
