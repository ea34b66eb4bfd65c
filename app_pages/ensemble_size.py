"""Ensemble size page: accuracy, disagreement and calibration of a k-member ensemble for every k,
from one trained pool of members (no retraining), optionally beside a second run."""

import streamlit as st

from app_pages import size_charts as sc
from app_pages import ui
from fer.labels import SPLIT_TITLES
from fer.runs import list_runs

st.title("Ensemble size: how many members are enough?")
st.markdown(
    "A trained run holds a **pool** of M members. To see what an ensemble of **k** members would "
    "score, nothing is retrained: the page takes **k-subsets** of the pool — every possible group "
    "of k members when there are at most 200 such groups, otherwise 200 groups drawn at random — "
    "lets each group vote on the test faces and scores it. Two ways to vote:\n"
    "- **majority vote**: each member names one expression and the most named wins (on a tie, "
    "the tied expression with the higher mean probability);\n"
    "- **soft vote**: the members' probabilities are averaged and the highest wins.")

# ---------------------------------------------------------------- picks
runs = list_runs()
if not runs:
    st.info("No run yet: train one on the Train page (3 members or more shows a curve).")
    st.stop()
ids = [r.id for r in runs]
owners = {r.id: "shipped" if r.shipped else "yours" for r in runs}
current = ui.current_run()
pick, other_pick, split_pick = st.columns([2, 2, 1.4])
# No key: the picker follows the sidebar's run until you pick another one here.
run_id = pick.selectbox("Run", ids, index=ids.index(current.id) if current else 0,
                        format_func=lambda i: f"{i} ({owners[i]})",
                        help="The sidebar's run by default.")
compare_id = other_pick.selectbox(
    "Compare with", ["", *[i for i in ids if i != run_id]], key="size_compare",
    format_func=lambda i: f"{i} ({owners[i]})" if i else "— no second run —",
    help="A second run drawn on the same charts, in another colour: e.g. more epochs or "
         "another augmentation.")
split = split_pick.radio("Test split", sc.TEST_SPLITS, index=1, key="size_split",
                         format_func=SPLIT_TITLES.get, horizontal=True)
st.caption("Validation is not offered: each member holds out its own validation faces, so the "
           "members never vote on the same validation face.")

shown = [ui.find_run(run_id)] + ([ui.find_run(compare_id)] if compare_id else [])
configs = {r.id: r.config() for r in shown}
by_run = sc.reports(shown)  # {run id: {split: evaluate_run report or None}}
ready = {rid: splits[split] for rid, splits in by_run.items() if splits[split] is not None}
if run_id not in ready:
    st.info(f"`{run_id}` has no predictions on {SPLIT_TITLES[split]} yet: a member's test faces are "
            "predicted after its last epoch. Come back when the first member has finished.")
    st.stop()
for rid in [r for r in by_run if r not in ready]:
    st.warning(f"`{rid}` has no predictions on {SPLIT_TITLES[split]} yet: only `{run_id}` is drawn.")
real = all(not configs[rid].get("dataset_synthetic", False) for rid in ready)
if len({configs[rid].get("dataset_sha256") for rid in ready}) > 1:
    st.warning("The two runs were trained and tested on different data: their curves are not "
               "directly comparable.")

# ---------------------------------------------------------------- the answer in four numbers
main = ready[run_id]
pool = len(main["member_ids"])
top = main["size_curve"][-1]
st.subheader(f"{run_id} on {SPLIT_TITLES[split]}: {main['n']:,} faces, a pool of {pool} member(s)")
if pool < configs[run_id]["members"]:
    st.caption(f"{pool} of {configs[run_id]['members']} members have finished; the curve grows as "
               "the others finish.")
if pool == 1:
    st.info("With one member there is no ensemble yet: the curve is a single point. Train (or "
            "wait for) 3 members or more.")
one = main["size_curve"][0]["majority"]["mean"]
c1, c2, c3, c4 = st.columns(4)
c1.metric("One member (mean)", f"{one:.1%}")
c2.metric(f"Majority vote of all {pool}", f"{top['majority']['mean']:.1%}",
          f"{top['majority']['mean'] - one:+.1%} vs one member")
c3.metric(f"Soft vote of all {pool}", f"{top['soft']['mean']:.1%}", f"{top['soft']['mean'] - one:+.1%} vs one member")
c4.metric(f"Oracle of all {pool}", f"{top['oracle']['mean']:.1%}",
          help="A face counts as right when any member gets it right.")

# ---------------------------------------------------------------- accuracy against k
st.subheader("Accuracy against ensemble size")
oracle = st.toggle("Show the oracle", value=True, key="size_oracle",
                   help="The oracle often lies far above the votes; hide it to zoom in on them.")
st.altair_chart(sc.accuracy_chart(sc.accuracy_frame(ready), sc.member_frame(ready), SPLIT_TITLES[split],
                                  references=real, oracle=oracle), width="stretch")
st.caption(
    "Lines: mean accuracy of the k-member ensembles scored; shaded: ± one standard deviation "
    "between them; whiskers: the worst and the best ensemble of that size (left: majority, "
    "right: soft vote). Dots at k = 1: each member alone. At k = M there is only one ensemble, "
    "the whole pool, so the band and whiskers close."
    + (" Grey lines: published FER2013 results — human accuracy ≈ 65% (Goodfellow et al. 2013) "
       "and the 2013 Kaggle challenge winner, 71.2% on PrivateTest (Tang 2013)." if real else
       " Reference lines for human accuracy and the 2013 challenge winner appear only for runs "
       "on the real FER2013; this one uses synthetic faces."))
st.markdown(
    "**Why the curve flattens.** A vote fixes a member's mistake only where other members get "
    "that face right. If every member erred on *different* faces, a few more members would fix "
    "almost everything. But members with the same architecture, trained on the same faces, find "
    "mostly the *same* faces hard — their errors are correlated — so after a few members a new "
    "one mostly repeats what the others already say. The **oracle** (a face counts as right when "
    "*any* member of the group gets it right) is the ceiling of the majority vote, which can only "
    "pick an answer some member gave; the gap between oracle and vote is knowledge the members "
    "hold that the vote cannot use.")

# ---------------------------------------------------------------- the teacher's table
st.subheader("The table for your report")
t1, t2 = st.columns([3, 1])
largest = max(len(rep["member_ids"]) for rep in ready.values())
# Keyed by the largest pool: each pool size keeps its own picks, a new one starts at the defaults.
sizes = t1.multiselect("Ensemble sizes (columns)", list(range(1, largest + 1)),
                       default=sc.default_sizes(largest), key=f"size_sizes_{largest}",
                       help="Sizes larger than a run's pool stay blank.")
soft = t2.toggle("Soft vote rows too", key="size_soft")
table = sc.size_table({rid: by_run[rid] for rid in ready}, sorted(sizes), soft)
# A static table (not st.dataframe's canvas): it prints, screenshots and copies into a report as is.
st.table(table.style.format("{:.1f}", subset=[sc.size_column(k) for k in sizes], na_rep="—")
         .hide(axis="index"))
st.caption("Each cell: accuracy (%) of a k-member ensemble, averaged over the k-member groups "
           "scored from the pool (all of them, or 200 drawn at random). The 1-member column is the "
           "average single member; —: the run has fewer members than that.")

# ---------------------------------------------------------------- diversity and calibration
st.subheader("Disagreement and calibration against ensemble size")
measures = sc.measure_frame(ready)
left, right = st.columns(2)
left.altair_chart(sc.measure_chart(measures, [sc.DISAGREEMENT, sc.ECE], "fraction", ".1%",
                                   "Disagreement and ECE (lower ECE is better)"), width="stretch")
right.altair_chart(sc.measure_chart(measures, [sc.NLL], "NLL (nats)", ".3f",
                                    "NLL of the soft vote (lower is better)"), width="stretch")
st.markdown(
    "**Disagreement**: on what fraction of faces two members of the group name different "
    "expressions, averaged over all pairs. It is a property of *pairs*, so it does not grow with "
    "k (with all groups scored it is exactly the pool's average); it measures how much room the "
    "vote has to correct anyone.  \n"
    "**ECE** (expected calibration error, Guo et al. 2017): sort the faces into 15 bins by the "
    "soft vote's confidence (its top probability) and, in each bin, compare the confidence with "
    "the fraction actually right; ECE is the average gap, weighted by the faces in each bin. 0% "
    "means \"when it says 80%, it is right 80% of the time\".  \n"
    "**NLL** (negative log-likelihood): the average of −log(probability given to the true "
    "expression); confident mistakes cost the most, lower is better. Averaging tempers "
    "over-confident members, so NLL usually falls as k grows. ECE can go either way: averaging "
    "members that disagree also lowers the confidence on faces the vote gets right, so an "
    "ensemble of well-calibrated members can become *under*-confident — the reliability diagram "
    "below shows which.")

# ---------------------------------------------------------------- one member vs the ensemble
st.subheader("Reliability diagram: one member against the whole ensemble")
accs = dict(zip(main["member_ids"], main["members"]))
chart_col, text_col = st.columns([1, 1])
member = text_col.selectbox("Member", main["member_ids"],
                            **ui.kept("size_member", main["member_ids"][0], main["member_ids"]),
                            format_func=lambda m: f"member {m} (alone: {accs[m]:.1%})")
rel = sc.reliability(ui.find_run(run_id), split, member)
chart_col.altair_chart(sc.reliability_chart(sc.reliability_frame(rel)), width="content")
text_col.markdown(
    f"{run_id} on {SPLIT_TITLES[split]}. The faces are sorted into 15 bins by confidence (the "
    "top probability). Each point is one bin: x = the mean confidence of its faces, y = the "
    "fraction of them predicted right, size = how many faces.\n\n"
    "On the dashed **diagonal**, confidence equals accuracy: \"80% sure\" is right 80% of the "
    "time. Points **below** it are over-confident, points **above** it under-confident. The ECE "
    "in the legend is the faces-weighted mean vertical distance to the diagonal.")
