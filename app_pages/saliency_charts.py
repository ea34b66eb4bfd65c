"""What the Saliency and Your face pages share: the photo picker, the saliency panel (maps per
member, their mean and spread, overlays, legends, the sanity check) and the vote charts.

Numbers come from ``fer.explain.saliency`` and ``fer.faces``; this module caches them and turns
them into pictures and Altair charts.

Linking to the Saliency page with a dataset face: set ``st.session_state["saliency_index"]`` to
the dataset row (int) and ``st.switch_page("app_pages/saliency.py")``, or
``st.page_link("app_pages/saliency.py", query_params={"face": row})`` (``?face=123`` in the URL).
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

from app_pages import ui
from fer.ensemble import majority_vote
from fer.explain.saliency import (
    METHODS,
    cascade_layers,
    ensemble_maps,
    randomized,
    rank_correlation,
)
from fer.faces import (
    MAJORITY,
    MARGIN,
    Photo,
    Verdict,
    annotated,
    centre_crop,
    crop_face,
    ensemble_verdict,
    load_photo,
    member_probabilities,
)
from fer.labels import CLASS_NAMES, SPLIT_TITLES
from fer.runs import Run

INDEX_KEY = "saliency_index"   # session-state key: the dataset row the Saliency page explains
FACE_PARAM = "face"            # query parameter with the same meaning: ?face=123
SCALE = 3                      # on-screen pixels per face pixel in the map rows
CLIP_PERCENTILE = 99.5         # colour scale ends at this percentile of |value| (a few hot pixels
                               # would otherwise leave every other pixel dark)
MAP_CMAP, SIGNED_CMAP, STD_CMAP = "inferno", "RdBu_r", "viridis"


# ---------------------------------------------------------------- cached numbers
def _run_key(run: Run) -> tuple[str, int]:
    p = run.predictions_file("public_test") or run.predictions_file("private_test")
    return str(run.path), p.stat().st_mtime_ns if p else 0


@st.cache_data(max_entries=8, show_spinner=False)
def _photo(data: bytes, name: str) -> Photo:
    import io

    return load_photo(io.BytesIO(data), name)


@st.cache_data(max_entries=64, show_spinner=False)
def _probs(run_key: tuple, face: bytes, _members: list) -> np.ndarray:
    return member_probabilities(_members, np.frombuffer(face, np.uint8).reshape(1, 48, 48).copy())[:, 0]


def verdict(run: Run, members: list, face: np.ndarray) -> Verdict:
    """The members' verdict on a uint8 (48, 48) face (cached by run and face)."""
    return ensemble_verdict(_probs(_run_key(run), face.tobytes(), members))


@st.cache_data(max_entries=64, show_spinner="Computing the maps…")
def _maps(run_key: tuple, face: bytes, method: str, target: int, normalise: bool, top: int,
          _members: list) -> dict:
    models = [randomized(m, top) for m in _members] if top else _members
    x = torch.from_numpy(np.frombuffer(face, np.uint8).reshape(1, 1, 48, 48).astype(np.float32) / 255)
    out = ensemble_maps(models, x, torch.tensor([target]), method, normalise)
    return {k: v[:, 0] if k == "maps" else v[0] for k, v in out.items()}


# ---------------------------------------------------------------- widgets that keep their value
# ---------------------------------------------------------------- pictures
def _lut(name: str) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def colour_range(maps: np.ndarray, signed: bool) -> tuple[float, float]:
    """The shared colour scale of a set of maps: 0..p (or −p..p when signed), p the
    :data:`CLIP_PERCENTILE` percentile of |value| over all of them."""
    p = float(np.percentile(np.abs(maps), CLIP_PERCENTILE)) or float(np.abs(maps).max()) or 1.0
    return (-p, p) if signed else (0.0, p)


def overlay(face: np.ndarray, saliency: np.ndarray, lo: float, hi: float, cmap: str,
            opacity: float, scale: int = SCALE):
    """A uint8 face with a map coloured on ``lo..hi`` (clipped) blended over it at ``opacity``."""
    from PIL import Image

    idx = np.clip((saliency - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    rgb = (1 - opacity) * np.repeat(face[..., None], 3, 2) + opacity * _lut(cmap)[idx]
    img = Image.fromarray(np.rint(rgb).astype(np.uint8))
    return img.resize((48 * scale, 48 * scale), Image.Resampling.NEAREST)


def legend(lo: float, hi: float, cmap: str, title: str, width: int = 300) -> alt.Chart:
    """A colour bar for ``lo..hi`` in ``cmap`` (the same table the pictures use), ``title`` under it."""
    colours = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in _lut(cmap)[::17]]
    xs = np.linspace(lo, hi, 97)
    # each step overlaps the next a little: no hairline gaps between the rectangles
    df = pd.DataFrame({"value": xs[:-1], "value2": xs[1:] + (hi - lo) / 300, "bottom": 0.0, "top": 1.0})
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("value:Q", title=title, scale=alt.Scale(domain=[lo, hi], nice=False),
                axis=alt.Axis(format="~g", tickCount=5, titleFontWeight="normal")),
        x2="value2",
        y=alt.Y("bottom:Q", axis=None, scale=alt.Scale(domain=[0, 1])), y2="top",
        # a piecewise scale: one domain stop per colour (a 2-stop domain would use 2 colours only)
        color=alt.Color("value:Q", legend=None,
                        scale=alt.Scale(domain=list(np.linspace(lo, hi, len(colours))), range=colours)),
        tooltip=[],
    ).properties(height=96, width=width)  # the whole chart: the axis and its title fit inside


# ---------------------------------------------------------------- a face from the dataset
@st.cache_data(max_entries=16, show_spinner=False)
def _majority(run_key: tuple, split: str) -> tuple[np.ndarray, np.ndarray]:
    pred = Run(Path(run_key[0])).predictions(split)
    return pred["indices"], majority_vote(pred["probs"])


def _finder(run: Run, ds) -> None:
    """Split, true class and the ensemble's majority vote → the matching faces; picking one sets
    :data:`INDEX_KEY`."""
    splits = [s for s in ("public_test", "private_test", "train") if len(ds.indices(s))]
    c1, c2, c3 = st.columns(3)
    split = c1.selectbox("Split", splits, format_func=SPLIT_TITLES.get, **ui.kept("saliency_find_split", splits[0], splits))
    anyc = [-1, *range(len(CLASS_NAMES))]
    name = lambda c: "any" if c < 0 else CLASS_NAMES[c]
    true = c2.selectbox("True class (row of the confusion matrix)", anyc, format_func=name,
                        **ui.kept("saliency_find_true", -1))
    has_pred = run.predictions_file(split) is not None
    pred = c3.selectbox("Ensemble's majority vote (column)", anyc, format_func=name,
                        **ui.kept("saliency_find_pred", -1), disabled=not has_pred,
                        help=None if has_pred else "The run has no predictions on this split.")
    rows = ds.indices(split)
    votes = np.full(len(ds), -1)
    if has_pred:
        idx, maj = _majority(_run_key(run), split)
        votes[idx] = maj
    keep = rows[((ds.labels[rows] == true) | (true < 0)) & ((votes[rows] == pred) | (pred < 0) | (not has_pred))]
    st.caption(f"{len(keep):,} faces in {SPLIT_TITLES[split]} with true class {name(true)} and "
               f"majority vote {name(pred) if has_pred else 'any'}" + (" — the first 24:" if len(keep) > 24 else ":"))
    if not len(keep):
        return
    shown = keep[:24]
    ui.face_grid(ds.images[shown], [f"row {r}" + (f" · {CLASS_NAMES[votes[r]]}" if votes[r] >= 0 else "")
                                    for r in shown])
    st.selectbox("Explain this face", shown, index=None, placeholder="pick a row shown above",
                 key="saliency_find_pick", on_change=_pick_found)


def _pick_found() -> None:
    if st.session_state.get("saliency_find_pick") is not None:
        st.session_state[INDEX_KEY] = int(st.session_state["saliency_find_pick"])


def dataset_face(run: Run, ds) -> tuple[np.ndarray, int]:
    """The dataset face to explain and its label: row ``st.session_state[INDEX_KEY]``, set by
    ``?face=<row>``, the row field or the finder. Returns uint8 (48, 48) and the label (−1: none)."""
    ss, n = st.session_state, len(ds)
    notes = st.container()  # warnings go here, so the widgets below keep their place
    asked = st.query_params.get(FACE_PARAM)
    if asked is not None and asked != ss.get("_saliency_face_param"):
        ss["_saliency_face_param"] = asked
        try:
            ss[INDEX_KEY] = int(asked)
        except ValueError:
            notes.warning(f"?{FACE_PARAM}={asked} is not a row number.")
    if INDEX_KEY not in ss:
        tests = ds.indices("public_test")
        ss[INDEX_KEY] = int(tests[0]) if len(tests) else 0
    try:
        row = int(ss[INDEX_KEY])
    except (TypeError, ValueError):
        row = -1
    if not 0 <= row < n:
        notes.warning(f"Row {ss[INDEX_KEY]!r} is not in this dataset (rows 0–{n - 1}); showing row 0.")
        row = 0
    ss[INDEX_KEY] = ss["_saliency_row"] = row
    ss["_saliency_face_param"] = st.query_params[FACE_PARAM] = str(row)
    c_row, c_about = st.columns([1, 3])
    c_row.number_input("Dataset row", 0, n - 1, step=1, key="_saliency_row",
                       on_change=lambda: ss.__setitem__(INDEX_KEY, int(ss["_saliency_row"])),
                       help=f"0–{n - 1}. Other pages link here with ?{FACE_PARAM}=<row>.")
    label = int(ds.labels[row])
    c_about.markdown(f"Row **{row}** of `{ds.id}` · {SPLIT_TITLES.get(str(ds.splits[row]), ds.splits[row])}"
                     f" · true class **{CLASS_NAMES[label] if label >= 0 else 'unlabelled'}**")
    with st.expander("Find a face by class, or by confusion-matrix cell"):
        _finder(run, ds)
    return ds.images[row], label


# ---------------------------------------------------------------- a face from a photo
def photo_face(key: str) -> np.ndarray | None:
    """Upload or camera → face detection → the 48x48 input, with the steps shown; None until a
    photo is given. When no face is found and the centre crop is not asked for, it says what to
    do and stops the page.

    A file that is not an image, too large or too small raises DataFormatError (the page's
    guard shows it).
    """
    source = st.segmented_control("Photo from", ["Upload a file", "Camera"], default="Upload a file",
                                  key=f"{key}_source")
    if source == "Camera":
        file = st.camera_input("Take a photo (look straight at the camera)", key=f"{key}_camera")
    else:
        file = st.file_uploader("A photo with a face: JPEG, PNG, WebP, BMP, TIFF, GIF… any size "
                                "up to 40 megapixels", key=f"{key}_file")
    if file is None:
        return None
    photo = _photo(file.getvalue(), file.name)
    chosen, face, margin = None, None, MARGIN
    left, right = st.columns([3, 2])
    with right:
        n = len(photo.faces)
        if n == 0:
            st.warning("No face found: the detector (OpenCV's Haar cascade) looks for an upright "
                       "face seen from the front, at least 8% of the photo's shorter side.",
                       icon=":material/face_retouching_off:")
            if st.toggle("Use the centre of the photo instead", key=f"{key}_centre",
                         help="The largest centred square, resized to 48×48."):
                face = centre_crop(photo)
        else:
            chosen, which_box = 0, st.container()  # the margin slider keeps its place either way
            if n > 1:
                chosen = which_box.radio(f"{n} faces found: which one?", range(n), horizontal=True,
                                  format_func=lambda i: f"face {i + 1}", key=f"{key}_which",
                                  help="Numbered as outlined on the photo, largest first.") or 0
            margin = st.slider("Margin around the face", 0.0, 0.6, step=0.05, **ui.kept(f"{key}_margin", MARGIN),
                               format="%.2f", help="Added on each side, as a fraction of the "
                               "detected box (FER2013 faces show the whole head).")
            face = crop_face(photo, chosen, margin)
        if face is not None:
            st.image(ui.face_image(face, 4), caption="What the members see: 48×48 gray, exactly "
                     "the array they are given (drawn 4× larger, square pixels)", output_format="PNG")
    with left:
        st.image(annotated(photo, chosen=chosen, margin=margin),
                 caption=f"{photo.name}: {photo.size[0]}×{photo.size[1]} px, mode {photo.mode}, "
                         "turned upright by its EXIF orientation (if any) and made gray. "
                         + ("Outlined: the crop of each face found." if photo.faces else ""),
                 output_format="PNG")
    if face is None:
        st.info("Turn on **Use the centre of the photo instead** to go on with this photo, or try "
                "another one: a face seen from the front, upright, not too small.")
        st.stop()
    return face


# ---------------------------------------------------------------- votes
def votes_chart(v: Verdict) -> alt.Chart:
    """Bars: members voting for each expression, a rule at the majority line."""
    m = len(v.probs)
    df = pd.DataFrame({"expression": CLASS_NAMES, "votes": v.votes,
                       "named": [i == v.label for i in range(len(CLASS_NAMES))]})
    bars = alt.Chart(df, title=f"Votes of the {m} members").mark_bar().encode(
        x=alt.X("expression:N", sort=list(CLASS_NAMES), title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("votes:Q", title="members", scale=alt.Scale(domain=[0, m]),
                axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.condition("datum.named", alt.value("#e45756"), alt.value("#4c78a8")),
        tooltip=["expression", "votes"])
    line = alt.Chart(pd.DataFrame({"y": [MAJORITY * m], "label": [f"more than half: > {m / 2:g}"]}))
    rule = line.mark_rule(strokeDash=[4, 3], color="gray").encode(y="y:Q")
    text = line.mark_text(align="left", dx=4, dy=-6, color="gray").encode(
        y="y:Q", x=alt.value(0), text="label:N")
    return (bars + rule + text).properties(height=240)


def probability_chart(v: Verdict) -> alt.Chart:
    """Bars: the mean probability of each expression; ticks: each member's."""
    mean = pd.DataFrame({"expression": CLASS_NAMES, "probability": v.mean})
    each = pd.DataFrame([(f"member {m}", CLASS_NAMES[c], float(p)) for m, row in enumerate(v.probs)
                         for c, p in enumerate(row)], columns=["member", "expression", "probability"])
    x = alt.X("expression:N", sort=list(CLASS_NAMES), title=None, axis=alt.Axis(labelAngle=0))
    y = alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    bars = alt.Chart(mean, title="Mean probability (soft vote); ticks: each member").mark_bar(
        color="#72b7b2").encode(x=x, y=y, tooltip=["expression", alt.Tooltip("probability:Q", format=".1%")])
    ticks = alt.Chart(each).mark_tick(color="#333", thickness=1, size=14).encode(
        x=x, y=y, tooltip=["member", "expression", alt.Tooltip("probability:Q", format=".1%")])
    return (bars + ticks).properties(height=240)


def verdict_line(v: Verdict) -> str:
    """One markdown sentence: the label and its votes, or why the ensemble is unsure."""
    m = len(v.probs)
    if v.label is not None:
        return (f"The ensemble says **{CLASS_NAMES[v.label]}**: {v.votes[v.label]} of {m} members "
                f"vote for it (mean probability {v.mean[v.label]:.0%}).")
    second = int(np.argsort(-v.votes, kind="stable")[1])
    return (f"The ensemble is **unsure**: no expression gets more than half of the {m} votes. "
            f"Leading: {CLASS_NAMES[v.top]} ({v.votes[v.top]} vote{'s' if v.votes[v.top] != 1 else ''}), then "
            f"{CLASS_NAMES[second]} ({v.votes[second]}).")


# ---------------------------------------------------------------- the saliency panel
_UNITS = {"gradient": "|∂ logit / ∂ brightness|", "smoothgrad": "mean |∂ logit / ∂ brightness|",
          "integrated_gradients": "contribution to the logit", "grad_cam": "Grad-CAM (logit units)"}


def saliency_panel(run: Run, members: list, face: np.ndarray, true_label: int | None, key: str,
                   sanity: bool = True) -> None:
    """Method and target pickers, every member's map, their mean and spread, and (``sanity``)
    the cascading-randomisation check, for one uint8 (48, 48) face."""
    v = verdict(run, members, face)
    predicted = int(v.mean.argmax())
    c_method, c_target, c_opacity = st.columns([1.3, 2, 1])
    method = c_method.selectbox("Method", list(METHODS), **ui.kept(f"{key}_method", "gradient"),
                                format_func=lambda k: METHODS[k].title)
    # Fixed labels (the classes go in the caption below): a label that changed with the face
    # would make Streamlit treat the radio as a new widget and lose the pick.
    labelled = true_label is not None and true_label >= 0
    targets = {"predicted": "the ensemble's prediction", "true": "the true label",
               "chosen": "another expression"}
    with c_target:
        which = st.radio("Explain the score of", list(targets), format_func=targets.get,
                         horizontal=True, **ui.kept(f"{key}_target", "predicted"),
                         help="The ensemble's prediction is its soft vote (the highest mean "
                              "probability). A photo has no true label.")
        if which == "chosen":
            target = st.selectbox("Expression", range(len(CLASS_NAMES)), format_func=CLASS_NAMES.__getitem__,
                                  **ui.kept(f"{key}_class", predicted), label_visibility="collapsed")
        elif which == "true" and labelled:
            target = true_label
        else:
            if which == "true":
                st.caption("This face has no true label: explaining the prediction.")
            target = predicted
    opacity = c_opacity.slider("Map opacity", 0.0, 1.0, step=0.05, **ui.kept(f"{key}_opacity", 0.7),
                               help="0: the face only; 1: the map only.")
    normalise = c_opacity.toggle("Own scale per member", **ui.kept(f"{key}_normalise", False),
                                 help="Off: one scale for all members, in the method's units (a "
                                      "member with larger gradients looks brighter). On: each "
                                      "member's map is divided by its largest value first, so "
                                      "each counts equally in the mean and the spread.")
    info = METHODS[method]
    st.markdown(f"Explaining the score of **{CLASS_NAMES[target]}** · the ensemble predicts "
                f"{CLASS_NAMES[predicted]} (soft vote)"
                + (f" · true label {CLASS_NAMES[true_label]}" if labelled else ""))
    st.caption(f"**{info.title}** — {info.summary} Source: {info.source}. The class score is the "
               f"logit of **{CLASS_NAMES[target]}** (before softmax), for every member.")

    layers = cascade_layers(members[0])
    top_key = f"{key}_randomised"
    top = min(st.session_state.get(top_key, 0), len(layers)) if sanity else 0
    rk = _run_key(run)
    res = _maps(rk, face.tobytes(), method, int(target), normalise, top, members)
    if top:
        st.warning(f"Sanity check on: the top {top} of {len(layers)} layers of every member are "
                   f"random ({', '.join(layers[:top])}). Restore them below.",
                   icon=":material/shuffle:")
    lo, hi = colour_range(np.concatenate([res["maps"], res["mean"][None]]), info.signed)
    cmap = SIGNED_CMAP if info.signed else MAP_CMAP
    unit = "fraction of the map's maximum" if normalise else _UNITS[method]

    st.markdown("**Each member** — one colour scale for all")
    probs = v.probs[:, target]
    ids = run.finished_members()  # the members' numbers in the run (ui.run_members' order)
    ids = ids if len(ids) == len(members) else list(range(len(members)))
    st.image([overlay(face, m_, lo, hi, cmap, opacity) for m_ in res["maps"]],
             caption=[f"member {m} → {CLASS_NAMES[int(p.argmax())]}; p({CLASS_NAMES[target]}) = {q:.0%}"
                      for m, p, q in zip(ids, v.probs, probs)], width=48 * SCALE, output_format="PNG")
    st.altair_chart(legend(lo, hi, cmap, unit + (" (clipped)" if np.abs(res["maps"]).max() > hi else "")),
                    width="content")

    st.markdown("**The ensemble**")
    s_hi = colour_range(res["std"], False)[1]
    c1, c2, c3 = st.columns(3)
    c1.image(overlay(face, res["mean"], lo, hi, cmap, opacity, 4),
             caption=f"Mean of the {len(members)} maps: where the members look, on average"
                     if len(members) > 1 else "The only member's map (no ensemble yet)",
             width=192, output_format="PNG")
    c1.altair_chart(legend(lo, hi, cmap, unit, 192), width="content")
    if len(members) == 1:
        c2.info("With one member there is no spread to show: the standard deviation across "
                "members needs two or more.", icon=":material/info:")
    else:
        c2.image(overlay(face, res["std"], 0.0, s_hi, STD_CMAP, opacity, 4),
                 caption="Standard deviation across members, pixel by pixel: where they disagree "
                         "about where to look", width=192, output_format="PNG")
        c2.altair_chart(legend(0.0, s_hi, STD_CMAP, "std across members", 192), width="content")
    c3.image(ui.face_image(face, 4), caption="The face (48×48, the members' input)",
             width=192, output_format="PNG")
    st.caption(f"Colours run from {lo:.3g} to {hi:.3g}, the {CLIP_PERCENTILE:g}th percentile of "
               "|value| over all maps; brighter values are drawn at the end colour. "
               + ("Blue: pixels that lower the score; red: pixels that raise it."
                  if info.signed else "Dark: the score hardly depends on the pixel; bright: it does."))
    if sanity:
        _sanity(rk, face, method, int(target), normalise, members, layers, top, top_key)


def _sanity(rk, face, method, target, normalise, members, layers, top, top_key) -> None:
    st.subheader("Sanity check: randomise the members layer by layer")
    st.markdown(
        "Adebayo et al. (2018, *Sanity Checks for Saliency Maps*) replace a network's weights by "
        "random ones, **layer by layer from the top** (the logits first), and redraw the maps. A "
        "map that explains the *model* must change as its learned weights are destroyed; a map "
        "that still looks like the face is showing the *image's* edges, not what the model "
        "learned. Step through it and compare the methods. The target class stays the one chosen "
        "above; the random weights are the ones a new, untrained layer would have (fixed seed).")
    b1, b2, b3 = st.columns([1.3, 1.5, 2.5])
    b1.button("Randomise the next layer", key=f"{top_key}_next", disabled=top >= len(layers),
              icon=":material/shuffle:", on_click=st.session_state.__setitem__, args=(top_key, top + 1))
    b2.button("Restore the trained weights", key=f"{top_key}_reset", disabled=top == 0,
              icon=":material/restore:", on_click=st.session_state.__setitem__, args=(top_key, 0))
    b3.markdown(f"Random now: **{top} of {len(layers)}** layers"
                + (f" — {', '.join(layers[:top])}" if top else "")
                + (f". Next: `{layers[top]}`." if top < len(layers) else ". All random."))
    if top:
        trained = _maps(rk, face.tobytes(), method, target, normalise, 0, members)["mean"]
        # |map|: which pixels matter, whatever the sign (Adebayo et al.'s "absolute value" variant;
        # a random top layer can flip an Integrated Gradients map's sign wholesale).
        rows = [dict(layers=k, correlation=rank_correlation(np.abs(trained), np.abs(_maps(
            rk, face.tobytes(), method, target, normalise, k, members)["mean"]))) for k in range(top + 1)]
        df = pd.DataFrame(rows)
        chart = alt.Chart(df, title="The mean map against the trained one").mark_line(point=True).encode(
            x=alt.X("layers:Q", title="layers randomised from the top", scale=alt.Scale(domain=[0, len(layers)]),
                    axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("correlation:Q", title="rank correlation", scale=alt.Scale(domain=[-1, 1])),
            tooltip=["layers", alt.Tooltip("correlation:Q", format=".2f")],
        ).properties(height=300, width=460)  # the whole chart, axes and title included
        st.altair_chart(chart, width="content")
        st.caption("Spearman rank correlation of |mean map| with the trained members' |mean map|: "
                   "1 = the same ranking of pixels, near 0 = unrelated. A method that passes the "
                   "check falls fast.")
