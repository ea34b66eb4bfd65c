"""FER Ensemble Lab — the frame: page config, sidebar pickers (dataset, run), navigation, home.

Run with ``streamlit run streamlit_app.py``. Pages live in ``app_pages/`` and only draw; everything
they show is computed by the ``fer`` package. Add a page by adding a row to ``PAGES``.
"""

from __future__ import annotations

import streamlit as st

from app_pages import ui
from fer.data import data_root
from fer.errors import FerError
from fer.runs import list_runs

# file, title, icon, what a student finds there (the home page lists these; tests walk them)
PAGES: list[tuple[str, str, str, str]] = [
    ("app_pages/dataset.py", "Dataset", ":material/photo_library:",
     ("What is in the data: faces per class and split, a sample of each class, and the "
      "audit's findings (blank faces, duplicates, test faces leaked into training).")),
    ("app_pages/train.py", "Train", ":material/model_training:",
     ("Train an ensemble of small CNNs and watch the learning curves of every member live; "
      "then see how much the majority and soft votes gain over a single member.")),
    ("app_pages/ensemble_size.py", "Ensemble size", ":material/stacked_line_chart:",
     ("Does a 15-member ensemble beat 9? Accuracy against the number of members, from one "
      "trained pool, with error bars, calibration and the oracle.")),
    ("app_pages/confusion.py", "Confusions", ":material/grid_on:",
     ("Which emotions does the ensemble confuse? Click a confusion-matrix cell to see its "
      "faces and votes; find the training labels that are probably wrong.")),
    ("app_pages/saliency.py", "Saliency", ":material/visibility:",
     ("Where does each member look? Gradient, SmoothGrad, Integrated Gradients and Grad-CAM "
      "maps per member, their mean and where the members disagree.")),
    ("app_pages/filters.py", "Filters", ":material/filter_vintage:",
     ("What has each filter learned? The faces that excite it most, the pattern it likes "
      "best, and its feature map on one face.")),
    ("app_pages/your_face.py", "Your face", ":material/face:",
     ("Upload a photo or use the camera: the face is found, cut to 48×48 and shown to "
      "every member, which vote.")),
    ("app_pages/architecture.py", "Architecture", ":material/account_tree:",
     ("The model layer by layer: output shapes, parameters, receptive fields; the conv "
      "output-size rule and the BatchNorm and softmax gradients checked against autograd.")),
]


def home() -> None:
    """What the app is, what is active, where to go."""
    st.title("FER Ensemble Lab")
    st.markdown(
        "This lab trains small **convolutional neural networks** to recognise seven facial "
        "expressions (angry, disgust, fear, happy, sad, surprise, neutral) in 48×48 grayscale "
        "faces, the format of the FER2013 dataset. Instead of one network it trains an "
        "**ensemble**: several *members* that differ only in their random seed, which then "
        "**vote**. You can watch them learn and compare the vote with each single member.")
    data_col, run_col = st.columns(2)
    with data_col.container(border=True):
        st.markdown("**Active dataset** (change it in the sidebar)")
        try:
            ds = ui.current_dataset()
        except FerError as e:
            st.error(str(e), icon=":material/error:")
        else:
            st.markdown(f"`{ds.id}` — " + ", ".join(f"{n:,} {s}" for s, n in ui.split_sizes(ds).items())
                        + " faces")
            if ds.is_synthetic:
                st.caption(ui.SYNTHETIC_NOTE)
    with run_col.container(border=True):
        st.markdown("**Active run** (pick another in the sidebar)")
        run = ui.current_run()
        st.markdown(f"`{ui.run_label(run)}`" if run else "No run yet: start one on the Train page.")
    st.markdown(
        "**How to start**\n"
        "1. Pick a dataset in the sidebar: the built-in synthetic faces work at once; for the real "
        "FER2013, type the path of your `fer2013.csv`.\n"
        "2. On **Train**, start a small ensemble (3 members × 5 epochs takes minutes on a laptop) "
        "and watch it learn.\n"
        "3. Open the other pages to look inside the trained members.")
    st.subheader("Pages")
    for file, title, icon, blurb in PAGES:
        st.page_link(file, label=title, icon=icon)
        st.caption(blurb)


def sidebar() -> None:
    """Dataset and run pickers; what is active, and whether the data are synthetic."""
    ui.init_picks()
    with st.sidebar:
        root = data_root()  # FER_DATA_ROOT: typed paths must lie inside it (checked by ui.load)
        inside = f" On this server, paths must lie inside {root}." if root else ""
        st.text_input("Dataset", key=ui.DATA_KEY,
                      help="Path to Kaggle's fer2013.csv (also .csv.gz or .zip), or the word "
                           f"'synthetic' for the built-in drawn faces.{inside}")
        if not ui.data_source().startswith("synthetic"):
            st.text_input("FER+ votes (optional)", key=ui.FERPLUS_KEY, placeholder="fer2013new.csv",
                          help="Path to Microsoft's FER+ fer2013new.csv: the faces get FER+'s "
                               "majority-vote labels (Barsoum et al. 2016) and each face's 10 "
                               "votes are shown; rows without a clear majority are left out.")
        try:
            ds = ui.current_dataset()
        except FerError as e:
            st.error(str(e), icon=":material/error:")
        else:
            sizes = ui.split_sizes(ds)
            st.caption(f"Active: **{ds.id}** · " + " · ".join(f"{s} {n:,}" for s, n in sizes.items()))
            if ds.is_synthetic:
                st.info(ui.SYNTHETIC_NOTE, icon=":material/info:")
        runs = list_runs()
        ids = [r.id for r in runs]
        if st.session_state.get(ui.RUN_KEY) not in ids:
            st.session_state[ui.RUN_KEY] = ui.default_run_id(runs)
        if runs:
            # Option labels stay fixed (id · owner): the browser keeps showing a selected option's
            # old text when only its label changes, so the live state goes in the caption.
            owners = {r.id: f"{r.id} · {'shipped' if r.shipped else 'yours'}" for r in runs}
            picked = st.selectbox("Run", ids, key=ui.RUN_KEY, format_func=owners.get,
                                  help="Runs you trained (newest first), then runs shipped with "
                                       "the app. Under the picker: owner · state · members done.")
            st.caption(ui.run_label(next(r for r in runs if r.id == picked)).split(" · ", 1)[1])
        else:
            st.caption("No runs yet: start one on the Train page.")
    ui.remember_picks()


st.set_page_config(page_title="FER Ensemble Lab", layout="wide")
navigation = st.navigation(
    [st.Page(home, title="Home", icon=":material/home:", default=True)]
    + [st.Page(file, title=title, icon=icon) for file, title, icon, _ in PAGES])
sidebar()
with ui.guard():
    navigation.run()
