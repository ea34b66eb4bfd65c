"""Evaluate a run on a split: member accuracies, majority and soft vote, confusion matrix,
per-class precision/recall/F1, and the ensemble size curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer.ensemble import (accuracy, majority_vote, member_accuracies, member_seed, member_split,
                          member_vs_ensemble_reliability, size_curve, soft_vote)
from fer.errors import RunDirError
from fer.labels import CLASS_NAMES
from fer.metrics import confusion_matrix, per_class_scores
from fer.runs import Run


def split_predictions(run: Run, split: str, data: str | None = None, recompute: bool = False,
                      members: list[int] | None = None) -> dict:
    """Probabilities of the run's finished members on ``split``.

    ``split`` is train / public_test / private_test, or ``validation``: each member's own
    held-out faces, so probs has NaN where a face is not in that member's validation split.
    Returns dict(probs float32 (M, N, 7), members int64 (M,), labels int64 (N,), indices (N,)).
    With ``recompute`` (needs ``data``), predictions are computed again from the weights (of
    ``members`` only, when given; default every finished member).
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
        ds = load_dataset(data, ferplus=cfg.ferplus or None)
        rows = ds.indices(base)
        rows = rows[ds.labels[rows] >= 0]
        # Finished members only: a member in training also has best-so-far weights on disk.
        members = sorted(members) if members is not None else (
            run.finished_members() or [m for m in range(cfg.members) if run.weights_path(m).exists()])
        probs = np.stack([predict_proba(load_model(run.weights_path(m), cfg.model), ds.images[rows])
                          for m in members])
        pred = dict(probs=probs, members=np.array(members), labels=ds.labels[rows], indices=rows)
        if base == "train":  # each member's own held-out faces, exactly as the worker stores them
            from fer.training import member_masks

            masks = [member_masks(ds, cfg, m, rows) for m in members]
            pred["validation"] = np.stack([m["validation"] for m in masks])
            pred["trained"] = np.stack([m["trained"] for m in masks])
        stored = run.predictions(base) if run.predictions_file(base) else None
        if stored is not None and set(members) <= set(stored["members"].tolist()):
            keep = [stored["members"].tolist().index(m) for m in members]
            stored = dict(stored, probs=stored["probs"][keep])
        if stored is not None and np.array_equal(stored["indices"], rows) \
                and len(stored["probs"]) == len(members):
            # How far the weights as shipped (e.g. fp16) are from the predictions stored at training.
            pred["stored_max_abs_diff"] = float(np.abs(stored["probs"] - probs).max())
            pred["stored_argmax_agreement"] = float(np.mean(stored["probs"].argmax(-1) == probs.argmax(-1)))
    else:
        pred = run.predictions(base)
    if split == "validation":
        probs = np.full_like(pred["probs"], np.nan)
        if "validation" in pred:  # written by the worker: exact even with excluded rows
            held_out = pred["validation"].astype(bool)
        else:
            held_out = np.zeros(pred["probs"].shape[:2], bool)
            for i, m in enumerate(pred["members"]):
                _, va = member_split(len(pred["labels"]), member_seed(cfg.base_seed, int(m)), cfg.val_fraction)
                held_out[i, va] = True
        probs[held_out] = pred["probs"][held_out]
        pred = dict(pred, probs=probs)
    return pred


def evaluate_run(run_dir: Path, split: str, data: str | None = None, recompute: bool = False,
                 max_subsets: int = 200, seed: int = 0, curve: bool = True,
                 members: list[int] | None = None) -> dict:
    """JSON-ready report: run, split, n, member_ids, members (accuracies), majority, soft,
    confusion (7x7 counts of the majority vote, rows = true class, columns = predicted),
    per_class (list of 7 dicts: class, precision, recall, f1, support of the majority vote;
    :func:`fer.metrics.per_class_scores`) and size_curve (:func:`fer.ensemble.size_curve` with
    ``max_subsets`` ensembles per size k and ``seed``: per k, mean/std/min/max of majority and
    soft accuracy, oracle, disagreement, nll, ece; ~0.7 s CPU for 25 members on 3,589 faces,
    None with ``curve=False``). With ``recompute`` and stored predictions for the same faces and
    members, also ``stored_max_abs_diff`` (max |recomputed - stored| probability) and
    ``stored_argmax_agreement`` (fraction of (member, face) pairs with the same top class). On ``validation`` (faces differ per member) the ensemble fields
    are None. ``members``: only these member ids vote (e.g. ``range(9)``: the first 9 of a
    15-member run); default all finished members.
    Raises RunDirError when the stored predictions are not probabilities or a requested member
    has none.
    """
    run = Run(Path(run_dir))
    pred = split_predictions(run, split, data, recompute, members)
    if members is not None:
        have = [int(m) for m in pred["members"]]
        missing = sorted(set(members) - set(have))
        if missing:
            raise RunDirError(f"{run.path}: member(s) {missing} have no predictions on {split!r}; "
                              f"finished members: {have}")
        keep = [have.index(m) for m in sorted(set(members))]
        pred = dict(pred, probs=pred["probs"][keep], members=pred["members"][keep])
    probs, labels = pred["probs"], pred["labels"]
    if split == "validation":
        accs = [float(np.mean(np.nanargmax(p[~np.isnan(p[:, 0])], 1) == labels[~np.isnan(p[:, 0])]))
                for p in probs]
        return dict(run=run.id, split=split, n=int(len(labels)), member_ids=pred["members"].tolist(),
                    members=accs, majority=None, soft=None, confusion=None, per_class=None,
                    size_curve=None, note="validation faces differ per member: no ensemble vote")
    maj = majority_vote(probs)
    scores = per_class_scores(labels, maj)
    per_class = [{"class": name, "precision": float(scores["precision"][i]),
                  "recall": float(scores["recall"][i]), "f1": float(scores["f1"][i]),
                  "support": int(scores["support"][i])} for i, name in enumerate(CLASS_NAMES)]
    try:
        rows = size_curve(probs, labels, max_subsets, seed) if curve else None
    except ValueError as e:
        raise RunDirError(f"{run.path}: predictions for {split!r}: {e}") from e
    report = dict(run=run.id, split=split, n=int(len(labels)), member_ids=pred["members"].tolist(),
                  members=member_accuracies(probs, labels).tolist(), majority=accuracy(maj, labels),
                  soft=accuracy(soft_vote(probs), labels), confusion=confusion_matrix(labels, maj).tolist(),
                  per_class=per_class, size_curve=rows)
    for key in ("stored_max_abs_diff", "stored_argmax_agreement"):
        if key in pred:
            report[key] = pred[key]
    return report


def member_reliability(run_dir: Path, split: str, member: int, n_bins: int = 15) -> dict:
    """Reliability-diagram bins of one member and of the soft vote of all the run's finished
    members on ``split`` (public_test / private_test / train).

    Args: run_dir; split; member: the member's id in the run (0-based, as in ``config.json`` and
        ``member_ids`` of :func:`evaluate_run`), not its position among the finished members;
        n_bins equal-width confidence bins (15 as in Guo et al.).
    Returns: dict(run, split, n faces, member, member_ids (the voting members, ascending),
        member_bins, ensemble_bins), each bins dict as :func:`fer.metrics.reliability_bins`:
        ``edges`` float64 (n_bins+1,), per bin ``count`` int64, mean ``confidence`` and
        ``accuracy`` float64 (n_bins,) (NaN for an empty bin), ``ece`` float64 scalar in [0, 1].
    Raises RunDirError for ``validation`` (each member holds out different faces, so there is no
    ensemble to compare with), a member without predictions on the split, or stored predictions
    that are not probabilities.
    Source: Guo et al. 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599, fig. 1.
    """
    run = Run(Path(run_dir))
    if split == "validation":
        raise RunDirError(f"{run.path}: no reliability diagram on validation: each member holds out "
                          f"different faces, so the members never vote on the same face")
    pred = split_predictions(run, split)
    ids = [int(m) for m in pred["members"]]
    if member not in ids:
        raise RunDirError(f"{run.path}: member {member} has no predictions on {split!r}; finished "
                          f"members: {ids}")
    try:
        bins = member_vs_ensemble_reliability(pred["probs"], pred["labels"], ids.index(member), n_bins)
    except ValueError as e:
        raise RunDirError(f"{run.path}: predictions for {split!r}: {e}") from e
    return dict(run=run.id, split=split, n=len(pred["labels"]), member=int(member), member_ids=ids,
                member_bins=bins["member"], ensemble_bins=bins["ensemble"])
