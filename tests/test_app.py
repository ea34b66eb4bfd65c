"""The app through Streamlit's AppTest: the entrypoint, every page in PAGES, the Train page's
states (new, interrupted, failed) and one tiny real training run started from the page."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import time
from pathlib import Path

import pytest
from conftest import fer_rows
from streamlit.testing.v1 import AppTest

from fer.runs import atomic_write_json, kill_worker, list_runs
from fer.training import TrainConfig, create_run

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"


@pytest.fixture
def warm_server(monkeypatch):
    """Streamlit's legacy ``pages/`` mode runs a requested page without the entrypoint until the
    entrypoint has called st.navigation once; a real server leaves it after its first script run
    (a page load, ui.require_frame reruns it framed), but AppTest re-enters it on every run, where
    the rerun would swallow a click. Keep it off, as in a server that has served once."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def warm_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", warm_init)


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


def test_home_renders_and_says_synthetic():
    at = app().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "FER Ensemble Lab"
    assert "synthetic" in texts(at).lower()
    assert any("not real FER2013 data" in i.value for i in at.sidebar.info)
    assert len(at.page_link) == len(pages_table())


@pytest.mark.parametrize("file", [row[0] for row in pages_table()])
def test_every_page_renders_inside_the_frame(file):
    # No warm_server here: each run starts in Streamlit's legacy pages/ mode, and the page must
    # still come up inside the frame (ui.require_frame).
    at = open_page(file)
    assert at.sidebar.text_input(key="data_source").value == "synthetic"  # the frame's sidebar
    assert not [w for w in at.warning if "without the app's sidebar" in w.value]


def test_train_page_shows_its_form():
    at = open_page("pages/train.py")
    assert at.title[0].value == "Train an ensemble"
    assert at.number_input(key="train_members").value == 3
    assert at.number_input(key="train_epochs").value == 5
    assert at.number_input(key="train_batch").value == 128
    assert at.selectbox(key="train_model").value == "seed_cnn"
    assert at.button(key="start").label == "Start training"


def test_a_missing_dataset_file_is_an_error_not_a_crash(tmp_path, warm_server):
    at = app().run()
    at.sidebar.text_input(key="data_source").input(str(tmp_path / "fer2013.csv")).run()
    assert not at.exception, at.exception
    assert "no such file" in at.sidebar.error[0].value


def _fake_run(root: Path, status: dict) -> Path:
    run = create_run(TrainConfig(members=2, epochs=3, dataset_synthetic=True), root / "fake")
    atomic_write_json(run.path / "status.json", status)
    return run.path


def test_an_interrupted_run_says_so_and_offers_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    _fake_run(tmp_path, {"state": "running", "pid": dead_pid(), "heartbeat": time.time() - 3600,
                         "phase": "training", "member": 0, "epoch": 1})
    at = open_page("pages/train.py")
    assert "Interrupted" in texts(at)
    assert at.button(key="resume").label == "Resume"
    assert not [b for b in at.button if b.key == "stop"]


def test_a_failed_run_shows_its_error_and_offers_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    _fake_run(tmp_path, {"state": "failed", "error": "fer2013.csv row 7: pixels has 2303 values"})
    at = open_page("pages/train.py")
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


def test_an_uploaded_csv_is_stored_by_hash_and_trained_on(tmp_path, monkeypatch, warm_server):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    lines, *_ = fer_rows(n=40)
    data = ("emotion,pixels,Usage\n" + "\n".join(lines) + "\n").encode()
    at = open_page("pages/train.py")
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


def test_a_tiny_run_trains_from_the_page_and_shows_ensemble_accuracy(tmp_path, monkeypatch, warm_server):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    at = open_page("pages/train.py")
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
        again = open_page("pages/train.py")
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
