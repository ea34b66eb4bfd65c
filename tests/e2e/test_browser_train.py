"""The real app in headless Chromium: start a 1-member, 2-epoch synthetic run on the Train page,
watch the live view update (status, epochs, chart), reload mid-training (it must reattach, not
start a second worker), and see the ensemble accuracy at the end.

Needs Debian's Chromium at /usr/bin/chromium (never ``playwright install``). Screenshots go to
tests/e2e/artifacts/ (gitignored). Takes about a minute and a half on 2 CPU cores.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fer.runs import kill_worker, list_runs

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def runs_root(tmp_path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root


@pytest.fixture
def server(tmp_path, runs_root):
    """``streamlit run streamlit_app.py`` on a free port, runs under ``runs_root``; its URL."""
    port = free_port()
    env = dict(os.environ, FER_RUNS=str(runs_root), FER_CACHE=str(tmp_path / "cache"))
    env.pop("FER_DATA", None)
    with open(tmp_path / "streamlit.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        for run in list_runs([runs_root]):
            kill_worker(run.path)  # only a worker the test left running
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pg = browser.new_page(viewport={"width": 1400, "height": 2200})
        pg.set_default_timeout(60_000)
        try:
            yield pg
        finally:
            browser.close()


def no_exception_box(pg) -> None:
    boxes = pg.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def shoot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / name))


def set_number(pg, label: str, value: int) -> None:
    box = pg.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    sync_api.expect(box).to_have_value(str(value))


def test_live_training_in_the_browser(server, page, runs_root):
    pg = page
    pg.goto(f"{server}/train")  # a fresh server's first request goes straight to a page
    pg.get_by_text("Start a new run").wait_for()
    sync_api.expect(pg.get_by_text("not real FER2013 data")).to_be_visible()  # the frame's sidebar
    sync_api.expect(pg.get_by_role("button", name="Start training")).to_be_visible()
    time.sleep(2)  # let the rest of the page (a shipped run, if any) finish drawing
    shoot(pg, "train_idle.png")
    set_number(pg, "Members", 1)
    set_number(pg, "Epochs per member", 2)
    time.sleep(1)  # let the rerun of the last input land before the click
    pg.get_by_role("button", name="Start training").click()

    pg.get_by_text("Training member 1 of 1 · epoch 1 of 2").first.wait_for(timeout=90_000)
    (run,) = list_runs([runs_root])
    pid = run.status()["pid"]
    assert pg.locator('[data-testid="stVegaLiteChart"]').count() == 2
    no_exception_box(pg)
    shoot(pg, "train_epoch1.png")

    pg.reload()  # a new browser session: reattach to the run on disk, never start a second worker
    pg.get_by_text("Training member 1 of 1").first.wait_for(timeout=60_000)
    sync_api.expect(pg.get_by_role("button", name="Stop")).to_be_visible()
    sync_api.expect(pg.get_by_role("button", name="Resume")).to_have_count(0)
    assert len(list_runs([runs_root])) == 1 and run.status()["pid"] == pid

    pg.get_by_text("epoch 2 of 2").first.wait_for(timeout=120_000)
    # .first: while a full rerun replaces the live view, old and new copies coexist for a moment
    sync_api.expect(pg.get_by_text("All members: 1 of 2 epochs finished").first).to_be_visible()
    after_epoch1 = pg.locator('[data-testid="stVegaLiteChart"]').nth(1).screenshot()
    shoot(pg, "train_epoch2.png")

    pg.get_by_text("Done: all 1 member(s)").first.wait_for(timeout=150_000)
    sync_api.expect(pg.get_by_text("All members: 2 of 2 epochs finished").first).to_be_visible()
    sync_api.expect(pg.get_by_text("Majority vote · PrivateTest").first).to_be_visible()
    time.sleep(2)  # the redraw after the switch to "done" settles
    after_done = pg.locator('[data-testid="stVegaLiteChart"]').nth(1).screenshot()
    assert after_done != after_epoch1, "the accuracy chart did not redraw with epoch 2"
    no_exception_box(pg)
    shoot(pg, "train_done.png")
    assert run.status()["state"] == "done"
