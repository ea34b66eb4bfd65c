"""Filters page: what each filter of a conv layer has learned — the faces that excite it most (with
the receptive field of its strongest unit outlined), the pattern it likes best (gradient ascent),
and its feature map on a face you pick; then every feature map of that face."""

import streamlit as st

from app_pages import filters_charts as fc
from app_pages import ui
from fer.explain.filters import K_MAX, PATTERN_STEPS

st.title("Filters: what has each filter learned?")
st.markdown(
    "A convolutional layer applies many small **filters**; each slides over its input and gives "
    "one **feature map**, high wherever its pattern appears. Three ways to see what a filter "
    "responds to:\n"
    "- **top faces**: the faces on which it reaches its highest value anywhere (Zeiler & Fergus "
    "2014). The red box is the **receptive field** of the unit that fired most: the only input "
    "pixels that unit can see;\n"
    "- **pattern**: an image made for the filter by **gradient ascent** — start from gray noise and "
    "change the pixels, step by step, so that the filter's mean activation (after its activation "
    "function) grows (Simonyan et al. 2014); small random shifts and a slight blur at each step "
    "keep it from turning into pixel noise (Olah et al. 2017). A first-layer filter is one small "
    "weighted sum of pixels: its pattern is a texture of stripes or edges, or a flat white or "
    "black image when it simply likes bright or dark;\n"
    "- **feature map**: the filter's output on one face you choose, red where it is positive and "
    "blue where it is negative (before the activation function).")

# ---------------------------------------------------------------- picks
run, member_ids = ui.run_with_members()
models = dict(zip(member_ids, ui.run_members(run)))
dataset = ui.dataset_for_run(run)
table = fc.layers(run.config()["model"])
layer_names = table["layer"].tolist()

c1, c2, c3, c4 = st.columns([1, 2.6, 1.6, 1.2])
member = c1.selectbox("Member", member_ids, key="filters_member", format_func=lambda m: f"member {m}")
layer = c2.selectbox("Conv layer", layer_names, **ui.kept("filters_layer", layer_names[-1], layer_names),
                     format_func=lambda name: fc.layer_label(table, name),
                     help="The last conv layer (the default) holds the most abstract filters; the "
                          "first ones respond to edges and blobs.")
splits = fc.split_options(dataset)
if not splits:
    st.info(f"The faces of `{run.id}` have no training or test split to search for top faces.")
    st.stop()
split = c3.selectbox("Faces searched for the top faces", list(splits), key="filters_split",
                     format_func=splits.get,
                     help="The top faces come from one pass over these faces, once per member and "
                          "layer; the result is kept with the run, so later visits are instant.")
k = c4.slider("Top faces per filter", 3, K_MAX, 6, step=3, key="filters_k")

n_filters = int(table.set_index("layer").loc[layer, "filters"])
pages = -(-n_filters // fc.PER_PAGE)
f1, f2 = st.columns([3, 1.2])
page = f1.select_slider(
    "Filters shown", options=list(range(pages)), **ui.kept(f"filters_page_{layer}", 0, range(pages)),
    format_func=lambda p: f"{p * fc.PER_PAGE}–{min(n_filters, (p + 1) * fc.PER_PAGE) - 1}",
    help=f"{n_filters} filters, {fc.PER_PAGE} per page.") if pages > 1 else 0
rows = fc.split_rows(dataset, split)
position = f2.number_input(f"Face for the feature maps ({fc.face_name(split, 0)}–{len(rows) - 1})", 0,
                           len(rows) - 1, 0, key="filters_face",
                           help="A face of the split searched above, by its position in that split.")
face_row = int(rows[position])
face_label = fc.face_name(split, position)

# ---------------------------------------------------------------- one fer call each
model = models[member]
channels = list(range(page * fc.PER_PAGE, min(n_filters, (page + 1) * fc.PER_PAGE)))
with st.spinner(f"Finding the top faces of {n_filters} filters: one pass over {len(rows):,} faces "
                "(once per member, layer and split; kept with the run)…"):
    top = fc.top_faces(run, member, model, dataset, split, layer)
with st.spinner(f"Gradient ascent for filters {channels[0]}–{channels[-1]} ({PATTERN_STEPS} steps)…"):
    pats = fc.patterns(run, member, model, layer, channels)
maps = fc.face_maps(run, member, model, layer, dataset, face_row)  # (C, h, w)

# ---------------------------------------------------------------- draw: one card per filter
face_col, text_col = st.columns([1, 5])
face_col.image(ui.face_image(dataset.images[face_row], 3), caption=fc.face_caption(dataset, split, position),
               output_format="PNG")
shared = text_col.toggle("Same colour scale for all maps", value=True, key="filters_shared",
                         help="On: colours compare across filters (weak filters look pale). "
                              "Off: each map is stretched to its own largest value.")
limit = fc.map_limit(maps)
text_col.altair_chart(fc.colour_bar(limit, "feature-map value (layer output before the activation)"),
                      width="content")
text_col.caption(
    f"Each card is one filter of member {member}'s `{layer}`. Top left: its **pattern** "
    f"(gradient ascent from seed 0, {PATTERN_STEPS} steps). Top right: its **feature map on "
    f"{face_label}**, the face at the left. Below: its **top {k} faces** of {splits[split]}, "
    "strongest first; the red box is the receptive field of the unit that fired most, cut off "
    "where it reaches into the zero padding around the image (edge filters often fire most at the "
    "image border, where that padding makes an edge). Under the "
    "card: the filter's number, *top* = that unit's value on the first face, *pattern* = the "
    "filter's mean activation (after the activation function) on the starting noise → on the "
    "pattern.")
fc.card_grid(*fc.filter_cards(dataset, top, pats, maps, k, limit if shared else None, f"map on #{position}"))
st.caption(f"The top faces of this member and layer are kept in `{top.source}`.")

# ---------------------------------------------------------------- every map of one face
st.subheader(f"All {n_filters} feature maps of {fc.face_caption(dataset, split, position)}")
st.caption(f"Filter number under each map; {maps.shape[1]}×{maps.shape[2]} units per map, each "
           f"drawn as a square. Colours as above" + ("." if shared else "; each map on its own "
                                                        "scale (± its largest value)."))
sheet = fc.map_sheet(maps, shared)
st.image(sheet, width=sheet.width, output_format="PNG")
