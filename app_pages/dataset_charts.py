"""What the Dataset page draws: the cached audit, provenance lines, the split × class counts chart,
sample rows per class, duplicate and leaked pairs as side-by-side thumbnails, and FER+ vote bars.

Numbers come from ``fer`` (:class:`fer.data.FaceDataset`, :func:`fer.data.audit.audit`); this module
only caches them per dataset content (sha256) and shapes them into captions, thumbnails and long
tables for Altair.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from fer.data import SPLITS, UNLABELLED_SPLIT, FaceDataset
from fer.data.audit import NEAR_CONSTANT_STD, Audit, audit, leaked_pairs
from fer.data.ferplus import VOTE_COLUMNS, VOTE_TO_CLASS, majority_vote
from fer.labels import CLASS_NAMES, SPLIT_TITLES

BOTH, MAJORITY, FER2013 = "FER+ majority = FER2013 label", "FER+ majority", "FER2013 label"
UNLABELLED = -1                     # "class" of the unlabelled rows of a homework test.csv
PER_PAGE = 30                       # faces per page of the sample grid
SAMPLE_SCALE = 3                    # sample faces drawn 144 px wide
PAIRS_PER_PAGE = 12                 # side-by-side pairs per page
SPLIT_COLOURS = {"Training": "#4c78a8", "PublicTest": "#f58518", "PrivateTest": "#54a24b"}
CONFLICT_RGB = (214, 39, 40)        # frame of a pair whose two labels differ
SAME_RGB = (200, 200, 200)          # frame of a pair with equal labels
TITLES = {**SPLIT_TITLES, UNLABELLED_SPLIT: "test.csv (unlabelled)"}
# leak name (as in the audit summary's "leakage"): what the page calls it
LEAKS = {"public_test_in_train": "PublicTest faces also in Training",
         "private_test_in_train": "PrivateTest faces also in Training",
         "private_test_in_public_test": "PrivateTest faces also in PublicTest",
         "test_in_train": "test.csv faces also in train.csv"}


# ---------------------------------------------------------------- the cached audit
@st.cache_resource(max_entries=4, show_spinner="Auditing the dataset (blank faces, duplicates, leakage)…")
def _audit(sha256: str, rows: int, _ds: FaceDataset) -> Audit:
    return audit(_ds)


def dataset_audit(ds: FaceDataset) -> Audit:
    """:func:`fer.data.audit.audit` of ``ds``, computed once per dataset content (sha256, rows);
    shared by every session: never mutate it."""
    return _audit(str(ds.provenance.get("sha256", ds.id)), len(ds), ds)


# ---------------------------------------------------------------- names and captions
def class_name(label: int) -> str:
    """``Angry`` … ``Neutral``; ``unlabelled`` for -1."""
    return CLASS_NAMES[label].capitalize() if label >= 0 else "unlabelled"


def row_name(ds: FaceDataset, i: int) -> str:
    """How the source names row ``i``: its file, ``id`` (test.csv), or its 0-based data row."""
    if ds.files is not None:
        return str(ds.files[i]).rsplit("/", 1)[-1]
    if ds.row_ids is not None:
        return f"{'id' if ds.splits[i] == UNLABELLED_SPLIT else 'row'} {int(ds.row_ids[i])}"
    return f"row {i}"


def face_captions(ds: FaceDataset, rows: np.ndarray, std: np.ndarray | None = None) -> list[str]:
    """One caption per row: name · split · label (· FER2013's label for FER+ · pixel std)."""
    out = []
    for i in rows:
        parts = [row_name(ds, i), TITLES.get(str(ds.splits[i]), str(ds.splits[i])), class_name(int(ds.labels[i]))]
        if ds.fer2013_labels is not None:
            parts[-1] = f"FER+ {parts[-1]} (FER2013 {class_name(int(ds.fer2013_labels[i]))})"
        if std is not None:
            parts.append(f"std {float(std[i]):.2f}")
        out.append(" · ".join(parts))
    return out


def sample_captions(ds: FaceDataset, rows: np.ndarray) -> list[str]:
    """Short captions for the sample grid (``st.image`` widens a face to its caption, and the class
    is the picked one): the row's name, and for a face FER+ relabelled, FER2013's label (``was Fear``)."""
    out = [row_name(ds, i) for i in rows]
    if ds.fer2013_labels is not None:
        out = [c if ds.fer2013_labels[i] == ds.labels[i] else f"{c} · was {class_name(int(ds.fer2013_labels[i]))}"
               for c, i in zip(out, rows)]
    return out


def short_captions(ds: FaceDataset, rows: np.ndarray) -> list[str]:
    """``row 6458 · Angry``: name and label of each row."""
    return [f"{row_name(ds, i)} · {class_name(int(ds.labels[i]))}" for i in rows]


def flagged_table(ds: FaceDataset, rows: np.ndarray, std: np.ndarray) -> pd.DataFrame:
    """One line per flagged row: row, split, label, pixel std, min and max grey level."""
    flat = ds.images[rows].reshape(len(rows), -1)
    return pd.DataFrame({"row": [row_name(ds, i) for i in rows],
                         "split": [TITLES.get(str(s), str(s)) for s in ds.splits[rows]],
                         "label": [class_name(int(c)) for c in ds.labels[rows]],
                         "pixel std": std[rows].astype(float), "min": flat.min(axis=1), "max": flat.max(axis=1)})


# ---------------------------------------------------------------- provenance
def provenance_lines(ds: FaceDataset) -> list[str]:
    """Markdown lines: format, source, sha256, rows per split, cache; FER+ rule and exclusions."""
    p = ds.provenance
    sizes = " · ".join(f"{TITLES[s]} {int((ds.splits == s).sum()):,}" for s in ds.split_names())
    lines = [f"**Format:** {p.get('format', '?')}",
             f"**Source:** `{p.get('source', '?')}`",
             f"**sha256:** `{p.get('sha256', '?')}`" + (" (the generator, not a file)" if ds.is_synthetic else ""),
             f"**Rows:** {len(ds):,} faces — {sizes}"]
    if p.get("description"):
        lines.append(f"**What:** {p['description']}")
    if p.get("cache") in ("hit", "miss"):
        lines.append("**Parsed:** " + ("read from the parsed-data cache (the file itself was parsed once, earlier)"
                                       if p["cache"] == "hit" else "parsed now and stored in the cache for next time"))
    plus = p.get("ferplus")
    if plus:
        ex = plus.get("excluded", {})
        lines.append(f"**FER+ votes:** `{plus.get('file', '?')}` joined by row position; {plus.get('kept', 0):,} "
                     f"of {plus.get('rows', 0):,} rows kept, excluded: "
                     + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in ex.items()))
        lines.append(f"**FER+ labels:** {plus.get('rule', '')}")
    if p.get("excluded_classes"):
        lines.append("**Excluded class folders:** " + ", ".join(f"{k} ({v:,})" for k, v in p["excluded_classes"].items()))
    return lines


def unlabelled_count(ds: FaceDataset) -> int:
    """Rows without a label (a homework test.csv)."""
    return int((ds.labels < 0).sum())


def ferplus_agreement(ds: FaceDataset) -> float:
    """Share (0..1) of kept faces whose FER+ majority label equals FER2013's label."""
    return float((ds.labels == ds.fer2013_labels).mean()) if len(ds) else 0.0


# ---------------------------------------------------------------- counts
def counts_frame(ds: FaceDataset) -> pd.DataFrame:
    """Long table, one row per (split, class): split title, class, class index, count, share of the
    class among all labelled faces (0..1), total of the class."""
    counts = ds.counts()
    rows = [{"split": SPLIT_TITLES[s], "class": class_name(c), "index": c, "count": int(counts[s][c])}
            for s in SPLITS for c in range(len(CLASS_NAMES))]
    df = pd.DataFrame(rows)
    total = df.groupby("index")["count"].transform("sum")
    df["class total"] = total
    df["share"] = total / max(1, int(df["count"].sum()))
    return df[df.groupby("split")["count"].transform("sum") > 0].reset_index(drop=True)


def counts_table(df: pd.DataFrame) -> pd.DataFrame:
    """Wide table: a row per split (+ All), a column per class (+ total)."""
    wide = df.pivot(index="split", columns="class", values="count")
    wide = wide.reindex(index=[s for s in SPLIT_COLOURS if s in wide.index],
                        columns=[class_name(c) for c in range(len(CLASS_NAMES))])
    wide.loc["All"] = wide.sum()
    wide["total"] = wide.sum(axis=1)
    return wide.rename_axis("split").reset_index()


def imbalance_note(df: pd.DataFrame) -> str:
    """One sentence naming the rarest and the most common class, their shares and ratio."""
    totals = df.groupby("class", sort=False)["count"].sum()
    rare, common = totals.idxmin(), totals.idxmax()
    n = int(totals.sum())
    if totals[rare] == 0:
        return (f"**Class imbalance:** **{rare}** has no faces at all; the most common class, "
                f"**{common}**, has {int(totals[common]):,} of {n:,}.")
    ratio = f"{totals[common] / totals[rare]:.0f}×"
    return (f"**Class imbalance:** the rarest class, **{rare}**, has {int(totals[rare]):,} faces "
            f"({totals[rare] / n:.1%} of {n:,}); the most common, **{common}**, has "
            f"{int(totals[common]):,} ({totals[common] / n:.1%}) — {ratio} as many.")


def counts_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Horizontal bars, one per class (FER2013 order), stacked by split; the class total and its
    share of all labelled faces written at the end of each bar."""
    order = [class_name(c) for c in range(len(CLASS_NAMES))]
    splits = [s for s in SPLIT_COLOURS if s in set(df["split"])]
    df = df.assign(split_order=df["split"].map({s: i for i, s in enumerate(SPLIT_COLOURS)}))
    y = alt.Y("class:N", sort=order, title=None, axis=alt.Axis(labelFontSize=13))
    bars = alt.Chart(df).mark_bar().encode(
        y=y,
        x=alt.X("count:Q", stack="zero", title="faces"),
        color=alt.Color("split:N", title="split", sort=splits,
                        scale=alt.Scale(domain=splits, range=[SPLIT_COLOURS[s] for s in splits]),
                        legend=alt.Legend(orient="top", title=None, labelFontSize=13)),
        order=alt.Order("split_order:Q"),
        tooltip=[alt.Tooltip("class:N"), alt.Tooltip("split:N"), alt.Tooltip("count:Q", format=","),
                 alt.Tooltip("class total:Q", format=","), alt.Tooltip("share:Q", format=".1%",
                                                                       title="share of all faces")],
    )
    totals = df.drop_duplicates("class").assign(
        label=lambda d: [f"{t:,} ({s:.1%})" for t, s in zip(d["class total"], d["share"])])
    text = alt.Chart(totals).mark_text(align="left", dx=4, fontSize=12).encode(
        y=y, x=alt.X("class total:Q"), text="label:N")
    # Streamlit fits the whole chart (title, legend, axis included) into the height
    return (bars + text).properties(height=40 * len(order) + 110, title="Faces per class, stacked by split")


# ---------------------------------------------------------------- sample faces
def class_options(ds: FaceDataset) -> list[int]:
    """Class indices 0..6, plus -1 when the dataset has unlabelled rows."""
    return list(range(len(CLASS_NAMES))) + ([UNLABELLED] if unlabelled_count(ds) else [])


def class_option_label(ds: FaceDataset, label: int) -> str:
    """``Disgust (547)``: class name and how many faces carry it."""
    return f"{class_name(label)} ({int((ds.labels == label).sum()):,})"


def sample_rows(ds: FaceDataset, label: int, split: str | None, relabelled_only: bool = False) -> np.ndarray:
    """Rows (int64, ascending) of class ``label`` (-1: unlabelled) in ``split`` (None: all splits);
    ``relabelled_only``: only FER+ faces whose FER+ label differs from FER2013's."""
    keep = ds.labels == label
    if split:
        keep &= ds.splits == split
    if relabelled_only and ds.fer2013_labels is not None:
        keep &= ds.labels != ds.fer2013_labels
    return np.flatnonzero(keep).astype(np.int64)


def n_pages(n: int, per_page: int) -> int:
    """Pages needed for ``n`` items (at least 1)."""
    return max(1, -(-n // per_page))


def page_of(rows: np.ndarray, page: int, per_page: int) -> np.ndarray:
    """Items of 1-based ``page`` (clamped to the last page)."""
    page = min(max(1, page), n_pages(len(rows), per_page))
    return rows[(page - 1) * per_page: page * per_page]


# ---------------------------------------------------------------- pairs side by side
def pair_strips(ds: FaceDataset, pairs: np.ndarray, gap: int = 6, frame: int = 3, bar: int = 5) -> np.ndarray:
    """Two faces side by side per pair: uint8 RGB ``(P, 48 + bar + 2 frame, 96 + gap + 2 frame, 3)``.

    Under each face a bar in its split's colour (:data:`SPLIT_COLOURS`, as in the counts chart);
    the frame is red where the two labels differ (:func:`labels_differ`), light grey otherwise.
    """
    h, w = 48 + bar + 2 * frame, 96 + gap + 2 * frame
    out = np.empty((len(pairs), h, w, 3), dtype=np.uint8)
    out[:] = np.where(labels_differ(ds, pairs)[:, None, None, None], CONFLICT_RGB, SAME_RGB).astype(np.uint8)
    out[:, frame:frame + 48 + bar, frame + 48:frame + 48 + gap] = 255
    for side, x in ((0, frame), (1, frame + 48 + gap)):
        out[:, frame:frame + 48, x:x + 48] = ds.images[pairs[:, side]][..., None]
        out[:, frame + 48:frame + 48 + bar, x:x + 48] = split_rgb(ds.splits[pairs[:, side]])[:, None, None, :]
    return out


def split_rgb(splits: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 3)``: each split's colour in the counts chart (grey for an unlabelled test split)."""
    table = {s: tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for s, c in SPLIT_COLOURS.items()}
    by_split = {k: table.get(TITLES.get(k, k), (120, 120, 120)) for k in (*SPLITS, UNLABELLED_SPLIT)}
    return np.array([by_split.get(str(s), (120, 120, 120)) for s in splits], dtype=np.uint8).reshape(-1, 3)


def labels_differ(ds: FaceDataset, pairs: np.ndarray) -> np.ndarray:
    """bool ``(P,)``: the two rows of each pair carry different labels (unlabelled differs from nothing)."""
    a, b = ds.labels[pairs[:, 0]], ds.labels[pairs[:, 1]]
    return (a != b) & (a >= 0) & (b >= 0)


def pair_captions(ds: FaceDataset, pairs: np.ndarray) -> list[str]:
    """Short, as ``st.image`` widens an image to its caption: ``30 / 19215 · Happy`` when the labels
    agree, ``157 Angry / 28791 Disgust`` when they differ (rows without the word "row")."""
    def num(i: int) -> str:
        return row_name(ds, i).removeprefix("row ")

    out = []
    for a, b in pairs:
        la, lb = class_name(int(ds.labels[a])), class_name(int(ds.labels[b]))
        out.append(f"{num(a)} / {num(b)} · {la}" if la == lb else f"{num(a)} {la} / {num(b)} {lb}")
    return out


def duplicate_pairs(ds: FaceDataset, result: Audit, differ_only: bool = False) -> np.ndarray:
    """int64 ``(P, 2)`` (first row of a group, a later copy), pairs whose labels differ first;
    ``differ_only`` keeps only those."""
    pairs = result.pairs()
    differ = labels_differ(ds, pairs)
    if differ_only:
        return pairs[differ]
    return pairs[np.argsort(~differ, kind="stable")]


def leaks(ds: FaceDataset, result: Audit) -> dict[str, np.ndarray]:
    """``{"public_test_in_train": (P, 2) pairs, …}``: :func:`fer.data.audit.leaked_pairs` for every
    (split, earlier split) the audit checked, named as in its summary's ``leakage``."""
    return {f"{a}_in_{b}": leaked_pairs(ds, result, a, b) for a, b in result.leaked}


def found_leaks(leaked: dict[str, np.ndarray]) -> list[str]:
    """Names of the leaks with at least one pair."""
    return [name for name, pairs in leaked.items() if len(pairs)]


def leak_splits(name: str) -> tuple[str, str]:
    """``("public_test", "train")`` for ``public_test_in_train``."""
    split, other = name.split("_in_", 1)
    return split, other


def leak_title(name: str) -> str:
    """``PublicTest faces also in Training`` for ``public_test_in_train``."""
    split, other = leak_splits(name)
    return LEAKS.get(name, f"{TITLES.get(split, split)} faces also in {TITLES.get(other, other)}")


def leak_help(ds: FaceDataset, name: str, pairs: np.ndarray) -> str:
    """``280 of the 3,589 PublicTest faces (7.8%) have an exact copy in Training.``"""
    split, other = leak_splits(name)
    n = int((ds.splits == split).sum())
    return (f"{len(pairs):,} of the {n:,} {TITLES.get(split, split)} faces ({len(pairs) / max(1, n):.1%}) "
            f"have an exact copy in {TITLES.get(other, other)}.")


def split_legend(ds: FaceDataset) -> str:
    """``blue Training, orange PublicTest, green PrivateTest``: the bar colours of the splits present."""
    names = {"Training": "blue", "PublicTest": "orange", "PrivateTest": "green"}
    return ", ".join(f"{names.get(TITLES[s], 'grey')} {TITLES[s]}" for s in ds.split_names())


def duplicates_note(ds: FaceDataset, dup: dict) -> str:
    """What the duplicate pairs are and how they are drawn, from the audit summary's ``duplicates``."""
    conflict = (f"In **{dup['conflicting_groups']:,} groups** the copies carry **different labels** — at most "
                "one of them can be right." if dup["conflicting_groups"] else
                "No group carries conflicting labels.")
    return (f"**{dup['rows']:,} faces** fall into **{dup['groups']:,} groups** of pixel-for-pixel identical "
            f"images: {dup['redundant']:,} are extra copies. {conflict} Each pair below is the first face of "
            "a group (left) and one of its copies (right), captioned with their row numbers and labels; the "
            f"bar under a face is its split ({split_legend(ds)}), and a **red frame** marks a pair whose "
            "labels differ.")


def blank_note(ds: FaceDataset, result: Audit) -> str:
    """How many flagged faces are blank (and all black), and how many are only near-constant."""
    black = int((ds.images[result.blank].reshape(len(result.blank), -1).max(axis=1) == 0).sum()) \
        if len(result.blank) else 0
    near = len(result.near_constant) - len(result.blank)
    return (f"{len(result.blank):,} blank (every pixel the same value; {black:,} of them all black) and "
            f"{near:,} more nearly flat (pixel standard deviation below {NEAR_CONSTANT_STD:g} grey levels): "
            f"no face to learn from, whatever their label says.")


# ---------------------------------------------------------------- FER+ votes
def votes_frame(ds: FaceDataset, row: int) -> pd.DataFrame:
    """The 10 FER+ votes of ``row``: column, votes, role (FER+ majority / FER2013 label / both /
    other) and tag, the text written above the bar (empty for other)."""
    votes = ds.votes[row].astype(int)
    win = int(majority_vote(ds.votes[row:row + 1])[0])
    fer = int(ds.fer2013_labels[row])
    is_win = np.arange(len(VOTE_COLUMNS)) == win
    is_fer = VOTE_TO_CLASS == fer
    role = np.select([is_win & is_fer, is_win, is_fer], [BOTH, MAJORITY, FER2013], "other")
    tag = np.select([is_win & is_fer, is_win, is_fer], ["FER+ = FER2013", "FER+", "FER2013"], "")
    return pd.DataFrame({"column": VOTE_COLUMNS, "votes": votes, "role": role, "tag": tag})


def votes_summary(ds: FaceDataset, row: int) -> str:
    """``FER2013 label: **Fear** · FER+ majority: **anger**, 7 of 10 votes``."""
    votes = ds.votes[row]
    win = int(majority_vote(ds.votes[row:row + 1])[0])
    return (f"FER2013 label: **{class_name(int(ds.fer2013_labels[row]))}** · FER+ majority: "
            f"**{VOTE_COLUMNS[win]}**, {int(votes[win])} of {int(votes.sum())} votes")


def votes_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Bars of the 10 votes in FER+ column order, coloured by role, the role written above."""
    colours = {BOTH: "#54a24b", MAJORITY: "#4c78a8", FER2013: "#e45756", "other": "#bbbbbb"}
    x = alt.X("column:N", sort=list(VOTE_COLUMNS), title=None, axis=alt.Axis(labelAngle=-40, labelFontSize=12))
    scale = alt.Scale(domain=list(colours), range=list(colours.values()))
    colour = alt.Color("role:N", title=None, scale=scale, legend=alt.Legend(orient="top", columns=2, labelLimit=260))
    bars = alt.Chart(df).mark_bar().encode(
        x=x, y=alt.Y("votes:Q", title="votes", scale=alt.Scale(domain=[0, 11]), axis=alt.Axis(tickMinStep=1)),
        color=colour, tooltip=["column:N", "votes:Q", "role:N"])
    tags = alt.Chart(df).mark_text(dy=-8, fontWeight="bold", fontSize=12).encode(
        x=x, y="votes:Q", text="tag:N", color=alt.Color("role:N", scale=scale, legend=None))
    # Streamlit fits legend and axes into this height too
    return (bars + tags).properties(height=340, title="FER+ votes (10 taggers)")
