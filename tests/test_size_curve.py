"""Ensemble size curves: votes over k-subsets of a pool, oracle, disagreement, NLL, ECE, per-class."""

import itertools
import json
import math

import numpy as np
import pytest

from fer.cli import main as cli
from fer.ensemble import (accuracy, k_subsets, majority_vote, member_accuracies, member_vs_ensemble_reliability,
                          pairwise_disagreement, size_curve, soft_vote, subset_scores)
from fer.metrics import calibration_bins, expected_calibration_error, nll, per_class_scores, reliability_bins
from fer.training import TrainConfig, create_run

# A pool of 3 members, 5 faces, 3 classes. Probabilities are dyadic, so every mean of two is
# exact and the equal means below are real ties, not rounding.
POOL = np.array([
    # face 0        face 1             face 2           face 3          face 4
    [[.5, .25, .25], [.25, .5, .25], [.75, .25, 0], [.5, .5, 0], [.5, .25, .25]],  # m0 votes 0 1 0 0 0
    [[.25, .75, 0], [.25, .5, .25], [0, .5, .5], [0, .25, .75], [.5, .5, 0]],      # m1 votes 1 1 1 2 0
    [[.125, .125, .75], [.5, .25, .25], [0, .25, .75], [.25, .5, .25], [0, 1, 0]],  # m2 votes 2 0 2 1 1
], dtype=np.float32)
LABELS = np.array([1, 1, 2, 2, 0])
# (A member's own tie, m0 face 3 and m1 faces 2 and 4, is its arg-max: the lowest class.)
# Hand-computed, face by face (majority / soft prediction):
#   {0,1}: f0 votes 0,1 tied, means .375 < .5 -> 1/1; f1 1/1; f2 votes 0,1 tied, means .375 = .375
#          -> lowest, 0/0; f3 votes 0,2 tied, means .25 < .375 -> 2, soft means (.25, .375, .375)
#          tie -> 1; f4 0/0.                      majority right 4/5 = .8, soft 3/5 = .6
#   {0,2}: f0 2/2; f1 votes 1,0 tied, means .375 = .375 -> 0/0; f2 votes 0,2 tied, .375 = .375
#          -> 0/0; f3 votes 0,1, means .375 < .5 -> 1/1; f4 votes 0,1, .25 < .625 -> 1/1.  0, 0
#   {1,2}: f0 votes 1,2, .4375 > .375 -> 1/1; f1 0/0; f2 2/2; f3 2/2; f4 1/1.          .6, .6
#   {0,1,2}: f0 one vote each, means (.875, 1.125, 1)/3 -> 1/1; f1 two votes for 1 -> 1/1;
#          f2 one each, (.75, 1, 1.25)/3 -> 2/2; f3 one each, (.75, 1.25, 1)/3 -> 1/1;
#          f4 two votes for 0 -> 0, soft (1, 1.75, .25)/3 -> 1.         .8, .6
MAJORITY_K2, SOFT_K2 = [.8, 0, .6], [.6, 0, .6]
# Oracle (any member right): {0,1} f0 f1 f3 f4 -> .8; {0,2} f1 f2 f4 -> .6; {1,2} all -> 1.
ORACLE_K2 = [.8, .6, 1.0]
# Votes m0 01000, m1 11120, m2 20211: pairs differ on 3/5 (0,1), 5/5 (0,2), 5/5 (1,2).
DISAGREE = {(0, 1): .6, (0, 2): 1.0, (1, 2): 1.0}


def test_hand_computed_votes_and_ties_k2_k3():
    for i, row in enumerate(itertools.combinations(range(3), 2)):
        assert accuracy(majority_vote(POOL[list(row)]), LABELS) == pytest.approx(MAJORITY_K2[i])
        assert accuracy(soft_vote(POOL[list(row)]), LABELS) == pytest.approx(SOFT_K2[i])
    sc2 = subset_scores(POOL, LABELS, k_subsets(3, 2))
    np.testing.assert_allclose(sc2["majority"], MAJORITY_K2)
    np.testing.assert_allclose(sc2["soft"], SOFT_K2)
    np.testing.assert_allclose(sc2["oracle"], ORACLE_K2)
    np.testing.assert_allclose(sc2["disagreement"], list(DISAGREE.values()))
    sc3 = subset_scores(POOL, LABELS, [[0, 1, 2]])
    assert sc3["majority"].tolist() == pytest.approx([.8]) and sc3["soft"].tolist() == pytest.approx([.6])
    assert sc3["oracle"].tolist() == [1.0]
    assert sc3["disagreement"][0] == pytest.approx((.6 + 1 + 1) / 3)
    # The row order of a subset does not matter.
    assert subset_scores(POOL, LABELS, [[2, 0, 1]])["majority"].tolist() == sc3["majority"].tolist()


def test_size_curve_summarises_hand_computed_pool():
    curve = size_curve(POOL, LABELS)
    assert [r["k"] for r in curve] == [1, 2, 3] and [r["subsets"] for r in curve] == [3, 3, 1]
    assert all(r["exhaustive"] for r in curve)
    assert curve[0]["majority"] == pytest.approx(dict(mean=(.4 + .8 + .2) / 3, std=np.std([.4, .8, .2]),
                                                      min=.2, max=.8))  # members: 2/5, 4/5, 1/5
    assert curve[1]["majority"] == pytest.approx(dict(mean=1.4 / 3, std=np.std(MAJORITY_K2), min=0, max=.8))
    # std: sqrt(((1/3)^2 + (7/15)^2 + (2/15)^2) / 3) about the mean 7/15
    assert curve[1]["majority"]["std"] == pytest.approx(0.3399, abs=1e-4)
    assert curve[1]["soft"] == pytest.approx(dict(mean=.4, std=np.std(SOFT_K2), min=0, max=.6))
    assert curve[1]["oracle"]["mean"] == pytest.approx(.8)
    assert curve[0]["disagreement"] is None
    # Every pair once at k = 2 and k = 3: both give the pool's mean pairwise disagreement.
    assert curve[1]["disagreement"]["mean"] == pytest.approx(2.6 / 3)
    assert curve[2]["disagreement"]["mean"] == pytest.approx(2.6 / 3)
    assert curve[2]["majority"] == dict(mean=pytest.approx(.8), std=0.0, min=pytest.approx(.8),
                                        max=pytest.approx(.8))
    d = pairwise_disagreement(POOL)
    assert d[0, 1] == d[1, 0] == pytest.approx(.6) and d[0, 2] == 1 and np.all(np.diag(d) == 0)
    json.dumps(curve)  # JSON-ready, no NaN


def test_subset_counts_all_or_a_distinct_seeded_sample():
    assert k_subsets(5, 2).tolist() == [list(c) for c in itertools.combinations(range(5), 2)]
    assert k_subsets(25, 1).shape == (25, 1) and k_subsets(25, 25).tolist() == [list(range(25))]
    assert len(k_subsets(25, 24)) == 25
    for m, k, cap in [(25, 2, 200), (25, 12, 200), (25, 23, 200), (6, 3, 10), (30, 15, 500)]:
        sub = k_subsets(m, k, cap, seed=0)
        assert math.comb(m, k) > cap and sub.shape == (cap, k)
        assert len({tuple(r) for r in sub.tolist()}) == cap  # distinct
        assert np.all(np.diff(sub, axis=1) > 0) and sub.min() >= 0 and sub.max() < m  # sorted members
        assert np.array_equal(sub, k_subsets(m, k, cap, seed=0))  # seeded
        assert not np.array_equal(sub, k_subsets(m, k, cap, seed=1))
    assert len(k_subsets(20, 10, math.comb(20, 10))) == 184756  # exactly at the cap: all of them
    with pytest.raises(ValueError):
        k_subsets(5, 0)
    with pytest.raises(ValueError):
        k_subsets(5, 6)
    with pytest.raises(ValueError):
        k_subsets(5, 2, max_subsets=0)


def random_pool(m, n, c=7, seed=0, ties=True):
    """Correlated members (shared face difficulty) of ~50% accuracy, float32 like stored runs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))[None] * 1.5 + rng.normal(size=(m, n, c)) + 1.5 * np.eye(c)[labels][None]
    p = np.exp(logits)
    if ties:  # coarse probabilities on some faces: exact ties between members' means
        p[:, : n // 4] = np.round(p[:, : n // 4] / p[:, : n // 4].sum(2, keepdims=True) * 4)
        p[:, : n // 4, 0] += p[:, : n // 4].sum(2) == 0
    p /= p.sum(2, keepdims=True)
    return p.astype(np.float32), labels


def brute_force(p, labels, subsets):
    """The plain loop over subsets that subset_scores vectorises."""
    out = {key: [] for key in ("majority", "soft", "oracle", "disagreement", "nll", "ece")}
    votes = p.argmax(2)
    for row in subsets:
        q = p[np.sort(row)]
        out["majority"].append(accuracy(majority_vote(q), labels))
        out["soft"].append(accuracy(soft_vote(q), labels))
        out["oracle"].append(float((votes[row] == labels).any(axis=0).mean()))
        pairs = list(itertools.combinations(row, 2))
        out["disagreement"].append(np.mean([(votes[a] != votes[b]).mean() for a, b in pairs]) if pairs else np.nan)
        out["nll"].append(nll(q.mean(0), labels))
        out["ece"].append(expected_calibration_error(q.mean(0), labels))
    return {key: np.array(v) for key, v in out.items()}


@pytest.mark.parametrize("m,cap,seed", [(6, 200, 0), (9, 12, 1)])
def test_vectorised_equals_brute_force_loop(m, cap, seed):
    p, labels = random_pool(m, 400, seed=seed)
    for k in range(1, m + 1):
        subsets = k_subsets(m, k, cap, seed)
        fast, slow = subset_scores(p, labels, subsets, chunk_elements=5000), brute_force(p, labels, subsets)
        for key in ("majority", "soft", "oracle"):
            np.testing.assert_array_equal(fast[key], slow[key], err_msg=f"{key} k={k}")
        for key in ("disagreement", "nll", "ece"):
            np.testing.assert_allclose(fast[key], slow[key], rtol=0, atol=1e-6, err_msg=f"{key} k={k}")


def test_size_one_ensemble_equals_its_member():
    p, labels = random_pool(5, 300, seed=3)
    sc = subset_scores(p, labels, k_subsets(5, 1))
    accs = member_accuracies(p, labels)
    np.testing.assert_array_equal(sc["majority"], accs)
    np.testing.assert_array_equal(sc["soft"], accs)
    np.testing.assert_array_equal(sc["oracle"], accs)
    assert np.isnan(sc["disagreement"]).all()
    np.testing.assert_allclose(sc["nll"], [nll(p[m], labels) for m in range(5)], rtol=1e-12)
    np.testing.assert_allclose(sc["ece"], [expected_calibration_error(p[m], labels) for m in range(5)], rtol=1e-12)
    curve = size_curve(p, labels)
    assert curve[0]["majority"] == dict(mean=float(accs.mean()), std=float(accs.std()),
                                        min=float(accs.min()), max=float(accs.max()))


def test_curve_subset_counts_for_25_members():
    p, labels = random_pool(25, 40, seed=4, ties=False)
    curve = size_curve(p, labels, max_subsets=200)
    expected = [min(math.comb(25, k), 200) for k in range(1, 26)]
    assert [r["subsets"] for r in curve] == expected
    assert [r["exhaustive"] for r in curve] == [math.comb(25, k) <= 200 for k in range(1, 26)]
    assert curve[-1]["majority"]["std"] == 0 and curve[-1]["subsets"] == 1
    assert curve[-1]["majority"]["mean"] == accuracy(majority_vote(p), labels)
    assert curve[-1]["soft"]["mean"] == accuracy(soft_vote(p), labels)


def test_bad_input_raises_value_error():
    p, labels = random_pool(3, 20, seed=5)
    with pytest.raises(ValueError, match="finite"):
        subset_scores(np.where(np.arange(20)[None, :, None] == 3, np.nan, p), labels, [[0, 1]])
    with pytest.raises(ValueError, match="probabilities"):
        size_curve(p * 2, labels)
    with pytest.raises(ValueError, match="twice"):
        subset_scores(p, labels, [[0, 0]])
    with pytest.raises(ValueError, match="outside"):
        subset_scores(p, labels, [[0, 3]])
    with pytest.raises(ValueError, match="outside"):
        size_curve(p, labels + 7)


def test_nll_hand_computed():
    p = np.array([[.5, .5], [.25, .75], [1.0, 0.0]])
    # -(log .5 + log .75 + log 1e-12) / 3: the face given probability 0 costs log(1e12) nats.
    assert nll(p, [0, 1, 1]) == pytest.approx((0.693147 + 0.287682 + 27.631021) / 3, abs=1e-6)
    assert nll(p[:2], [0, 1]) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    assert nll([[1.0, 0.0]], [0]) == 0.0
    with pytest.raises(ValueError):
        nll(p, [0, 1, 2])


def test_ece_hand_computed():
    # 5 bins. Confidences .9 (right), .6 (wrong), .7 (right), .55 (right): .6 and .55 share
    # (.4, .6] (upper edge included, as Guo et al.), accuracy .5, mean confidence .575.
    p = np.array([[.9, .1], [.6, .4], [.3, .7], [.55, .45]])
    y = np.array([0, 1, 1, 0])
    b = reliability_bins(p, y, n_bins=5)
    assert b["count"].tolist() == [0, 0, 2, 1, 1]
    np.testing.assert_allclose(b["confidence"], [np.nan, np.nan, .575, .7, .9])
    np.testing.assert_allclose(b["accuracy"], [np.nan, np.nan, .5, 1, 1])
    # ECE = 2/4 |.5 - .575| + 1/4 |1 - .7| + 1/4 |1 - .9| = .0375 + .075 + .025
    assert expected_calibration_error(p, y, n_bins=5) == pytest.approx(.1375)
    # 15 bins (the default): .95 right and .95 wrong in bin 14, .5 right in bin 7, .42 wrong in 6.
    q = np.array([[.95, .05, 0], [.95, 0, .05], [.5, .3, .2], [.42, .33, .25]])
    b = reliability_bins(q, [0, 1, 0, 1])
    assert np.flatnonzero(b["count"]).tolist() == [6, 7, 14] and b["count"][14] == 2
    assert b["accuracy"][14] == .5 and b["confidence"][6] == pytest.approx(.42)
    assert expected_calibration_error(q, [0, 1, 0, 1]) == pytest.approx(2 / 4 * .45 + .5 / 4 + .42 / 4)
    assert float(b["ece"]) == expected_calibration_error(q, [0, 1, 0, 1])
    # Batched: one row per ensemble, the same numbers.
    batched = calibration_bins(np.array([[.9, .6, .7, .55], [.95, .95, .5, .42]]),
                               np.array([[1, 0, 1, 1], [1, 0, 1, 0]], bool), n_bins=5)
    assert batched["ece"][0] == pytest.approx(.1375) and batched["count"].shape == (2, 5)
    assert calibration_bins(np.array([1.0, 0.0]), np.array([True, False]), 5)["count"].tolist() == [1, 0, 0, 0, 1]


def test_member_vs_ensemble_reliability():
    out = member_vs_ensemble_reliability(POOL, LABELS, member=1, n_bins=4)
    # Member 1's confidences .75 .5 .5 .75 .5 -> bins (.25,.5] x3 (right: f1, f4) and (.5,.75] x2
    # (right: f0, f3); the ensemble's are the means of all three members.
    assert out["member"]["count"].tolist() == [0, 3, 2, 0]
    np.testing.assert_allclose(out["member"]["accuracy"][1:3], [2 / 3, 1.0])
    assert out["ensemble"]["count"].sum() == 5
    assert float(out["ensemble"]["ece"]) == pytest.approx(expected_calibration_error(POOL.mean(0), LABELS))
    with pytest.raises(ValueError):
        member_vs_ensemble_reliability(POOL, LABELS, member=3)


def test_per_class_scores_hand_computed():
    labels = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 2, 1, 2, 0, 2])  # confusion rows (true) [[1,0,1],[0,1,0],[1,0,2]]
    s = per_class_scores(labels, pred, num_classes=4)  # class 3: never seen, never predicted
    np.testing.assert_allclose(s["precision"], [1 / 2, 1, 2 / 3, 0])
    np.testing.assert_allclose(s["recall"], [1 / 2, 1, 2 / 3, 0])
    np.testing.assert_allclose(s["f1"], [1 / 2, 1, 2 / 3, 0])
    assert s["support"].tolist() == [2, 1, 3, 0]
    s = per_class_scores([0, 0, 1], [0, 1, 1], num_classes=2)
    # class 0: P 1/1, R 1/2, F1 2/3; class 1: P 1/2, R 1/1, F1 2/3
    np.testing.assert_allclose(s["precision"], [1, .5])
    np.testing.assert_allclose(s["recall"], [.5, 1])
    np.testing.assert_allclose(s["f1"], [2 / 3, 2 / 3])


def run_with_predictions(tmp_path, probs, labels, split="private_test"):
    run = create_run(TrainConfig(members=len(probs)), tmp_path / "run")
    (run.path / "predictions").mkdir()
    np.savez(run.path / "predictions" / f"{split}.npz", probs=probs, members=np.arange(len(probs)),
             labels=labels, indices=np.arange(len(labels)))
    return run


def test_cli_evaluate_json_has_size_curve_and_per_class(tmp_path, capsys):
    p, labels = random_pool(4, 120, seed=6)
    run = run_with_predictions(tmp_path, p, labels)
    assert cli(["evaluate", "--run-dir", str(run.path), "--split", "private_test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    curve = report["size_curve"]
    assert [r["k"] for r in curve] == [1, 2, 3, 4] and [r["subsets"] for r in curve] == [4, 6, 4, 1]
    for r in curve:
        assert set(r) == {"k", "subsets", "exhaustive", "majority", "soft", "oracle", "disagreement", "nll", "ece"}
        assert set(r["majority"]) == {"mean", "std", "min", "max"}
    assert curve[0]["majority"]["mean"] == pytest.approx(np.mean(report["members"]))
    assert curve[-1]["majority"]["mean"] == report["majority"] and curve[-1]["soft"]["mean"] == report["soft"]
    assert [c["class"] for c in report["per_class"]][:2] == ["angry", "disgust"]
    assert sum(c["support"] for c in report["per_class"]) == 120
    cm = np.array(report["confusion"])
    assert report["per_class"][3]["recall"] == pytest.approx(cm[3, 3] / cm[3].sum())
    assert cli(["evaluate", "--run-dir", str(run.path), "--split", "private_test", "--subsets", "2"]) == 0
    assert "majority (mean ± std)" in capsys.readouterr().out


def test_evaluate_names_the_run_when_predictions_are_not_probabilities(tmp_path, capsys):
    p, labels = random_pool(2, 30, seed=7)
    run = run_with_predictions(tmp_path, p * 3, labels)
    assert cli(["evaluate", "--run-dir", str(run.path), "--split", "private_test"]) == 2
    err = capsys.readouterr().err
    assert str(run.path) in err and "probabilities" in err


def test_member_reliability_takes_a_member_id_and_names_the_run(tmp_path):
    from fer.errors import RunDirError
    from fer.evaluation import member_reliability

    p, labels = random_pool(3, 40, seed=8)
    run = run_with_predictions(tmp_path, p, labels)
    np.savez(run.path / "predictions" / "private_test.npz", probs=p, members=np.array([0, 2, 5]),
             labels=labels, indices=np.arange(len(labels)))  # members 1, 3, 4 not finished
    out = member_reliability(run.path, "private_test", member=5, n_bins=10)
    ref = member_vs_ensemble_reliability(p, labels, member=2, n_bins=10)  # id 5 is position 2
    assert out["member"] == 5 and out["member_ids"] == [0, 2, 5] and out["n"] == 40
    assert out["member_bins"]["count"].tolist() == ref["member"]["count"].tolist()
    assert float(out["ensemble_bins"]["ece"]) == pytest.approx(float(ref["ensemble"]["ece"]))
    for split, member, words in (("private_test", 1, "member 1 has no predictions"),
                                 ("validation", 0, "no reliability diagram on validation"),
                                 ("public_test", 0, "no predictions for split")):
        with pytest.raises(RunDirError, match=words) as e:
            member_reliability(run.path, split, member)
        assert str(run.path) in str(e.value)


def test_evaluate_members_subset_votes_only_those_members(tmp_path, capsys):
    from fer.ensemble import majority_vote

    p, labels = random_pool(5, 90, seed=9)
    run = run_with_predictions(tmp_path, p, labels)
    assert cli(["evaluate", "--run-dir", str(run.path), "--members", "0-1,4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["member_ids"] == [0, 1, 4]
    assert report["majority"] == pytest.approx(np.mean(majority_vote(p[[0, 1, 4]]) == labels))
    assert cli(["evaluate", "--run-dir", str(run.path), "--members", "3-7"]) == 2
    assert "member(s) [5, 6, 7] have no predictions" in capsys.readouterr().err
    assert cli(["evaluate", "--run-dir", str(run.path), "--members", "a-b"]) == 2
    assert "expected member ids like 0-8" in capsys.readouterr().err
