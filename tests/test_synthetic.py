"""The synthetic default dataset: shapes, determinism, class balance, faces carry signal."""

import numpy as np
import pytest

from fer.data.synthetic import CLASS_FRACTIONS, SPLIT_SIZES, make_synthetic, render_face

SMALL = {"train": 300, "public_test": 70, "private_test": 70}
SPLITS = ("train", "public_test", "private_test")
MOUTH = (slice(30, 44), slice(14, 34))  # rows/cols where the mouth lands across poses


def largest_remainder(n, fractions):
    raw = n * fractions
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts


@pytest.fixture(scope="module")
def default():
    return make_synthetic(0)


@pytest.fixture(scope="module")
def small():
    return make_synthetic(3, SMALL)


def test_class_fractions_match_fer2013():
    counts = np.array([4953, 547, 5121, 8989, 6077, 4002, 6198])
    assert CLASS_FRACTIONS.shape == (7,) and CLASS_FRACTIONS.dtype == np.float64
    np.testing.assert_allclose(CLASS_FRACTIONS, counts / 35887)
    assert CLASS_FRACTIONS.sum() == pytest.approx(1.0)


def test_shapes_dtypes_and_split_order(default):
    images, labels, splits = default
    n = sum(SPLIT_SIZES.values())
    assert images.shape == (n, 48, 48) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert splits.shape == (n,) and splits.dtype.kind == "U"
    assert labels.min() >= 0 and labels.max() <= 6
    # Rows grouped train, public_test, private_test.
    expected = np.concatenate([np.full(SPLIT_SIZES[s], s) for s in SPLITS])
    assert np.array_equal(splits, expected)


def test_custom_sizes_and_empty_split():
    images, _, splits = make_synthetic(1, {"train": 20, "public_test": 0, "private_test": 5})
    assert images.shape == (25, 48, 48)
    assert list(np.unique(splits)) == ["private_test", "train"]
    with pytest.raises(ValueError):
        make_synthetic(1, {"validation": 5})


def test_deterministic_by_seed(small):
    again = make_synthetic(3, SMALL)
    for a, b in zip(small, again):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    other_images, other_labels, _ = make_synthetic(4, SMALL)
    assert not np.array_equal(small[0], other_images)
    assert not np.array_equal(small[1], other_labels)


def check_stratified(labels, splits, sizes):
    for s in SPLITS:
        counts = np.bincount(labels[splits == s], minlength=7)
        assert np.array_equal(counts, largest_remainder(sizes[s], CLASS_FRACTIONS)), s
        assert counts.sum() == sizes[s]
        assert np.all(np.abs(counts - sizes[s] * CLASS_FRACTIONS) < 1)


def test_default_counts_are_stratified(default):
    check_stratified(default[1], default[2], SPLIT_SIZES)


@pytest.mark.parametrize("sizes", [SMALL, {"train": 7, "public_test": 1, "private_test": 13}])
def test_per_split_counts_are_stratified(sizes):
    _, labels, splits = make_synthetic(5, sizes)
    check_stratified(labels, splits, sizes)


def test_labels_are_shuffled(default):
    _, labels, splits = default
    train = labels[splits == "train"]
    assert not np.all(np.diff(train) >= 0)  # not sorted by class
    assert len(np.unique(train[:100])) >= 5


def test_disgust_is_rarest(default):
    _, labels, splits = default
    for s in SPLITS:
        counts = np.bincount(labels[splits == s], minlength=7)
        assert counts.argmin() == 1 and counts[1] < counts[np.arange(7) != 1].min(), s
    assert np.mean(labels == 1) == pytest.approx(CLASS_FRACTIONS[1], abs=0.003)


def test_images_are_not_constant_and_use_the_range(default):
    images = default[0].astype(np.float64)
    std = images.std(axis=(1, 2))
    assert std.min() > 5, "a face is nearly flat"
    assert np.median(std) > 25
    spread = images.max(axis=(1, 2)) - images.min(axis=(1, 2))
    assert np.median(spread) > 150
    assert np.percentile(images, 1) < 25 and np.percentile(images, 99) > 230
    # Not all faces share one brightness: image means spread across the range.
    means = images.mean(axis=(1, 2))
    assert means.max() - means.min() > 100


def test_render_face_contract():
    face = render_face(3, np.random.default_rng(0))
    assert face.shape == (48, 48) and face.dtype == np.float32
    assert 0.0 <= face.min() and face.max() <= 1.0 and face.std() > 0.02
    assert np.array_equal(face, render_face(3, np.random.default_rng(0)))
    assert not np.array_equal(face, render_face(3, np.random.default_rng(1)))
    for bad in (-1, 7):
        with pytest.raises(ValueError):
            render_face(bad, np.random.default_rng(0))


def test_same_rng_state_gives_same_face_different_expression():
    # Pose, identity and lighting do not depend on the class: only the expression changes.
    neutral = render_face(6, np.random.default_rng(11), 1.0)
    assert np.array_equal(neutral, render_face(6, np.random.default_rng(11), 1.0))
    happy = render_face(3, np.random.default_rng(11), 1.0)
    diff = np.abs(happy - neutral)
    assert diff[MOUTH].mean() > 3 * diff[:8].mean()  # changes concentrate on the face, not the top
    # Zero intensity is neutral for every class.
    for c in range(6):
        zero = render_face(c, np.random.default_rng(11), 0.0)
        assert np.abs(zero - neutral).max() < 0.02, c


def test_every_class_mean_differs_from_neutral_in_mouth_region():
    # Same rng states for every class, so identity and pose cancel and the mean difference is
    # the expression's (a happy/sad/angry mouth moves a few pixels; surprise opens wide).
    n = 60
    faces = {c: np.stack([render_face(c, np.random.default_rng(k), 1.0) for k in range(n)]) * 255
             for c in range(7)}
    neutral_mean = faces[6].mean(0)
    for c in range(6):
        mean_diff = np.abs(faces[c].mean(0) - neutral_mean)[MOUTH].mean()
        paired_diff = np.abs(faces[c] - faces[6])[:, MOUTH[0], MOUTH[1]].mean()
        assert mean_diff > 0.8, (c, mean_diff)
        assert paired_diff > 2.5, (c, paired_diff)
    # Surprise's open O mouth is the biggest mouth change.
    mouth_change = [np.abs(faces[c] - faces[6])[:, MOUTH[0], MOUTH[1]].mean() for c in range(6)]
    assert int(np.argmax(mouth_change)) == 5

