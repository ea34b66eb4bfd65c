"""fer.confusion: masked votes against fer.ensemble, the confusion matrix of a hand-made run, cell
galleries that hold exactly the cell's faces, fixed/broke counts, the out-of-bag vote (exactly the
members that held a face out, from stored masks and from the split rule), the mislabelled
ranking, and FER+ votes lined up with a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import fer_rows, write_csv

from fer import confusion as fc
from fer.data import load_dataset
from fer.ensemble import majority_vote, member_seed, member_split, soft_vote
from fer.errors import DataFormatError, RunDirError
from fer.metrics import confusion_matrix, row_normalised
from fer.runs import REPO_ROOT, Run, atomic_write_json
from fer.training import TrainConfig, create_run

DEMO = Run(REPO_ROOT / "checkpoints" / "synthetic-demo")


def probs_of(votes: list[list[int]], top: float = 0.7) -> np.ndarray:
    """Member m puts ``top`` on class votes[m][n] and the rest evenly on the six others."""
    votes = np.asarray(votes)
    p = np.full((*votes.shape, 7), (1 - top) / 6, dtype=np.float32)
    m, n = np.indices(votes.shape)
    p[m, n, votes] = top
    return p


def make_run(root: Path, splits: dict[str, tuple[list[list[int]], list[int]]], masks: dict | None = None,
             members: int = 3, base_seed: int = 0, name: str = "hand") -> Run:
    """A run with hand-made predictions: ``splits[split] = (votes (M, N), labels (N,))``."""
    run = create_run(TrainConfig(members=members, epochs=1, base_seed=base_seed, dataset_synthetic=True,
                                 dataset_id="synthetic-seed0", dataset_sha256="synthetic-seed0"), root / name)
    atomic_write_json(run.path / "status.json", {"state": "done"})
    (run.path / "predictions").mkdir()
    for split, (votes, labels) in splits.items():
        extra = masks if (split == "train" and masks) else {}
        np.savez(run.path / "predictions" / f"{split}.npz", probs=probs_of(votes),
                 members=np.arange(len(votes), dtype=np.int64), labels=np.array(labels, dtype=np.int64),
                 indices=100 + np.arange(len(labels), dtype=np.int64), **extra)
    return run


# ---------------------------------------------------------------- votes and the matrix
def test_masked_vote_without_mask_is_fer_ensemble_majority_and_soft_vote_exactly():
    rng = np.random.default_rng(0)
    for m in (1, 2, 4, 9, 15):
        raw = rng.integers(0, 4, (m, 500, 7)).astype(np.float32) + 1e-3  # coarse: many vote ties
        p = (raw / raw.sum(axis=2, keepdims=True)).astype(np.float32)
        assert (fc.masked_vote(p, None, "majority")["pred"] == majority_vote(p)).all()
        assert (fc.masked_vote(p, None, "soft")["pred"] == soft_vote(p)).all()


def test_masked_vote_is_the_vote_of_the_allowed_members_only():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(7), (5, 300)).astype(np.float32)
    mask = rng.random((5, 300)) < 0.5
    v = fc.masked_vote(p, mask, "majority")
    for n in range(300):
        sub = p[mask[:, n], n:n + 1]
        assert v["voters"][n] == mask[:, n].sum()
        assert v["pred"][n] == (majority_vote(sub)[0] if len(sub) else -1)
    one = fc.masked_vote(p, mask, 2)
    assert (one["pred"] == np.where(mask[2], p[2].argmax(axis=1), -1)).all()
    assert (one["voters"] == mask[2]).all()


def test_vote_counts_margin_and_confidence_on_a_hand_case():
    # face 0: votes 0 0 1 -> majority 0, margin (2-1)/3; face 1: 2 3 4 -> tie, equal means -> class 2
    v = fc.masked_vote(probs_of([[0, 2], [0, 3], [1, 4]]), None, "majority")
    assert v["pred"].tolist() == [0, 2]
    assert v["counts"][0].tolist() == [2, 1, 0, 0, 0, 0, 0]
    assert v["margin"].tolist() == pytest.approx([1 / 3, 0.0])
    assert v["confidence"][0] == pytest.approx((0.7 + 0.7 + 0.05) / 3)
    assert fc.vote_text(np.array([0, 0, 3, 0, 6, 0, 0])) == "6 sad · 3 fear"
    assert fc.vote_text(np.array([1, 0, 0, 0, 0, 0, 1])) == "1 angry · 1 neutral"


def test_confusion_matrix_of_a_hand_made_run_and_row_normalised(tmp_path):
    # labels 0 0 1 2 2 2; member votes -> majority: 0 1 1 2 0 2 (face 4: 0 0 2 -> 0)
    votes = [[0, 1, 1, 2, 0, 2],
             [0, 1, 0, 2, 0, 2],
             [1, 0, 1, 1, 2, 2]]
    labels = [0, 0, 1, 2, 2, 2]
    run = make_run(tmp_path, {"public_test": (votes, labels)})
    view = fc.confusion_view(run, "public_test", "majority")
    expected = np.zeros((7, 7), int)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[2, 0] = 1
    expected[2, 2] = 2
    assert view["cm"].tolist() == expected.tolist()
    assert (view["cm"] == confusion_matrix(labels, majority_vote(probs_of(votes)))).all()
    assert view["accuracy"] == pytest.approx(4 / 6)
    assert view["faces"]["rows"].tolist() == [100, 101, 102, 103, 104, 105]  # dataset rows
    assert row_normalised(view["cm"])[2, :3].tolist() == pytest.approx([1 / 3, 0, 2 / 3])
    assert row_normalised(view["cm"])[5].tolist() == [0] * 7  # no faces: zeros, not NaN
    member2 = fc.confusion_view(run, "public_test", 2)
    # member 2 alone: 1 0 1 1 2 2
    assert {(t, p): n for (t, p), n in np.ndenumerate(member2["cm"]) if n} == {
        (0, 1): 1, (0, 0): 1, (1, 1): 1, (2, 1): 1, (2, 2): 2}
    with pytest.raises(RunDirError, match="member 7"):
        fc.confusion_view(run, "public_test", 7)


@pytest.mark.parametrize("view", fc.VIEWS)
@pytest.mark.parametrize("who", ["majority", "soft", 4])
def test_every_cell_gallery_holds_exactly_the_cells_faces(view, who):
    data = fc.confusion_view(DEMO, view, who)
    faces, cm = data["faces"], data["cm"]
    seen = []
    for t in range(7):
        for p in range(7):
            idx = fc.cell_faces(faces, t, p)
            assert len(idx) == cm[t, p]
            assert (faces["labels"][idx] == t).all() and (faces["pred"][idx] == p).all()
            conf = faces["confidence"][idx]
            assert (np.diff(conf) <= 0).all()  # most confident first
            up = fc.cell_faces(faces, t, p, "margin", descending=False)
            assert sorted(up.tolist()) == sorted(idx.tolist())
            assert (np.diff(faces["margin"][up]) >= 0).all()
            seen.extend(idx.tolist())
    assert sorted(seen) == list(range(len(faces["rows"])))  # every face in exactly one cell


def test_train_and_validation_views_follow_the_members_masks():
    pred = DEMO.predictions("train")
    train = fc.confusion_view(DEMO, "train", "majority")
    oob = fc.confusion_view(DEMO, "validation", "majority")
    assert (train["faces"]["voters"] == pred["trained"][:, train["faces"]["pos"]].sum(axis=0)).all()
    assert (oob["faces"]["voters"] == pred["validation"][:, oob["faces"]["pos"]].sum(axis=0)).all()
    assert oob["cm"].sum() + oob["n_left_out"] == len(pred["labels"])
    one = fc.confusion_view(DEMO, "validation", 3)  # exactly member 3's validation split
    assert sorted(one["faces"]["pos"].tolist()) == np.flatnonzero(pred["validation"][3]).tolist()


def test_top_confusions_rank_off_diagonal_cells():
    cm = np.zeros((7, 7), int)
    cm[0, 0], cm[0, 2], cm[4, 6], cm[2, 4], cm[1, 0] = 50, 9, 12, 9, 3
    cm[2, 2], cm[4, 4] = 1, 100
    tops = fc.top_confusions(cm, 3)
    assert [(t["true"], t["pred"], t["count"]) for t in tops] == [(4, 6, 12), (2, 4, 9), (0, 2, 9)]
    assert tops[1]["row_share"] == pytest.approx(0.9)  # 9 of fear's 10 faces: ranked above 9 of 59


# ---------------------------------------------------------------- fixed it / broke it
def test_fixed_and_broken_on_a_hand_case():
    labels = [0, 1, 2, 3, 4]
    votes = [[0, 1, 2, 3, 0],   # member 0 right on faces 0 1 2 3: 4/5
             [0, 1, 5, 5, 4],   # member 1 right on faces 0 1 4:   3/5
             [1, 6, 2, 5, 4]]   # member 2 right on faces 2 4:     2/5
    # majority: 0, 1, 2, 5, 4 -> right on faces 0 1 2 4
    p = probs_of(votes)
    res = fc.fixed_and_broken(p, labels)
    assert res["member_accuracies"].tolist() == pytest.approx([0.8, 0.6, 0.4])
    assert res["member"] == 1  # ascending: m2 .4, m1 .6, m0 .8 -> the middle one is m1
    assert res["fixed"].tolist() == [2]   # vote right, member 1 wrong
    assert res["broke"].tolist() == []    # face 3: both wrong
    assert (res["both_right"], res["both_wrong"]) == (3, 1)
    res0 = fc.fixed_and_broken(p, labels, member=0)
    assert res0["fixed"].tolist() == [4] and res0["broke"].tolist() == [3]
    assert (res0["both_right"], res0["both_wrong"]) == (3, 0)
    assert (res0["vote_accuracy"], res0["member_accuracy"]) == (0.8, 0.8)
    assert fc.median_member([0.5, 0.7, 0.6, 0.9]) == 2  # lower median of 4
    given = fc.fixed_and_broken(p, labels, member=0, vote=fc.masked_vote(p)["pred"])  # vote passed in
    assert {k: np.asarray(v).tolist() for k, v in given.items()} == {k: np.asarray(v).tolist() for k, v in res0.items()}


def test_fixed_and_broken_only_compare_faces_the_member_votes_on():
    labels = [0, 0, 0]
    p = probs_of([[1, 0, 1], [0, 0, 1], [0, 1, 1]])
    mask = np.array([[True, True, False], [True, True, True], [True, True, True]])
    res = fc.fixed_and_broken(p, labels, mask, member=0)
    assert res["faces"].tolist() == [0, 1]
    assert res["fixed"].tolist() == [0] and res["broke"].tolist() == []


def test_ensemble_fixes_on_a_run_with_member_ids(tmp_path):
    labels = [0, 1, 2, 3, 4]
    votes = [[0, 1, 2, 3, 0], [0, 1, 5, 5, 4], [1, 6, 2, 5, 4]]
    run = make_run(tmp_path, {"private_test": (votes, labels)})
    fx = fc.ensemble_fixes(run, "private_test")
    assert (fx["member"], fx["median"], fx["fixed"], fx["broke"]) == (1, 1, 1, 0)
    assert fx["faces"]["rows"][fx["fixed_idx"]].tolist() == [102]
    fx0 = fc.ensemble_fixes(run, "private_test", member=0)
    assert (fx0["member"], fx0["median"], fx0["fixed"], fx0["broke"]) == (0, 1, 1, 1)
    assert fc.fix_captions(fx0, fx0["broke_idx"]) == [("#103 · true happy\nvote surprise: 2 surprise · 1 happy\n"
                                                       "member 0: happy")]


# ---------------------------------------------------------------- out of bag
def test_out_of_bag_votes_come_exactly_from_the_members_that_held_the_face_out(tmp_path):
    # member m always votes class m, so a face's out-of-bag counts name its out-of-bag members
    n, m = 40, 5
    votes = [[k] * n for k in range(m)]
    validation = np.zeros((m, n), bool)
    validation[0, [0, 1, 2]] = validation[1, [2, 3]] = validation[3, [2, 5]] = validation[4, [9]] = True
    run = make_run(tmp_path, {"train": (votes, [6] * n)}, members=m,
                   masks={"validation": validation, "trained": ~validation})
    oob = fc.out_of_bag(run)
    for face in range(n):
        assert np.flatnonzero(oob["counts"][face]).tolist() == np.flatnonzero(validation[:, face]).tolist()
    assert oob["voters"].tolist() == validation.sum(axis=0).tolist()
    assert (oob["pred"][validation.sum(axis=0) == 0] == -1).all()
    assert oob["pred"][9] == 4 and oob["pred"][5] == 3


def test_out_of_bag_members_from_the_split_rule_when_masks_are_missing(tmp_path):
    n, m = 60, 6
    votes = [[k] * n for k in range(m)]
    run = make_run(tmp_path, {"train": (votes, [6] * n)}, members=m, base_seed=11)
    oob = fc.out_of_bag(run)
    for k in range(m):
        _, va = member_split(n, member_seed(11, k), 0.1)
        assert np.flatnonzero(oob["counts"][:, k]).tolist() == va.tolist()
        assert np.flatnonzero(oob["held_out"][k]).tolist() == va.tolist()


def test_the_shipped_run_out_of_bag_members_are_its_stored_validation_masks():
    pred, oob = DEMO.predictions("train"), fc.out_of_bag(DEMO)
    assert (oob["held_out"] == pred["validation"]).all()
    votes = pred["probs"].argmax(axis=2)
    for face in (0, 17, 1234, 3999):
        held = np.flatnonzero(pred["validation"][:, face])
        assert oob["counts"][face].tolist() == np.bincount(votes[held, face], minlength=7).tolist()


def test_probably_mislabelled_ranks_confident_out_of_bag_disagreement_first():
    oob = dict(rows=np.arange(10, 16), labels=np.array([0, 0, 0, 1, 1, 1]),
               pred=np.array([0, 2, 3, 4, 5, -1]), voters=np.array([2, 1, 2, 3, 1, 0]),
               score=np.array([0.0, 0.9, 0.6, 0.6, 0.2, np.nan], dtype=np.float32))
    assert fc.probably_mislabelled(oob).tolist() == [1, 3, 2, 4]  # .6 tie: more voters first
    assert fc.probably_mislabelled(oob, min_voters=2).tolist() == [3, 2]
    assert fc.probably_mislabelled(oob, min_score=0.5).tolist() == [1, 3, 2]


# ---------------------------------------------------------------- FER+
def test_ferplus_agreement_counts_whom_the_crowd_sides_with():
    # FER+ columns: neutral happiness surprise sadness anger disgust fear contempt unknown NF
    votes = np.array([[0, 0, 0, 8, 0, 0, 2, 0, 0, 0],   # sad (4)
                      [0, 0, 0, 2, 0, 0, 8, 0, 0, 0],   # fear (2)
                      [9, 0, 0, 0, 1, 0, 0, 0, 0, 0],   # neutral (6)
                      [0, 0, 0, 5, 0, 0, 5, 0, 0, 0],   # tie: no majority
                      [0, 0, 0, 0, 0, 0, 0, 10, 0, 0]], np.uint8)  # contempt: no FER2013 class
    labels, pred = [2, 2, 2, 2, 2], [4, 4, 4, 4, 4]
    assert fc.ferplus_classes(votes).tolist() == [4, 2, 6, -1, -1]
    assert fc.ferplus_agreement(votes, labels, pred) == dict(faces=5, vote=1, label=1, other=1, none=2)
    assert fc.ferplus_text(votes[0]) == "8 sadness · 2 fear"


def test_ferplus_votes_line_up_with_the_dataset_rows_and_refuse_another_order(tmp_path):
    lines, _, _, usages = fer_rows(12)
    ds = load_dataset(write_csv(tmp_path / "fer2013.csv", lines), cache_dir=tmp_path / "cache")
    votes = np.arange(120).reshape(12, 10) % 11
    head = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    plus = tmp_path / "fer2013new.csv"
    plus.write_text(head + "".join(f"{u},fer{i:07d}.png,{','.join(map(str, v))}\n"
                                   for i, (u, v) in enumerate(zip(usages, votes))))
    got = fc.ferplus_votes(plus, ds)
    assert got.tolist() == votes[ds.row_ids].tolist()
    swapped = [usages[-1], *usages[1:-1], usages[0]]
    plus.write_text(head + "".join(f"{u},x.png,{','.join(map(str, v))}\n" for u, v in zip(swapped, votes)))
    with pytest.raises(DataFormatError, match="not in the same row order"):
        fc.ferplus_votes(plus, ds)
    with pytest.raises(DataFormatError, match="cannot read"):
        fc.ferplus_votes(tmp_path / "missing.csv", ds)
