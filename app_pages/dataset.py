"""Dataset page: where the faces come from, how many of each class and split, a sample of each
class, and what the audit found (blank faces, duplicates, test faces leaked into training)."""

import streamlit as st

from app_pages import dataset_charts as dc
from app_pages import ui

st.title("Dataset: what the networks learn from")
st.markdown(
    "Every page of the lab trains on or looks at the dataset picked in the sidebar. Before "
    "training, look at it: how many faces each expression has, what they look like, and which "
    "faces should not be there at all — blank images, exact copies, and test faces that also "
    "sit in the training set.")
st.caption(
    "To use your own copy, type its path in the sidebar's **Dataset** field: Kaggle's "
    "`fer2013.csv` (also `.csv.gz` or `.zip`), `icml_face_data.csv`, a homework folder with "
    "`train.csv`/`test.csv`, or a folder of class folders of images. Typing a path is the way for "
    "big files (the full FER2013 is 300 MB); small files can be uploaded on the Train page. For "
    "**FER+** labels, put `fer2013new.csv` in the same folder as `fer2013.csv` and type that "
    "folder's path.")

ds = ui.current_dataset()
result = dc.dataset_audit(ds)  # cached per dataset sha256

# ---------------------------------------------------------------- source and provenance
st.header("Source", divider="gray")
if ds.is_synthetic:
    st.warning(f"**{ui.SYNTHETIC_NOTE}.** These faces are drawn by a program (varied pose, size, "
               "lighting and noise), so every number on this page describes the drawings, not "
               "FER2013. Type the path of your `fer2013.csv` in the sidebar to see the real data.",
               icon=":material/draw:")
with st.container(border=True):
    st.markdown("  \n".join(dc.provenance_lines(ds)))
if ds.votes is not None:
    st.info(f"**FER+ labels.** Each face was labelled again by 10 crowd taggers (Barsoum et al. "
            f"2016); the label used here is their majority. It equals FER2013's original label on "
            f"{dc.ferplus_agreement(ds):.1%} of the kept faces. Pick a face below to see its votes.",
            icon=":material/how_to_vote:")
if unlabelled := dc.unlabelled_count(ds):
    st.info(f"**{unlabelled:,} faces have no label** (a homework `test.csv`, columns `id,feature`). "
            "They are never scored: nobody here knows their answers. A run trained on this dataset "
            "predicts them, and its predictions can be exported as a **submission CSV** with the "
            "header `id,label` and one line per face: its `id` and the predicted class 0–6 (0 angry, "
            "1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral) — the file a course grader "
            "or Kaggle reads.", icon=":material/upload_file:")

# ---------------------------------------------------------------- counts
st.header("Faces per class and split", divider="gray")
counts = dc.counts_frame(ds)
if counts.empty:
    st.caption("No labelled faces: nothing to count per class.")
else:
    st.altair_chart(dc.counts_chart(counts), width="stretch")
    st.markdown(dc.imbalance_note(counts))
    st.caption(
        "A network trained on imbalanced classes learns that guessing the common class pays: it "
        "will rarely answer the rare one. Accuracy hides this; the per-class recall on the "
        "Confusions page shows it. Training is the split the members learn from (each holds out a "
        "part of it for validation)" + ("; PublicTest and PrivateTest are the test faces."
                                        if len(counts["split"].unique()) > 1 else "."))
    with st.expander("The same counts as a table"):
        st.dataframe(dc.counts_table(counts), hide_index=True)

# ---------------------------------------------------------------- sample faces
st.header("Sample faces per class", divider="gray")
label = st.segmented_control(
    "Class", dc.class_options(ds), required=True, **ui.kept("ds_class", 0, dc.class_options(ds)),
    format_func=lambda c: dc.class_option_label(ds, c))
pick_split, pick_more, _ = st.columns([1, 1, 2], vertical_alignment="bottom")
split = pick_split.selectbox("Split", [None, *ds.split_names()], key="ds_split",
                             format_func=lambda s: "all splits" if s is None else dc.TITLES[s])
relabelled = ds.fer2013_labels is not None and pick_more.toggle(
    "Only faces FER+ relabelled", key="ds_relabelled",
    help="Faces whose FER+ majority label differs from their FER2013 label.")
rows = dc.sample_rows(ds, label, split, relabelled)
pages = dc.n_pages(len(rows), dc.PER_PAGE)
page_key = f"ds_page_{label}_{split}_{relabelled}_{len(rows)}"  # a new filter starts at page 1
page = st.session_state.get(page_key, 1)
shown = dc.page_of(rows, page, dc.PER_PAGE)
st.caption(f"{len(rows):,} faces of {dc.class_name(label)} in {'all splits' if split is None else dc.TITLES[split]}"
           + (f"; page {page} of {pages} ({dc.PER_PAGE} per page), in row order." if len(rows) else ".")
           + (" “was Fear”: FER2013's own label of a face that FER+'s taggers relabelled."
              if ds.fer2013_labels is not None else ""))
ui.face_grid(ds.images[shown], dc.sample_captions(ds, shown), scale=dc.SAMPLE_SCALE)
if pages > 1:
    st.pagination(pages, key=page_key)

if ds.votes is not None and len(shown):
    st.subheader("FER+ votes of one face")
    face_col, chart_col = st.columns([1, 3])
    row = face_col.selectbox("Face (from this page)", shown, **ui.kept("ds_face", shown[0], shown),
                             format_func=lambda i: dc.row_name(ds, i))
    face_col.image(ui.face_image(ds.images[row], 4), caption=dc.face_captions(ds, [row])[0])
    chart_col.markdown(dc.votes_summary(ds, row))
    chart_col.altair_chart(dc.votes_chart(dc.votes_frame(ds, row)), width="stretch")
    st.caption("FER+'s majority rule: votes of a single tagger are dropped, then the expression "
               "with more than half of the remaining votes wins. Faces whose winner is contempt, "
               "unknown or not-a-face (NF), or that have no majority, are left out of this dataset.")

# ---------------------------------------------------------------- the audit
st.header("Audit: faces that should not be there", divider="gray")
s = result.summary
dup = s["duplicates"]
m = st.columns(5)
m[0].metric("Blank faces", f"{len(result.blank):,}", help="Every pixel has the same value (e.g. all black).")
m[1].metric("Near-constant faces", f"{len(result.near_constant):,}",
            help=f"Pixel standard deviation below {dc.NEAR_CONSTANT_STD:g} grey levels (blank ones included).")
m[2].metric("Duplicate groups", f"{dup['groups']:,}", help=f"Sets of identical images; {dup['rows']:,} faces in all.")
m[3].metric("Redundant copies", f"{dup['redundant']:,}", help="Faces beyond the first of each duplicate group.")
m[4].metric("Groups with conflicting labels", f"{dup['conflicting_groups']:,}",
            help="Identical images that carry different labels.")
leaked = dc.leaks(ds, result)
if leaked:
    cols = st.columns(len(leaked))
    for col, (key, pairs) in zip(cols, leaked.items()):
        col.metric(dc.leak_title(key), f"{len(pairs):,}", help=dc.leak_help(ds, key, pairs))

st.subheader("Blank and near-constant faces")
if len(result.near_constant):
    st.markdown(dc.blank_note(ds, result))
    flat = result.near_constant[:dc.PER_PAGE * 2]
    ui.face_grid(ds.images[flat], dc.short_captions(ds, flat), scale=dc.SAMPLE_SCALE)
    if len(result.near_constant) > len(flat):
        st.caption(f"The first {len(flat)} of {len(result.near_constant):,}.")
    with st.expander("Their rows, splits, labels and grey levels"):
        st.dataframe(dc.flagged_table(ds, flat, result.std), hide_index=True,
                     column_config={"pixel std": st.column_config.NumberColumn(format="%.2f")})
else:
    st.caption(f"None: every face has a pixel standard deviation of at least {dc.NEAR_CONSTANT_STD:g} grey levels.")

st.subheader("Duplicate images")
if dup["groups"]:
    st.markdown(dc.duplicates_note(ds, dup))
    differ_only = st.toggle("Only pairs whose labels differ", key="ds_dup_differ")
    pairs = dc.duplicate_pairs(ds, result, differ_only)
    key = f"ds_dup_page_{differ_only}_{len(pairs)}"
    shown_pairs = dc.page_of(pairs, st.session_state.get(key, 1), dc.PAIRS_PER_PAGE)
    ui.face_grid(dc.pair_strips(ds, shown_pairs), dc.pair_captions(ds, shown_pairs))
    if len(pairs) > dc.PAIRS_PER_PAGE:
        st.pagination(dc.n_pages(len(pairs), dc.PAIRS_PER_PAGE), key=key)
    st.caption(f"{len(pairs):,} pairs, {int(dc.labels_differ(ds, pairs).sum()):,} of them with different "
               "labels (shown first).")
else:
    st.caption("None: no two faces are pixel-for-pixel identical.")

st.subheader("Test faces leaked into training")
if found := dc.found_leaks(leaked):
    st.markdown(
        "A test face whose exact copy is also a training face is not a test: a network that "
        "memorised the training copy answers it from memory, so the test accuracy comes out higher "
        "than on truly new faces. Each pair: the test face (left) and its copy (right), captioned with "
        "their row numbers and labels; bars and frames as above.")
    which = st.segmented_control("Leak", found, required=True, **ui.kept("ds_leak", found[0], found),
                                 format_func=lambda k: f"{dc.leak_title(k)} ({len(leaked[k]):,})")
    pairs = leaked[which]
    key = f"ds_leak_page_{which}_{len(pairs)}"
    shown_pairs = dc.page_of(pairs, st.session_state.get(key, 1), dc.PAIRS_PER_PAGE)
    st.caption(dc.leak_help(ds, which, pairs))
    ui.face_grid(dc.pair_strips(ds, shown_pairs), dc.pair_captions(ds, shown_pairs))
    if len(pairs) > dc.PAIRS_PER_PAGE:
        st.pagination(dc.n_pages(len(pairs), dc.PAIRS_PER_PAGE), key=key)
elif leaked:
    st.caption("None: no test face has an exact copy in an earlier split.")
else:
    st.caption("Only one split: there is nothing to leak between.")
st.caption("A run can leave the flagged training faces out (option `exclude_flagged` of its "
           "config); the test splits stay as they are, so scores remain comparable with published "
           "FER2013 results.")
