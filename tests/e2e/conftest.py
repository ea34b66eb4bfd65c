"""Fixtures of the browser tests: one ``streamlit run`` per test session on a free port, headless
Debian Chromium driven by the ``playwright`` package, a fresh synthetic run trained once per
session, and small helpers (no exception box, screenshot, number field, wait until drawn).

Needs Chromium at /usr/bin/chromium (``apt-get install chromium``; never ``playwright install``):
every test that asks for a browser skips with the reason when it or the package is missing.
Screenshots go to tests/e2e/artifacts/ (gitignored).
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

from fer.runs import Run, kill_worker, list_runs

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
VIEWPORT = {"width": 1400, "height": 2200}
FRESH_RUN = "e2e-fresh-synthetic"  # id (folder name) of the run trained once per session

try:
    from playwright import sync_api
except ImportError:  # the tests skip through the chromium fixture below
    sync_api = None
else:  # the pages redraw on a busy 2-core machine: 5 s (the default) is too short for that
    sync_api.expect.set_options(timeout=30_000)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium's path; skips the test when Chromium or the playwright package is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    if sync_api is None:
        pytest.skip("the playwright Python package is not installed (pip install -r requirements-dev.txt)")
    return CHROMIUM


# ---------------------------------------------------------------- the app server
@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """The server's ``FER_RUNS``: runs trained by the tests (shipped runs come from checkpoints/)."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def server_env(tmp_path_factory, runs_root) -> dict[str, str]:
    """Environment of the server and of the runs trained for it: its runs root, its own cache."""
    env = dict(os.environ, FER_RUNS=str(runs_root), FER_CACHE=str(tmp_path_factory.mktemp("cache")),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("FER_DATA", None)
    return env


@pytest.fixture(scope="session")
def server(chromium, tmp_path_factory, runs_root, server_env):
    """``streamlit run streamlit_app.py`` on a free port, shared by the whole session; its URL.

    At the end it kills any worker a test left training under ``runs_root``, then the server.
    """
    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        for run in list_runs([runs_root]):
            kill_worker(run.path)  # only a worker the tests left running
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------- the browser
@pytest.fixture(scope="session")
def browser(chromium):
    """One headless Chromium for the session; tests open their own contexts or pages in it."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    """A new page in a fresh browser context (its own cookies: a new Streamlit session)."""
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        context.close()


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="session")
def no_exception_box():
    """``no_exception_box(pg)``: fail with its text when the page shows a Python exception."""
    def check(pg) -> None:
        boxes = pg.locator('[data-testid="stException"]')
        assert boxes.count() == 0, boxes.first.inner_text()
    return check


@pytest.fixture(scope="session")
def shoot():
    """``shoot(pg, name, full_page=False)``: save a PNG screenshot to tests/e2e/artifacts/."""
    def save(pg, name: str, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        pg.screenshot(path=str(path), full_page=full_page)
        return path
    return save


@pytest.fixture(scope="session")
def set_number(chromium):
    """``set_number(pg, label, value)``: type into a number field, press Enter, see it hold."""
    def fill(pg, label: str, value: int) -> None:
        box = pg.get_by_label(label, exact=True)
        box.fill(str(value))
        box.press("Enter")
        sync_api.expect(box).to_have_value(str(value))
    return fill


# True once Streamlit's script run is over and what it drew has loaded: no skeleton placeholder
# or spinner, every image decoded, every visible Vega chart rendered (a chart in a tab that is not
# open is drawn only when the tab opens).
_DRAWN_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stSkeleton"], [data-testid="stSpinner"]')) return false;
  if (![...document.images].every(i => i.complete)) return false;
  return [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
    .every(c => c.getClientRects().length === 0 || c.querySelector('svg, canvas'));
}"""


@pytest.fixture(scope="session")
def drawn(chromium):
    """``drawn(pg, timeout_ms)``: wait until the script run is over and its output has loaded.

    Right after a click the previous run's "not running" can still show: wait for a consequence
    of the click first, then for this.
    """
    def wait(pg, timeout: float = 120_000) -> None:
        pg.wait_for_function(_DRAWN_JS, timeout=timeout, polling=200)
    return wait


# ---------------------------------------------------------------- a fresh run, trained once
class FreshRun:
    """A tiny synthetic run (2 members x 1 epoch) trained by ``python -m fer train`` in the
    background from the moment it is created, so that tests on other runs proceed meanwhile."""

    def __init__(self, run_dir: Path, env: dict[str, str]):
        self.path = run_dir
        self.id = run_dir.name
        self._log = run_dir.parent / f"{run_dir.name}.log"
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "fer", "train", "--data", "synthetic", "--members", "2",
                 "--epochs", "1", "--run-dir", str(run_dir), "--no-progress"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def ready(self, timeout: float = 600) -> Run:
        """Wait until training has finished; the run. Fails with the log when training failed."""
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the fresh run did not finish in {timeout:.0f} s")
        run = Run(self.path)
        if code != 0 or run.status().get("state") != "done":
            pytest.fail(f"training the fresh run failed ({code}): {self._log.read_text()[-2000:]}")
        return run

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture(scope="session")
def fresh_run(chromium, runs_root, server_env):
    """A :class:`FreshRun` under the server's runs root, started on first use; ``.ready()``
    waits for it."""
    run = FreshRun(runs_root / FRESH_RUN, server_env)
    try:
        yield run
    finally:
        run.stop()
