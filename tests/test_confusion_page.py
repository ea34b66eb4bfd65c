"""The Confusions page through AppTest (cell picked with the true/predicted pickers, which the
matrix's click fills in; a tile's Details; a top confusion's button; views and voters; FER+ votes;
a run whose faces are not available). A real click on a matrix cell in Chromium is in
tests/e2e/test_pages.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import fer_rows, write_csv
from streamlit.testing.v1 import AppTest

from app_pages import confusion_charts as cc
from fer import confusion as fc
from fer.data import load_dataset
from fer.evaluation import evaluate_run
from fer.runs import REPO_ROOT, Run, atomic_write_json
from fer.training import TrainConfig, create_run, dataset_fields

APP = REPO_ROOT / "streamlit_app.py"
PAGE = "app_pages/confusion.py"
DEMO = Run(REPO_ROOT / "checkpoints" / "synthetic-demo")


def open_page(run_id: str = "synthetic-demo") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["run"] = run_id
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def tiles(at: AppTest, prefix: str) -> list:
    """The Details buttons of one gallery (keys start with ``prefix``)."""
    return [b for b in at.button if (b.key or "").startswith(prefix) and "_open_" in b.key]


def cell_heading(at: AppTest) -> str:
    return at.subheader[0].value


def test_matrix_table_and_the_first_cell_on_the_shipped_run():
    at = open_page()
    report = evaluate_run(DEMO.path, "private_test", curve=False)
    cm = np.array(report["confusion"])
    assert at.selectbox(key="cm_view").value == "private_test"
    assert at.selectbox(key="cm_who").value == "majority"
    spec = at.get("vega_lite_chart")[0].proto.spec
    assert '"cell"' in spec and '"true"' in spec and '"predicted"' in spec  # the clickable matrix
    table = at.dataframe[0].value
    assert table["class"].tolist() == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert table["support"].tolist() == [c["support"] for c in report["per_class"]]
    assert table["F1"].tolist() == pytest.approx([100 * c["f1"] for c in report["per_class"]])
    top = fc.top_confusions(cm, 1)[0]  # the first visit opens the largest confusion
    assert (at.selectbox(key="cm_true").value, at.selectbox(key="cm_pred").value) == (top["true"], top["pred"])
    assert cell_heading(at).endswith(f": {top['count']} faces")
    # top confusions: a strip of exactly each cell's most confident faces, captioned
    view = fc.confusion_view(DEMO, "private_test", "majority")
    tops = fc.top_confusions(view["cm"], 6, view["faces"], per=9)
    strips = [list(el.proto.imgs) for el in at.get("image") if el.proto.imgs[0].caption]  # tiles: no caption
    assert len(strips) == len([t for t in tops if len(t["idx"])])
    for top, imgs in zip(tops, strips):
        want = [f"#{view['faces']['rows'][i]} · {view['faces']['confidence'][i]:.0%}" for i in top["idx"]]
        assert [img.caption for img in imgs] == want

def test_picking_a_cell_shows_exactly_its_faces_and_a_tile_opens_its_details():
    at = open_page()
    cm = np.array(evaluate_run(DEMO.path, "private_test", curve=False)["confusion"])
    at.selectbox(key="cm_true").set_value(2).run()  # fear
    at.selectbox(key="cm_pred").set_value(4).run()  # sad
    assert not at.exception, at.exception
    assert cell_heading(at) == f"fear taken for sad: {cm[2, 4]} faces"
    shown = tiles(at, "cm_cell_")
    assert len(shown) == min(cm[2, 4], 20)
    charts = len(at.get("vega_lite_chart"))
    shown[0].click().run()
    assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == charts + 1  # every member's probabilities
    assert any("members vote on this face" in c.value for c in at.caption)
    at.selectbox(key="cm_true").set_value(4).run()  # sad on the diagonal
    at.selectbox(key="cm_pred").set_value(4).run()
    assert cell_heading(at) == f"sad recognised as sad: {cm[4, 4]} faces"
    assert len(tiles(at, "cm_cell_")) == min(cm[4, 4], 20)
    pager = next(n for n in at.number_input if n.key.startswith("cm_cell_"))
    assert pager.max == -(-cm[4, 4] // 20)  # 20 faces a page
    pager.set_value(pager.max).run()
    assert len(tiles(at, "cm_cell_")) == cm[4, 4] - 20 * (pager.max - 1)


def test_a_top_confusion_button_opens_its_cell():
    at = open_page()
    cm = np.array(evaluate_run(DEMO.path, "private_test", curve=False)["confusion"])
    second = fc.top_confusions(cm, 2)[1]
    at.button(key=f"cm_top_{second['true']}_{second['pred']}").click().run()
    assert not at.exception, at.exception
    assert (at.selectbox(key="cm_true").value, at.selectbox(key="cm_pred").value) == (second["true"], second["pred"])
    assert cell_heading(at).endswith(f": {second['count']} faces")


def test_views_voters_and_row_normalised(monkeypatch):
    import streamlit as st

    st.cache_data.clear()
    calls = []
    real = fc.confusion_view
    monkeypatch.setattr(fc, "confusion_view",
                        lambda run, view, who, *a: calls.append((view, who)) or real(run, view, who, *a))
    at = open_page()
    # every view's vote is counted at the end of the first draw, so no later switch counts one
    assert sorted(set(calls)) == sorted((v, "majority") for v in fc.VIEWS)
    calls.clear()
    at.toggle(key="cm_norm").set_value(True).run()
    assert '".0%"' in at.get("vega_lite_chart")[0].proto.spec
    at.selectbox(key="cm_view").set_value("validation").run()
    at.selectbox(key="cm_who").set_value("member 3").run()
    assert not at.exception, at.exception
    held = int(DEMO.predictions("train")["validation"][3].sum())
    assert f": {held:,} faces" in " ".join(m.value for m in at.markdown)  # member 3's validation split
    assert any("left out" in c.value for c in at.caption)
    assert calls == [("validation", 3)]  # a member alone is counted when picked
    at.selectbox(key="cm_view").set_value("train").run()
    at.selectbox(key="cm_who").set_value("soft").run()
    assert not at.exception, at.exception


def test_fixed_broke_counts_and_the_out_of_bag_check():
    at = open_page()
    fx = fc.ensemble_fixes(DEMO, "private_test")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Fixed by the vote"] == f"{fx['fixed']:,}"
    assert metrics["Broken by the vote"] == f"{fx['broke']:,}"
    assert at.selectbox(key="cm_against_majority").value == fx["median"]
    assert len(tiles(at, "cm_fixed_")) == min(fx["fixed"], 10)
    assert tiles(at, "cm_broke_") == []  # one gallery at a time
    at.radio(key="cm_fix_part").set_value("broke").run()
    assert not at.exception, at.exception
    assert len(tiles(at, "cm_broke_")) == min(fx["broke"], 10) and tiles(at, "cm_fixed_") == []
    oob = fc.out_of_bag(DEMO)
    suspects = fc.probably_mislabelled(oob, 1, 0.5)
    assert f"{len(suspects):,} probably mislabelled" in " ".join(m.value for m in at.markdown)
    assert len(tiles(at, "cm_oob_")) == min(len(suspects), 10)
    assert any("synthetic" in c.value and "false alarms" in c.value for c in at.caption)


def make_real_run(root: Path, data: Path, ds) -> Run:
    """A run 'trained' on a tiny FER2013 CSV: 3 members whose predictions are made up."""
    run = create_run(TrainConfig(data=str(data), members=3, epochs=1, **dataset_fields(ds)), root / "tiny")
    atomic_write_json(run.path / "status.json", {"state": "done"})
    (run.path / "predictions").mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "public_test", "private_test"):
        rows = ds.indices(split)
        probs = rng.dirichlet(np.ones(7) * 0.3, (3, len(rows))).astype(np.float32)
        extra = {}
        if split == "train":
            validation = np.zeros((3, len(rows)), bool)
            validation[np.arange(len(rows)) % 3, np.arange(len(rows))] = True  # every face held out once
            extra = {"validation": validation, "trained": ~validation}
        np.savez(run.path / "predictions" / f"{split}.npz", probs=probs, members=np.arange(3),
                 labels=ds.labels[rows], indices=rows, **extra)
    return run


def test_ferplus_votes_typed_in_show_under_each_suspect(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path / "runs"))
    lines, _, _, usages = fer_rows(60, seed=3)
    csv = write_csv(tmp_path / "fer2013.csv", lines)
    ds = load_dataset(csv)
    run = make_real_run(tmp_path / "runs", csv, ds)
    votes = np.zeros((60, 10), int)
    votes[:, 3] = 10  # the crowd says sadness for every face
    head = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    plus = tmp_path / "fer2013new.csv"
    plus.write_text(head + "".join(f"{u},x.png,{','.join(map(str, v))}\n" for u, v in zip(usages, votes)))
    at = open_page(run.id)
    at.slider(key="cm_oob_gap").set_value(0.0).run()
    at.text_input(key="cm_ferplus").input(str(plus)).run()
    assert not at.exception, at.exception
    oob = fc.out_of_bag(run)
    suspects = fc.probably_mislabelled(oob, 1, 0.0)
    expected = fc.ferplus_agreement(votes[oob["rows"][suspects]], oob["labels"][suspects], oob["pred"][suspects])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["FER+ sides with the out-of-bag vote"] == f"{expected['vote']:,}"
    assert metrics["FER+ sides with the label"] == f"{expected['label']:,}"
    assert any("FER+: 10 sadness" in c.value for c in at.caption)


def test_a_run_whose_faces_are_not_available_still_draws_the_matrix(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path / "runs"))
    lines, *_ = fer_rows(30, seed=5)
    csv = write_csv(tmp_path / "fer2013.csv", lines)
    ds = load_dataset(csv)
    run = make_real_run(tmp_path / "runs", csv, ds)
    csv.unlink()  # the user's copy is gone: no faces to show
    at = open_page(run.id)
    assert len(at.get("vega_lite_chart")) >= 2  # matrix and per-class chart
    assert at.dataframe[0].value["support"].sum() == len(ds.indices("private_test"))
    assert any("fer2013.csv" in w.value for w in at.warning)


def test_clicked_cell_reads_the_selection_of_the_matrix():
    assert cc.clicked_cell({"selection": {"cell": [{"true": "fear", "predicted": "sad"}]}}) == (2, 4)
    assert cc.clicked_cell({"selection": {"cell": []}}) is None
    assert cc.clicked_cell(None) is None


def test_chart_specs_are_valid_vega_lite():
    """The page builds its specs without validation (for speed); here they are validated."""
    view = fc.confusion_view(DEMO, "private_test", "majority")
    for normalise in (False, True):
        assert cc.matrix_chart(view["cm"], normalise).to_dict()["layer"]  # raises on a schema error
    assert cc.class_count_chart(view).to_dict()["layer"]
    assert cc.member_chart(fc.face_probabilities(DEMO, "private_test", 0), "private_test").to_dict()["layer"]

