"""Train page: start an ensemble in a background worker and watch its members learn, live.

The worker (``python -m fer train``) owns the run directory; this page only reads it, so a page
switch or a browser reload reattaches to a running training and never starts a second one.
"""

import shutil
import time

import streamlit as st

from app_pages import ui
from fer.labels import SPLIT_TITLES
from fer.models import list_models
from fer.run_archive import zip_run
from fer.runs import new_run_dir, start_worker
from fer.training import (
    AUGMENTS,
    CLASS_WEIGHTS,
    PRECISIONS,
    SCHEDULES,
    TrainConfig,
    create_run,
    dataset_fields,
)

START_GUARD_S = 5.0

st.title("Train an ensemble")
st.markdown(
    "An **ensemble** is several copies of one small CNN — its **members** — trained separately. "
    "They differ only by their **seed**, which decides which training faces a member holds out "
    "for **validation**, its starting weights and the order in which it sees the faces. "
    "Once trained, the members **vote** on test faces none of them has seen.")

# ---------------------------------------------------------------- a new run
with st.container(border=True):
    st.subheader("Start a new run")
    d = TrainConfig  # the defaults, one source for this form and the command line
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox("Model", list_models(), index=list_models().index(d.model), key="train_model",
                         help="The network architecture; its layers are listed below.")
    members = c1.number_input("Members", 1, 25, d.members, key="train_members",
                              help="How many networks to train; each gets seed = base seed + k.")
    epochs = c2.number_input("Epochs per member", 1, 200, d.epochs, key="train_epochs",
                             help="Passes over the member's training faces.")
    batch_size = c2.number_input("Batch size", 8, 1024, d.batch_size, step=32, key="train_batch",
                                 help="Faces per gradient step.")
    lr = c3.number_input("Learning rate", 1e-5, 1.0, d.lr, step=1e-4, format="%.4f", key="train_lr",
                         help="Step size of the Adam optimiser.")
    val_fraction = c3.number_input("Validation fraction", 0.05, 0.5, d.val_fraction, step=0.05, key="train_val",
                                   help="Share of the training faces each member holds out to pick "
                                        "its best epoch.")
    seed = c4.number_input("Base seed", 0, 1_000_000, d.base_seed, key="train_seed",
                           help="Same seed, same data, same machine → the same numbers.")
    augment = c4.selectbox("Augmentation", AUGMENTS, index=AUGMENTS.index(d.augment), key="train_augment",
                           help="standard: random left-right mirror + small shifts, rotations and "
                                "zooms (+5 points PrivateTest for one FER2013 member); flip: "
                                "the mirror only; none: the faces as they are.")
    with st.expander("More settings"):
        m1, m2, m3 = st.columns(3)
        precision = m1.selectbox("Precision", PRECISIONS, index=PRECISIONS.index(d.precision), key="train_precision",
                                 help="auto: bfloat16 on CPU (faster), mixed precision on a GPU; "
                                      "fp32: plain 32-bit floats.")
        schedule = m2.selectbox("Learning-rate schedule", SCHEDULES, index=SCHEDULES.index(d.schedule),
                                key="train_schedule",
                                help="cosine: decay to 0 over all epochs (+1 point PrivateTest for "
                                     "one FER2013 member); constant: the same rate throughout.")
        weights = m2.selectbox("Class weights", CLASS_WEIGHTS, index=CLASS_WEIGHTS.index(d.class_weights),
                               key="train_class_weights",
                               help="balanced: each class counts as much in the loss as the others, "
                                    "so a rare class (Disgust: 1.5 % of FER2013's training faces) "
                                    "weighs about 9 times more per face; none: every face counts "
                                    "the same.")
        smoothing = m3.number_input("Label smoothing", 0.0, 0.5, d.label_smoothing, step=0.05, key="train_smoothing",
                                    help="Share of each target spread evenly over the other classes. "
                                         "0.1 did not help one FER2013 member, and it made the "
                                         "ensemble's soft vote under-confident.")
        exclude = m1.checkbox("Leave out flagged training faces", key="train_exclude",
                              help="Blank images, duplicates with conflicting labels, copies of "
                                   "test faces and repeated copies (see the Dataset page's audit). "
                                   "Test faces are never changed.")
    st.markdown(f"**Data:** `{ui.data_source()}` (the dataset picked in the sidebar), unless "
                "you upload a file here:")
    upload = st.file_uploader(
        "A FER2013 CSV for this run", type=["csv", "gz", "zip"], key="train_upload",
        help="Kaggle's fer2013.csv layout (emotion,pixels,Usage), plain, .gz or .zip, up to 400 MB. "
             "For the full file, typing its path in the sidebar is faster than uploading it.")
    summary = ui.model_summary(model)
    with st.expander(f"Layers of {model}: {summary['params'].sum():,} trainable parameters"):
        st.dataframe(summary, hide_index=True, width="stretch")
        st.caption("Output C×H×W: channels × height × width after the layer. Receptive field: "
                   "how many input pixels (per side) one output value of the layer can see.")
    if busy := ui.training_now():
        st.caption(f"Already training: {', '.join(busy)}. A second run would share the CPU with "
                   "it, and both would go slower.")
    # A second click while the first one's rerun is still starting the worker must not start a
    # second run: this session's last Start counts for START_GUARD_S seconds.
    just_started = time.time() - st.session_state.get("_last_start", 0.0) < START_GUARD_S
    if st.button("Start training", type="primary", key="start", icon=":material/play_arrow:",
                 disabled=just_started) and not just_started:
        st.session_state["_last_start"] = time.time()
        source = ui.save_upload(upload) if upload else ui.data_source()
        ferplus = None if upload else ui.ferplus_source()
        ds = ui.load(source, ferplus, shown_as=upload.name if upload else None)
        cfg = TrainConfig(data=source, ferplus=ferplus or "", model=model, members=int(members),
                          epochs=int(epochs), base_seed=int(seed), batch_size=int(batch_size),
                          lr=float(lr), val_fraction=float(val_fraction), precision=precision,
                          augment=augment, schedule=schedule, label_smoothing=float(smoothing),
                          class_weights=weights,
                          exclude_flagged=bool(exclude), **dataset_fields(ds))
        new = create_run(cfg, new_run_dir(name=model))
        start_worker(new.path)
        ui.select_run(new.id)
        if upload:
            ui.select_data(source)
        st.rerun()

# ---------------------------------------------------------------- a run from elsewhere
with st.expander("Import a run (.zip)", icon=":material/upload_file:"):
    st.caption("A run folder zipped on another machine (its **Download this run** button): "
               "config.json, members/m00.safetensors …, predictions/*.npz, metrics.jsonl. It is "
               "checked in full before it joins your runs. Weights are read as safetensors only: "
               "pickle files (PyTorch .pt) are refused, because loading one can run any code.")
    archive = st.file_uploader("Run archive (.zip, up to 200 MB unpacked)", key="import_upload")
    if archive is not None:
        imported, refusal, fresh = ui.import_upload(archive)
        if refusal:
            st.error(refusal, icon=":material/error:")
        elif fresh:  # just imported: make it the current run (once; the picker stays free)
            ui.select_run(imported)
            st.rerun()
        else:
            st.success(f"Imported as run `{imported}`: it is in the sidebar's run picker.",
                       icon=":material/check_circle:")

# ---------------------------------------------------------------- the current run
run = ui.current_run()
if run is None:
    st.info("No run yet: start one above. Past runs appear in the sidebar's run picker.")
    st.stop()

cfg = run.config()
mode = run.status().get("state", "new")  # "interrupted": its worker died (fer.runs.Run.status)
stopping = run.stop_requested()
st.subheader(f"Run {run.id}" + (" (shipped with the app)" if run.shipped else ""))
st.markdown(ui.config_line(cfg))
st.caption("Open another run with the sidebar's run picker.")
if mode == "done":
    st.download_button("Download this run (.zip)", data=lambda: zip_run(run.path), key="download_run",
                       file_name=f"{run.id}.zip", mime="application/zip", icon=":material/download:",
                       help="Config, metrics, the members' weights (safetensors) and predictions; "
                            "another copy of the app opens it with Import a run.")
if not run.shipped and mode == "running":
    if stopping:
        st.button("Stopping…", key="stopping", icon=":material/hourglass_top:", disabled=True,
                  help="The worker finishes its current batch, saves, and stops.")
    else:  # on_click: the stop file exists before this script reruns, so "Stopping…" shows at once
        st.button("Stop", key="stop", icon=":material/stop:", on_click=run.request_stop,
                  help="The worker finishes its current batch, saves, and stops.")
if not run.shipped and mode in ("new", "stopped", "interrupted", "failed") and st.button(
        "Resume" if mode != "new" else "Start worker", key="resume", type="primary",
        icon=":material/play_arrow:", help="Continue training where it stopped."):
    ui.check_run_data(cfg)  # an imported run's config may name any path
    start_worker(run.path)
    st.rerun()


def draw_ensemble(run, cfg: dict) -> None:
    """Majority and soft vote of the finished members on PublicTest and PrivateTest."""
    st.markdown("**Ensemble accuracy on the test faces**")
    reports = {s: r for s in ui.TEST_SPLITS if (r := ui.evaluation(run, s)) is not None}
    if not reports:
        st.caption("Appears when the first member has finished (test faces are predicted after "
                   "a member's last epoch).")
        return
    n_voters = len(next(iter(reports.values()))["member_ids"])
    cols = iter(st.columns(len(reports) * 2))
    for split, rep in reports.items():
        for vote in ("majority", "soft"):
            gain = f"{rep[vote] - max(rep['members']):+.1%} vs best member" if n_voters > 1 else None
            next(cols).metric(f"{vote.capitalize()} vote · {SPLIT_TITLES[split]}", f"{rep[vote]:.1%}", gain)
    st.dataframe(ui.accuracy_table(reports), hide_index=True,
                 column_config={f"{SPLIT_TITLES[s]} (%)": st.column_config.NumberColumn(format="%.1f")
                                for s in reports})
    alone = " One member's vote is just its own answer: train 3 or more to see the gain." \
        if n_voters == 1 else ""
    n_faces = " and ".join(f"{rep['n']:,}" for rep in reports.values())
    st.caption(f"{n_voters} of {cfg['members']} member(s) vote.{alone} Majority vote: each member "
               "names one expression, the most named wins. Soft vote: the members' probabilities "
               f"are averaged and the highest wins. The {n_faces} test faces were never used for "
               "training or for picking epochs.")


@st.fragment(run_every=ui.POLL_S if mode == "running" else None)
def live_view(run, drawn_mode: str, drawn_stopping: bool) -> None:
    """Everything read from the run directory; refreshed every POLL_S seconds while it trains."""
    with ui.guard():
        status, metrics, finished = run.status(), run.metrics(), run.finished_members()
        stopping = run.stop_requested()
        if (status.get("state", "new"), stopping) != (drawn_mode, drawn_stopping):
            st.rerun()  # state or pending Stop changed: redraw the buttons, stop or start polling
        free = shutil.disk_usage(run.path).free if status.get("state") == "interrupted" else None
        kind, sentence = ui.describe_status(status, cfg, len(metrics), stopping, free)
        getattr(st, kind)(sentence)
        if status.get("traceback"):
            with st.expander("Traceback (a bug in the app: please report it)"):
                st.code(status["traceback"], language="text")
        overall, in_epoch = ui.progress(status, cfg, len(metrics))
        st.progress(overall, text=f"All members: {len(metrics)} of {cfg['members'] * cfg['epochs']} "
                                  f"epochs finished")
        if drawn_mode == "running" and status.get("n_batches") and status.get("phase") == "training":
            st.progress(in_epoch, text=f"Current epoch: {status['batch']} of {status['n_batches']} "
                                       "batches")

        if not metrics:
            st.caption("The curves start when member 1 has finished its first epoch.")
        curves = ui.curves(metrics)
        left, right = st.columns(2)
        left.altair_chart(ui.curve_chart(curves, "loss", cfg["epochs"]), width="stretch")
        right.altair_chart(ui.curve_chart(curves, "accuracy", cfg["epochs"]), width="stretch")
        st.caption("Solid lines: the member's training faces; dashed: its own held-out validation "
                   "faces. When validation stops improving while training keeps improving, the "
                   "member is overfitting; each member keeps the weights of its best validation epoch.")

        st.markdown("**Members**")
        right_aligned = st.column_config.TextColumn(alignment="right")
        st.dataframe(ui.member_table(metrics, cfg, finished, status), hide_index=True,
                     column_config={"best val acc (%)": right_aligned, "best epoch": right_aligned,
                                    "seconds": st.column_config.NumberColumn(format="%.1f")})
        draw_ensemble(run, cfg)


live_view(run, mode, stopping)
