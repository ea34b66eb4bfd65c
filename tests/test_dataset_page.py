"""The Dataset page through AppTest, from the entrypoint: the synthetic default (its note, counts
and paging), a tiny CSV with a planted blank face and a duplicate pair across splits, a homework
folder with unlabelled test.csv rows, FER+ votes beside a tiny fer2013.csv, and the real FER2013."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from conftest import write_csv
from streamlit.testing.v1 import AppTest

from app_pages import ui
from fer.data import load_dataset
from fer.data.ferplus import VOTE_COLUMNS

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
PAGE = "app_pages/dataset.py"
USAGE = {"train": "Training", "public_test": "PublicTest", "private_test": "PrivateTest"}


def open_page(data: str | Path | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180)
    if data is not None:
        at.query_params["data"] = str(data)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error") for e in getattr(at, kind)]
    return "\n".join(map(str, parts))


def captions(at: AppTest) -> list[list[str]]:
    """Captions of each st.image grid on the page, in order."""
    return [img.captions for img in at.image]


def pixels(im: np.ndarray) -> str:
    return " ".join(map(str, im.ravel()))


def test_synthetic_renders_with_the_synthetic_note_counts_and_paging():
    at = open_page()
    assert at.title[0].value.startswith("Dataset")
    assert any(ui.SYNTHETIC_NOTE in w.value for w in at.warning)
    ds = load_dataset("synthetic")
    table = at.dataframe[0].value.set_index("split")        # the counts table, split × class
    for split, counts in ds.counts().items():
        assert table.loc[USAGE[split]].iloc[:7].tolist() == counts.tolist()
    assert table.loc["All", "total"] == len(ds) == 5200
    disgust = int(sum(c[1] for c in ds.counts().values()))
    assert f"**Disgust**, has {disgust:,} faces" in texts(at)   # the rarest class is named
    assert len(at.get("vega_lite_chart")) == 1               # the counts chart
    # first sample page: 30 angry faces in row order; page 2 continues
    angry = np.flatnonzero(ds.labels == 0)
    assert captions(at)[0] == [f"row {i}" for i in angry[:30]]
    at.get("pagination")[0].set_value(2).run()
    assert captions(at)[0] == [f"row {i}" for i in angry[30:60]]
    at.segmented_control(key="ds_class").set_value(1).run()
    assert captions(at)[0][0] == f"row {np.flatnonzero(ds.labels == 1)[0]}"
    m = metrics(at)
    assert m["Blank faces"] == "0" and m["Duplicate groups"] == "0"
    assert m["PublicTest faces also in Training"] == "0"


def tiny_csv(path: Path) -> Path:
    """14 random faces; row 3 (Training, Happy) blank; row 11 (PublicTest, Sad) a copy of row 1 (Training, Angry)."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(14, 48, 48), dtype=np.uint8)
    images[3] = 0
    images[11] = images[1]
    labels = [0, 0, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6]
    usage = ["Training"] * 10 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    return write_csv(path, [f"{y},{pixels(im)},{u}" for im, y, u in zip(images, labels, usage)])


def test_a_tiny_csv_shows_its_blank_face_and_the_duplicate_pair_across_splits(tmp_path):
    at = open_page(tiny_csv(tmp_path / "fer2013.csv"))
    assert not any(ui.SYNTHETIC_NOTE in w.value for w in at.warning)
    assert "**Format:** fer2013.csv" in texts(at) and "**Rows:** 14 faces" in texts(at)
    m = metrics(at)
    assert m["Blank faces"] == "1" and m["Near-constant faces"] == "1"
    assert m["Duplicate groups"] == "1" and m["Redundant copies"] == "1"
    assert m["Groups with conflicting labels"] == "1"
    assert m["PublicTest faces also in Training"] == "1"
    assert m["PrivateTest faces also in Training"] == "0"
    grids = captions(at)
    assert grids[1] == ["row 3 · Happy"]                       # the blank face
    assert grids[2] == ["1 Angry / 11 Sad"]                    # the duplicate pair, labels differ
    assert grids[3] == ["11 Sad / 1 Angry"]                    # the leaked test face beside its copy
    assert "1 blank (every pixel the same value; 1 of them all black)" in texts(at)
    assert "1 of the 2 PublicTest faces (50.0%) have an exact copy in Training." in texts(at)
    flagged = at.dataframe[1].value                           # rows of the flagged faces
    assert flagged[["row", "split", "label"]].values.tolist() == [["row 3", "Training", "Happy"]]
    at.toggle(key="ds_dup_differ").set_value(True).run()       # still there: its labels differ
    assert not at.exception and captions(at)[2] == ["1 Angry / 11 Sad"]


def test_a_homework_folder_explains_the_submission_for_its_unlabelled_faces(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(9, 48, 48), dtype=np.uint8)
    (tmp_path / "hw").mkdir()
    write_csv(tmp_path / "hw" / "train.csv", [f"{i % 7},{pixels(im)}" for i, im in enumerate(images[:6])],
              header="label,feature")
    write_csv(tmp_path / "hw" / "test.csv", [f"{100 + i},{pixels(im)}" for i, im in enumerate([*images[6:], images[2]])],
              header="id,feature")
    at = open_page(tmp_path / "hw")
    info = " ".join(i.value for i in at.info)
    assert "4 faces have no label" in info and "submission CSV" in info and "`id,label`" in info
    assert metrics(at)["test.csv faces also in train.csv"] == "1"
    at.segmented_control(key="ds_class").set_value(-1).run()   # the unlabelled "class"
    assert captions(at)[0] == ["id 100", "id 101", "id 102", "id 103"]


def test_ferplus_votes_are_shown_next_to_the_fer2013_label(tmp_path):
    folder = tmp_path / "both"
    folder.mkdir()
    tiny_csv(folder / "fer2013.csv")
    usage = ["Training"] * 10 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    votes = np.zeros((14, len(VOTE_COLUMNS)), dtype=int)
    votes[:, 0] = 10                      # neutral for everyone ...
    votes[0] = [2, 0, 0, 0, 8, 0, 0, 0, 0, 0]   # ... but row 0 (FER2013 Angry): 8 anger, 2 neutral
    lines = [f"{u},fer{i:07d}.png," + ",".join(map(str, v)) for i, (u, v) in enumerate(zip(usage, votes))]
    write_csv(folder / "fer2013new.csv", lines, header="Usage,Image name," + ",".join(VOTE_COLUMNS))
    at = open_page(folder)
    assert "FER+ labels." in " ".join(i.value for i in at.info)
    assert captions(at)[0] == ["row 0"]                        # the only FER+ Angry face
    assert "FER2013 label: **Angry** · FER+ majority: **anger**, 8 of 10 votes" in texts(at)
    chart = at.get("vega_lite_chart")[1].proto
    assert json.loads(chart.spec)["title"] == "FER+ votes (10 taggers)"
    data = pa.ipc.open_stream(chart.datasets[0].data.data).read_all().to_pandas()
    assert data["votes"].tolist() == [2, 0, 0, 0, 8, 0, 0, 0, 0, 0]
    assert data.set_index("column")["role"][["anger", "neutral"]].tolist() == ["FER+ majority = FER2013 label", "other"]
    at.segmented_control(key="ds_class").set_value(6).run()    # neutral: FER+ relabelled rows 1-5 and 7-12
    assert "row 2 · was Fear" in captions(at)[0]


def test_real_fer2013_shows_the_black_faces_and_the_leakage(real_csv):
    at = open_page(real_csv)
    m = metrics(at)
    assert m["Blank faces"] == "12" and m["Near-constant faces"] == "15"
    assert "12 blank (every pixel the same value; 12 of them all black)" in texts(at)
    assert (m["PublicTest faces also in Training"], m["PrivateTest faces also in Training"],
            m["PrivateTest faces also in PublicTest"]) == ("280", "288", "44")
    assert m["Duplicate groups"] == "1,516" and m["Groups with conflicting labels"] == "57"
    assert "the rarest class, **Disgust**, has 547 faces" in texts(at)
    at.segmented_control(key="ds_leak").set_value("private_test_in_public_test").run()
    assert not at.exception and len(captions(at)[-1]) == 12
    assert "44 of the 3,589 PrivateTest faces (1.2%) have an exact copy in PublicTest." in texts(at)
