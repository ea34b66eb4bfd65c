"""Confusions page: the confusion matrix of the ensemble or one member on a chosen set of faces;
click a cell to see exactly its faces and their votes; top confusions; per-class scores; the faces
the vote fixed or broke; and the out-of-bag check for training labels that are probably wrong."""

import streamlit as st

from app_pages import confusion_charts as cc
from app_pages import ui
from fer import confusion as fc
from fer.labels import CLASS_NAMES

TRUE, PRED, NONCE = "cm_true", "cm_pred", "cm_nonce"  # the selected cell, and the matrix's generation

st.title("Confusions: which expressions get mixed up, and on which faces?")
st.markdown(
    "A **confusion matrix** counts, for every true expression (row), how often it was predicted as "
    "each expression (column): the diagonal holds the right answers, everything else a confusion. "
    "**Click a cell** to see exactly the faces in it, with how the members voted.")

run, members = ui.run_with_members()

# ---------------------------------------------------------------- picks
views = [v for v in fc.VIEWS if run.predictions_file("train" if v == "validation" else v)]
split_col, who_col, norm_col = st.columns([2.6, 1.4, 1], vertical_alignment="bottom")
view = split_col.selectbox("Faces", views, index=views.index("private_test") if "private_test" in views else 0,
                           key="cm_view", format_func=cc.VIEW_TITLES.get, help=cc.VIEW_HELP)
who_pick = who_col.selectbox("Who votes", cc.who_options(members), key="cm_who",
                             format_func=lambda o: {"majority": "majority vote", "soft": "soft vote"}.get(o, o),
                             help="The ensemble's majority vote (most named expression; a tie goes to the "
                                  "tied expression with the higher mean probability), its soft vote "
                                  "(highest mean probability), or one member alone.")
normalise = norm_col.toggle("Row-normalised", key="cm_norm",
                            help="Colour by the share of each true class (each row sums to 100%) "
                                 "instead of by raw counts.")
who = cc.who_value(who_pick)

data = cc.confusion_view(run, view, who)
faces, cm = data["faces"], data["cm"]
if cm.sum() == 0:
    st.info(f"No face of {cc.VIEW_TITLES[view]} has a vote from {who_pick}: e.g. no member held a "
            "training face out yet. Pick other faces or another voter.")
    st.stop()
if TRUE not in st.session_state:  # first visit: the largest confusion
    first = (fc.top_confusions(cm, 1) or [dict(true=0, pred=0)])[0]
    st.session_state[TRUE], st.session_state[PRED] = first["true"], first["pred"]

who_text = {"majority": "majority vote", "soft": "soft vote"}.get(who, f"member {who}")


# A fragment: clicking a cell, picking one, paging or opening a face redraws only this part of the
# page, not the top confusions and galleries below (they depend on the faces and voter, not on the cell).
@st.fragment
def cell_browser() -> None:
    # ---------------------------------------------------------------- the matrix and the per-class scores
    left, right = st.columns([1.35, 1], gap="medium")
    with left:
        st.markdown(f"**{who_text} on {cc.VIEW_TITLES[view]}**: {int(cm.sum()):,} faces, "
                    f"accuracy {data['accuracy']:.1%}")
        chart_key = f"cm_chart_{st.session_state.get(NONCE, 0)}"
        st.vega_lite_chart(cc.matrix_spec(cm, normalise, (st.session_state[TRUE], st.session_state[PRED])),
                           key=chart_key, on_select=lambda: cc.on_matrix_click(chart_key, TRUE, PRED),
                           selection_mode=cc.CELL, width="content")
        st.caption("Each cell: " + ("share of the true class (big) and faces (small)" if normalise else
                                    "faces (big) and share of the true class (small)")
                   + ". Blue: right answers; orange: confusions, each shaded on its own scale. "
                   "Click a cell, or pick it below.")
        if data["n_left_out"]:
            st.caption(f"{data['n_left_out']:,} training faces are left out: no member of this vote "
                       + ("held them out." if view == "validation" else "trained on them."))
    with right:
        st.markdown("**Per class**")
        st.dataframe(cc.per_class_frame(data), hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.1f%%") for c in cc.PERCENT_COLUMNS})
        st.caption("Precision: of the faces predicted as the class, the share that are. Recall: of the "
                   "faces of the class, the share found (the matrix's diagonal, row-normalised). F1: "
                   "their harmonic mean. Support: faces of the class here.")
        st.markdown("**Accuracy per class against its training faces**")
        st.vega_lite_chart(cc.class_count_spec(run, data), width="stretch")

    # ---------------------------------------------------------------- the selected cell's faces
    ds = ui.dataset_for_run(run)
    pick_true, pick_pred, pick_sort = st.columns([1, 1, 1.2])
    def bump() -> None:  # a picked cell starts a fresh matrix: its old click would stay highlighted
        st.session_state[NONCE] = st.session_state.get(NONCE, 0) + 1

    true = pick_true.selectbox("True class", range(len(CLASS_NAMES)), key=TRUE, format_func=CLASS_NAMES.__getitem__,
                               on_change=bump)
    # Fixed labels: a label that changed with the true class (e.g. a count) would come back as a str
    pred = pick_pred.selectbox("Predicted class", range(len(CLASS_NAMES)), key=PRED, on_change=bump,
                               format_func=CLASS_NAMES.__getitem__)
    sort = pick_sort.selectbox("Order", list(cc.SORTS), key="cm_sort", format_func=cc.SORT_TITLES.get,
                               help="Confidence: the voters' mean probability of the predicted class. "
                                    "Vote margin: votes for it minus votes for the runner-up, as a share "
                                    "of the voters (for one member: its top probability minus the next).")
    idx = fc.cell_faces(faces, true, pred, *cc.SORTS[sort])
    verb = "recognised as" if true == pred else "taken for"
    st.subheader(f"{CLASS_NAMES[true]} {verb} {CLASS_NAMES[pred]}: {len(idx):,} faces")
    cc.gallery(run, ds, view, faces, idx, None, key=f"cm_cell_{view}_{who_pick}_{true}_{pred}_{sort}",
               caption_for=lambda page: fc.face_captions(faces, page, single=isinstance(who, int)))


cell_browser()
ds = ui.dataset_for_run(run)

# ---------------------------------------------------------------- top confusions
st.subheader("Top confusions")
st.caption(f"The largest off-diagonal cells of the matrix above ({who_text} on {cc.VIEW_TITLES[view]}), "
           "each with its most confident faces (dataset row · confidence).")
cc.confusion_strips(ds, faces, fc.top_confusions(cm, 6, faces, per=9), (TRUE, PRED, NONCE))

# ---------------------------------------------------------------- fixed it / broke it
st.subheader("Did the vote fix it or break it?")
how = "soft" if who == "soft" else "majority"
median = cc.ensemble_fixes(run, view, None, how)
against = st.selectbox(
    "Compare the vote with", members, **ui.kept(f"cm_against_{how}", median["member"], members),
    format_func=lambda m: f"member {m} ({median['member_accuracies'][m]:.1%})"
                          + (" · the median member" if m == median["member"] else ""))
# the median member (the default) is what the first call compared with already
fixes = median if against == median["member"] else cc.ensemble_fixes(run, view, against, how)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Fixed by the vote", f"{fixes['fixed']:,}", help="The vote is right, the member is wrong.")
m2.metric("Broken by the vote", f"{fixes['broke']:,}", help="The vote is wrong, the member is right.")
m3.metric("Net gain", f"{fixes['fixed'] - fixes['broke']:+,} faces",
          f"{fixes['vote_accuracy'] - fixes['member_accuracy']:+.1%} accuracy")
m4.metric(f"{how.capitalize()} vote / member {against}",
          f"{fixes['vote_accuracy']:.1%} / {fixes['member_accuracy']:.1%}")
st.caption(f"On the {fixes['compared']:,} faces of {cc.VIEW_TITLES[view]} that member {against} votes on: "
           f"both right on {fixes['both_right']:,}, both wrong on {fixes['both_wrong']:,}. The median "
           "member is the middle one when the members are sorted by accuracy: a typical single model.")
# One gallery at a time (not two tabs, which would both draw their faces on every rerun)
part = st.radio("Faces", ["fixed", "broke"], horizontal=True, label_visibility="collapsed",
                **ui.kept("cm_fix_part", "fixed", ["fixed", "broke"]),
                format_func=lambda k: f"Fixed by the vote ({fixes['fixed']:,})" if k == "fixed"
                else f"Broken by the vote ({fixes['broke']:,})")
cc.gallery(run, ds, view, fixes["faces"], fixes[f"{part}_idx"], None, key=f"cm_{part}_{view}_{how}_{against}",
           caption_for=lambda page: fc.fix_captions(fixes, page), per_page=10)

# ---------------------------------------------------------------- out-of-bag label check
st.subheader("Out-of-bag label check: training labels that are probably wrong")
st.markdown(
    f"Every member held out its own {run.config()['val_fraction']:.0%} of the training faces, so each "
    "training face was **not** "
    "seen by a few members. Their votes on it are honest — the **out-of-bag** vote. Where they "
    "confidently name another expression than the label, the label is suspect: FER2013's labels "
    "were gathered quickly, and the FER+ re-labelling by 10 people per face changed many of them.")
if run.predictions_file("train") is None:
    st.info("This run has no predictions on its training faces.")
    st.stop()
oob = cc.out_of_bag(run)
most = int(oob["voters"].max())
if most == 0:
    st.info("No training face has an out-of-bag member yet.")
    st.stop()
min_col, score_col = st.columns(2)
min_voters = min_col.slider("At least this many out-of-bag members", 1, max(2, most), 1, key="cm_oob_min",
                            disabled=most < 2, help=f"Each face has 0 to {most} of them; more members make "
                                                    "a steadier vote but leave fewer faces.")
min_score = score_col.slider("Out-of-bag confidence gap at least", 0.0, 0.95, 0.5, 0.05, key="cm_oob_gap",
                             help="Mean out-of-bag probability of the voted expression minus that of the "
                                  "label.")
suspects = fc.probably_mislabelled(oob, min_voters, min_score)
covered = int((oob["voters"] >= min_voters).sum())
st.markdown(f"**{len(suspects):,} probably mislabelled** of the {covered:,} training faces with at least "
            f"{min_voters} out-of-bag member(s) ({len(suspects) / max(1, covered):.1%}).")
votes = ds.votes[oob["rows"]] if ds.votes is not None else None
if ds.is_synthetic:
    st.caption("These faces are synthetic: their labels are right by construction, so every suspect "
               "here is a mistake of the held-out members — the check's false alarms. On FER2013 many "
               "suspects are real labelling errors.")
elif votes is None:
    plus = st.text_input("FER+ votes (optional)", key="cm_ferplus", placeholder="path to fer2013new.csv",
                         help="Microsoft's FER+ file: 10 people's votes for every FER2013 face. The "
                              "crowd's votes then appear under each suspect.")
    if plus.strip():
        votes = cc.ferplus_votes(plus, ds)[oob["rows"]]
if votes is not None:
    agree = fc.ferplus_agreement(votes[suspects], oob["labels"][suspects], oob["pred"][suspects])
    sides = {"FER+ sides with the out-of-bag vote": "vote", "FER+ sides with the label": "label",
             "FER+ names a third class": "other", "FER+ has no majority": "none"}
    for col, (label, part) in zip(st.columns(4), sides.items()):
        col.metric(label, f"{agree[part]:,}", f"{agree[part] / max(1, agree['faces']):.0%} of the suspects",
                   delta_color="off", delta_arrow="off",
                   help=("No expression holds more than half of the votes (single votes dropped), or the "
                         "winner is contempt, unknown or not a face.") if part == "none" else None)
    if ds.fer2013_labels is not None:
        st.caption("This run was trained on FER+ labels already, so the label here is the crowd's "
                   "majority: the suspects are faces where held-out members disagree with the crowd.")
cc.gallery(run, ds, "validation", oob, suspects, None, key=f"cm_oob_{min_voters}_{min_score}", per_page=10,
           caption_for=lambda page: fc.oob_captions(oob, page, None if votes is None else votes[page]))
cc.prewarm(run, views, how)
