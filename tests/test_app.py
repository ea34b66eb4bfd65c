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
    # The recipe defaults are TrainConfig's, the measured best (README's ablation table).
    assert at.selectbox(key="train_augment").value == "standard"
    assert at.selectbox(key="train_schedule").value == "cosine"
    assert at.number_input(key="train_smoothing").value == 0.0
    assert at.button(key="start").label == "Start training"


def test_the_config_line_names_every_recipe_choice_that_is_not_off():
    cfg = TrainConfig(members=2, epochs=3, dataset_synthetic=True).to_dict()
    assert ui.config_line(cfg) == (
        "**seed_cnn** · 2 member(s) × 3 epoch(s) · data: synthetic faces · batch 128 · lr 0.001 · "
        "validation 10% · base seed 0 · augment standard · cosine lr · precision auto")
    cfg |= dict(label_smoothing=0.1, class_weights="balanced", exclude_flagged=True, schedule="constant")
    assert ui.config_line(cfg).endswith(
        "augment standard · constant lr · label smoothing 0.1 · balanced class weights · "
        "flagged faces left out · precision auto")
    del cfg["class_weights"]  # a run written before the key existed
    assert "class weights" not in ui.config_line(cfg)


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


def test_an_interrupted_run_on_a_full_disk_names_the_disk():
    from app_pages.ui import describe_status

    cfg = {"members": 2, "epochs": 3}
    status = {"state": "interrupted", "heartbeat": time.time() - 5, "member": 0, "epoch": 1}
    kind, text = describe_status(status, cfg, 1, free_bytes=3 * 2**20)
    assert kind == "warning" and "Interrupted" in text and "only 3 MB free" in text
    _, roomy = describe_status(status, cfg, 1, free_bytes=50 * 2**30)
    assert "MB free" not in roomy


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
        assert (run.config()["augment"], run.config()["schedule"]) == ("standard", "cosine")
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


# ---------------------------------------------------------------- hostile input through the pages
def _torch_pt() -> bytes:
    import io

    import torch

    from fer.models import create_model

    buf = io.BytesIO()
    torch.save(create_model("seed_cnn").state_dict(), buf)
    return buf.getvalue()


def test_a_pt_file_handed_to_the_importer_is_refused_and_the_page_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    at = open_page("app_pages/train.py")
    at.file_uploader(key="import_upload").upload("member.pt", _torch_pt(), "application/octet-stream").run()
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.main.error]
    assert error.startswith("member.pt: refused: this is a PyTorch torch.save (.pt) file: a zip holding the pickle ")
    assert error.endswith("not a .zip of a run folder. Pickle files are refused for safety: loading one can run "
                          "any code")
    assert list(tmp_path.iterdir()) == []  # nothing imported, no temporary folder left
    assert at.subheader[-1].value.startswith("Run synthetic-demo")  # the current run still draws below


def test_an_imported_run_becomes_the_current_run(tmp_path, monkeypatch):
    from fer.run_archive import zip_run

    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    at = open_page("app_pages/train.py")
    demo = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-demo"
    at.file_uploader(key="import_upload").upload("class-demo.zip", zip_run(demo), "application/zip").run()
    assert not at.exception, at.exception
    (run,) = list_runs([tmp_path])
    assert run.id.endswith("-imported-class-demo") and run.finished_members() == list(range(9))
    assert at.sidebar.selectbox(key="run_id").value == run.id
    assert at.success[0].value == f"Imported as run `{run.id}`: it is in the sidebar's run picker."
    assert at.subheader[-1].value == f"Run {run.id}"
    assert at.download_button(key="download_run").label == "Download this run (.zip)"
    at.run()  # a rerun with the file still in the uploader imports nothing again
    assert len(list_runs([tmp_path])) == 1


def test_a_png_uploaded_as_a_dataset_is_refused_by_its_own_name(tmp_path, monkeypatch):
    import io

    from PIL import Image

    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    png = io.BytesIO()
    Image.new("L", (48, 48), 128).save(png, "PNG")
    at = open_page("app_pages/train.py")
    at.file_uploader(key="train_upload").upload("faces.csv", png.getvalue(), "text/csv")
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    assert at.main.error[0].value == (
        "faces.csv: not a CSV: the file holds a PNG image (first bytes b'\\x89PNG\\r\\n\\x1a\\n'); expected a "
        "text header such as emotion,pixels,Usage (to load images, give the folder that holds the class folders)")
    assert list_runs([tmp_path]) == []  # no run, no worker


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    (tmp_path / "course").mkdir()
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "course"))
    monkeypatch.setenv("FER_RUNS", str(tmp_path / "runs"))
    return tmp_path / "course"


def test_fer_data_root_refuses_a_typed_path_on_the_page(data_root):
    at = app().run()
    typed = f"{data_root}" + "/.." * len(data_root.parts) + "/etc/passwd"
    at.sidebar.text_input(key="data_source").input(typed).run()
    assert not at.exception, at.exception
    want = (f"{typed}: refused (it resolves to /etc/passwd); on this server data "
            f"paths must lie inside {data_root} (FER_DATA_ROOT). Put the file there, or upload it on the "
            "Train page")
    assert at.sidebar.error[0].value == want
    at.switch_page("app_pages/dataset.py").run()
    assert not at.exception, at.exception
    assert at.main.error[0].value == want
    at.sidebar.text_input(key="data_source").input("synthetic").run()  # synthetic stays allowed
    assert not at.sidebar.error and not at.main.error


def test_uploads_still_work_under_fer_data_root(data_root):
    lines, *_ = fer_rows(n=40)
    data = ("emotion,pixels,Usage\n" + "\n".join(lines) + "\n").encode()
    at = open_page("app_pages/train.py")
    at.number_input(key="train_members").set_value(1)
    at.number_input(key="train_epochs").set_value(1)
    at.file_uploader(key="train_upload").upload("mine.csv", data, "text/csv")
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (run,) = list_runs([data_root.parent / "runs"])
    assert run.config()["data"].startswith(str(data_root.parent / "runs" / "_uploads"))
    assert wait_until_finished(run)["state"] == "done"


def test_resume_of_an_imported_run_checks_its_data_path(data_root):
    import io
    import json
    import zipfile

    from fer.run_archive import import_run, zip_run

    demo = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-demo"
    src, out = zipfile.ZipFile(io.BytesIO(zip_run(demo))), io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("config.json"):  # one member short, trained on a file outside the root
                data = json.dumps(dict(json.loads(data), members=10, data="/etc/shadow",
                                       dataset_synthetic=False)).encode()
            zf.writestr(name, data)
    run = import_run(out.getvalue(), name="foreign.zip")
    assert run.status()["state"] == "stopped"
    at = app()
    at.query_params["run"] = run.id
    at.run()
    at.switch_page("app_pages/train.py").run()
    at.button(key="resume").click().run()
    assert not at.exception, at.exception
    assert at.main.error[0].value.startswith("/etc/shadow: refused; on this server data paths must lie inside")
    assert run.status()["state"] == "stopped" and "pid" not in run.status()  # no worker started
