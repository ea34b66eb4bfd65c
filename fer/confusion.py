"""Confusion-matrix browser: who votes on which face, the matrix and its cells, top confusions,
faces the ensemble fixed or broke, and the out-of-bag check for training labels that are probably
wrong (with FER+ crowd votes when available).

Views (``VIEWS``): a confusion matrix needs, for every face, a set of members that may vote on it.
On PublicTest and PrivateTest every member votes. On the training faces a member votes only on the
faces it **trained** on (``train``: the usual "training accuracy" of a report), or only on the faces
its seed **held out** for validation (``validation``: the out-of-bag vote; with one member picked,
exactly that member's validation split). Which members held out which face comes from the masks
the worker stores in ``predictions/train.npz`` (:func:`fer.training.store_member_predictions`), or,
for older runs, from the member split rule (:func:`member_masks`).

A face's vote is the majority vote (tie rule of :func:`fer.ensemble.majority_vote`), the soft vote,
or one member's arg-max, over the members allowed to vote on it (:func:`masked_vote`); a face no
member may vote on is left out of the view.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer.data import FaceDataset
from fer.ensemble import member_seed, member_split
from fer.errors import DataFormatError, RunDirError
from fer.labels import CLASS_NAMES, NUM_CLASSES
from fer.metrics import confusion_matrix, per_class_scores
from fer.runs import Run

VIEWS = ("train", "validation", "public_test", "private_test")
VOTES = ("majority", "soft")
SORTS = ("confidence", "margin")


# ---------------------------------------------------------------- who votes on which face
def member_masks(run: Run, pred: dict | None = None, ds: FaceDataset | None = None) -> dict[str, np.ndarray]:
    """Which training faces each finished member held out and trained on.

    Args: run; pred: ``run.predictions("train")`` if already loaded; ds: the run's dataset, used
        only for runs stored before the masks existed and trained with ``exclude_flagged``.
    Returns: dict ``validation`` and ``trained`` bool ``(M, N)``, aligned with ``train.npz``'s
        members (M,) and faces (N,). A face the run excluded from training is False in both.
    Source order: the masks in ``train.npz`` (exact, written by the worker); else the rows of
        :func:`fer.training.member_rows` when ``ds`` is given; else the split rule
        :func:`fer.ensemble.member_split` over the train faces' positions (exact for runs without
        ``exclude_flagged``).
    Raises RunDirError when the run has no training predictions, or when the masks cannot be
    rebuilt (``exclude_flagged`` without stored masks and without ``ds``).
    """
    pred = run.predictions("train") if pred is None else pred
    if "validation" in pred and "trained" in pred:
        return {"validation": pred["validation"].astype(bool), "trained": pred["trained"].astype(bool)}
    from fer.training import TrainConfig, member_rows

    cfg = TrainConfig.from_dict(run.config(), where=str(run.path / "config.json"))
    members, n = pred["members"], len(pred["labels"])
    validation, trained = np.zeros((len(members), n), bool), np.zeros((len(members), n), bool)
    if ds is not None:
        for i, m in enumerate(members):
            tr, va = member_rows(ds, cfg, int(m))
            validation[i], trained[i] = np.isin(pred["indices"], va), np.isin(pred["indices"], tr)
    elif cfg.exclude_flagged:
        raise RunDirError(f"{run.path}: predictions/train.npz has no validation/trained masks and the run "
                          f"excluded flagged faces; load the run's dataset to rebuild the member splits")
    else:
        for i, m in enumerate(members):
            tr, va = member_split(n, member_seed(cfg.base_seed, int(m)), cfg.val_fraction)
            validation[i, va], trained[i, tr] = True, True
    return {"validation": validation, "trained": trained}


def voting_mask(run: Run, view: str, pred: dict | None = None, ds: FaceDataset | None = None) -> np.ndarray | None:
    """bool ``(M, N)``: may member m vote on face n in ``view`` (None: every member votes).

    ``train``: the faces each member trained on; ``validation``: the faces it held out;
    ``public_test`` / ``private_test``: None. Raises ValueError for an unknown view.
    """
    if view not in VIEWS:
        raise ValueError(f"view is {view!r}, expected one of {VIEWS}")
    if view in ("public_test", "private_test"):
        return None
    return member_masks(run, pred, ds)["trained" if view == "train" else "validation"]


def masked_vote(probs: np.ndarray, mask: np.ndarray | None = None,
                how: str | int = "majority") -> dict[str, np.ndarray]:
    """The vote on each face of the members allowed to vote on it.

    Args:
        probs: float ``(M, N, C)`` member probabilities (rows sum to 1).
        mask: bool ``(M, N)``, True where member m votes on face n; None = all vote.
        how: ``"majority"`` (most arg-max votes; tie rule of :func:`fer.ensemble.majority_vote`
            over the voters), ``"soft"`` (arg-max of the voters' mean probability, lowest index on
            ties) or an int, the position (0..M-1) of one member, who alone votes.
    Returns: dict, one entry per face:
        ``pred`` int64 ``(N,)`` the vote, -1 where nobody votes; ``voters`` int64 ``(N,)``;
        ``counts`` int64 ``(N, C)`` arg-max votes per class; ``mean`` float32 ``(N, C)`` the voters'
        mean probabilities (NaN without voters); ``confidence`` float32 ``(N,)`` the mean
        probability of ``pred``; ``margin`` float32 ``(N,)``: for a vote, (votes for ``pred`` -
        votes for the best other class) / voters, in [-1, 1] (0 = a tie broken by the tie rule,
        negative when the soft vote overrides the most votes); for one member, its probability of
        ``pred`` minus its next highest, in [0, 1]. NaN without voters.
    With ``mask=None`` the majority and soft votes equal :func:`fer.ensemble.majority_vote` and
    :func:`fer.ensemble.soft_vote` exactly (same float32 sums in the same order).
    Raises ValueError on mismatched shapes or an unknown ``how``.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs {probs.shape} must be (M, N, C)")
    m, n, c = probs.shape
    mask = np.ones((m, n), bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != (m, n):
        raise ValueError(f"mask {mask.shape} must be (M, N) = {(m, n)}")
    at = np.arange(n)
    if isinstance(how, (int, np.integer)) and not isinstance(how, bool):
        if not 0 <= how < m:
            raise ValueError(f"member position {how} outside 0..{m - 1}")
        mask = np.zeros_like(mask) | (np.arange(m)[:, None] == how) & mask
    elif how not in VOTES:
        raise ValueError(f"how is {how!r}, expected 'majority', 'soft' or a member position")
    votes = probs.argmax(axis=2)  # (M, N)
    counts = np.bincount((at[None] * c + votes)[mask], minlength=n * c).reshape(n, c).astype(np.int64)
    voters = mask.sum(axis=0).astype(np.int64)
    total = np.where(mask[..., None], probs, 0).astype(np.float32).sum(axis=0)  # (N, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        # float64 division then float32, as ndarray.mean divides a float32 sum by an intp count
        mean = (total / voters[:, None]).astype(np.float32)
    none = voters == 0
    if how == "majority":
        tied = counts == counts.max(axis=1, keepdims=True)
        pred = np.where(tied, np.nan_to_num(mean, nan=0.0), -np.inf).argmax(axis=1)
    else:
        pred = np.nan_to_num(mean, nan=0.0).argmax(axis=1)
    pred = np.where(none, -1, pred).astype(np.int64)
    safe = np.maximum(pred, 0)
    confidence = np.where(none, np.nan, mean[at, safe]).astype(np.float32)
    if isinstance(how, str):
        rival = np.where(np.arange(c)[None] == safe[:, None], -1, counts).max(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            margin = ((counts[at, safe] - rival) / voters).astype(np.float32)
    else:
        top2 = np.sort(np.nan_to_num(mean, nan=0.0), axis=1)[:, -2:]
        margin = (top2[:, 1] - top2[:, 0]).astype(np.float32)
    margin[none] = np.nan
    return dict(pred=pred, voters=voters, counts=counts, mean=mean.astype(np.float32),
                confidence=confidence, margin=margin)


# ---------------------------------------------------------------- the matrix of one view
def _who(pred: dict, who: str | int) -> str | int:
    """``majority`` / ``soft`` as is; a member id → its position among the finished members."""
    if isinstance(who, str):
        if who not in VOTES:
            raise ValueError(f"who is {who!r}, expected 'majority', 'soft' or a member id")
        return who
    ids = [int(m) for m in pred["members"]]
    if int(who) not in ids:
        raise RunDirError(f"member {who} has no stored predictions; finished members: {ids}")
    return ids.index(int(who))


def train_counts(run: Run) -> np.ndarray | None:
    """Training faces per class, int64 ``(7,)``, from ``predictions/train.npz``; None without it."""
    path = run.predictions_file("train")
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as z:
        return np.bincount(z["labels"], minlength=NUM_CLASSES).astype(np.int64)


def confusion_view(run: Run, view: str, who: str | int = "majority", ds: FaceDataset | None = None) -> dict:
    """Everything the confusion page draws for one (view, voter): the matrix and its faces.

    Args: run; view one of ``VIEWS`` (see the module docstring); who ``"majority"``,
        ``"soft"`` or a member id (as in ``config.json``); ds only for :func:`member_masks`.
    Returns: dict with
        ``faces``: aligned arrays over the F faces with at least one voter (in the order of the
        stored predictions): ``rows`` int64 dataset rows, ``pos`` int64 positions in the
        ``predictions/<split>.npz`` arrays, ``labels`` int64, and ``pred``, ``voters``,
        ``counts``, ``confidence``, ``margin`` of :func:`masked_vote` (``mean`` is left out);
        ``cm`` int64 ``(7, 7)`` rows = true class, columns = predicted (sum = F);
        ``scores``: :func:`fer.metrics.per_class_scores` (precision, recall, f1, support);
        ``accuracy`` float (NaN for F = 0); ``train_counts`` int64 ``(7,)`` or None;
        ``members`` int64 ``(M,)`` the finished members; ``who``, ``view``, ``n_left_out``
        (faces without a voter: e.g. in ``validation``, the faces no member held out).
    Raises RunDirError when the run has no predictions for the view's split or ``who`` is not a
    finished member; ValueError for an unknown view.
    """
    base = "train" if view in ("train", "validation") else view
    if view not in VIEWS:
        raise ValueError(f"view is {view!r}, expected one of {VIEWS}")
    pred = run.predictions(base)
    how = _who(pred, who)
    vote = masked_vote(pred["probs"], voting_mask(run, view, pred, ds), how)
    keep = np.flatnonzero(vote["voters"] > 0)
    labels = pred["labels"].astype(np.int64)[keep]
    faces = dict(rows=pred["indices"].astype(np.int64)[keep], pos=keep.astype(np.int64), labels=labels,
                 **{k: vote[k][keep] for k in ("pred", "voters", "counts", "confidence", "margin")})
    return dict(faces=faces, cm=confusion_matrix(labels, faces["pred"]),
                scores=per_class_scores(labels, faces["pred"]),
                accuracy=float((faces["pred"] == labels).mean()) if len(keep) else float("nan"),
                train_counts=train_counts(run), members=pred["members"].astype(np.int64),
                who=who, view=view, n_left_out=int(len(vote["pred"]) - len(keep)))


def cell_faces(faces: dict, true: int, pred: int, sort: str = "confidence", descending: bool = True) -> np.ndarray:
    """Indices into ``faces`` (of :func:`confusion_view`) of the faces in cell (true, pred).

    Exactly ``cm[true, pred]`` of them, sorted by ``sort``: ``confidence`` (mean probability of the
    predicted class) or ``margin`` (vote margin, see :func:`masked_vote`), highest first when
    ``descending``; ties by the other key in the same direction, then by dataset row ascending.
    Raises ValueError for a class outside 0..6 or an unknown sort.
    """
    if sort not in SORTS:
        raise ValueError(f"sort is {sort!r}, expected one of {SORTS}")
    if not (0 <= true < NUM_CLASSES and 0 <= pred < NUM_CLASSES):
        raise ValueError(f"cell ({true}, {pred}) outside 0..{NUM_CLASSES - 1}")
    idx = np.flatnonzero((faces["labels"] == true) & (faces["pred"] == pred))
    return sort_faces(faces, idx, sort, descending)


def sort_faces(faces: dict, idx: np.ndarray, sort: str = "confidence", descending: bool = True) -> np.ndarray:
    """``idx`` (indices into ``faces``) reordered by ``sort`` as in :func:`cell_faces`."""
    other = "margin" if sort == "confidence" else "confidence"
    sign = -1.0 if descending else 1.0
    keys = (faces["rows"][idx], sign * faces[other][idx].astype(np.float64),
            sign * faces[sort][idx].astype(np.float64))
    return np.asarray(idx, dtype=np.int64)[np.lexsort(keys)]


def top_confusions(cm: np.ndarray, k: int = 6, faces: dict | None = None, per: int = 8) -> list[dict]:
    """The ``k`` largest off-diagonal cells of a confusion matrix, largest first.

    Returns a list of dicts ``true``, ``pred`` (class indices), ``count`` (faces), ``row_share``
    (count / faces of the true class, in [0, 1]) and, when ``faces`` (of :func:`confusion_view`,
    the matrix's faces) is given, ``idx``: indices into ``faces`` of the cell's ``per`` most
    confident faces (:func:`cell_faces`). Empty cells are left out; ties go to the larger row
    share, then the lower (true, pred).
    """
    cm = np.asarray(cm, dtype=np.int64)
    rows = cm.sum(axis=1)
    cells = [(int(cm[i, j]), cm[i, j] / rows[i], i, j) for i in range(len(cm)) for j in range(len(cm))
             if i != j and cm[i, j] > 0]
    cells.sort(key=lambda t: (-t[0], -t[1], t[2], t[3]))
    out = [dict(true=i, pred=j, count=n, row_share=float(s)) for n, s, i, j in cells[:k]]
    if faces is not None:
        for cell in out:
            cell["idx"] = cell_faces(faces, cell["true"], cell["pred"])[:per]
    return out


# ---------------------------------------------------------------- words under a face
def vote_text(counts: np.ndarray, names: tuple[str, ...] = CLASS_NAMES) -> str:
    """Member votes of one face as text, most votes first: ``"6 sad · 3 fear"`` (counts int ``(C,)``;
    equal counts in class order)."""
    counts = np.asarray(counts, dtype=np.int64)  # FER+ votes are uint8: -count would wrap
    order = sorted(np.flatnonzero(counts > 0), key=lambda c: (-counts[c], c))
    return " · ".join(f"{int(counts[c])} {names[c]}" for c in order) or "no votes"


def face_captions(faces: dict, idx: np.ndarray, single: bool = False) -> list[str]:
    """One caption per face ``faces[idx]``: ``"#row · true sad → fear"`` and, on a second line,
    the member votes (:func:`vote_text`), or, for one member (``single``), its confidence."""
    out = []
    for i in np.asarray(idx, dtype=np.int64):
        true, pred = CLASS_NAMES[faces["labels"][i]], CLASS_NAMES[faces["pred"][i]]
        how = (f"{pred} {faces['confidence'][i]:.0%}" if single else vote_text(faces["counts"][i]))
        out.append(f"#{faces['rows'][i]} · true {true} → {pred}\n{how}")
    return out


def fix_captions(fixes: dict, idx: np.ndarray) -> list[str]:
    """Captions for :func:`ensemble_fixes` faces: ``"#row · true fear"``, the vote with its member
    votes, and what the compared member said."""
    f, out = fixes["faces"], []
    for i in np.asarray(idx, dtype=np.int64):
        out.append(f"#{f['rows'][i]} · true {CLASS_NAMES[f['labels'][i]]}\n"
                   f"vote {CLASS_NAMES[f['pred'][i]]}: {vote_text(f['counts'][i])}\n"
                   f"member {fixes['member']}: {CLASS_NAMES[f['member_pred'][i]]}")
    return out


# ---------------------------------------------------------------- one face, every member
def face_probabilities(run: Run, view: str, pos: int, ds: FaceDataset | None = None) -> dict:
    """Every finished member's probabilities on one face of a view's split.

    Args: view as :func:`confusion_view`; pos: the face's position in the split's predictions
        (``faces["pos"]``).
    Returns: dict ``members`` int64 ``(M,)``, ``probs`` float32 ``(M, 7)``, ``votes`` bool ``(M,)``
        (the member may vote on this face in ``view``), ``held_out`` bool ``(M,)`` (training faces:
        the face is in the member's validation split; False on test splits), ``label`` int,
        ``row`` int (dataset row).
    Raises RunDirError as :func:`confusion_view`; IndexError for a position outside the split.
    """
    base = "train" if view in ("train", "validation") else view
    pred = run.predictions(base)
    mask = voting_mask(run, view, pred, ds)
    held = (member_masks(run, pred, ds)["validation"][:, pos] if base == "train"
            else np.zeros(len(pred["members"]), bool))
    return dict(members=pred["members"].astype(np.int64), probs=pred["probs"][:, pos].astype(np.float32),
                votes=np.ones(len(pred["members"]), bool) if mask is None else mask[:, pos],
                held_out=held, label=int(pred["labels"][pos]), row=int(pred["indices"][pos]))


# ---------------------------------------------------------------- fixed it / broke it
def median_member(accuracies: np.ndarray) -> int:
    """Position of the median member by accuracy: the ((M-1)//2)-th in ascending accuracy (the
    lower median for even M; equal accuracies in member order)."""
    acc = np.asarray(accuracies, dtype=np.float64)
    return int(np.argsort(acc, kind="stable")[(len(acc) - 1) // 2])


def fixed_and_broken(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None,
                     member: int | None = None, how: str = "majority", vote: np.ndarray | None = None) -> dict:
    """Faces the vote gets right where a member gets them wrong (fixed), and the reverse (broke).

    Args: probs float ``(M, N, C)``; labels int ``(N,)``; mask bool ``(M, N)`` voters as in
        :func:`masked_vote` (None = all); member: position of the member to compare with (default:
        :func:`median_member` by accuracy on the faces it votes on); how ``majority`` / ``soft``;
        vote int ``(N,)``: ``masked_vote(probs, mask, how)["pred"]`` when the caller has it already.
    Returns: dict ``member`` (position), ``member_accuracies`` float64 ``(M,)`` (NaN for a member
        without faces), ``faces`` int64 positions compared (the member votes on them), ``fixed``
        and ``broke`` int64 positions (subsets of ``faces``), ``both_right``, ``both_wrong`` ints,
        ``vote_accuracy`` and ``member_accuracy`` floats on ``faces``.
    Raises ValueError as :func:`masked_vote`.
    """
    probs, labels = np.asarray(probs), np.asarray(labels, dtype=np.int64)
    m, n, _ = probs.shape
    mask = np.ones((m, n), bool) if mask is None else np.asarray(mask, bool)
    member_pred = probs.argmax(axis=2)  # (M, N)
    right = member_pred == labels[None]
    with np.errstate(invalid="ignore"):
        accs = np.where(mask.any(axis=1), (right & mask).sum(axis=1) / mask.sum(axis=1), np.nan)
    if member is None:
        member = median_member(np.where(np.isnan(accs), -1.0, accs))
    vote = masked_vote(probs, mask, how)["pred"] if vote is None else np.asarray(vote)
    faces = np.flatnonzero(mask[member])
    vote_right, member_right = vote[faces] == labels[faces], right[member, faces]
    return dict(member=int(member), member_accuracies=accs, faces=faces,
                fixed=faces[vote_right & ~member_right], broke=faces[~vote_right & member_right],
                both_right=int((vote_right & member_right).sum()),
                both_wrong=int((~vote_right & ~member_right).sum()),
                vote_accuracy=float(vote_right.mean()) if len(faces) else float("nan"),
                member_accuracy=float(member_right.mean()) if len(faces) else float("nan"))


def ensemble_fixes(run: Run, view: str, member: int | None = None, how: str = "majority",
                   ds: FaceDataset | None = None) -> dict:
    """:func:`fixed_and_broken` on a view of a run, with the faces to draw.

    Args: view as :func:`confusion_view`; member: a member id (default the median member).
    Returns: dict ``member`` (id), ``median`` (id of the median member), ``member_accuracies``
        ``{id: accuracy}``, ``compared`` (faces compared), ``fixed`` / ``broke`` (counts),
        ``both_right``, ``both_wrong``, ``vote_accuracy``, ``member_accuracy``, and ``faces``:
        aligned arrays over the fixed faces then the broken ones (``rows``, ``pos``, ``labels``,
        ``pred`` the vote, ``member_pred``, ``counts``, ``confidence``, ``margin``, ``voters``),
        with ``fixed_idx`` / ``broke_idx`` indices into them, each sorted by the vote's
        confidence, highest first.
    Raises RunDirError as :func:`confusion_view`.
    """
    base = "train" if view in ("train", "validation") else view
    pred = run.predictions(base)
    mask = voting_mask(run, view, pred, ds)
    ids = [int(x) for x in pred["members"]]
    pos = None if member is None else _who(pred, int(member))
    vote = masked_vote(pred["probs"], mask, how)  # once: the page switches voters on 28k faces
    res = fixed_and_broken(pred["probs"], pred["labels"], mask, pos, how, vote["pred"])
    median = median_member(np.where(np.isnan(res["member_accuracies"]), -1.0, res["member_accuracies"]))
    both = np.concatenate([res["fixed"], res["broke"]])
    faces = dict(rows=pred["indices"].astype(np.int64)[both], pos=both.astype(np.int64),
                 labels=pred["labels"].astype(np.int64)[both],
                 member_pred=pred["probs"][res["member"], both].argmax(axis=1).astype(np.int64),
                 **{k: vote[k][both] for k in ("pred", "voters", "counts", "confidence", "margin")})
    nf = len(res["fixed"])
    return dict(member=ids[res["member"]], median=ids[median],
                member_accuracies={i: float(a) for i, a in zip(ids, res["member_accuracies"])},
                compared=len(res["faces"]), fixed=nf, broke=len(res["broke"]),
                both_right=res["both_right"], both_wrong=res["both_wrong"],
                vote_accuracy=res["vote_accuracy"], member_accuracy=res["member_accuracy"], faces=faces,
                fixed_idx=sort_faces(faces, np.arange(nf)),
                broke_idx=sort_faces(faces, np.arange(nf, len(both))))


# ---------------------------------------------------------------- out-of-bag label check
def out_of_bag(run: Run, ds: FaceDataset | None = None) -> dict:
    """The out-of-bag vote on every training face: the members whose validation split held it.

    Each training face was held out by some members (about ``val_fraction * M`` of them); their
    predictions on it are honest, unlike those of the members that trained on it (Breiman 1996,
    "Out-of-bag estimation", the OOB estimate of bagging).
    Returns: dict over the N training faces: ``rows``, ``pos``, ``labels`` int64 ``(N,)``;
        ``held_out`` bool ``(M, N)`` (member m held out face n); ``members`` int64 ``(M,)``; and
        :func:`masked_vote` (majority) of the held-out members: ``pred`` (-1 without out-of-bag
        members), ``voters``, ``counts``, ``mean`` (N, 7), ``confidence``, ``margin``; plus
        ``p_label`` float32 ``(N,)`` the out-of-bag mean probability of the label and ``score``
        float32 ``(N,)`` = confidence - p_label (0 when the vote agrees with the label, NaN
        without voters).
    Raises RunDirError as :func:`member_masks`.
    """
    pred = run.predictions("train")
    held = member_masks(run, pred, ds)["validation"]
    vote = masked_vote(pred["probs"], held, "majority")
    labels = pred["labels"].astype(np.int64)
    p_label = vote["mean"][np.arange(len(labels)), labels]
    return dict(rows=pred["indices"].astype(np.int64), pos=np.arange(len(labels), dtype=np.int64),
                labels=labels, held_out=held, members=pred["members"].astype(np.int64), **vote,
                p_label=p_label, score=(vote["confidence"] - p_label).astype(np.float32))


def probably_mislabelled(oob: dict, min_voters: int = 1, min_score: float = 0.0) -> np.ndarray:
    """Training faces whose out-of-bag vote confidently disagrees with the label, most suspect first.

    Args: oob from :func:`out_of_bag`; min_voters: at least this many out-of-bag members;
        min_score: keep faces whose out-of-bag mean probability of the voted class exceeds that of
        the label by more than this (0..1).
    Returns: int64 indices into ``oob`` arrays, ranked by ``score`` (highest first), then by more
        voters, then by dataset row. The idea is confident learning's (Northcutt et al. 2021,
        arXiv:1911.00068): a label the held-out models confidently contradict is often wrong.
    """
    idx = np.flatnonzero((oob["voters"] >= max(1, min_voters)) & (oob["pred"] != oob["labels"])
                         & (oob["score"] > min_score))
    order = np.lexsort((oob["rows"][idx], -oob["voters"][idx], -oob["score"][idx].astype(np.float64)))
    return idx[order].astype(np.int64)


def oob_captions(oob: dict, idx: np.ndarray, votes: np.ndarray | None = None) -> list[str]:
    """Caption per face: ``"#row · label sad"``, the out-of-bag votes, the out-of-bag mean
    probability of the vote and of the label, and, with FER+ ``votes`` ``(len(idx), 10)``, the crowd's votes."""
    out = []
    for k, i in enumerate(np.asarray(idx, dtype=np.int64)):
        label, pred = CLASS_NAMES[oob["labels"][i]], CLASS_NAMES[oob["pred"][i]]
        text = (f"#{oob['rows'][i]} · label {label}\nout-of-bag: {vote_text(oob['counts'][i])}\n"
                f"p {pred} {oob['confidence'][i]:.2f} · p {label} {oob['p_label'][i]:.2f}")
        if votes is not None:
            text += f"\nFER+: {ferplus_text(votes[k])}"
        out.append(text)
    return out


# ---------------------------------------------------------------- FER+ crowd votes
def ferplus_text(votes: np.ndarray) -> str:
    """Ten FER+ votes of one face, most first: ``"6 sadness · 3 neutral · 1 fear"``."""
    from fer.data.ferplus import VOTE_COLUMNS

    return vote_text(np.asarray(votes), VOTE_COLUMNS)


def ferplus_classes(votes: np.ndarray) -> np.ndarray:
    """FER+ majority of each face as a FER2013 class: int64 ``(N,)``, -1 when the crowd has no
    majority or its winner is contempt, unknown or not-a-face (:func:`fer.data.ferplus.majority_vote`)."""
    from fer.data.ferplus import VOTE_TO_CLASS, majority_vote

    winner = majority_vote(np.asarray(votes))
    return np.where(winner >= 0, VOTE_TO_CLASS[np.maximum(winner, 0)], -1).astype(np.int64)


def ferplus_agreement(votes: np.ndarray, labels: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """Whom the FER+ crowd sides with when the vote ``pred`` and the ``labels`` disagree.

    Args: votes uint8 ``(N, 10)`` FER+ votes; labels, pred int ``(N,)``.
    Returns: dict of counts: ``faces`` N, ``vote`` (FER+ majority = pred), ``label`` (= label),
        ``other`` (another FER2013 class), ``none`` (no majority, or contempt / unknown / NF).
    Source: Barsoum et al. 2016, arXiv:1608.01041 (FER+ majority rule).
    """
    crowd = ferplus_classes(votes)
    pred, labels = np.asarray(pred), np.asarray(labels)
    vote, label = crowd == pred, (crowd == labels) & (crowd != pred)
    none = crowd < 0
    return dict(faces=len(crowd), vote=int(vote.sum()), label=int(label.sum()),
                other=int((~vote & ~label & ~none).sum()), none=int(none.sum()))


def ferplus_votes(path: str | Path, ds: FaceDataset) -> np.ndarray:
    """FER+ votes uint8 ``(len(ds), 10)`` for a dataset read from Kaggle's ``fer2013.csv``.

    FER+ ``fer2013new.csv`` has one row per ``fer2013.csv`` row, in the same order; each dataset
    row is matched through its ``row_ids`` (the 0-based CSV row) and its split is checked against
    the FER+ ``Usage``.
    Raises DataFormatError when the file is unreadable, or does not line up with the dataset.
    Source: https://github.com/microsoft/FERPlus (file layout), Barsoum et al. 2016.
    """
    from fer.data.ferplus import read_ferplus

    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read the FER+ votes ({e.strerror or e})") from e
    splits, votes = read_ferplus(data, path.name)
    ids = ds.row_ids if ds.row_ids is not None else np.arange(len(ds))
    if len(ids) and (ids.min() < 0 or ids.max() >= len(votes)):
        raise DataFormatError(f"{path.name} has {len(votes)} rows but the dataset {ds.id} refers to CSV row "
                              f"{int(ids.max())}: FER+ votes line up only with Kaggle's full fer2013.csv")
    differ = np.flatnonzero(splits[ids] != ds.splits)
    if len(differ):
        r = int(differ[0])
        raise DataFormatError(f"{path.name} row {int(ids[r])}: Usage is {splits[ids[r]]} but dataset {ds.id} "
                              f"has that face in {ds.splits[r]}; the files are not in the same row order")
    return votes[ids]
