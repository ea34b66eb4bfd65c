"""The Ensemble size page through AppTest, on hand-made runs of 3 members: the teacher's table shows
hand-computed majority votes, the FER2013 reference lines appear only for real-data runs, a second
run can be compared, and a run without test predictions is explained, not a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from fer.runs import atomic_write_json
from fer.training import TrainConfig, create_run

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
PAGE = "app_pages/ensemble_size.py"

# Each member puts .7 on the class it votes for and .05 on the six others, so the majority vote is
# the most named class; a 1-1-1 tie goes to the highest mean probability, here equal, so the
# lowest class index (fer.ensemble.majority_vote).
PUBLIC_LABELS = [0, 1, 2, 3]
PUBLIC_VOTES = [[0, 1, 2, 4],   # m0 right on faces 0 1 2      -> 3/4
                [0, 1, 5, 5],   # m1 right on faces 0 1        -> 2/4
                [0, 6, 2, 4]]   # m2 right on faces 0 2        -> 2/4
# k = 1: (.75 + .5 + .5) / 3 = 58.3%.  k = 3: votes 000 -> 0 ok, 116 -> 1 ok, 252 -> 2 ok,
# 454 -> 4 wrong: 3/4 = 75.0%.
PRIVATE_LABELS = [4, 5, 6, 0, 1]
PRIVATE_VOTES = [[4, 5, 6, 0, 1],  # m0 5/5
                 [4, 5, 0, 1, 2],  # m1 right on faces 0 1      -> 2/5
                 [3, 5, 6, 1, 1]]  # m2 right on faces 1 2 4    -> 3/5
# k = 1: (1 + .4 + .6) / 3 = 66.7%.  k = 3: 443 -> 4 ok, 555 ok, 606 -> 6 ok, 011 -> 1 wrong,
# 121 -> 1 ok: 4/5 = 80.0%.
EXPECTED = {"PublicTest": [58.3, 75.0], "PrivateTest": [66.7, 80.0]}  # columns: 1 member, 3 members


def probs_of(votes: list[list[int]]) -> np.ndarray:
    p = np.full((len(votes), len(votes[0]), 7), 0.05, dtype=np.float32)
    for m, row in enumerate(votes):
        p[m, np.arange(len(row)), row] = 0.7
    return p


def make_run(root: Path, name: str, synthetic: bool = True, splits: tuple[str, ...] = ("public_test", "private_test"),
             members: int = 3) -> Path:
    run = create_run(TrainConfig(members=3, epochs=1, dataset_synthetic=synthetic,
                                 dataset_id="synthetic-seed0" if synthetic else "fer2013",
                                 dataset_sha256="synthetic-seed0" if synthetic else "abc"), root / name)
    atomic_write_json(run.path / "status.json", {"state": "done"})
    (run.path / "predictions").mkdir()
    for split, votes, labels in (("public_test", PUBLIC_VOTES, PUBLIC_LABELS),
                                 ("private_test", PRIVATE_VOTES, PRIVATE_LABELS)):
        if split in splits:
            np.savez(run.path / "predictions" / f"{split}.npz", probs=probs_of(votes[:members]),
                     members=np.arange(members, dtype=np.int64), labels=np.array(labels, dtype=np.int64),
                     indices=np.arange(len(labels), dtype=np.int64))
    return run.path


def open_page(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=90)
    if run_id:
        at.query_params["run"] = run_id
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def chart_specs(at: AppTest) -> list[str]:
    return [el.proto.spec for el in at.get("vega_lite_chart")]


def page_selectbox(at: AppTest, label: str):
    return next(s for s in at.main.selectbox if s.label == label)


def test_table_shows_hand_computed_majority_votes_and_no_reference_lines_on_synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    make_run(tmp_path, "hand")
    at = open_page("hand")
    assert at.title[0].value.startswith("Ensemble size")
    assert page_selectbox(at, "Run").value == "hand"  # the sidebar's run
    table = at.table[0].value
    assert list(table.columns) == ["split", "vote", "1 member", "3 members"]
    assert table["split"].tolist() == ["PublicTest", "PrivateTest"]
    for split, values in EXPECTED.items():
        row = table[table["split"] == split].iloc[0]
        assert [row["1 member"], row["3 members"]] == pytest.approx(values, abs=0.05)
    assert [m.value for m in at.metric][:3] == ["66.7%", "80.0%", "80.0%"]  # PrivateTest by default
    specs = chart_specs(at)
    assert len(specs) == 4  # accuracy, disagreement + ECE, NLL, reliability
    assert not any("Tang 2013" in s or "Goodfellow" in s for s in specs)
    assert "only for runs on the real FER2013" in " ".join(c.value for c in at.caption)
    assert "Validation is not offered" in " ".join(c.value for c in at.caption)


def test_real_fer2013_run_draws_the_reference_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    make_run(tmp_path, "real", synthetic=False)
    at = open_page("real")
    accuracy = chart_specs(at)[0]
    assert "Tang 2013" in accuracy and "Goodfellow et al. 2013" in accuracy


def test_soft_rows_split_switch_member_and_a_second_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    make_run(tmp_path, "one")
    make_run(tmp_path, "two")
    at = open_page("one")
    at.toggle(key="size_soft").set_value(True).run()
    at.radio(key="size_split").set_value("public_test").run()
    at.selectbox(key="size_member").set_value(2).run()
    assert not at.exception, at.exception
    table = at.table[0].value
    assert table["vote"].tolist() == ["majority vote", "soft vote"] * 2
    assert at.metric[0].value == "58.3%"
    at.selectbox(key="size_compare").set_value("two").run()
    assert not at.exception, at.exception
    table = at.table[0].value
    assert list(table.columns)[:3] == ["run", "split", "vote"] and len(table) == 8
    assert set(table["run"]) == {"one", "two"}
    assert '"run"' in chart_specs(at)[0]  # coloured by run


def test_a_run_without_test_predictions_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    make_run(tmp_path, "empty", splits=())
    at = open_page("empty")
    assert any("no predictions on PrivateTest yet" in i.value for i in at.info)


def test_switching_to_a_one_member_run_keeps_the_page_up(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    make_run(tmp_path, "hand")
    make_run(tmp_path, "solo", members=1)  # 1 of 3 members finished: a curve of one point
    at = open_page("hand")
    assert at.multiselect(key="size_sizes_3").value == [1, 3]
    page_selectbox(at, "Run").set_value("solo").run()
    assert not at.exception, at.exception
    assert "1 of 3 members have finished" in " ".join(c.value for c in at.caption)
    table = at.table[0].value
    assert table["1 member"].tolist() == pytest.approx([75.0, 100.0])  # member 0 alone
    assert at.metric[0].value == "100.0%"
    assert any("no ensemble yet" in i.value for i in at.info)
    page_selectbox(at, "Run").set_value("hand").run()
    assert at.multiselect(key="size_sizes_3").value == [1, 3]  # back to 3 members, back to its columns
