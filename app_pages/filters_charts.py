"""What the Filters page draws: cached calls of :mod:`fer.explain.filters` and the pictures made from
their arrays — one card per filter (its gradient-ascent pattern, its feature map on the chosen face
and its top faces with the receptive field of the strongest unit outlined), the grid of every
feature map of one face, and the colour bar of the maps.

Numbers come from ``fer.explain.filters``; this module caches them and turns arrays into images.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from fer.data import FaceDataset
from fer.explain.filters import (Patterns, TopK, cached_top_activating, conv_layers, feature_maps,
                                 filter_patterns, layer_geometry)
from fer.labels import CLASS_NAMES, SPLIT_TITLES
from fer.models import create_model
from fer.runs import Run

PER_PAGE = 16                 # filters per page: one batched gradient ascent
FACE_PX, GAP = 80, 4          # card: top-face tile and the gap between tiles, in pixels
OUTLINE = (255, 64, 32)       # receptive-field outline on the top faces
# Diverging colours of the feature maps: negative, zero, positive (ColorBrewer RdBu ends).
MAP_COLOURS = ("#2166ac", "#f7f7f7", "#b2182b")
_BG = (255, 255, 255)


# ---------------------------------------------------------------- cached fer calls
@st.cache_data(show_spinner=False, max_entries=16)
def layers(model_name: str) -> pd.DataFrame:
    """One row per conv layer of ``model_name``: layer, number (1..), filters, map h×w,
    receptive field and jump (input pixels)."""
    model = create_model(model_name)
    rows = []
    for i, name in enumerate(conv_layers(model), 1):
        g = layer_geometry(model, name)
        rows.append(dict(layer=name, number=i, filters=g.channels, map=f"{g.output_hw[0]}×{g.output_hw[1]}",
                         receptive_field=g.receptive_field[0], jump=g.jump[0]))
    return pd.DataFrame(rows)


def layer_label(table: pd.DataFrame, layer: str) -> str:
    """``conv 4 of 4 (features.3.0) · 128 filters · 6×6 map · sees 40×40 px`` for a picker."""
    r = table.set_index("layer").loc[layer]
    return (f"conv {r['number']} of {len(table)} ({layer}) · {r['filters']} filters · {r['map']} map · "
            f"sees {r['receptive_field']}×{r['receptive_field']} px")


def _weights_stamp(run: Run, member: int) -> int:
    return run.weights_path(member).stat().st_mtime_ns


@st.cache_data(show_spinner=False, max_entries=64)
def _top(run_path: str, member: int, layer: str, split: str, stamp: int, data_id: str,
         _model, _dataset: FaceDataset) -> TopK:
    return cached_top_activating(Run(Path(run_path)), member, _model, _dataset, split, layer)


def top_faces(run: Run, member: int, model, dataset: FaceDataset, split: str, layer: str) -> TopK:
    """:func:`~fer.explain.filters.cached_top_activating`, kept in memory too (a rerun reads
    neither the file nor the data)."""
    return _top(str(run.path), member, layer, split, _weights_stamp(run, member),
                str(dataset.provenance.get("sha256", dataset.provenance.get("source", ""))),
                model, dataset)


@st.cache_data(show_spinner=False, max_entries=64)
def _patterns(run_path: str, member: int, layer: str, channels: tuple[int, ...], stamp: int,
              _model) -> Patterns:
    return filter_patterns(_model, layer, list(channels))


def patterns(run: Run, member: int, model, layer: str, channels: list[int]) -> Patterns:
    """:func:`~fer.explain.filters.filter_patterns` of one page of filters (seed 0), cached."""
    return _patterns(str(run.path), member, layer, tuple(int(c) for c in channels),
                     _weights_stamp(run, member), model)


@st.cache_data(show_spinner=False, max_entries=64)
def _maps(run_path: str, member: int, layer: str, row: int, stamp: int, _model, face: np.ndarray) -> np.ndarray:
    return feature_maps(_model, face, layer)


def face_maps(run: Run, member: int, model, layer: str, dataset: FaceDataset, row: int) -> np.ndarray:
    """float32 (C, h, w): every feature map of ``layer`` on dataset face ``row``, cached."""
    return _maps(str(run.path), member, layer, int(row), _weights_stamp(run, member), model,
                 dataset.images[row])


def split_rows(dataset: FaceDataset, split: str) -> np.ndarray:
    """int64 dataset rows of the faces in ``split``, in dataset order."""
    return np.flatnonzero(dataset.splits == split)


def split_options(dataset: FaceDataset) -> dict[str, str]:
    """{split: "PrivateTest (3,589 faces)"} for the splits with faces, test splits first."""
    order = ["private_test", "public_test", "train"]
    counts = {s: int((dataset.splits == s).sum()) for s in order}
    return {s: f"{SPLIT_TITLES.get(s, s)} ({n:,} faces)" for s, n in counts.items() if n}


def face_name(split: str, position: int) -> str:
    """``PrivateTest #12``: a face by its split and its position among that split's faces."""
    return f"{SPLIT_TITLES.get(split, split)} #{position}"


def face_caption(dataset: FaceDataset, split: str, position: int) -> str:
    """``PrivateTest #12 · happy`` (with the dataset's label)."""
    label = int(dataset.labels[split_rows(dataset, split)[position]])
    return f"{face_name(split, position)} · {CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else 'unlabelled'}"


# ---------------------------------------------------------------- colours
def map_limit(maps: np.ndarray) -> float:
    """Half-width of a symmetric colour scale that holds every value of ``maps`` (≥ 1e-6)."""
    return float(max(np.abs(maps).max(initial=0.0), 1e-6))


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)


def colourise(values: np.ndarray, limit: float) -> np.ndarray:
    """uint8 RGB (..., 3) of ``values`` on the diverging scale −limit (blue) … 0 … +limit (red)."""
    t = np.clip(np.asarray(values, dtype=np.float32) / limit, -1.0, 1.0)[..., None]
    neg, mid, pos = (_rgb(c) for c in MAP_COLOURS)
    rgb = np.where(t < 0, mid + (neg - mid) * -t, mid + (pos - mid) * t)
    return rgb.round().astype(np.uint8)


def map_image(fmap: np.ndarray, limit: float, px: int) -> Image.Image:
    """One feature map ``(h, w)`` as a ``px``-wide colour image with square cells."""
    return Image.fromarray(colourise(fmap, limit)).resize((px, px), Image.Resampling.NEAREST)


def colour_bar(limit: float, title: str) -> alt.Chart:
    """The maps' colour scale as a horizontal bar from −limit to +limit, ``title`` under it."""
    xs = np.linspace(-limit, limit, 81)
    # each step overlaps the next a little: no hairline gaps between the rectangles
    df = pd.DataFrame({"value": xs[:-1], "value2": xs[1:] + limit / 200, "bottom": 0.0, "top": 1.0})
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("value:Q", title=title, scale=alt.Scale(domain=[-limit, limit], nice=False),
                axis=alt.Axis(tickCount=5, titleFontWeight="normal")),
        x2="value2",
        y=alt.Y("bottom:Q", axis=None, scale=alt.Scale(domain=[0, 1])), y2="top",
        color=alt.Color("value:Q", legend=None,
                        scale=alt.Scale(domain=[-limit, 0, limit], range=list(MAP_COLOURS))),
        tooltip=[],
    ).properties(height=90, width=360)  # the whole chart: the axis and its title fit inside


# ---------------------------------------------------------------- pictures
def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType's default font
        return ImageFont.load_default()


def face_tile(face: np.ndarray, px: int, patch=None) -> Image.Image:
    """A uint8 (48, 48) face as a ``px``-wide RGB tile, the (top, left, height, width) patch outlined."""
    img = Image.fromarray(face).convert("RGB").resize((px, px), Image.Resampling.NEAREST)
    if patch is not None:
        s = px / face.shape[0]
        top, left, h, w = (int(v) for v in patch)
        ImageDraw.Draw(img).rectangle([left * s, top * s, (left + w) * s - 1, (top + h) * s - 1],
                                      outline=OUTLINE, width=2)
    return img


def pattern_tile(pattern: np.ndarray, px: int) -> Image.Image:
    """A float 0..1 (48, 48) gradient-ascent image as a ``px``-wide gray tile."""
    img = Image.fromarray((np.clip(pattern, 0, 1) * 255).round().astype(np.uint8)).convert("RGB")
    return img.resize((px, px), Image.Resampling.NEAREST)


def filter_card(faces: np.ndarray, patches: np.ndarray, pattern: np.ndarray, fmap: np.ndarray,
                limit: float, map_label: str, columns: int = 3) -> Image.Image:
    """One filter: its pattern and its feature map on a face (labelled ``map_label``) side by side,
    above its top faces (``columns`` per row, strongest first, receptive field of the strongest
    unit outlined)."""
    font = _font(12)
    width = columns * FACE_PX + (columns - 1) * GAP
    big = (width - GAP) // 2
    label_h = 16
    rows = -(-len(faces) // columns)
    height = label_h + big + GAP + label_h + rows * FACE_PX + (rows - 1) * GAP
    card = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(card)
    draw.text((0, 1), "pattern", fill=(60, 60, 60), font=font)
    draw.text((big + GAP, 1), map_label, fill=(60, 60, 60), font=font)
    card.paste(pattern_tile(pattern, big), (0, label_h))
    card.paste(map_image(fmap, limit, big), (big + GAP, label_h))
    y0 = label_h + big + GAP
    draw.text((0, y0 + 1), f"top {len(faces)} faces", fill=(60, 60, 60), font=font)
    for i, (face, patch) in enumerate(zip(faces, patches)):
        r, c = divmod(i, columns)
        card.paste(face_tile(face, FACE_PX, patch), (c * (FACE_PX + GAP), y0 + label_h + r * (FACE_PX + GAP)))
    return card


def filter_cards(dataset: FaceDataset, top: TopK, pats: Patterns, maps: np.ndarray, k: int,
                 limit: float | None, map_label: str) -> tuple[list[Image.Image], list[str]]:
    """A card and a caption for each filter of ``pats``: its ``k`` strongest faces of ``top``,
    its pattern and its map from ``maps`` (C, h, w) on one face, labelled ``map_label`` (short:
    a card's half is 122 px wide), on the colour scale ±``limit`` (None: each map on its own)."""
    cards, captions = [], []
    for c, pattern, start, end in zip(pats.channels, pats.images, pats.start, pats.end):
        idx = top.indices[c, :k]
        cards.append(filter_card(dataset.images[idx], top.patches[c, :k], pattern, maps[c],
                                 limit if limit is not None else map_limit(maps[c]), map_label))
        captions.append(f"filter {c} · top {top.values[c, 0]:.1f} · pattern {start:.1f} → {end:.1f}")
    return cards, captions


def card_grid(cards: list[Image.Image], captions: list[str], columns: int = 4) -> None:
    """Draw the filter cards in rows of ``columns``, each at its own size, with its caption."""
    for start in range(0, len(cards), columns):
        for col, card, caption in zip(st.columns(columns), cards[start:start + columns],
                                      captions[start:start + columns]):
            # PNG: JPEG would smear the pixels and the outlines
            col.image(card, caption=caption, width=card.width, output_format="PNG")


def map_sheet(maps: np.ndarray, shared: bool, px: int = 64, columns: int = 16) -> Image.Image:
    """Every feature map ``(C, h, w)`` as one image: ``columns`` tiles per row, the filter number
    under each, on one shared colour scale or each map on its own (± its largest value)."""
    font = _font(11)
    limit = map_limit(maps)
    label_h, gap = 14, 6
    cols = min(columns, len(maps))
    rows = -(-len(maps) // cols)
    sheet = Image.new("RGB", (cols * (px + gap), rows * (px + label_h + gap)), _BG)
    draw = ImageDraw.Draw(sheet)
    for c, fmap in enumerate(maps):
        r, q = divmod(c, cols)
        x, y = q * (px + gap), r * (px + label_h + gap)
        sheet.paste(map_image(fmap, limit if shared else map_limit(fmap), px), (x, y))
        draw.text((x + px // 2, y + px + 1), str(c), fill=(60, 60, 60), font=font, anchor="mt")
    return sheet
