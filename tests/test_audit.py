"""fer.data.audit: hand-built datasets with known defects, the CLI, and SOURCES.md's numbers on real FER2013."""

import json

import numpy as np
from conftest import write_csv

from fer.cli import main
from fer.data import FaceDataset, load_dataset
from fer.data.audit import audit, duplicate_groups, leaked_pairs, training_exclusions

SPLIT = {"t": "train", "u": "public_test", "v": "private_test"}


def tiny() -> FaceDataset:
    rng = np.random.default_rng(3)
    A, B, C, D, E = rng.integers(0, 256, size=(5, 48, 48), dtype=np.uint8)
    blank = np.zeros((48, 48), np.uint8)
    flat = np.full((48, 48), 128, np.uint8)
    flat[::2, ::2] = 129                                  # std 0.43: near-constant, not blank
    rows = [(A, 0, "t"), (B, 1, "t"), (A, 0, "t"), (blank, 0, "t"), (C, 3, "t"), (A, 0, "u"),
            (blank, 2, "u"), (C, 4, "v"), (D, 5, "v"), (D, 5, "u"), (flat, 6, "t"), (E, 6, "t")]
    return FaceDataset(np.stack([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.int64),
                       np.array([SPLIT[r[2]] for r in rows]), dict(id="tiny"))


def test_audit_finds_every_planted_defect():
    ds = tiny()
    a = audit(ds)
    assert a.blank.tolist() == [3, 6]
    assert a.near_constant.tolist() == [3, 6, 10]
    assert abs(float(a.std[10]) - np.sqrt(0.25 * 0.75)) < 1e-5      # a quarter of the pixels one level up
    assert a.group.tolist() == [0, -1, 0, 1, 2, 0, 1, 2, 3, 3, -1, -1]
    assert [g.tolist() for g in a.groups] == [[0, 2, 5], [3, 6], [4, 7], [8, 9]]
    assert a.conflicting.tolist() == [1, 2] and a.cross_split.tolist() == [0, 1, 2, 3]
    assert {k: v.tolist() for k, v in a.leaked.items()} == {
        ("public_test", "train"): [5, 6], ("private_test", "train"): [7], ("private_test", "public_test"): [8]}
    assert a.pairs(a.conflicting).tolist() == [[3, 6], [4, 7]]
    s = json.loads(json.dumps(a.summary))                 # JSON-ready
    assert s["duplicates"] == {
        "groups": 4, "rows": 9, "redundant": 5, "conflicting_groups": 2, "cross_split_groups": 4,
        "conflicting": [{"rows": [3, 6], "labels": [0, 2]}, {"rows": [4, 7], "labels": [3, 4]}]}
    assert {k: v["count"] for k, v in s["leakage"].items()} == {
        "public_test_in_train": 2, "private_test_in_train": 1, "private_test_in_public_test": 1}
    assert s["class_counts"]["train"] == {"angry": 3, "disgust": 1, "fear": 0, "happy": 1, "sad": 0,
                                          "surprise": 0, "neutral": 2}
    assert s["blank"] == {"count": 2, "rows": [3, 6], "labels": [0, 2], "splits": ["train", "public_test"]}
    # train rows a run would leave out: near-constant 3, 10; conflicting 3, 4; leaked 0, 2, 3, 4; redundant 2
    assert training_exclusions(ds, a).tolist() == [0, 2, 3, 4, 10]
    assert training_exclusions(ds, a, kinds=("redundant",)).tolist() == [2]


def test_leaked_pairs_put_each_leaked_row_beside_its_first_copy():
    ds = tiny()
    a = audit(ds)
    assert leaked_pairs(ds, a, "public_test", "train").tolist() == [[5, 0], [6, 3]]   # A = rows 0 2 5; blank = 3 6
    assert leaked_pairs(ds, a, "private_test", "train").tolist() == [[7, 4]]
    assert leaked_pairs(ds, a, "private_test", "public_test").tolist() == [[8, 9]]
    assert leaked_pairs(ds, a, "test", "train").shape == (0, 2)                      # no such split


def test_duplicate_groups_without_duplicates():
    imgs = np.random.default_rng(0).integers(0, 256, size=(3, 48, 48), dtype=np.uint8)
    assert duplicate_groups(imgs).tolist() == [-1, -1, -1]
    a = audit(FaceDataset(imgs, np.zeros(3, np.int64), np.array(["train"] * 3)))
    assert a.groups == [] and a.summary["duplicates"]["groups"] == 0 and a.pairs().shape == (0, 2)


def test_audit_cli_json(tmp_path, capsys):
    ds = tiny()
    usage = {"train": "Training", "public_test": "PublicTest", "private_test": "PrivateTest"}
    lines = [f"{l},{' '.join(map(str, im.ravel()))},{usage[s]}" for im, l, s in zip(ds.images, ds.labels, ds.splits)]
    path = write_csv(tmp_path / "fer2013.csv", lines)
    assert main(["audit", "--data", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["blank"]["rows"] == [3, 6] and s["duplicates"]["groups"] == 4
    assert s["dataset"] == load_dataset(path).id
    assert main(["audit", "--data", str(path)]) == 0
    assert "duplicate groups 4 holding 9 rows (5 redundant)" in capsys.readouterr().out
    assert main(["audit", "--data", str(tmp_path / "missing.csv")]) == 2


def test_real_fer2013_audit_matches_sources(real_csv):
    a = audit(load_dataset(real_csv))
    s = a.summary
    # shared/data/SOURCES.md, "Defects found"
    assert s["blank"]["rows"] == [6458, 7629, 10423, 11286, 13148, 13402, 13988, 15894, 22198, 22927, 28601, 30002]
    assert sorted(s["blank"]["labels"]) == [0] * 8 + [3, 4, 5, 6]
    assert (a.std[a.blank] == 0).all() and abs(float(a.std[2171]) - 0.64) < 0.01
    assert s["near_constant"]["count"] == 15 and 2171 in s["near_constant"]["rows"]
    d = s["duplicates"]
    assert (d["groups"], d["rows"], d["redundant"]) == (1516, 3369, 1853)
    assert d["conflicting_groups"] == 57 and d["cross_split_groups"] == 557
    assert any(g["rows"] == s["blank"]["rows"] for g in d["conflicting"])   # the 12 black images are one group
    assert {k: v["count"] for k, v in s["leakage"].items()} == {
        "public_test_in_train": 280, "private_test_in_train": 288, "private_test_in_public_test": 44}
    assert len(training_exclusions(load_dataset(real_csv), a)) == 1799


def test_audit_cli_on_a_folder_with_an_unknown_class(tmp_path, capsys):
    from PIL import Image

    imgs = np.random.default_rng(5).integers(0, 256, size=(3, 48, 48), dtype=np.uint8)
    for i, (cls, im) in enumerate(zip(["happy", "happy", "contempt"], [imgs[0], imgs[0], imgs[1]])):
        (tmp_path / "d" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(tmp_path / "d" / cls / f"{i}.png")
    assert main(["audit", "--data", str(tmp_path / "d"), "--json"]) == 2
    assert "--exclude-unknown-classes" in capsys.readouterr().err
    assert main(["audit", "--data", str(tmp_path / "d"), "--json", "--exclude-unknown-classes"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["rows"] == 2 and s["duplicates"]["groups"] == 1 and s["duplicates"]["redundant"] == 1
