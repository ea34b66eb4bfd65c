"""Evaluate a run on a split: member accuracies, majority and soft vote, confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer.ensemble import accuracy, majority_vote, member_accuracies, member_split, soft_vote, member_seed
from fer.errors import RunDirError
from fer.metrics import confusion_matrix
from fer.runs import Run


def split_predictions(run: Run, split: str, data: str | None = None, recompute: bool = False) -> dict:
    """Probabilities of the run's finished members on ``split``.

    ``split`` is train / public_test / private_test, or ``validation``: each member's own
    held-out faces, so probs has NaN where a face is not in that member's validation split.
    Returns dict(probs float32 (M, N, 7), members int64 (M,), labels int64 (N,), indices (N,)).
    With ``recompute`` (needs ``data``), predictions are computed again from the weights.
    """
    from fer.training import TrainConfig

    cfg = TrainConfig.from_dict(run.config())
    base = "train" if split == "validation" else split
    if recompute:
        from fer.data import load_dataset
        from fer.training import predict_proba
        from fer.weights import load_model

        if data is None:
            raise RunDirError("--recompute needs --data: the dataset the run was trained on")
        ds = load_dataset(data)
        rows = ds.indices(base)
        rows = rows[ds.labels[rows] >= 0]
        members = [m for m in range(cfg.members) if run.weights_path(m).exists()]
        probs = np.stack([predict_proba(load_model(run.weights_path(m), cfg.model), ds.images[rows])
                          for m in members])
        pred = dict(probs=probs, members=np.array(members), labels=ds.labels[rows], indices=rows)
    else:
        pred = run.predictions(base)
    if split == "validation":
        probs = np.full_like(pred["probs"], np.nan)
        n_train = len(pred["labels"])
        for i, m in enumerate(pred["members"]):
            _, va = member_split(n_train, member_seed(cfg.base_seed, int(m)), cfg.val_fraction)
            probs[i, va] = pred["probs"][i, va]
        pred = dict(pred, probs=probs)
    return pred


def evaluate_run(run_dir: Path, split: str, data: str | None = None, recompute: bool = False) -> dict:
    """JSON-ready report: run, split, n, member_ids, members (accuracies), majority, soft,
    confusion (7x7 counts of the majority vote, rows = true class, columns = predicted)."""
    run = Run(Path(run_dir))
    pred = split_predictions(run, split, data, recompute)
    probs, labels = pred["probs"], pred["labels"]
    if split == "validation":
        accs = [float(np.mean(np.nanargmax(p[~np.isnan(p[:, 0])], 1) == labels[~np.isnan(p[:, 0])]))
                for p in probs]
        return dict(run=run.id, split=split, n=int(len(labels)), member_ids=pred["members"].tolist(),
                    members=accs, majority=None, soft=None, confusion=None,
                    note="validation faces differ per member: no ensemble vote")
    maj = majority_vote(probs)
    return dict(run=run.id, split=split, n=int(len(labels)), member_ids=pred["members"].tolist(),
                members=member_accuracies(probs, labels).tolist(), majority=accuracy(maj, labels),
                soft=accuracy(soft_vote(probs), labels), confusion=confusion_matrix(labels, maj).tolist())
