"""What the Ensemble size page draws: cached size curves and reliability bins, the teacher's table,
and the Altair charts (accuracy vs k, disagreement/ECE/NLL vs k, reliability diagram).

Numbers come from ``fer.evaluation`` (:func:`~fer.evaluation.evaluate_run`'s ``size_curve`` and
:func:`~fer.evaluation.member_reliability`); this module only caches them and shapes them into
long tables for Altair. One run is coloured by series (majority vote, soft vote, oracle, ...); two
runs are coloured by run, and the series are told apart by the line's dash.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from fer.evaluation import evaluate_run, member_reliability
from fer.labels import SPLIT_TITLES
from fer.runs import Run

TEST_SPLITS = ("public_test", "private_test")
VOTES = {"majority": "majority vote", "soft": "soft vote"}
ORACLE = "oracle (any member right)"
MEMBERS = "single members (k = 1)"
DISAGREEMENT, ECE, NLL = "member disagreement", "ECE of the soft vote", "NLL of the soft vote"
SERIES_COLOURS = {VOTES["majority"]: "#1f77b4", VOTES["soft"]: "#ff7f0e", ORACLE: "#2ca02c",
                  MEMBERS: "#444444", DISAGREEMENT: "#9467bd", ECE: "#d62728", NLL: "#8c564b"}
SERIES_DASHES = {VOTES["majority"]: [1, 0], VOTES["soft"]: [6, 3], ORACLE: [2, 2],
                 DISAGREEMENT: [1, 0], ECE: [6, 3], NLL: [1, 0]}
RUN_COLOURS = ["#1f77b4", "#e45756"]
# Published FER2013 accuracies, drawn only for runs on the real FER2013. Human: Goodfellow et al.
# 2013, "Challenges in Representation Learning", arXiv:1307.0414 (65 ± 5 %). Winner of the 2013
# Kaggle challenge on PrivateTest: Tang 2013, "Deep Learning using Linear SVMs", arXiv:1306.0239.
REFERENCES = (("human accuracy ≈ 65% (Goodfellow et al. 2013)", 0.65),
              ("2013 challenge winner 71.2% (Tang 2013)", 0.712))


# ---------------------------------------------------------------- cached fer calls
@st.cache_data(show_spinner="Scoring ensembles of every size…", max_entries=32)
def _report(run_id: str, run_path: str, split: str, mtime_ns: int) -> dict:
    return evaluate_run(Path(run_path), split)


def report(run: Run, split: str) -> dict | None:
    """:func:`fer.evaluation.evaluate_run` (with ``size_curve``) of ``run`` on a test split, cached
    per (run id, split, predictions file mtime); None while no member has predictions there."""
    path = run.predictions_file(split)
    if path is None:
        return None
    return _report(run.id, str(run.path), split, path.stat().st_mtime_ns)


def reports(runs: list[Run]) -> dict[str, dict[str, dict | None]]:
    """``{run id: {split: report or None}}`` for both test splits of each run."""
    return {run.id: {split: report(run, split) for split in TEST_SPLITS} for run in runs}


@st.cache_data(show_spinner=False, max_entries=64)
def _reliability(run_id: str, run_path: str, split: str, member: int, mtime_ns: int) -> dict:
    return member_reliability(Path(run_path), split, member)


def reliability(run: Run, split: str, member: int) -> dict:
    """:func:`fer.evaluation.member_reliability`, cached per (run id, split, member, mtime)."""
    path = run.predictions_file(split)
    mtime = path.stat().st_mtime_ns if path else 0  # no file: member_reliability names the problem
    return _reliability(run.id, str(run.path), split, int(member), mtime)


# ---------------------------------------------------------------- tables
def default_sizes(pool: int) -> list[int]:
    """The sizes a report usually shows (1, 9, 15) that a pool of ``pool`` members has, and the pool."""
    return sorted({k for k in (1, 9, 15) if k <= pool} | {pool})


def size_table(by_run: dict[str, dict[str, dict | None]], sizes: list[int], soft: bool) -> pd.DataFrame:
    """The teacher's table: a row per (run, split, vote), a column per ensemble size k, each cell
    the mean accuracy (%) of the k-member ensembles scored (blank when the pool is smaller)."""
    votes = ("majority", "soft") if soft else ("majority",)
    rows = []
    for run_id, splits in by_run.items():
        for split, rep in splits.items():
            curve = {r["k"]: r for r in (rep or {}).get("size_curve") or []}
            for vote in votes:
                row = {"run": run_id, "split": SPLIT_TITLES[split], "vote": VOTES[vote]}
                for k in sizes:
                    row[size_column(k)] = 100 * curve[k][vote]["mean"] if k in curve else None
                rows.append(row)
    table = pd.DataFrame(rows, columns=["run", "split", "vote", *map(size_column, sizes)])
    return table.drop(columns="run") if len(by_run) == 1 else table


def size_column(k: int) -> str:
    """Column title of ensemble size ``k`` in :func:`size_table`."""
    return f"{k} member" if k == 1 else f"{k} members"


def _ensembles(row: dict) -> str:
    """How many ensembles a size-curve row scored, in words."""
    return f"all {row['subsets']:,}" if row["exhaustive"] else f"{row['subsets']:,} drawn at random"


def accuracy_frame(by_run: dict[str, dict]) -> pd.DataFrame:
    """Long table of ``{run id: report}`` size curves: run, series (majority vote, soft vote,
    oracle), k, x (k nudged so the two votes' whiskers do not overlap), mean, std, lo/hi
    (mean ∓ std), min, max, ensembles."""
    rows = []
    for i, (run_id, rep) in enumerate(by_run.items()):
        nudge = (i - (len(by_run) - 1) / 2) * 0.06
        for r in rep["size_curve"]:
            for key, series, shift in (("majority", VOTES["majority"], -0.12), ("soft", VOTES["soft"], 0.12),
                                       ("oracle", ORACLE, 0.0)):
                s = r[key]
                rows.append(dict(run=run_id, series=series, k=r["k"], x=r["k"] + shift + nudge,
                                 mean=s["mean"], std=s["std"], lo=s["mean"] - s["std"],
                                 hi=s["mean"] + s["std"], min=s["min"], max=s["max"], ensembles=_ensembles(r)))
    return pd.DataFrame(rows)


def member_frame(by_run: dict[str, dict]) -> pd.DataFrame:
    """One row per member: run, series, member id, k = 1, accuracy."""
    return pd.DataFrame([dict(run=run_id, series=MEMBERS, member=int(m), k=1, accuracy=acc)
                         for run_id, rep in by_run.items()
                         for m, acc in zip(rep["member_ids"], rep["members"])],
                        columns=["run", "series", "member", "k", "accuracy"])


def measure_frame(by_run: dict[str, dict]) -> pd.DataFrame:
    """Long table of disagreement, ECE and NLL against k: run, series, k, mean, std, lo, hi, min,
    max, ensembles (disagreement starts at k = 2: one member has no one to disagree with)."""
    rows = []
    for run_id, rep in by_run.items():
        for r in rep["size_curve"]:
            for key, series in (("disagreement", DISAGREEMENT), ("ece", ECE), ("nll", NLL)):
                if r[key] is None:
                    continue
                s = r[key]
                rows.append(dict(run=run_id, series=series, k=r["k"], mean=s["mean"], std=s["std"],
                                 lo=s["mean"] - s["std"], hi=s["mean"] + s["std"], min=s["min"],
                                 max=s["max"], ensembles=_ensembles(r)))
    return pd.DataFrame(rows, columns=["run", "series", "k", "mean", "std", "lo", "hi", "min", "max",
                                       "ensembles"])


def reliability_frame(rel: dict) -> pd.DataFrame:
    """Non-empty bins of a :func:`fer.evaluation.member_reliability` result: who (with its ECE),
    bin (range as text), confidence, accuracy, faces."""
    rows = []
    for who, bins in ((f"member {rel['member']} alone", rel["member_bins"]),
                      (f"ensemble of all {len(rel['member_ids'])} (soft vote)", rel["ensemble_bins"])):
        label = f"{who} · ECE {float(bins['ece']):.1%}"
        edges = bins["edges"]
        for b in np.flatnonzero(bins["count"] > 0):
            rows.append(dict(who=label, bin=f"{edges[b]:.2f}–{edges[b + 1]:.2f}",
                             confidence=float(bins["confidence"][b]), accuracy=float(bins["accuracy"][b]),
                             faces=int(bins["count"][b])))
    return pd.DataFrame(rows, columns=["who", "bin", "confidence", "accuracy", "faces"])


# ---------------------------------------------------------------- charts
def _series_legend(columns: int) -> alt.Legend:
    """Line samples; one run's colour and dash legends (same field) merge into this one."""
    return alt.Legend(orient="bottom", columns=columns, labelLimit=320, symbolType="stroke",
                      symbolStrokeWidth=2.5, symbolSize=500, symbolOpacity=1)


def _colour(df: pd.DataFrame, runs: list[str], columns: int = 2) -> alt.Color:
    """Colour by series for one run, by run for two."""
    if len(runs) > 1:
        return alt.Color("run:N", title="run", scale=alt.Scale(domain=runs, range=RUN_COLOURS[:len(runs)]),
                         legend=alt.Legend(orient="bottom", direction="vertical", symbolOpacity=1))
    series = [s for s in SERIES_COLOURS if s in set(df["series"])]
    return alt.Color("series:N", title=None,
                     scale=alt.Scale(domain=series, range=[SERIES_COLOURS[s] for s in series]),
                     legend=_series_legend(columns))


def _dash(df: pd.DataFrame, runs: list[str], columns: int) -> alt.StrokeDash:
    """Line dash by series (with one run, merged into the colour legend)."""
    series = [s for s in SERIES_DASHES if s in set(df["series"])]
    return alt.StrokeDash("series:N", title=None,
                          scale=alt.Scale(domain=series, range=[SERIES_DASHES[s] for s in series]),
                          legend=_series_legend(columns))


def _k_axis(pool: int) -> alt.X:
    return alt.X("k:Q", title="k = members in the ensemble", scale=alt.Scale(domain=[0.5, pool + 0.5], nice=False),
                 axis=alt.Axis(values=list(range(1, pool + 1)), format="d", grid=False))


def _lines(df: pd.DataFrame, runs: list[str], pool: int, y_title: str, fmt: str, bands: list[str],
           colour: alt.Color, columns: int = 2) -> alt.LayerChart:
    """Mean line with points and tooltips per (run, series), ±std band for the ``bands`` series."""
    pct = fmt.endswith("%")
    y = alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False),
              axis=alt.Axis(format=".0%" if pct else ".2f"))
    tooltip = [alt.Tooltip("run:N"), alt.Tooltip("series:N", title="what"), alt.Tooltip("k:Q", title="k"),
               alt.Tooltip("mean:Q", format=fmt), alt.Tooltip("std:Q", title="± std", format=fmt),
               alt.Tooltip("min:Q", title="worst ensemble", format=fmt),
               alt.Tooltip("max:Q", title="best ensemble", format=fmt),
               alt.Tooltip("ensembles:N", title="ensembles scored")]
    base = alt.Chart(df).encode(x=_k_axis(pool), color=colour, detail="run:N")
    band = base.transform_filter(alt.FieldOneOfPredicate("series", bands)).mark_area(opacity=0.15).encode(
        y=alt.Y("lo:Q"), y2="hi:Q", detail="series:N")
    line = base.mark_line(strokeWidth=2).encode(y=y, strokeDash=_dash(df, runs, columns), detail="series:N")
    points = base.mark_point(filled=True, size=45).encode(y=y, detail="series:N", tooltip=tooltip)
    return band + line + points


def accuracy_chart(curves: pd.DataFrame, members: pd.DataFrame, split_title: str,
                   references: bool, oracle: bool = True) -> alt.LayerChart:
    """Accuracy against k: majority and soft vote (mean line, ±std band, min–max whiskers), the
    ``oracle`` (it can stretch the axis far above the votes), each member alone as a dot at k = 1,
    and (``references``) the published FER2013 lines."""
    if not oracle:
        curves = curves[curves["series"] != ORACLE]
    runs = list(dict.fromkeys(curves["run"]))
    pool = int(curves["k"].max())
    both = pd.concat([curves, members.assign(mean=members["accuracy"])], ignore_index=True)
    colour = _colour(both, runs)
    layers = _lines(curves, runs, pool, f"accuracy on {split_title}", ".1%", list(VOTES.values()), colour)
    votes = alt.Chart(curves).transform_filter(alt.FieldOneOfPredicate("series", list(VOTES.values())))
    whisker_tip = [alt.Tooltip("run:N"), alt.Tooltip("series:N", title="what"), alt.Tooltip("k:Q"),
                   alt.Tooltip("min:Q", title="worst ensemble", format=".1%"),
                   alt.Tooltip("max:Q", title="best ensemble", format=".1%"),
                   alt.Tooltip("ensembles:N", title="ensembles scored")]
    whiskers = votes.mark_rule(strokeWidth=1.5, opacity=0.7).encode(
        x=alt.X("x:Q"), y="min:Q", y2="max:Q", color=colour, tooltip=whisker_tip)
    caps = [votes.mark_tick(orient="horizontal", size=9, thickness=1.5, opacity=0.7).encode(
        x=alt.X("x:Q"), y=alt.Y(f"{end}:Q"), color=colour, tooltip=whisker_tip) for end in ("min", "max")]
    dots = alt.Chart(members).mark_circle(size=70, opacity=0.85, stroke="white", strokeWidth=1).encode(
        x=alt.X("k:Q"), y=alt.Y("accuracy:Q"), color=colour,
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("member:N"),
                 alt.Tooltip("accuracy:Q", title="accuracy alone", format=".1%")])
    chart = alt.layer(layers, whiskers, *caps, dots)
    if references:
        for label, value in REFERENCES:
            rule = alt.Chart(pd.DataFrame({"value": [value]})).mark_rule(
                color="#777", strokeDash=[4, 4], tooltip=label).encode(y="value:Q")
            text = alt.Chart(pd.DataFrame({"value": [value]})).mark_text(
                text=label, align="right", baseline="bottom", dx=-4, dy=-2, color="#555", fontSize=11).encode(
                y="value:Q", x=alt.value("width"))
            chart = alt.layer(chart, rule, text)
    return chart.properties(height=460).resolve_scale(color="shared")


def measure_chart(df: pd.DataFrame, series: list[str], y_title: str, fmt: str, title: str) -> alt.LayerChart:
    """Mean ± std of some of :func:`measure_frame`'s series (e.g. disagreement and ECE) against k."""
    part = df[df["series"].isin(series)]
    runs = list(dict.fromkeys(df["run"]))
    pool = int(df["k"].max()) if len(df) else 1
    return _lines(part, runs, pool, y_title, fmt, series, _colour(part, runs, 1), 1).properties(
        height=300, title=title)


def reliability_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Reliability diagram: per confidence bin, mean confidence (x) against fraction right (y),
    point area ∝ faces, one line per classifier, and the diagonal of perfect calibration."""
    whos = list(dict.fromkeys(df["who"]))
    unit = alt.Scale(domain=[0, 1], nice=False)
    diagonal = alt.Chart(pd.DataFrame({"confidence": [0.0, 1.0], "accuracy": [0.0, 1.0]})).mark_line(
        color="#999", strokeDash=[4, 4]).encode(x="confidence:Q", y="accuracy:Q")
    base = alt.Chart(df).encode(
        x=alt.X("confidence:Q", title="confidence (mean top probability in the bin)", scale=unit,
                axis=alt.Axis(format=".0%")),
        y=alt.Y("accuracy:Q", title="fraction right in the bin", scale=unit, axis=alt.Axis(format=".0%")),
        color=alt.Color("who:N", title=None,
                        scale=alt.Scale(domain=whos, range=[SERIES_COLOURS[MEMBERS], SERIES_COLOURS[VOTES["soft"]]]),
                        legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=400)))
    lines = base.mark_line(strokeWidth=2, opacity=0.8)
    points = base.mark_circle(opacity=0.9).encode(
        size=alt.Size("faces:Q", title="faces in the bin", scale=alt.Scale(range=[20, 400]), legend=None),
        tooltip=[alt.Tooltip("who:N", title="who"), alt.Tooltip("bin:N", title="confidence bin"),
                 alt.Tooltip("faces:Q", format=","), alt.Tooltip("confidence:Q", title="mean confidence", format=".1%"),
                 alt.Tooltip("accuracy:Q", title="fraction right", format=".1%")])
    return (diagonal + lines + points).properties(height=400, width=400)
