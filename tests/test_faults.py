"""Faults the app must survive, tried for real:

- the training worker killed with SIGKILL mid-epoch: the Train page says so, Resume finishes the
  run, and no finished epoch or member is lost;
- the run folder filling up (ENOSPC) or turning read-only (EACCES) while weights are saved: the
  run fails with a message naming the file and the cause, shown on the Train page, and the
  previous best weights stay intact (atomic writes); a run folder that cannot be created at all
  is refused by the CLI with exit code 2;
- 25 reruns of every page on the shipped synthetic run grow the process's memory by < 50 MB.

Tests run as root, for whom chmod does not make a folder unwritable, so the disk faults are
injected at the OS-call level (``os.fsync`` / ``os.open``) inside :func:`fer.runs.atomic_write_bytes`.
"""

from __future__ import annotations

import ast
import ctypes
import errno
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from fer import training
from fer.data import load_dataset
from fer.errors import RunDirError
from fer.runs import Run, kill_worker, start_worker
from fer.training import (
    MemberState,
    TrainConfig,
    create_run,
    dataset_fields,
    run_training,
)
from fer.weights import load_model, load_tensors

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
SPLITS = ("train", "public_test", "private_test")
# The epoch numbers that a resumed run recomputes identically (seconds and images/s do not).
DETERMINISTIC = ("member", "seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "best")


# ---------------------------------------------------------------- helpers
def make_run(root: Path, data: str, **kw) -> Run:
    cfg = TrainConfig(data=data, **kw, **dataset_fields(load_dataset(data)))
    return create_run(cfg, root / "run")


def wait_for(cond, timeout: float, what: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def texts(at: AppTest) -> str:
    """All markdown, captions and alerts of the page and the sidebar, one string."""
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "success", "warning",
                                               "error") for e in getattr(at, kind))


def train_page() -> AppTest:
    """The Train page inside the frame, on the sidebar's default run (the newest user run)."""
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, at.exception
    return at


def inside_epoch(status: dict, member: int, min_epoch: int) -> bool:
    """The status says the worker trains ``member`` (0-based), with at least ``min_epoch`` epochs
    finished and a batch of the current one done."""
    return (status.get("phase") == "training" and status.get("member") == member
            and (status.get("epoch") or 0) >= min_epoch and (status.get("batch") or 0) >= 1)


def member_state(run: Run, member: int) -> MemberState:
    _, meta = load_tensors(run.path / "members" / f"m{member:02d}.last.safetensors")
    return MemberState(**meta["state"])


def member_predictions(run: Run, member: int) -> dict[str, dict[str, np.ndarray]]:
    """Member ``member``'s row of every per-member array of every split's predictions."""
    out = {}
    for split in SPLITS:
        z = run.predictions(split)
        i = z["members"].tolist().index(member)
        out[split] = {k: v[i] for k, v in z.items() if k not in ("members", "labels", "indices")}
    return out


# ---------------------------------------------------------------- 1. SIGKILL mid-epoch
def test_worker_killed_mid_epoch_shows_interrupted_and_resume_loses_no_finished_work(
        tmp_path, monkeypatch, tiny_csv):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    run = make_run(tmp_path, tiny_csv, members=2, epochs=8, batch_size=16)
    start_worker(run.path)
    try:
        # Member 2 (index 1) has finished an epoch and is inside the next one.
        wait_for(lambda: inside_epoch(run.status(), member=1, min_epoch=1), 240,
                 "member 2 to train past its first epoch")
        at_kill = run.status()
        kill_worker(run.path, signal.SIGKILL)
        wait_for(lambda: run.status()["state"] == "interrupted", 30, "the run to read as interrupted")

        # What the kill must not lose: finished member 0's files and predictions, every
        # finished epoch.
        assert run.finished_members() == [0]
        killed = member_state(run, 1)
        assert 1 <= killed.epoch < 8 and not killed.done, killed
        print(f"\nSIGKILL in member 2, epoch {at_kill['epoch'] + 1}, batch {at_kill['batch']} of "
              f"{at_kill['n_batches']} (last heartbeat); its resume state holds {killed.epoch} epoch(s)")
        m0_files = {p: p.read_bytes() for p in (run.weights_path(0),
                                                run.path / "members" / "m00.last.safetensors")}
        m0_preds = member_predictions(run, 0)
        before = run.metrics()
        assert [(r["member"], r["epoch"]) for r in before][:8] == [(0, e) for e in range(1, 9)]
        assert len(before) >= 9  # member 2's first epoch too

        at = train_page()
        assert at.sidebar.selectbox(key="run_id").value == run.id
        assert "Interrupted: the training process is gone" in texts(at)
        assert [b.key for b in at.button if b.key in ("stop", "resume")] == ["resume"]
        at.button(key="resume").click().run()
        assert not at.exception, at.exception
        assert [b.key for b in at.button if b.key in ("stop", "resume")] == ["stop"]
        wait_for(lambda: run.status()["state"] in ("done", "failed", "interrupted"), 240,
                 "the resumed run to finish")
    finally:
        if run.status()["state"] == "running":  # the test gave up: stop its own worker
            kill_worker(run.path)
    assert run.status()["state"] == "done", run.status()
    at.run()
    assert not at.exception, at.exception
    assert "Done: all 2 member(s) trained for 8 epoch(s)." in texts(at)

    after = run.metrics()
    assert [(r["member"], r["epoch"]) for r in after] == [(m, e) for m in (0, 1) for e in range(1, 9)]
    by_key = {(r["member"], r["epoch"]): r for r in after}
    for rec in before:
        again = by_key[(rec["member"], rec["epoch"])]
        if rec["member"] == 0 or rec["epoch"] <= killed.epoch:
            assert again == rec  # kept as written, timings included
        else:  # logged but its resume state not yet saved when killed: redone, same numbers
            assert {k: again[k] for k in DETERMINISTIC} == {k: rec[k] for k in DETERMINISTIC}
    for path, data in m0_files.items():
        assert path.read_bytes() == data, f"{path.name} changed"
    for split, arrays in member_predictions(run, 0).items():
        for key, value in arrays.items():
            assert value.dtype == m0_preds[split][key].dtype
            np.testing.assert_array_equal(value, m0_preds[split][key], err_msg=f"{split} {key}")
    assert run.finished_members() == [0, 1]
    assert not list(run.path.rglob("*.tmp"))


# ---------------------------------------------------------------- 2. disk full / not writable
@pytest.fixture
def every_epoch_a_new_best(monkeypatch):
    """Validation accuracy rises every epoch (0.2, 0.214…), so each epoch rewrites the member's
    best weights (``mNN.safetensors``): the save a failing disk must not corrupt."""
    accs = iter(np.linspace(0.2, 0.9, 50))
    evaluate = training._evaluate
    monkeypatch.setattr(training, "_evaluate", lambda *a: (evaluate(*a)[0], float(next(accs))))


class FailingDisk:
    """Once armed (after member 0's first resume state is saved), the run folder fails like

    - ``full``: a nearly full disk: writing a file over 64 KiB (weights, resume state) fails with
      ENOSPC when flushed to disk, while small ones (status.json, a metrics line) still fit;
    - ``no room``: a disk without a byte left: every file written in the run folder fails so;
    - ``read-only``: its ``members/`` folder turns read-only: creating a file there fails with
      EACCES.
    """

    def __init__(self, kind: str, run: Run, monkeypatch):
        self.kind, self.run, self.armed, self.best_before = kind, run, False, b""
        self.failures: list[str] = []
        self._fsync, self._open = os.fsync, os.open
        monkeypatch.setattr(os, "fsync", self.fsync)
        monkeypatch.setattr(os, "open", self.open)

    def fsync(self, fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if self.armed and ((self.kind == "full" and os.fstat(fd).st_size > 64 * 1024)
                           or (self.kind == "no room" and name.startswith(str(self.run.path)))):
            self.failures.append(name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._fsync(fd)
        if "m00.last.safetensors" in Path(name).name and not self.armed:
            self.armed, self.best_before = True, self.run.weights_path(0).read_bytes()

    def open(self, path, flags, *a, **k):
        if (self.armed and self.kind == "read-only" and flags & os.O_CREAT
                and Path(path).parent == self.run.path / "members"):
            self.failures.append(str(path))
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return self._open(path, flags, *a, **k)


@pytest.mark.parametrize("kind, cause", [("full", "No space left on device"),
                                         ("read-only", "Permission denied")])
def test_a_failing_disk_fails_the_run_clearly_and_keeps_the_best_weights(
        tmp_path, monkeypatch, tiny_csv, every_epoch_a_new_best, kind, cause):
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    run = make_run(tmp_path, tiny_csv, members=1, epochs=3, batch_size=64)
    with monkeypatch.context() as m:  # epoch 2's m00.safetensors is the first save that fails
        disk = FailingDisk(kind, run, m)
        status = run_training(run.path, progress=False)
    best = run.weights_path(0)
    assert disk.armed and disk.failures, "the fault was never injected"
    assert disk.failures[0].startswith(str(best.parent / ".m00.safetensors."))

    # The run says it failed, naming the file and the cause, on disk as in the return value.
    assert status["state"] == "failed", status
    assert run.status()["state"] == "failed" and run.status()["error"] == status["error"]
    assert f"{best}: cannot write ({cause})" in status["error"], status["error"]
    assert "the previous version of the file is left unchanged" in status["error"]
    # The previous best weights are intact and loadable; no temporary file is left behind.
    assert best.read_bytes() == disk.best_before
    load_model(best, "seed_cnn")
    assert not [p for p in run.path.rglob("*") if p.name.endswith(".tmp")]
    assert [r["epoch"] for r in run.metrics()] == [1]
    epoch1 = run.metrics()[0]

    at = train_page()
    assert any(f"Failed: {best}: cannot write ({cause})" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert at.button(key="resume").label == "Resume"

    # With room again, Resume continues from the last saved state and finishes.
    assert run_training(run.path, progress=False)["state"] == "done"
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3] and run.metrics()[0] == epoch1
    assert run.finished_members() == [0]


def test_a_disk_without_room_for_the_status_either_raises_the_first_error(
        tmp_path, tiny_csv, every_epoch_a_new_best):
    """Not even ``failed`` fits in status.json: the worker exits with the save's error first (the
    page then shows the run as interrupted, see the SIGKILL test) and the best weights are kept."""
    run = make_run(tmp_path, tiny_csv, members=1, epochs=3, batch_size=64)
    best = run.weights_path(0)
    with pytest.MonkeyPatch.context() as m:
        disk = FailingDisk("no room", run, m)
        with pytest.raises(RunDirError) as caught:
            run_training(run.path, progress=False)
    # (the heartbeat's own status.json writes may fail first: it leaves them to the loop)
    assert disk.armed and any(f.startswith(str(best.parent / ".m00.safetensors.")) for f in disk.failures)
    message = str(caught.value)
    assert message.startswith(f"{best}: cannot write (No space left on device)"), message
    assert f"could not be recorded either: {run.path / 'status.json'}: cannot write" in message
    assert best.read_bytes() == disk.best_before
    load_model(best, "seed_cnn")
    assert not [p for p in run.path.rglob("*") if p.name.endswith(".tmp")]


def test_a_run_dir_that_cannot_be_created_is_refused_by_the_cli(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder\n")
    run_dir = blocker / "run"
    with pytest.raises(RunDirError, match=f"{run_dir}: cannot create the run directory "
                                          f"\\({blocker} is a file, not a folder\\)"):
        create_run(TrainConfig(members=1, epochs=1), run_dir)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "fer", "train", "--run-dir", str(run_dir),
                           "--members", "1", "--epochs", "1", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False)
    seconds = time.time() - t0
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == (f"error: {run_dir}: cannot create the run directory "
                                   f"({blocker} is a file, not a folder)"), proc.stderr
    assert "Traceback" not in proc.stderr and blocker.read_text() == "a file, not a folder\n"
    print(f"\nCLI refused an uncreatable run dir in {seconds:.1f} s")


# ---------------------------------------------------------------- 3. memory over reruns
WARM_RERUNS, RERUNS, MAX_GROWTH_MB = 2, 25, 50.0


def pages_table() -> list[str]:
    """The page files of streamlit_app.PAGES, read without running the app."""
    for node in ast.parse(APP.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PAGES":
            return [row[0] for row in ast.literal_eval(node.value)]
    raise AssertionError("streamlit_app.py has no PAGES table")


def rss_mb() -> float:
    """This process's resident set size (VmRSS of /proc/self/status), in MB (2**20 bytes), after
    a garbage collection and glibc's ``malloc_trim`` (freed heap back to the OS), so it counts
    what is still held rather than what the allocator keeps around."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the plain RSS is an upper bound
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def measure_page_memory(file: str, run_id: str = "synthetic-demo") -> dict:
    """Render page ``file`` inside the frame on run ``run_id``, rerun it WARM_RERUNS times to warm
    the caches, then RERUNS more times; returns {page, before_mb, after_mb, growth_mb, seconds}
    (RSS in MB around the RERUNS reruns; seconds for them). Raises AssertionError when the page
    raises or shows another run."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["run_id"] = run_id
    at.run()
    at.switch_page(file).run()
    for _ in range(WARM_RERUNS):
        at.run()
    assert not at.exception, f"{file}: {at.exception}"
    assert at.sidebar.selectbox(key="run_id").value == run_id
    before, t0 = rss_mb(), time.perf_counter()
    for _ in range(RERUNS):
        at.run()
    seconds = time.perf_counter() - t0
    assert not at.exception, f"{file}: {at.exception}"
    after = rss_mb()
    return dict(page=file, before_mb=before, after_mb=after, growth_mb=after - before, seconds=seconds)


def test_25_reruns_of_each_page_grow_memory_by_less_than_50_mb(tmp_path):
    # A process of its own: the RSS of the test process carries every other test's allocations.
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", FER_RUNS=str(tmp_path))
    t0 = time.time()
    proc = subprocess.run([sys.executable, __file__, "page-memory"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    table = "\n".join(f"  {r['page']:30s} RSS {r['before_mb']:7.1f} -> {r['after_mb']:7.1f} MB "
                      f"({r['growth_mb']:+6.1f} MB) over {RERUNS} reruns in {r['seconds']:5.1f} s"
                      for r in rows)
    print(f"\nmemory over {RERUNS} reruns per page (after {WARM_RERUNS} warm-up reruns), "
          f"{time.time() - t0:.0f} s in all:\n{table}")
    assert [r["page"] for r in rows] == pages_table()
    grown = [r for r in rows if r["growth_mb"] >= MAX_GROWTH_MB]
    assert not grown, f"pages grew by {MAX_GROWTH_MB} MB or more:\n{table}"


if __name__ == "__main__" and sys.argv[1:] == ["page-memory"]:
    for page in pages_table():
        print(json.dumps(measure_page_memory(page)), flush=True)
