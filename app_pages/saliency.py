"""Saliency page: where each member looks when it scores an expression, the ensemble's mean map,
where the members disagree, and the cascading-randomisation sanity check.

Other pages link here with a dataset row: ``st.session_state["saliency_index"] = row`` then
``st.switch_page("app_pages/saliency.py")``, or ``?face=<row>`` in the URL
(``st.page_link("app_pages/saliency.py", query_params={"face": row})``).
"""

import streamlit as st

from app_pages import saliency_charts as sc
from app_pages import ui

st.title("Saliency: where does each member look?")
st.markdown(
    "A **saliency map** colours each pixel of a face by how much a member's score for one "
    "expression depends on it. The four methods answer that question differently (pick one "
    "below). Every member of the ensemble gets its own map; their **mean** shows where the "
    "ensemble looks, their **standard deviation** where the members disagree about where to "
    "look. Maps are computed with the members in evaluation mode: computing them never changes "
    "a member's weights, BatchNorm statistics or predictions.")

run, _ = ui.run_with_members()
members = ui.run_members(run)
st.caption(f"Run `{run.id}`: {len(members)} member(s) (change the run in the sidebar).")

# One container for the face picker, whose elements vary with the source: the maps' widgets
# below then keep their place on the page, and with it their values.
with st.container():
    source = st.segmented_control("Face from", ["The dataset", "A photo"], default="The dataset",
                                  key="saliency_source")
    if source == "A photo":
        face, true_label = sc.photo_face("saliency_photo"), None
        if face is None:
            st.info("Upload a photo or take one with the camera to see its maps.")
            st.stop()
    else:
        face, true_label = sc.dataset_face(run, ui.dataset_for_run(run))
st.divider()
sc.saliency_panel(run, members, face, true_label, key="saliency")
