"""What the pages share that is Streamlit-specific: the sidebar picks, cached loaders, the error
guard, table and Altair chart builders. Numbers come from ``fer``; this module only shapes them
for drawing.

Picks live in ``st.session_state`` (and in the URL's query string, so a browser reload comes back
to the same dataset and run): ``current_dataset()`` and ``current_run()`` read them; a page that
wants to change them (the Train page after Start) calls ``select_run`` / ``select_data``, applied
by the entrypoint before it draws the pickers on the next rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from fer.data import (
    SYNTHETIC,
    FaceDataset,
    check_allowed_source,
    load_dataset,
    path_allowed,
)
from fer.errors import FerError
from fer.evaluation import evaluate_run
from fer.labels import SPLIT_TITLES
from fer.models import create_model, summarize
from fer.runs import Run, atomic_write_bytes, list_runs, user_runs_root
from fer.training import TrainConfig

DATA_KEY = "data_source"      # session-state key of the sidebar's dataset field
FERPLUS_KEY = "ferplus_source"  # session-state key of the sidebar's optional FER+ votes field
RUN_KEY = "run_id"            # session-state key of the sidebar's run picker
POLL_S = 1.5                  # seconds between live refreshes while a worker trains
TEST_SPLITS = ("public_test", "private_test")
SYNTHETIC_NOTE = "Synthetic faces (embedded default) — not real FER2013 data"

_PENDING = "_pending_picks"   # picks requested by a page, applied before the pickers are drawn


# ---------------------------------------------------------------- the error guard
@contextlib.contextmanager
def guard():
    """Show a :class:`fer.errors.FerError` as ``st.error`` and stop the script run.

    Anything else propagates: it is a bug and Streamlit shows it as one.
    """
    try:
        yield
    except FerError as e:
        st.error(str(e), icon=":material/error:")
        st.stop()


# ---------------------------------------------------------------- picks
def default_source() -> str:
    """``$FER_DATA`` when set, else ``synthetic``."""
    return os.environ.get("FER_DATA", "").strip() or SYNTHETIC


def normalise_source(source: str) -> str:
    """``synthetic[:SEED]`` as is; a path unquoted, ``~`` expanded and made absolute (the worker
    runs in the repository folder, the app maybe elsewhere)."""
    text = str(source).strip().strip("'\"").strip()
    if not text or text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        return text or SYNTHETIC
    return str(Path(text).expanduser().resolve())


def init_picks() -> None:
    """First run of a session: picks from the URL, else defaults. Then apply a page's requests."""
    ss, qp = st.session_state, st.query_params
    if DATA_KEY not in ss:
        ss[DATA_KEY] = qp.get("data") or default_source()
    if RUN_KEY not in ss:
        ss[RUN_KEY] = qp.get("run") or default_run_id(list_runs())
    for key, value in ss.pop(_PENDING, {}).items():
        ss[key] = value


def remember_picks() -> None:
    """Mirror the picks into the URL so that a reload reattaches to the same run."""
    data, run_id = st.session_state.get(DATA_KEY), st.session_state.get(RUN_KEY)
    if data and data != default_source():
        st.query_params["data"] = data
    elif "data" in st.query_params:
        del st.query_params["data"]
    if run_id:
        st.query_params["run"] = run_id


def select_run(run_id: str) -> None:
    """Make ``run_id`` the current run from the next rerun on (call ``st.rerun()`` after)."""
    st.session_state.setdefault(_PENDING, {})[RUN_KEY] = run_id


def select_data(source: str) -> None:
    """Make ``source`` the sidebar dataset from the next rerun on (call ``st.rerun()`` after)."""
    st.session_state.setdefault(_PENDING, {})[DATA_KEY] = source


def data_source() -> str:
    """The sidebar's dataset source, normalised (see :func:`normalise_source`)."""
    return normalise_source(st.session_state.get(DATA_KEY) or default_source())


def ferplus_source() -> str | None:
    """The sidebar's optional FER+ ``fer2013new.csv`` path (normalised), or None."""
    text = (st.session_state.get(FERPLUS_KEY) or "").strip()
    return normalise_source(text) if text else None


def current_dataset() -> FaceDataset:
    """The dataset picked in the sidebar (cached). Raises FerError when it cannot be loaded."""
    typed = st.session_state.get(FERPLUS_KEY) or ""  # as typed: errors quote the user's own text
    return load(st.session_state.get(DATA_KEY) or default_source(), typed.strip() or None)


def current_run() -> Run | None:
    """The run picked in the sidebar, or None when there is none."""
    return find_run(st.session_state.get(RUN_KEY))


def find_run(run_id: str | None) -> Run | None:
    """The run named ``run_id`` (user runs shadow shipped ones), or None."""
    return next((r for r in list_runs() if r.id == run_id), None) if run_id else None


def default_run_id(runs: list[Run]) -> str | None:
    """A run that is training now, else the newest user run, else a shipped run with finished
    members (on synthetic data when the sidebar's dataset is synthetic), else the first run."""
    for run in runs:
        if not run.shipped and _state(run) == "running":
            return run.id
    own = [r for r in runs if not r.shipped]
    if own:
        return own[0].id
    synthetic = data_source().startswith(SYNTHETIC)

    def usable(run: Run) -> tuple[bool, bool]:
        try:
            return (bool(run.finished_members()),
                    bool(run.config().get("dataset_synthetic")) == synthetic)
        except FerError:
            return (False, False)

    ranked = sorted(runs, key=usable, reverse=True)  # stable: keeps newest first among equals
    return ranked[0].id if ranked else None


def training_now() -> list[str]:
    """Ids of the user runs a worker is training right now (they share the machine's CPU)."""
    return [r.id for r in list_runs() if not r.shipped and _state(r) == "running"]


def _state(run: Run) -> str:
    try:
        return run.status().get("state", "new")
    except FerError:
        return "unreadable"


def run_label(run: Run) -> str:
    """``<id> · yours|shipped · <state> · k/M members done`` for the run picker."""
    owner = "shipped" if run.shipped else "yours"
    try:
        members = run.config().get("members", "?")
        done = len(run.finished_members())
    except FerError:
        return f"{run.id} · {owner} · unreadable"
    return f"{run.id} · {owner} · {_state(run)} · {done}/{members} members done"


# ---------------------------------------------------------------- widgets
def kept(key: str, default, options=None) -> dict:
    """``key`` and ``on_change`` for a widget whose value is re-sent to the browser on every run.

    Use it (and give the widget no ``index``/``default`` of its own) when the widget's option
    labels change while its key lives (counts or accuracies in the labels), or when the widget
    is not drawn on every run. Streamlit identifies a picked option by its *label*: after the
    labels change, the browser's stale label matches no option and the widget returns that label
    as a str instead of an option. Writing the value into the widget's key before each draw
    makes Streamlit send the current label. A value no longer among ``options`` gives way to
    ``default``. Returns dict(key=, on_change=, args=) to splat into the widget call.
    """
    ss, store = st.session_state, f"_kept_{key}"
    value = ss.get(store, default)
    ss[key] = default if options is not None and value not in options else value
    return dict(key=key, on_change=_remember, args=(key,))


def _remember(key: str) -> None:
    st.session_state[f"_kept_{key}"] = st.session_state[key]


# ---------------------------------------------------------------- cached loaders
def _signature(source: str) -> tuple[int, int] | None:
    """(mtime ns, size) of a dataset file, so the cache notices a replaced file; None if absent."""
    try:
        st_ = os.stat(source)
    except OSError:
        return None  # synthetic, or a missing file: load_dataset raises the real error
    return st_.st_mtime_ns, st_.st_size


@st.cache_resource(max_entries=2, show_spinner="Loading the dataset…")
def _load(source: str, signature: tuple[int, int] | None, ferplus: str | None = None,
          ferplus_signature: tuple[int, int] | None = None) -> FaceDataset:
    return load_dataset(source, ferplus=ferplus)


def load(source: str, ferplus: str | None = None, shown_as: str | None = None) -> FaceDataset:
    """The dataset at ``source`` (a path or ``synthetic``), with FER+ labels from ``ferplus``
    when given, cached until a file changes. ``shown_as``: the name errors give the file instead
    of its stored name (an upload is stored as ``<sha256>.csv``; the user knows it by its own name).

    Shared by every session: never mutate it. Raises FerError: DataPathError for a path outside
    ``FER_DATA_ROOT`` (see :func:`allowed_source`), DataFormatError for a bad source.
    """
    src = allowed_source(source)
    fp = allowed_source(ferplus) if ferplus else None
    try:
        return _load(src, _signature(src), fp, _signature(fp) if fp else None)
    except FerError as e:
        if shown_as and Path(src).name in str(e):
            raise type(e)(str(e).replace(Path(src).name, shown_as)) from e
        raise


def split_sizes(ds: FaceDataset) -> dict[str, int]:
    """Number of labelled faces per split title, e.g. ``{"Training": 4000, ...}``."""
    return {SPLIT_TITLES[s]: int(c.sum()) for s, c in ds.counts().items()}


def uploads_dir() -> Path:
    """Where the app stores dataset uploads: ``<runs root>/_uploads``."""
    return user_runs_root() / "_uploads"


def allowed_source(source: str) -> str:
    """A dataset path typed into the app (or ``synthetic``), normalised and, when the server sets
    ``FER_DATA_ROOT``, checked to lie inside it or in :func:`uploads_dir` (the app's own uploads).
    Raises DataPathError naming the path and the root (``fer.data.check_allowed_source``)."""
    text = str(source).strip().strip("'\"").strip()  # as normalise_source, but errors show the typed path
    return check_allowed_source(text or SYNTHETIC, also=(uploads_dir(),))


def check_run_data(cfg: dict) -> None:
    """Before a worker (re)starts a run: its data and FER+ paths must be allowed here too (an
    imported run's config may name any path). Raises DataPathError."""
    for key in ("data", "ferplus"):
        if cfg.get(key):
            allowed_source(cfg[key])


def save_upload(uploaded) -> str:
    """Store an ``st.file_uploader`` file as ``<runs root>/_uploads/<sha256>.csv``; its path.

    The name is the content hash, so uploading the same file twice stores it once. The reader
    tells plain, gzip and zip content apart by its first bytes, not by the suffix.
    """
    data = uploaded.getvalue()
    path = uploads_dir() / f"{hashlib.sha256(data).hexdigest()}.csv"
    if not path.exists():
        atomic_write_bytes(path, data)
    return str(path.resolve())


def import_upload(uploaded) -> tuple[str | None, str | None, bool]:
    """Import an ``st.file_uploader`` run archive (:func:`fer.run_archive.import_run`) once per
    upload: ``(run id, None, fresh)``, or ``(None, why it was refused, fresh)``; ``fresh`` is True
    on the script run that did the import, False on later reruns.

    The outcome is remembered in the session by upload, so reruns neither import it twice nor
    validate it again. A refusal is returned, not raised: it concerns this upload only, and the
    rest of the page (the current run) still draws.
    """
    from fer.run_archive import import_run

    done = st.session_state.setdefault("_run_imports", {})
    key = getattr(uploaded, "file_id", None) or hashlib.sha256(uploaded.getvalue()).hexdigest()
    if key in done:
        return (*done[key], False)
    try:
        done[key] = (import_run(uploaded.getvalue(), name=uploaded.name).id, None)
    except FerError as e:
        done[key] = (None, str(e))
    return (*done[key], True)


@st.cache_data(show_spinner=False)
def model_summary(name: str) -> pd.DataFrame:
    """One row per layer of model ``name``: layer, type, output C×H×W, params, receptive field."""
    rows = summarize(create_model(name))
    return pd.DataFrame({
        "layer": [r["name"] for r in rows],
        "type": [r["type"] for r in rows],
        "output C×H×W": ["×".join(map(str, r["output_shape"])) for r in rows],
        "params": [r["params"] for r in rows],
        "receptive field (px)": [r["receptive_field"] for r in rows],
    })


@st.cache_data(show_spinner=False, max_entries=64)
def _evaluate(run_path: str, split: str, mtime_ns: int) -> dict:
    return evaluate_run(Path(run_path), split)


def evaluation(run: Run, split: str) -> dict | None:
    """``fer.evaluation.evaluate_run`` for a test split, cached until its predictions change;
    None when no member has predictions on that split yet (or the dataset has no such faces)."""
    path = run.predictions_file(split)
    if path is None:
        return None
    return _evaluate(str(run.path), split, path.stat().st_mtime_ns)


# ---------------------------------------------------------------- run tables
def config_line(cfg: dict) -> str:
    """One readable line of what a run trains: model, members, epochs, data and settings."""
    try:  # a key an older version did not write means its default, as when the run trains
        cfg = TrainConfig.from_dict(cfg).to_dict()
    except FerError:
        pass  # the page reports a broken config elsewhere; show what is there
    data = "synthetic faces" if cfg.get("dataset_synthetic") else cfg.get("dataset_id") or cfg["data"]
    return (f"**{cfg['model']}** · {cfg['members']} member(s) × {cfg['epochs']} epoch(s) · "
            f"data: {data} · batch {cfg['batch_size']} · lr {cfg['lr']:g} · "
            f"validation {cfg['val_fraction']:.0%} · base seed {cfg['base_seed']} · "
            f"augment {cfg['augment']} · {cfg.get('schedule', '?')} lr"
            + (f" · label smoothing {cfg['label_smoothing']:g}" if cfg.get("label_smoothing") else "")
            + (f" · {cfg['class_weights']} class weights" if cfg.get("class_weights", "none") != "none" else "")
            + (" · flagged faces left out" if cfg.get("exclude_flagged") else "")
            + f" · precision {cfg['precision']}")


LOW_DISK_BYTES = 100 * 2**20


def describe_status(status: dict, cfg: dict, epochs_logged: int, stopping: bool = False,
                    free_bytes: int | None = None) -> tuple[str, str]:
    """(kind, sentence) for a run's status; kind is info / success / warning / error.
    ``stopping``: a Stop is pending (:meth:`fer.runs.Run.stop_requested`). ``free_bytes``: free
    space on the run's disk; below 100 MiB an interrupted run names it as the likely cause (a
    full disk stops the worker before it can even record why)."""
    state, phase = status.get("state", "new"), status.get("phase")
    where = (f"member {int(status.get('member') or 0) + 1} of {cfg['members']}, epoch "
             f"{int(status.get('epoch') or 0) + 1} of {cfg['epochs']}, batch {status.get('batch', 0)}"
             f" of {status.get('n_batches', '?')}")
    members, epochs = cfg["members"], cfg["epochs"]
    member = int(status.get("member") or 0) + 1
    if state == "running":
        age = time.time() - float(status.get("heartbeat") or time.time())
        beat = f" (last update {age:.0f} s ago)"
        if stopping:
            return "warning", f"Stopping: the worker finishes its current batch and saves…{beat}"
        if phase in ("starting", "loading data", None):
            return "info", f"Starting: the training process is loading the data…{beat}"
        if phase == "predicting":
            return "info", (f"Member {member} of {members} finished training; computing its "
                            f"predictions on the test faces…{beat}")
        epoch = int(status.get("epoch") or 0) + 1
        return "info", f"Training member {member} of {members} · epoch {epoch} of {epochs}{beat}"
    if state == "done":
        return "success", f"Done: all {members} member(s) trained for {epochs} epoch(s)."
    if state == "stopped":
        return "warning", (f"Stopped on request in {where} ({epochs_logged} of {members * epochs} "
                           "epochs finished). Resume continues exactly where it stopped.")
    if state == "interrupted":
        return "warning", ("Interrupted: the training process is gone (it crashed, was killed, or "
                           "the machine restarted) — its last sign of life was "
                           f"{time.time() - float(status.get('heartbeat') or 0):.0f} s ago. "
                           "Resume continues from the last saved state."
                           + (f" The disk holding the run has only {free_bytes / 2**20:.0f} MB free, "
                              "which stops training before it can even record why: free some "
                              "space first." if free_bytes is not None and free_bytes < LOW_DISK_BYTES
                              else ""))
    if state == "failed":
        return "error", f"Failed: {status.get('error') or 'unknown error (see worker.log)'}"
    return "info", "Not started yet: no training process has worked on this run."


def progress(status: dict, cfg: dict, epochs_logged: int) -> tuple[float, float]:
    """(share of all epochs finished, share of the current epoch's batches done), both 0..1."""
    total = max(1, cfg["members"] * cfg["epochs"])
    batch = status.get("batch") or 0
    n_batches = status.get("n_batches") or 0
    in_epoch = batch / n_batches if n_batches and status.get("phase") == "training" else 0.0
    return min(1.0, epochs_logged / total), min(1.0, in_epoch)


def member_table(metrics: list[dict], cfg: dict, finished: list[int], status: dict) -> pd.DataFrame:
    """One row per member: member, seed, state, best val acc (%), best epoch, epochs done, seconds.

    Best val acc and best epoch are text ("38.2", "2"), "—" before the member's first finished
    epoch: st.dataframe draws a missing number as "None", even through a Styler's ``na_rep``.
    """
    df = pd.DataFrame(metrics, columns=["member", "seed", "epoch", "val_acc", "seconds"])
    current = int(status.get("member") or 0)
    rows = []
    for m in range(cfg["members"]):
        recs = df[df["member"] == m]
        if m in finished:
            state = "done"
        elif m == current and status.get("state") == "running":
            state = "predicting" if status.get("phase") == "predicting" else "training"
        elif m == current and status.get("state") in ("stopped", "interrupted", "failed"):
            state = status["state"]
        else:
            state = "waiting"
        best = recs.loc[recs["val_acc"].idxmax()] if not recs.empty else None
        rows.append({
            "member": m, "seed": cfg["base_seed"] + m, "state": state,
            "best val acc (%)": "—" if best is None else f"{100 * float(best['val_acc']):.1f}",
            "best epoch": "—" if best is None else str(int(best["epoch"])),
            "epochs done": f"{len(recs)}/{cfg['epochs']}",
            "seconds": float(recs["seconds"].sum()),
        })
    return pd.DataFrame(rows)


def accuracy_table(reports: dict[str, dict]) -> pd.DataFrame:
    """Rows majority vote, soft vote, member k…; one column per split title (accuracy in %)."""
    table: dict[str, dict[str, float]] = {}
    for split, rep in reports.items():
        col = f"{SPLIT_TITLES[split]} (%)"
        table.setdefault("majority vote", {})[col] = 100 * rep["majority"]
        table.setdefault("soft vote", {})[col] = 100 * rep["soft"]
        for m, acc in zip(rep["member_ids"], rep["members"]):
            table.setdefault(f"member {m}", {})[col] = 100 * acc
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("who votes").reset_index()


# ---------------------------------------------------------------- charts
def curves(metrics: list[dict]) -> pd.DataFrame:
    """Long table for the learning curves: member, epoch, curve (train/validation), loss, accuracy."""
    df = pd.DataFrame(metrics, columns=["member", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"])
    parts = [df[["member", "epoch", f"{p}_loss", f"{p}_acc"]]
             .set_axis(["member", "epoch", "loss", "accuracy"], axis=1).assign(curve=name)
             for p, name in (("train", "train"), ("val", "validation"))]
    return pd.concat(parts, ignore_index=True)


def curve_chart(df: pd.DataFrame, measure: str, epochs: int) -> alt.LayerChart:
    """Line per (member, curve) of ``measure`` (loss or accuracy) against epoch 1..``epochs``;
    a point per epoch (one epoch alone is a point, not an invisible line)."""
    acc = measure == "accuracy"
    title = "Accuracy (higher is better)" if acc else "Loss: cross-entropy (lower is better)"
    base = alt.Chart(df, title=title).encode(
        x=alt.X("epoch:Q", title="epoch", scale=alt.Scale(domain=[1, max(2, epochs)]),
                axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y(f"{measure}:Q", title=measure,
                # padding: a single epoch's points sit inside the frame, not on its edge
                scale=alt.Scale(domain=[0, 1]) if acc else alt.Scale(zero=False, padding=12),
                axis=alt.Axis(format="%") if acc else alt.Axis()),
        color=alt.Color("member:N", title="member",
                        scale=alt.Scale(scheme="tableau10" if df["member"].nunique() <= 10 else "tableau20"),
                        # below the plot, in rows: a 25-member legend beside it is cut off
                        legend=alt.Legend(orient="bottom", columns=13, symbolLimit=0)),
        tooltip=[alt.Tooltip("member:N"), alt.Tooltip("curve:N", title="faces"),
                 alt.Tooltip("epoch:Q"), alt.Tooltip(f"{measure}:Q", format=".1%" if acc else ".3f")],
    )
    lines = base.mark_line().encode(
        strokeDash=alt.StrokeDash("curve:N", title="faces",
                                  scale=alt.Scale(domain=["train", "validation"], range=[[1, 0], [5, 3]]),
                                  # above the plot: beside the member legend it is cut off
                                  legend=alt.Legend(symbolStrokeWidth=2, symbolSize=400, orient="top",
                                                    direction="horizontal")))
    points = base.mark_point(filled=True, size=40).encode(detail="curve:N")
    # Streamlit fits title and legends into this height too: 400 leaves ~250 px of plot.
    return (lines + points).properties(height=400)


# ---------------------------------------------------------------- runs' data and faces
@st.cache_resource(max_entries=16, show_spinner=False)
def _members(run_path: str, mtime_ns: int) -> list:
    from fer.weights import load_model

    run = Run(Path(run_path))
    name = run.config()["model"]
    return [load_model(run.weights_path(m), name) for m in run.finished_members()]


def run_members(run: Run) -> list:
    """The run's finished members as eval-mode models (cached by run and predictions mtime;
    never mutate them: copy a model before changing its weights)."""
    p = run.predictions_file("public_test") or run.predictions_file("private_test")
    return _members(str(run.path), p.stat().st_mtime_ns if p else 0)


def dataset_for_run(run: Run) -> FaceDataset:
    """The faces a run was trained on, for pages that show images.

    The run's own data source when it can be loaded (synthetic always can), else the sidebar's
    dataset when its content hash matches the run's. Otherwise the page says what to load and
    why, and stops: shipped runs carry predictions and weights, never FER2013 images.
    """
    cfg = run.config()
    want = cfg.get("dataset_sha256", "")
    try:
        sidebar = current_dataset()
    except FerError:
        sidebar = None
    if sidebar is not None and (not want or sidebar.provenance.get("sha256") == want):
        return sidebar
    ds = None
    source = str(cfg.get("data", ""))
    if cfg.get("dataset_synthetic") or source.startswith(SYNTHETIC):
        ds = load(source or SYNTHETIC)
    elif source and path_allowed(normalise_source(source), also=(uploads_dir(),)) and Path(source).exists():
        ds = load(source, cfg.get("ferplus") or None)
        if want and ds.provenance.get("sha256") != want:
            ds = None
    if ds is not None:
        if sidebar is not None:
            st.caption(f"Faces from run **{run.id}**'s own dataset `{cfg.get('dataset_id', source)}`, "
                       f"not the sidebar's `{sidebar.id}`: a run is always shown on the faces it "
                       f"was trained and tested on.")
        return ds
    st.warning(
        f"This page shows faces, and run **{run.id}** was trained on `{cfg.get('dataset_id', '?')}`, "
        "whose images are not shipped with the app (FER2013 may not be redistributed). Type the "
        "path of your copy of `fer2013.csv` in the sidebar's **Dataset** field to see them.",
        icon=":material/photo_library:")
    st.stop()


def face_image(image, scale: int = 2):
    """A uint8 (48, 48) face as a PIL image enlarged ``scale`` times with square pixels."""
    from PIL import Image

    img = Image.fromarray(image)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def face_grid(images, captions: list[str] | None = None, scale: int = 2) -> None:
    """Faces uint8 (N, 48, 48) in a wrapping grid with optional captions (one st.image call)."""
    if len(images) == 0:
        st.caption("No faces.")
        return
    st.image([face_image(im, scale) for im in images], caption=captions, output_format="PNG")


def run_with_members() -> tuple[Run, list[int]]:
    """The sidebar's run and its finished member ids; otherwise the page says why and stops."""
    run = current_run()
    if run is None:
        st.info("No run yet: train one on the Train page, or pick a shipped run in the sidebar.")
        st.stop()
    members = run.finished_members()
    if not members:
        st.info(f"No member of run `{run.id}` has finished yet: a member's predictions and weights "
                "are stored after its last epoch. Pick another run in the sidebar, or come back "
                "when the first member has finished.")
        st.stop()
    return run, members
