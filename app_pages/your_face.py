"""Your face page: a photo (upload or camera) → the detected face at 48x48 → every member's vote,
the ensemble's verdict (or "unsure"), and the saliency maps of this face."""

import streamlit as st

from app_pages import saliency_charts as sc
from app_pages import ui
from fer.faces import MAJORITY

st.title("Your face through the ensemble")
st.markdown(
    "Upload a photo (or take one with the camera) and see what the ensemble makes of it. The "
    "photo is turned upright (its EXIF orientation), made gray, searched for faces with OpenCV's "
    "Haar cascade detector, cut around the face with a margin and shrunk to **48×48 pixels** — "
    "the size of the FER2013 faces the members learned from. Nothing is stored: the photo lives "
    "in this browser session only.")

run, _ = ui.run_with_members()
members = ui.run_members(run)
notes = st.container()  # so that the widgets below keep their place whether it is used or not
if run.config().get("dataset_synthetic"):
    notes.warning(f"Run `{run.id}` learned from **synthetic drawn faces**, not photos: its votes on "
               "a real face are a curiosity, not a measurement. Pick a run trained on FER2013 in "
               "the sidebar for a fair try.", icon=":material/warning:")

with st.container():  # the photo's elements vary (faces found or not): keep what follows in place
    face = sc.photo_face("face")
    if face is None:
        st.info("Upload a photo or take one with the camera.")
        st.stop()

# ---------------------------------------------------------------- the vote
st.subheader("The ensemble's verdict")
v = sc.verdict(run, members, face)
st.markdown(sc.verdict_line(v))
st.caption(f"Rule: each of the {len(members)} members votes for its most probable expression; the "
           f"ensemble names an expression only when **more than half** of them (> {MAJORITY * len(members):g}) "
           "vote for it, and says *unsure* otherwise — a plurality of a split vote is not an answer.")
left, right = st.columns(2)
left.altair_chart(sc.votes_chart(v), width="stretch")
right.altair_chart(sc.probability_chart(v), width="stretch")

# ---------------------------------------------------------------- where they look
st.subheader("Where the members look")
sc.saliency_panel(run, members, face, None, key="face_saliency", sanity=False)
st.caption("The sanity check (randomising the members' weights) is on the Saliency page.")
