"""What the Confusions page draws: cached ``fer.confusion`` calls, the clickable confusion matrix,
the per-class chart, a member-probability chart for one face, and paged face galleries whose tiles
open that face's details.

Numbers come from :mod:`fer.confusion`; this module caches them per (run id, view, voter,
predictions mtime) and shapes them for Altair and ``st.image``.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app_pages import ui
from fer import confusion as fc
from fer.data import FaceDataset
from fer.labels import CLASS_NAMES
from fer.metrics import row_normalised
from fer.runs import Run

VIEW_TITLES = {
    "train": "Training (members that trained on the face)",
    "validation": "Validation (members that held the face out)",
    "public_test": "PublicTest",
    "private_test": "PrivateTest",
}
VIEW_HELP = (
    "Which faces, and which members vote on each. **Training**: every training face, voted on "
    "by the members that trained on it (each member holds out its own share) — what a report calls "
    "training accuracy. **Validation**: every training face held out by at least one member, "
    "voted on by the members that held it out (the out-of-bag vote); with one member picked, "
    "exactly that member's validation split. **PublicTest / PrivateTest**: every member votes.")
SORTS = {"confidence_desc": ("confidence", True), "confidence_asc": ("confidence", False),
         "margin_asc": ("margin", False), "margin_desc": ("margin", True)}
SORT_TITLES = {"confidence_desc": "most confident first", "confidence_asc": "least confident first",
               "margin_asc": "closest vote first", "margin_desc": "clearest vote first"}
DIAGONAL, OFF_DIAGONAL = "#2171b5", "#d94801"  # right answers blue, confusions orange
CELL = "cell"  # name of the matrix's point selection


# ---------------------------------------------------------------- cached fer calls
def _mtime(run: Run, view: str) -> int:
    path = run.predictions_file("train" if view in ("train", "validation") else view)
    return path.stat().st_mtime_ns if path else 0  # no file: fer raises the real error


@st.cache_data(show_spinner="Counting votes…", max_entries=64)
def _view(run_id: str, run_path: str, view: str, who: str | int, mtime: int) -> dict:
    return fc.confusion_view(Run(Path(run_path)), view, who)


def confusion_view(run: Run, view: str, who: str | int) -> dict:
    """:func:`fer.confusion.confusion_view`, cached until the predictions change."""
    return _view(run.id, str(run.path), view, who, _mtime(run, view))


@st.cache_data(show_spinner=False, max_entries=64)
def _fixes(run_id: str, run_path: str, view: str, member: int | None, how: str, mtime: int) -> dict:
    return fc.ensemble_fixes(Run(Path(run_path)), view, member, how)


def ensemble_fixes(run: Run, view: str, member: int | None, how: str) -> dict:
    """:func:`fer.confusion.ensemble_fixes`, cached until the predictions change."""
    return _fixes(run.id, str(run.path), view, member, how, _mtime(run, view))


@st.cache_data(show_spinner="Collecting out-of-bag votes…", max_entries=8)
def _oob(run_id: str, run_path: str, mtime: int) -> dict:
    return fc.out_of_bag(Run(Path(run_path)))


def out_of_bag(run: Run) -> dict:
    """:func:`fer.confusion.out_of_bag`, cached until the training predictions change."""
    return _oob(run.id, str(run.path), _mtime(run, "train"))


@st.cache_data(show_spinner=False, max_entries=256)
def _face(run_id: str, run_path: str, view: str, pos: int, mtime: int) -> dict:
    return fc.face_probabilities(Run(Path(run_path)), view, pos)


def face_probabilities(run: Run, view: str, pos: int) -> dict:
    """:func:`fer.confusion.face_probabilities`, cached."""
    return _face(run.id, str(run.path), view, int(pos), _mtime(run, view))


@st.cache_data(show_spinner="Reading the FER+ votes…", max_entries=4)
def _ferplus(path: str, mtime: int, ds_id: str, _ds: FaceDataset) -> np.ndarray:
    return fc.ferplus_votes(path, _ds)


def ferplus_votes(path: str, ds: FaceDataset) -> np.ndarray:
    """:func:`fer.confusion.ferplus_votes` for the dataset ``ds``, cached per file and dataset.
    Raises DataPathError for a path outside ``FER_DATA_ROOT`` (:func:`ui.allowed_source`)."""
    p = Path(ui.allowed_source(path))
    return _ferplus(str(p), p.stat().st_mtime_ns if p.exists() else 0, ds.id, ds)


def prewarm(run: Run, views: list[str], how: str) -> None:
    """Fill the caches of every view's vote and fixed/broken faces for ``how``, once per session,
    run and predictions: the first switch to the 28k training faces then redraws as fast as a
    later one. Called at the end of the page, after everything is drawn."""
    done = st.session_state.setdefault("_cm_warm", set())
    for view in views:
        token = (run.id, view, how, _mtime(run, view))
        if token not in done:
            data = confusion_view(run, view, how)
            if data["cm"].sum():
                class_count_spec(run, data)
                matrix_spec(data["cm"], False, None)
            ensemble_fixes(run, view, None, how)  # the page compares with the median member first
            done.add(token)


# ---------------------------------------------------------------- the matrix
def who_options(members: list[int]) -> list[str]:
    """Voter choices: ``majority``, ``soft``, then ``member <id>`` per finished member."""
    return ["majority", "soft", *(f"member {m}" for m in members)]


def who_value(option: str) -> str | int:
    """``majority`` / ``soft`` as is; ``member 3`` → 3."""
    return int(option.split()[1]) if option.startswith("member ") else option


def _shade(colour: str, t: np.ndarray) -> list[str]:
    """Hex colours from white (t = 0) to ``colour`` (t = 1)."""
    end = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    rgb = 255 + (end - 255) * np.clip(t, 0, 1)[:, None]
    return ["#" + "".join(f"{round(v):02x}" for v in c) for c in rgb]


def matrix_frame(cm: np.ndarray, normalise: bool) -> pd.DataFrame:
    """One row per cell: true, predicted, count, share (of the true class), cell colour and text
    colour. Right answers shade blue, confusions orange, each on its own scale (by row share when
    ``normalise``, else by count relative to the largest cell of its kind), so that confusions
    stay visible beside a dark diagonal."""
    cm = np.asarray(cm)
    share = row_normalised(cm)
    c = len(cm)
    true, pred = np.divmod(np.arange(c * c), c)
    diag = true == pred
    value = (share if normalise else cm.astype(np.float64)).ravel()
    t = np.zeros(c * c)
    for part in (diag, ~diag):
        top = value[part].max() if part.any() else 0
        t[part] = value[part] / top if top > 0 else 0
    fill = np.where(diag, _shade(DIAGONAL, t), _shade(OFF_DIAGONAL, t))
    return pd.DataFrame({
        "true": np.array(CLASS_NAMES)[true], "predicted": np.array(CLASS_NAMES)[pred],
        "count": cm.ravel(), "share": share.ravel(), "fill": fill,
        "ink": np.where(t > 0.55, "white", "#222"), "kind": np.where(diag, "right", "confused")})


HIGHLIGHT = "picked_cell"  # named dataset of the outlined cell, filled in per rerun


def matrix_chart(cm: np.ndarray, normalise: bool) -> alt.LayerChart:
    """Confusion matrix: rows = true class, columns = predicted, each cell its count and its share
    of the true class; clicking a cell selects it (point selection ``cell`` on true, predicted).
    The cell listed in the named dataset ``picked_cell`` is outlined (see :func:`matrix_spec`)."""
    df = matrix_frame(cm, normalise)
    order = list(CLASS_NAMES)
    x = alt.X("predicted:N", sort=order, title="predicted class",
              axis=alt.Axis(orient="top", labelAngle=0, labelFontSize=13, titleFontSize=13))
    y = alt.Y("true:N", sort=order, title="true class", axis=alt.Axis(labelFontSize=13, titleFontSize=13))
    pick = alt.selection_point(name=CELL, fields=["true", "predicted"], on="click", toggle=False,
                               clear=False)
    tooltip = [alt.Tooltip("true:N", title="true class"), alt.Tooltip("predicted:N", title="predicted"),
               alt.Tooltip("count:Q", title="faces", format=","),
               alt.Tooltip("share:Q", title="share of the true class", format=".1%")]
    base = alt.Chart(df).encode(x=x, y=y)
    cells = base.mark_rect(stroke="white", strokeWidth=1, cursor="pointer").encode(
        color=alt.Color("fill:N", scale=None), tooltip=tooltip).add_params(pick)
    big, small = ("share", "count") if normalise else ("count", "share")
    fmt = {"share": ".0%", "count": ","}
    first = base.mark_text(dy=-8, fontSize=15, fontWeight="bold").encode(
        text=alt.Text(f"{big}:Q", format=fmt[big]), color=alt.Color("ink:N", scale=None), tooltip=tooltip)
    second = base.mark_text(dy=10, fontSize=11).encode(
        text=alt.Text(f"{small}:Q", format=fmt[small]), color=alt.Color("ink:N", scale=None), tooltip=tooltip)
    outline = alt.Chart(alt.NamedData(name=HIGHLIGHT)).mark_rect(fillOpacity=0, stroke="#111", strokeWidth=3.5).encode(
        x=x, y=y)
    return alt.layer(cells, first, second, outline).properties(width=alt.Step(60), height=alt.Step(52))


@st.cache_data(show_spinner=False, max_entries=64)
def _matrix_spec(cm: tuple, normalise: bool) -> dict:
    return matrix_chart(np.array(cm), normalise).to_dict(validate=False)  # validated in the tests


def matrix_spec(cm: np.ndarray, normalise: bool, selected: tuple[int, int] | None) -> dict:
    """The Vega-Lite spec of :func:`matrix_chart` with cell ``selected`` (true, predicted) outlined.

    Altair builds the spec once per (matrix, normalise), ~0.1 s on a busy CPU; a
    click only swaps the outlined cell, so that it redraws fast.
    """
    spec = _matrix_spec(tuple(map(tuple, np.asarray(cm).tolist())), normalise)  # a copy
    spec.setdefault("datasets", {})[HIGHLIGHT] = (
        [] if selected is None else [{"true": CLASS_NAMES[selected[0]], "predicted": CLASS_NAMES[selected[1]]}])
    return spec


def clicked_cell(event) -> tuple[int, int] | None:
    """(true, predicted) class indices of a matrix click (the ``cell`` selection), or None."""
    points = ((event or {}).get("selection") or {}).get(CELL) or []
    if not points:
        return None
    point = points[0]
    try:
        return CLASS_NAMES.index(point["true"]), CLASS_NAMES.index(point["predicted"])
    except (KeyError, ValueError):
        return None


def on_matrix_click(chart_key: str, true_key: str, pred_key: str) -> None:
    """Callback of the matrix: copy a clicked cell into the two class pickers."""
    cell = clicked_cell(st.session_state.get(chart_key))
    if cell is not None:
        st.session_state[true_key], st.session_state[pred_key] = cell


def pick_cell(true: int, pred: int, true_key: str, pred_key: str, nonce_key: str) -> None:
    """Callback: select cell (true, pred) in the pickers and start a fresh matrix (its old click
    would otherwise stay highlighted in the browser)."""
    st.session_state[true_key], st.session_state[pred_key] = int(true), int(pred)
    st.session_state[nonce_key] = st.session_state.get(nonce_key, 0) + 1


# ---------------------------------------------------------------- per class
PERCENT_COLUMNS = ("precision", "recall", "F1")


def per_class_frame(view: dict) -> pd.DataFrame:
    """One row per class: precision, recall, F1 (in %), support, training faces."""
    s = view["scores"]
    counts = view["train_counts"]
    return pd.DataFrame({
        "class": list(CLASS_NAMES), "precision": 100 * s["precision"], "recall": 100 * s["recall"],
        "F1": 100 * s["f1"], "support": s["support"],
        "train faces": counts if counts is not None else [None] * len(CLASS_NAMES)})


def class_count_chart(view: dict) -> alt.LayerChart:
    """Per-class accuracy (recall, dots, left axis) and training faces (bars, right axis), classes
    ordered from the fewest training faces to the most."""
    df = per_class_frame(view).rename(columns={"train faces": "train"})
    df["recall"] /= 100
    order = df.sort_values("train", kind="stable")["class"].tolist() if df["train"].notna().all() else list(CLASS_NAMES)
    x = alt.X("class:N", sort=order, title="classes, fewest training faces first",
              axis=alt.Axis(labelAngle=-35, labelOverlap=False))
    tooltip = [alt.Tooltip("class:N"), alt.Tooltip("train:Q", title="training faces", format=","),
               alt.Tooltip("recall:Q", title="accuracy (recall)", format=".1%"),
               alt.Tooltip("support:Q", title="faces in this view", format=",")]
    bars = alt.Chart(df).mark_bar(color="#d9d9d9", width=alt.RelativeBandSize(0.6)).encode(
        x=x, y=alt.Y("train:Q", title="training faces (grey bars)", axis=alt.Axis(orient="right", grid=False,
                                                                                   titleColor="#888")),
        tooltip=tooltip)
    y = alt.Y("recall:Q", title="recall (dots)", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%", titleColor=DIAGONAL))
    line = alt.Chart(df).mark_line(color=DIAGONAL, strokeWidth=1.5, opacity=0.6).encode(x=x, y=y)
    dots = alt.Chart(df).mark_circle(size=90, color=DIAGONAL, opacity=1).encode(x=x, y=y, tooltip=tooltip)
    text = alt.Chart(df).mark_text(dy=-12, fontSize=11, color=DIAGONAL).encode(
        x=x, y=y, text=alt.Text("recall:Q", format=".0%"))
    return alt.layer(bars, line + dots + text).resolve_scale(y="independent").properties(height=250)


@st.cache_data(show_spinner=False, max_entries=64)
def _class_count_spec(run_id: str, view: str, who: str | int, mtime: int, _data: dict) -> dict:
    return class_count_chart(_data).to_dict(validate=False)  # validated in the tests


def class_count_spec(run: Run, view: dict) -> dict:
    """:func:`class_count_chart` of a :func:`confusion_view` as a Vega-Lite spec, cached."""
    return _class_count_spec(run.id, view["view"], view["who"], _mtime(run, view["view"]), view)


# ---------------------------------------------------------------- one face, every member
def member_frame(face: dict, view: str) -> pd.DataFrame:
    """One row per (member, class): who (with whether it votes on this face), class, probability,
    votes (bool); then the voters' mean."""
    base = "train" if view in ("train", "validation") else view
    whos = []
    for m, held in zip(face["members"], face["held_out"]):
        note = "" if base != "train" else (" · held out" if held else " · trained on it")
        whos.append(f"member {m}{note}")
    rows = [dict(who=w, cls=CLASS_NAMES[c], p=float(face["probs"][i, c]), votes=bool(face["votes"][i]))
            for i, w in enumerate(whos) for c in range(len(CLASS_NAMES))]
    if face["votes"].any():
        mean = face["probs"][face["votes"]].mean(axis=0)
        rows += [dict(who="mean of the voters", cls=CLASS_NAMES[c], p=float(mean[c]), votes=True)
                 for c in range(len(CLASS_NAMES))]
    return pd.DataFrame(rows)


def member_chart(face: dict, view: str) -> alt.LayerChart:
    """Heat map of every member's probabilities on one face (rows = members, columns = classes);
    members that do not vote on this face in this view are faded; the true class is marked."""
    df = member_frame(face, view)
    whos = list(dict.fromkeys(df["who"]))
    x = alt.X("cls:N", sort=list(CLASS_NAMES), title=None,
              axis=alt.Axis(orient="top", labelAngle=-50, labelOverlap=False, labelAlign="left"))
    y = alt.Y("who:N", sort=whos, title=None, axis=alt.Axis(labelLimit=200, labelOverlap=False, labelFontSize=11))
    tip = [alt.Tooltip("who:N", title="who"), alt.Tooltip("cls:N", title="class"),
           alt.Tooltip("p:Q", title="probability", format=".1%"), alt.Tooltip("votes:N", title="votes here")]
    base = alt.Chart(df).encode(x=x, y=y)
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("p:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"), legend=None),
        opacity=alt.condition("datum.votes", alt.value(1.0), alt.value(0.3)), tooltip=tip)
    text = base.transform_filter("datum.p >= 0.05").mark_text(fontSize=10).encode(
        text=alt.Text("p:Q", format=".0%"),
        color=alt.condition("datum.p > 0.6", alt.value("white"), alt.value("#222")), tooltip=tip)
    true = pd.DataFrame({"cls": [CLASS_NAMES[face["label"]]]})
    mark = alt.Chart(true).mark_rule(color="#2ca02c", strokeWidth=2, strokeDash=[4, 3]).encode(
        x=alt.X("cls:N", sort=list(CLASS_NAMES), bandPosition=0))
    mark_end = alt.Chart(true).mark_rule(color="#2ca02c", strokeWidth=2, strokeDash=[4, 3]).encode(
        x=alt.X("cls:N", sort=list(CLASS_NAMES), bandPosition=1))
    return alt.layer(cells, text, mark, mark_end).properties(width=alt.Step(27), height=alt.Step(19))


@st.cache_data(show_spinner=False, max_entries=256)
def _member_spec(run_id: str, view: str, pos: int, mtime: int, _face: dict) -> dict:
    return member_chart(_face, view).to_dict(validate=False)  # validated in the tests


def face_details(run: Run, ds: FaceDataset, view: str, pos: int, caption: str) -> None:
    """The details of one face: enlarged, its caption, every member's probabilities."""
    face = face_probabilities(run, view, pos)
    st.image(ui.face_image(ds.images[face["row"]], scale=4))
    st.markdown(_md(caption))
    st.vega_lite_chart(_member_spec(run.id, view, int(pos), _mtime(run, view), face), width="content")
    voters = int(face["votes"].sum())
    st.caption(f"{voters} of {len(face['members'])} members vote on this face here (faded rows do "
               "not). Dashed green: the true class.")
    st.page_link("app_pages/saliency.py", label="Where do the members look on this face? (Saliency)",
                 icon=":material/visibility:", query_params={"face": int(face["row"])})


# ---------------------------------------------------------------- galleries
def _md(caption: str) -> str:
    """A multi-line caption as Markdown (hard line breaks)."""
    return caption.replace("\n", "  \n")


def _open(state_key: str, pos: int) -> None:
    st.session_state[state_key] = int(pos)


@st.fragment  # paging or opening a face redraws this gallery only
def gallery(run: Run, ds: FaceDataset, view: str, faces: dict, idx: np.ndarray, captions: list[str] | None,
            key: str, per_page: int = 20, columns: int = 5, caption_for=None) -> None:
    """A paged grid of the faces ``faces[idx]`` (``rows`` = dataset rows, ``pos`` = positions in
    the view's predictions), each with its caption and a Details button, and, beside the grid,
    the details of the face last opened (:func:`face_details`).

    ``captions`` (one per face of ``idx``) or ``caption_for`` (called with the indices of one
    page) gives the tiles' text; ``key`` names the gallery's widgets (page, opened face).
    """
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        st.caption("No faces.")
        return
    pages = -(-len(idx) // per_page)
    grid, side = st.columns([2.9, 2], gap="medium")
    with grid:
        page = 1
        if pages > 1:
            nav, info = st.columns([1, 3], vertical_alignment="bottom")
            page = int(nav.number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}_page"))
            lo = (page - 1) * per_page
            info.caption(f"faces {lo + 1}–{min(lo + per_page, len(idx))} of {len(idx):,}")
        shown = idx[(page - 1) * per_page: page * per_page]
        texts = caption_for(shown) if caption_for else captions[(page - 1) * per_page: page * per_page]
        opened = st.session_state.get(f"{key}_face")
        for start in range(0, len(shown), columns):
            cols = st.columns(columns)
            for col, i, text in zip(cols, shown[start:start + columns], texts[start:start + columns]):
                pos = int(faces["pos"][i])
                with col:
                    st.image(ui.face_image(ds.images[faces["rows"][i]], scale=2))
                    st.button("Details", key=f"{key}_open_{pos}", on_click=_open, args=(f"{key}_face", pos),
                              type="primary" if pos == opened else "secondary", width="stretch")
                    st.caption(_md(text))
    with side:
        where = np.flatnonzero(faces["pos"][idx] == opened) if opened is not None else []
        if len(where) == 0:
            st.info("Press **Details** under a face to see every member's probabilities for it.",
                    icon=":material/touch_app:")
            return
        i = idx[where[0]]
        text = caption_for(np.array([i]))[0] if caption_for else captions[int(where[0])]
        face_details(run, ds, view, int(faces["pos"][i]), text)


def strip(ds: FaceDataset, faces: dict, idx: np.ndarray) -> None:
    """A row of small faces captioned with their dataset row and the vote's confidence."""
    if len(idx) == 0:
        st.caption("No faces.")
        return
    st.image([ui.face_image(ds.images[faces["rows"][i]], scale=2) for i in idx],
             caption=[f"#{faces['rows'][i]} · {faces['confidence'][i]:.0%}" for i in idx])


def confusion_strips(ds: FaceDataset, faces: dict, tops: list[dict], keys: tuple[str, str, str]) -> None:
    """Top confusions, one bordered row each: title, count, share of the true class, a button that
    opens the cell in the gallery above, and a strip of the cell's most confident faces."""
    for n, top in enumerate(tops):
        true, pred = CLASS_NAMES[top["true"]], CLASS_NAMES[top["pred"]]
        with st.container(border=True):
            head, button = st.columns([4, 1], vertical_alignment="center")
            head.markdown(f"**{n + 1}. true {true}, predicted {pred}** · {top['count']:,} faces "
                          f"({top['row_share']:.0%} of the {true} faces)")
            button.button("Open the cell", key=f"cm_top_{top['true']}_{top['pred']}", on_click=pick_cell,
                          args=(top["true"], top["pred"], *keys), width="stretch")
            strip(ds, faces, top["idx"])
