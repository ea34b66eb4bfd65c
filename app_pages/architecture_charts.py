"""Tables, Altair charts and cached calls for the Architecture page.

Every number comes from ``fer.models.architecture`` and ``fer.derivations``; this module only
shapes them for drawing (strings like "32×24×24", long tables for Altair, LaTeX with the
numbers plugged in) and caches the calls, so the page reads top to bottom.
"""

from __future__ import annotations

import contextlib

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from fer.derivations import (
    batchnorm_backward,
    check_conv2d,
    sliding_windows,
    softmax_cross_entropy_gradient,
)
from fer.errors import FerError
from fer.labels import CLASS_NAMES
from fer.models import architecture

# gradient key of fer.derivations.batchnorm_backward → key of its formula in FORMULAS
BN_GRADIENTS: dict[str, str] = {"x_hat": "bn_dxhat", "var": "bn_dvar", "mean": "bn_dmu",
                                "x": "bn_dx", "gamma": "bn_dgamma", "beta": "bn_dbeta"}

_TYPE_COLOURS = {"Input": "#9e9e9e", "Conv2d": "#4c78a8", "MaxPool2d": "#f58518",
                 "AvgPool2d": "#f58518", "AdaptiveAvgPool2d": "#e45756",
                 "AdaptiveMaxPool2d": "#e45756", "Flatten": "#bab0ac", "Linear": "#54a24b"}
_SHORT = {"Input": "input", "Conv2d": "conv", "MaxPool2d": "pool", "AvgPool2d": "pool",
          "AdaptiveAvgPool2d": "GAP", "AdaptiveMaxPool2d": "GMP", "Flatten": "flat",
          "Linear": "FC"}


# ---------------------------------------------------------------- errors inside one section
@contextlib.contextmanager
def contained():
    """Show a FerError as ``st.error`` and go on with the rest of the page.

    ``ui.guard`` stops the whole script; on this page one section's bad input (a kernel wider
    than its padded input) must not blank the other tabs.
    """
    try:
        yield
    except FerError as e:
        st.error(str(e), icon=":material/error:")


# ---------------------------------------------------------------- cached fer calls
@st.cache_data(show_spinner=False, max_entries=64)
def cached_architecture(model: str, size: int) -> dict:
    """``fer.models.architecture`` of a registered model at a square input of ``size`` px."""
    return architecture(model, int(size))


@st.cache_data(show_spinner=False, max_entries=64)
def cached_conv(height: int, width: int, kernel: int, stride: int, padding: tuple[int, int],
                dilation: int) -> dict:
    """``fer.derivations.check_conv2d`` (square kernel, stride, dilation; padding (h, w))."""
    return check_conv2d(height, width, kernel, stride, padding, dilation)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_windows(height: int, width: int, kernel: int, stride: int, padding: tuple[int, int],
                   dilation: int) -> dict:
    """``fer.derivations.sliding_windows``, same arguments as :func:`cached_conv`."""
    return sliding_windows(height, width, kernel, stride, padding, dilation)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_batchnorm(m: int, features: int, seed: int) -> dict:
    """``fer.derivations.batchnorm_backward`` for an (m, features) mini-batch."""
    return batchnorm_backward(int(m), int(features), int(seed))


@st.cache_data(show_spinner=False, max_entries=32)
def cached_softmax(classes: int, seed: int, scale: float) -> dict:
    """``fer.derivations.softmax_cross_entropy_gradient`` for one sample."""
    return softmax_cross_entropy_gradient(int(classes), 1, int(seed), float(scale))


# ---------------------------------------------------------------- architecture
def _hw(pair) -> str:
    """(h, w) → "h×w"; None → "" (layers without a window)."""
    return "" if pair is None else "×".join(map(str, pair))


def shape_text(shape) -> str:
    """(C, H, W) or (N,) → "C×H×W" / "N"; None → "—"."""
    return "—" if shape is None else "×".join(map(str, shape))


def layer_table(arch: dict) -> pd.DataFrame:
    """One row per layer of an ``architecture`` result: layer, type, kernel, stride, padding,
    output C×H×W, parameters, receptive field and jump (px, height axis; "h×w" strings when
    some layer's two axes differ), MACs."""
    rows = arch["rows"]
    square = all(r["receptive_field_hw"][0] == r["receptive_field_hw"][1]
                 and r["jump_hw"][0] == r["jump_hw"][1] for r in rows)
    rf = [r["receptive_field"] if square else _hw(r["receptive_field_hw"]) for r in rows]
    jump = [r["jump"] if square else _hw(r["jump_hw"]) for r in rows]
    return pd.DataFrame({
        "layer": [r["name"] for r in rows],
        "type": [r["type"] for r in rows],
        "kernel": [_hw(r["kernel_hw"]) for r in rows],
        "stride": [_hw(r["stride_hw"]) for r in rows],
        "padding": [_hw(r["padding_hw"]) for r in rows],
        "output C×H×W": [shape_text(r["output_shape"]) for r in rows],
        "parameters": [r["params"] for r in rows],
        "receptive field (px)": rf,
        "jump (px)": jump,
        "MACs": [r["macs"] for r in rows],
    })


def compact_count(n: int) -> str:
    """538951 → "538,951"; 28681984 → "28.7 M"; big numbers readable at a glance."""
    if n >= 10_000_000_000:
        return f"{n / 1e9:.1f} G"
    if n >= 10_000_000:
        return f"{n / 1e6:.1f} M"
    return f"{n:,}"


def block_diagram(boxes: list[dict], max_width: int = 900) -> alt.LayerChart:
    """The ``block_diagram`` boxes drawn left to right: each box W×H input pixels, equal units on
    both axes, channels above, short layer type below, the full shape in the tooltip."""
    df = pd.DataFrame(boxes)
    df["kind"] = df["type"].map(_SHORT).fillna(df["type"])
    df["colour_type"] = df["type"].where(df["type"].isin(_TYPE_COLOURS), "other")
    left, right = float(df["x"].min()), float(df["x2"].max())
    top = float(df["y2"].max())
    unit = min(4.0, max_width / max(right - left, 1.0))  # screen px per input pixel
    pad = 18 / unit  # room for the labels above and below, in data units
    xs = alt.Scale(domain=[left - 2, right + 2], nice=False)
    ys = alt.Scale(domain=[-top - pad, top + pad], nice=False)
    x, y = alt.X("x:Q", scale=xs, axis=None), alt.Y("y:Q", scale=ys, axis=None)
    domain = [t for t in _TYPE_COLOURS if t in set(df["type"])]
    colour = alt.Color("colour_type:N", title="layer", legend=alt.Legend(orient="bottom"),
                       scale=alt.Scale(domain=domain, range=[_TYPE_COLOURS[t] for t in domain]))
    tooltip = [alt.Tooltip("name:N", title="layer"), alt.Tooltip("type:N"),
               alt.Tooltip("shape_label:N", title="output")]
    base = alt.Chart(df)
    boxes_ = base.mark_rect(stroke="white", strokeWidth=0.5, opacity=0.85).encode(
        x=x, x2="x2:Q", y=y, y2="y2:Q", color=colour, tooltip=tooltip)
    centre = base.transform_calculate(cx="(datum.x + datum.x2) / 2")
    above = centre.mark_text(baseline="bottom", dy=-3, fontSize=11).encode(
        x=alt.X("cx:Q", scale=xs, axis=None), y=alt.Y("y2:Q", scale=ys, axis=None),
        text="label:N", tooltip=tooltip)
    below = centre.mark_text(baseline="top", dy=3, fontSize=10, color="#666").encode(
        x=alt.X("cx:Q", scale=xs, axis=None), y=alt.Y("y:Q", scale=ys, axis=None),
        text="kind:N", tooltip=tooltip)
    width = int((right - left + 4) * unit)
    height = int((2 * top + 2 * pad) * unit)
    return (boxes_ + above + below).properties(width=width, height=max(height, 80))


# ---------------------------------------------------------------- conv output size
def plugged_latex(rule: dict, axis: str) -> str:
    """The output-size rule for one axis with its numbers: "H_out = ⌊(8 + 2·0 − 1·(3−1) − 1)/2⌋
    + 1 = ⌊5/2⌋ + 1 = 2 + 1 = 3" as LaTeX; ``axis`` is "H" or "W"."""
    r = rule
    frac = (rf"\left\lfloor \frac{{{r['input']} + 2\cdot{r['padding']} - {r['dilation']}"
            rf"\cdot({r['kernel']} - 1) - 1}}{{{r['stride']}}} \right\rfloor + 1")
    return (rf"{axis}_\text{{out}} = {frac} = \left\lfloor \frac{{{r['numerator']}}}"
            rf"{{{r['stride']}}} \right\rfloor + 1 = {r['quotient']} + 1 = {r['output']}")


def floor_note(check: dict) -> str:
    """Markdown: per axis whose division is not exact, how many padded rows/columns the floor
    drops and whether they hold real input or only zero padding."""
    parts = []
    for axis, line in (("height", "row"), ("width", "column")):
        r = check["axes"][axis]
        if not r["floor_matters"]:
            continue
        n, lost = r["remainder"], max(0, r["remainder"] - r["padding"])
        lines = f"last {line}" if n == 1 else f"last {n} {line}s"
        what = ("only zero padding, so no input pixel is lost" if not lost
                else "real input pixels" if lost == n
                else f"{lost} of them real input, {n - lost} zero padding")
        parts.append(f"**{axis.capitalize()}**: {r['numerator']}/{r['stride']} is not a whole "
                     f"number, so the floor drops the {lines} of the padded grid ({what}): "
                     "no window reaches that far.")
    return " ".join(parts)


def window_cells(windows: dict, index: int) -> pd.DataFrame:
    """Cells (row, col) read by window ``index`` (0-based, output order): its taps moved to
    its top-left corner."""
    corner = windows["corners"][index]
    taps = pd.DataFrame(windows["taps"])
    return taps.assign(row=taps["row"] + corner["row"], col=taps["col"] + corner["col"])


def uncovered_inputs(windows: dict) -> int:
    """How many real input pixels no window reads."""
    cells = pd.DataFrame(windows["cells"])
    return int(((cells["kind"] == "input") & ~cells["covered"]).sum())


_CELL_COLOURS = {"input pixel": "#9ecae9", "zero padding": "#e0e0e0",
                 "input pixel never read": "#f58518", "padding never read": "#bdbdbd"}


def sliding_chart(windows: dict, index: int) -> alt.HConcatChart:
    """Left: the padded input grid (input, padding, never-read cells) with window ``index``
    outlined; right: the output map with the pixel that window computes."""
    ph, pw = windows["padded_shape"]
    oh, ow = windows["output_shape"]
    cell = int(np.clip(380 / max(ph, pw), 7, 34))
    cells = pd.DataFrame(windows["cells"])
    name = np.where(cells["kind"] == "input", "input pixel", "zero padding")
    cells["what"] = np.where(cells["covered"], name, np.char.add(
        np.where(cells["kind"] == "input", "input pixel", "padding"), " never read"))
    colour = alt.Color("what:N", title=None, legend=alt.Legend(orient="bottom", columns=2),
                       scale=alt.Scale(domain=list(_CELL_COLOURS),
                                       range=list(_CELL_COLOURS.values())))
    x = alt.X("col:O", title="column", axis=alt.Axis(labelAngle=0, labelFontSize=9))
    y = alt.Y("row:O", title="row", axis=alt.Axis(labelFontSize=9))
    grid = alt.Chart(cells).mark_rect(stroke="white", strokeWidth=1).encode(
        x=x, y=y, color=colour,
        tooltip=[alt.Tooltip("row:O"), alt.Tooltip("col:O", title="column"), "what:N"])
    taps = alt.Chart(window_cells(windows, index)).mark_rect(
        fill="#1f3b73", fillOpacity=0.55, stroke="#0b1a33", strokeWidth=2).encode(x=x, y=y)
    left = (grid + taps).properties(width=pw * cell, height=ph * cell,
                                    title="Padded input and the selected window")
    corner = windows["corners"][index]
    out = pd.DataFrame({"out_row": np.repeat(np.arange(oh), ow),
                        "out_col": np.tile(np.arange(ow), oh)})
    out["picked"] = (out["out_row"] == corner["out_row"]) & (out["out_col"] == corner["out_col"])
    right = alt.Chart(out).mark_rect(stroke="white", strokeWidth=1).encode(
        x=alt.X("out_col:O", title="column", axis=alt.Axis(labelAngle=0, labelFontSize=9)),
        y=alt.Y("out_row:O", title="row", axis=alt.Axis(labelFontSize=9)),
        color=alt.condition(alt.datum.picked, alt.value("#1f3b73"), alt.value("#c6dbef")),
        tooltip=[alt.Tooltip("out_row:O", title="row"), alt.Tooltip("out_col:O", title="column")],
    ).properties(width=ow * cell, height=oh * cell, title="Output map")
    return alt.hconcat(left, right, spacing=40).resolve_scale(color="independent")


# ---------------------------------------------------------------- BatchNorm
def _array_table(a: np.ndarray, row_name: str) -> pd.DataFrame:
    """A (m, f) array as rows "i = 1…m" × columns "feature 1…f"; a (f,) array as one row."""
    a = np.atleast_2d(a)
    index = [f"i = {i + 1}" for i in range(len(a))] if len(a) > 1 else [row_name]
    return pd.DataFrame(a, index=index, columns=[f"feature {j + 1}" for j in range(a.shape[1])])


def gradient_tables(grad: dict, row_name: str = "value") -> tuple:
    """(closed form, autograd) of one ``batchnorm_backward`` gradient as styled tables."""
    return tuple(_array_table(grad[k], row_name).style.format("{:+.6f}")
                 for k in ("formula", "autograd"))


def batch_tables(bn: dict) -> dict[str, object]:
    """The mini-batch x and the upstream gradient R (m, f), and γ, β, μ, σ² (one row each)."""
    vectors = pd.DataFrame([bn["gamma"], bn["beta"], bn["mean"], bn["var"]],
                           index=["γ (scale)", "β (shift)", "μ (batch mean)",
                                  "σ² (batch variance)"],
                           columns=[f"feature {j + 1}" for j in range(len(bn["gamma"]))])
    return {"x": _array_table(bn["x"], "x").style.format("{:+.4f}"),
            "upstream": _array_table(bn["upstream"], "R").style.format("{:+.4f}"),
            "vectors": vectors.style.format("{:+.4f}")}


# ---------------------------------------------------------------- softmax + cross-entropy
def class_names(classes: int) -> list[str]:
    """FER2013's names for 7 classes, else "class 0" … "class K−1"."""
    return list(CLASS_NAMES) if classes == len(CLASS_NAMES) else [f"class {k}" for k in range(classes)]


def softmax_frame(sm: dict) -> pd.DataFrame:
    """One row per class of sample 0: class, true, z, ŷ, y, ŷ − y (formula), autograd,
    |difference|."""
    names = class_names(sm["logits"].shape[1])
    diff = np.abs(sm["grad_formula"][0] - sm["grad_autograd"][0])
    return pd.DataFrame({
        "class": names,
        "true class": sm["onehot"][0] == 1,
        "logit z": sm["logits"][0],
        "ŷ (softmax)": sm["probs"][0],
        "y (one-hot)": sm["onehot"][0].astype(int),
        "ŷ − y (formula)": sm["grad_formula"][0],
        "autograd ∂L/∂z": sm["grad_autograd"][0],
        "|difference|": diff,
    })


def softmax_table(df: pd.DataFrame):
    """:func:`softmax_frame` styled: the true class's row highlighted, numbers formatted."""
    def highlight(row):
        return ["background-color: #fff3cd; font-weight: bold" if row["true class"] else ""] * len(row)

    return (df.style.apply(highlight, axis=1)
            .format({"logit z": "{:+.4f}", "ŷ (softmax)": "{:.4f}", "ŷ − y (formula)": "{:+.6f}",
                     "autograd ∂L/∂z": "{:+.6f}", "|difference|": "{:.1e}"}))


def softmax_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Bars of ∂L/∂z per class: the true class (negative) highlighted, a zero line."""
    data = pd.DataFrame({"class": df["class"], "true": df["true class"],
                         "prob": df["ŷ (softmax)"], "grad": df["ŷ − y (formula)"]})
    bars = alt.Chart(data, title="∂L/∂z = ŷ − y per class").mark_bar().encode(
        x=alt.X("class:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("grad:Q", title="∂L/∂z"),
        color=alt.Color("true:N", title="true class",
                        scale=alt.Scale(domain=[True, False], range=["#e45756", "#4c78a8"])),
        tooltip=["class:N", alt.Tooltip("prob:Q", title="ŷ", format=".4f"),
                 alt.Tooltip("grad:Q", title="ŷ − y", format="+.4f")])
    zero = alt.Chart(pd.DataFrame({"y": [0]})).mark_rule(color="#333").encode(y="y:Q")
    return (bars + zero).properties(height=260)
