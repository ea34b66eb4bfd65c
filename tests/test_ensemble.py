import numpy as np
import pytest

from fer.ensemble import accuracy, majority_vote, member_accuracies, member_split, soft_vote, vote_counts
from fer.metrics import confusion_matrix


def onehot_probs(preds, c=7, conf=0.9):
    p = np.full((len(preds), c), (1 - conf) / (c - 1))
    p[np.arange(len(preds)), preds] = conf
    return p


def test_member_split_partitions_and_is_deterministic():
    tr, va = member_split(1000, seed=3, val_fraction=0.1)
    assert len(va) == 100 and len(tr) == 900
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    tr2, va2 = member_split(1000, seed=3, val_fraction=0.1)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    others = [member_split(1000, seed=s)[1] for s in range(5)]
    assert all(not np.array_equal(others[i], others[j]) for i in range(5) for j in range(i))
    with pytest.raises(ValueError):
        member_split(10, 0, 1.0)


def test_majority_vote_hand_computed():
    # 3 members, 3 faces. Face 0: votes 2,2,5 -> 2. Face 1: 1,3,3 -> 3. Face 2: 4,4,4 -> 4.
    probs = np.stack([onehot_probs([2, 1, 4]), onehot_probs([2, 3, 4]), onehot_probs([5, 3, 4])])
    assert majority_vote(probs).tolist() == [2, 3, 4]
    assert vote_counts(probs.argmax(2))[0].tolist() == [0, 0, 2, 0, 0, 1, 0]


def test_majority_vote_tie_goes_to_higher_mean_probability():
    # 2 members disagree (class 0 vs class 6): a 1-1 tie. Member 2 is surer, so 6 wins.
    p = np.zeros((2, 1, 7))
    p[0, 0, [0, 6]] = [0.55, 0.45]
    p[1, 0, [0, 6]] = [0.05, 0.95]
    assert majority_vote(p).tolist() == [6]
    # Equal means too: lowest class index wins.
    q = np.zeros((2, 1, 7))
    q[0, 0, [1, 4]] = [0.6, 0.4]
    q[1, 0, [1, 4]] = [0.4, 0.6]
    assert majority_vote(q).tolist() == [1]


def test_soft_vote_can_differ_from_majority():
    # Two lukewarm votes for 0 against one confident vote for 3: majority 0, soft 3.
    p = np.zeros((3, 1, 7))
    p[0, 0, [0, 3]] = [0.4, 0.35]
    p[1, 0, [0, 3]] = [0.4, 0.35]
    p[2, 0, [0, 3]] = [0.0, 1.0]
    p[:, 0, 6] = 1 - p[:, 0].sum(1)
    assert majority_vote(p).tolist() == [0]
    assert soft_vote(p).tolist() == [3]  # means: 0 -> .267, 3 -> .567


def test_size_one_ensemble_equals_its_member():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=(1, 50))
    labels = rng.integers(0, 7, 50)
    assert accuracy(majority_vote(p), labels) == member_accuracies(p, labels)[0] == accuracy(soft_vote(p), labels)


def test_confusion_matrix_hand_computed():
    labels = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 2, 1, 2, 0, 2])
    cm = confusion_matrix(labels, pred, num_classes=3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 2]]  # rows = true class
    with pytest.raises(ValueError):
        confusion_matrix(labels, pred[:-1])
