"""Confusions page redraw time in a real browser on a 15-member run over FER2013's 28,709
training faces: switching the faces (split), the voter (a member) and clicking a matrix cell.

A 15-member stand-in run is made in a temporary runs folder from the shipped
``fer2013-seed-cnn-15``: its finished members' predictions and weights repeated to 15 member
ids (the timing depends on the array sizes, not on which member voted). The page is opened in
headless Chromium; each measured step is the wall time from the click until the script has
finished and the new content is on screen (opening a dropdown is not counted; a cell is
clicked on the chart itself, as a user does). ``ratio`` = first draw of the page (cold caches) /
median warm redraw.

    python benchmarks/confusion_redraw.py --data /path/to/fer2013.csv[.gz] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer.runs import SHIPPED_ROOT, Run, atomic_write_json  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
M = 15


def stand_in_run(root: Path) -> str:
    """A 15-member copy of the shipped FER2013 run under ``root``; its id."""
    src = Run(SHIPPED_ROOT / "fer2013-seed-cnn-15")
    have = src.finished_members()
    dst = root / "timing-15"
    (dst / "members").mkdir(parents=True)
    (dst / "predictions").mkdir()
    cfg = src.config()
    atomic_write_json(dst / "config.json", cfg)
    atomic_write_json(dst / "status.json", {"state": "done", "members": M, "epochs": cfg["epochs"]})
    for m in range(M):
        shutil.copy(src.weights_path(have[m % len(have)]), dst / "members" / f"m{m:02d}.safetensors")
    for split in ("train", "public_test", "private_test"):
        if src.predictions_file(split) is None:
            continue
        z = src.predictions(split)
        pick = [m % len(have) for m in range(M)]
        out = {k: (z[k][pick] if z[k].ndim >= 2 and len(z[k]) == len(have) else z[k]) for k in z}
        out["members"] = np.arange(M)
        np.savez(dst / "predictions" / f"{split}.npz", **out)
    return dst.name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settle(pg, timeout_ms: int = 120_000) -> None:
    """Wait until the script run has finished (the running indicator is gone) and charts drew."""
    pg.wait_for_timeout(50)  # the running indicator appears a moment after the click
    pg.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)
    pg.wait_for_function("document.querySelectorAll('[data-testid=stVegaLiteChart] canvas, "
                         "[data-testid=stVegaLiteChart] svg').length >= 1", timeout=timeout_ms)


def pick(pg, label: str, option: str):
    """Open the ``label`` dropdown; returns the click that picks ``option`` (the timed part)."""
    pg.get_by_role("combobox", name=label).click()
    target = pg.get_by_role("option", name=option, exact=True)
    target.wait_for()
    return target.click


def cell_click(pg, true: int, pred: int):
    """Locate matrix cell (true, pred) on the chart's pixels; returns the click (the timed part)."""
    from PIL import Image

    chart = pg.locator('[data-testid="stVegaLiteChart"]').first
    box = chart.bounding_box()
    pixels = np.asarray(Image.open(io.BytesIO(chart.screenshot())).convert("RGB")).astype(int)
    ys, xs = np.nonzero(pixels.max(axis=2) - pixels.min(axis=2) > 40)  # the coloured cells
    cw, ch = (xs.max() - xs.min() + 1) / 7, (ys.max() - ys.min() + 1) / 7
    x, y = box["x"] + xs.min() + (pred + 0.5) * cw, box["y"] + ys.min() + (true + 0.5) * ch
    return lambda: pg.mouse.click(x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="FER2013 csv (the run's dataset; galleries need its images)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="fer-redraw-"))
    run_id = stand_in_run(tmp / "runs")
    port = free_port()
    env = dict(os.environ, FER_RUNS=str(tmp / "runs"), FER_DATA=str(args.data))
    log = open(tmp / "streamlit.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port",
                               str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    times: dict[str, list[float]] = {}
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            pg = browser.new_page(viewport={"width": 1440, "height": 1400})
            t0 = time.perf_counter()
            pg.goto(f"{url}/confusion?run={run_id}")
            pg.wait_for_selector("text=Top confusions", timeout=600_000)
            settle(pg, 600_000)
            first = time.perf_counter() - t0

            def step(name, prepare, expect_text):
                try:
                    click = prepare()
                    t = time.perf_counter()
                    click()
                    pg.get_by_text(expect_text).first.wait_for(timeout=120_000)
                    settle(pg)
                except Exception:
                    pg.screenshot(path=str(REPO / "benchmarks" / "results" / "confusion_redraw_failed.png"))
                    print("failed at", name, "after", times, file=sys.stderr)
                    raise
                times.setdefault(name, []).append(time.perf_counter() - t)

            for r in range(args.repeats):
                step("split: training faces", lambda: pick(pg, "Faces", "Training (members that trained on the face)"),
                     "on Training (members that trained on the face)")
                step("split: PrivateTest", lambda: pick(pg, "Faces", "PrivateTest"), "on PrivateTest")
                step("voter: member 3", lambda: pick(pg, "Who votes", "member 3"), "member 3 on PrivateTest")
                step("voter: majority vote", lambda: pick(pg, "Who votes", "majority vote"), "majority vote on PrivateTest")
                for true, pred in ((0, 2), (4, 6)):
                    step(f"cell: {CLASSES[true]} → {CLASSES[pred]}", lambda t=true, q=pred: cell_click(pg, t, q),
                         f"{CLASSES[true]} taken for {CLASSES[pred]}")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:28s} median {v:5.2f} s   (all: {', '.join(f'{x:.2f}' for x in times[k])})")
    warm = float(np.median([x for v in times.values() for x in v]))
    print(f"first draw (cold caches, 15 members, 28,709 training faces): {first:.1f} s; "
          f"median redraw {warm:.2f} s; slowest redraw {max(max(v) for v in times.values()):.2f} s")
    print(json.dumps(dict(first_draw_s=round(first, 2), median_redraw_s=round(warm, 3),
                          max_redraw_s=round(max(max(v) for v in times.values()), 3),
                          steps={k: round(v, 3) for k, v in med.items()}, ratio=round(first / warm, 1))))


CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


if __name__ == "__main__":
    main()
