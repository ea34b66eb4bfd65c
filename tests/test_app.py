"""The app through Streamlit's AppTest: the entrypoint, every page in PAGES, the Train page's
states (new, interrupted, stopping, failed) and one tiny real training run started from the page."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import time
from pathlib import Path

import pytest
from conftest import fer_rows
from streamlit.testing.v1 import AppTest

from app_pages import ui
from fer.runs import atomic_write_json, kill_worker, list_runs
from fer.training import TrainConfig, create_run

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"


def pages_table() -> list[tuple[str, str, str, str]]:
    """streamlit_app.PAGES, read without running the app."""
    for node in ast.parse(APP.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PAGES":
            return ast.literal_eval(node.value)
    raise AssertionError("streamlit_app.py has no PAGES table")


def app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=90)


def texts(at: AppTest) -> str:
    """All markdown, captions and alerts of the page and the sidebar, one string."""
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "warning", "error")
             for e in getattr(at, kind)]
    return "\n".join(map(str, parts))


def open_page(file: str) -> AppTest:
    at = app().run()
    at.switch_page(file).run()
    assert not at.exception, at.exception
    return at


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    """The pid of a process that exists for the test (a stand-in for a worker), never the test's."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_home_renders_and_says_synthetic():
    at = app().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "FER Ensemble Lab"
    assert "synthetic" in texts(at).lower()
    assert any("not real FER2013 data" in i.value for i in at.sidebar.info)
    assert len(at.page_link) == len(pages_table())


@pytest.mark.parametrize("file", [row[0] for row in pages_table()])
def test_every_page_renders_inside_the_frame(file):
    at = open_page(file)
    assert at.sidebar.text_input(key="data_source").value == "synthetic"  # the frame's sidebar


def test_train_page_shows_its_form():
    at = open_page("app_pages/train.py")
    assert at.title[0].value == "Train an ensemble"
    assert at.number_input(key="train_members").value == 3
    assert at.number_input(key="train_epochs").value == 5
    assert at.number_input(key="train_batch").value == 128
    assert at.selectbox(key="train_model").value == "seed_cnn"
    assert at.button(key="start").label == "Start training"


def test_a_missing_dataset_file_is_an_error_not_a_crash(tmp_path):
    at = app().run()
    at.sidebar.text_input(key="data_source").input(str(tmp_path / "fer2013.csv")).run()
    assert not at.exception, at.exception
    assert "no such file" in at.sidebar.error[0].value


def _fake_run(root: Path, status: dict) -> Path:
    run = create_run(TrainConfig(members=2, epochs=3, dataset_synthetic=True), root / "fake")
    atomic_write_json(run.path / "status.json", status)
    return run.path


@pytest.mark.parametrize("pid", ["dead", "alive"])
def test_an_interrupted_run_says_so_and_offers_resume(tmp_path, monkeypatch, live_pid, pid):
    # "alive": the process exists but has sent no heartbeat for an hour. The worker beats every
    # 2 s from a thread even while loading or predicting, so it is hung: Resume (a second worker
    # on a run whose worker still holds worker.lock fails at once with RunDirError).
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    _fake_run(tmp_path, {"state": "running", "pid": dead_pid() if pid == "dead" else live_pid,
                         "heartbeat": time.time() - 3600, "phase": "loading data", "member": 0,
                         "epoch": 0})
    at = open_page("app_pages/train.py")
    assert "Interrupted" in texts(at)
    assert at.button(key="resume").label == "Resume"
    assert not [b for b in at.button if b.key in ("stop", "stopping")]


def test_stop_turns_into_a_disabled_stopping_button(tmp_path, monkeypatch, live_pid):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    run_dir = _fake_run(tmp_path, {"state": "running", "pid": live_pid, "heartbeat": time.time(),
                                   "phase": "training", "member": 0, "epoch": 0, "batch": 3,
                                   "n_batches": 30})
    at = open_page("app_pages/train.py")
    assert not [b for b in at.button if b.key in ("stopping", "resume")]
    at.button(key="stop").click().run()
    assert not at.exception, at.exception
    assert (run_dir / "stop.request").exists()
    assert not [b for b in at.button if b.key == "stop"]
    assert at.button(key="stopping").label == "Stopping…" and at.button(key="stopping").disabled
    assert "Stopping: the worker finishes its current batch" in texts(at)


def test_members_without_a_finished_epoch_show_a_dash_not_none():
    cfg = {"members": 2, "epochs": 3, "base_seed": 7}
    metrics = [{"member": 0, "seed": 7, "epoch": 1, "val_acc": 0.25, "seconds": 1.5}]
    table = ui.member_table(metrics, cfg, [], {"state": "running", "member": 0})
    assert table.to_dict("records") == [
        {"member": 0, "seed": 7, "state": "training", "best val acc (%)": "25.0", "best epoch": "1",
         "epochs done": "1/3", "seconds": 1.5},
        {"member": 1, "seed": 8, "state": "waiting", "best val acc (%)": "—", "best epoch": "—",
         "epochs done": "0/3", "seconds": 0.0}]


def test_a_failed_run_shows_its_error_and_offers_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    _fake_run(tmp_path, {"state": "failed", "error": "fer2013.csv row 7: pixels has 2303 values"})
    at = open_page("app_pages/train.py")
    assert any("row 7" in e.value for e in at.error)
    assert at.button(key="resume").label == "Resume"


def wait_until_finished(run, timeout_s: float = 150) -> dict:
    """Poll the run directory until its worker leaves 'running'; kill it if it never does."""
    deadline = time.time() + timeout_s
    try:
        while run.status()["state"] in ("new", "running") and time.time() < deadline:
            time.sleep(1)
        return run.status()
    finally:
        kill_worker(run.path)  # only if the test gave up while the worker still ran


def test_an_uploaded_csv_is_stored_by_hash_and_trained_on(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    lines, *_ = fer_rows(n=40)
    data = ("emotion,pixels,Usage\n" + "\n".join(lines) + "\n").encode()
    at = open_page("app_pages/train.py")
    at.number_input(key="train_members").set_value(1)
    at.number_input(key="train_epochs").set_value(1)
    at.file_uploader(key="train_upload").upload("my_fer.csv", data, "text/csv")
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    (run,) = list_runs([tmp_path])
    stored = tmp_path / "_uploads" / f"{hashlib.sha256(data).hexdigest()}.csv"
    assert stored.read_bytes() == data
    assert run.config()["data"] == str(stored) and not run.config()["dataset_synthetic"]
    assert at.sidebar.text_input(key="data_source").value == str(stored)  # the sidebar follows
    assert wait_until_finished(run)["state"] == "done"


def test_a_tiny_run_trains_from_the_page_and_shows_ensemble_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    at = open_page("app_pages/train.py")
    at.number_input(key="train_members").set_value(1)
    at.number_input(key="train_epochs").set_value(1)
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    runs = list_runs([tmp_path])
    assert len(runs) == 1
    run = runs[0]
    try:
        assert (run.path / "config.json").exists()
        assert (run.config()["members"], run.config()["epochs"]) == (1, 1)
        assert at.sidebar.selectbox(key="run_id").value == run.id
        # A browser reload is a new session: it reattaches to the running run, never restarts it.
        again = open_page("app_pages/train.py")
        assert again.sidebar.selectbox(key="run_id").value == run.id
        assert [b.key for b in again.button if b.key in ("stop", "resume")] == ["stop"]
    finally:
        status = wait_until_finished(run)
    assert status["state"] == "done", status
    assert len(list_runs([tmp_path])) == 1
    at.run()
    assert not at.exception, at.exception
    assert "Done: all 1 member(s)" in texts(at)
    labels = [m.label for m in at.metric]
    assert "Majority vote · PublicTest" in labels and "Soft vote · PrivateTest" in labels
    assert all(0 <= float(m.value.rstrip("%")) <= 100 for m in at.metric)
