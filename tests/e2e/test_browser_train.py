"""The real app in headless Chromium: start a 1-member, 2-epoch synthetic run on the Train page,
watch the live view update (status, epochs, chart), reload mid-training (it must reattach, not
start a second worker), and see the ensemble accuracy at the end.

Needs Debian's Chromium at /usr/bin/chromium (never ``playwright install``). Screenshots go to
tests/e2e/artifacts/ (gitignored). Takes about a minute and a half on 2 CPU cores.
"""

from __future__ import annotations

import time

import pytest

from fer.runs import list_runs

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


def test_live_training_in_the_browser(server, page, runs_root, no_exception_box, shoot, set_number):
    pg = page
    before = {r.id for r in list_runs([runs_root])}  # the server is shared: runs of other tests
    pg.goto(f"{server}/train")  # straight to a page, no run picked in the URL
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
    (run,) = [r for r in list_runs([runs_root]) if r.id not in before]
    pid = run.status()["pid"]
    assert pg.locator('[data-testid="stVegaLiteChart"]').count() == 2
    no_exception_box(pg)
    shoot(pg, "train_epoch1.png")

    pg.reload()  # a new browser session: reattach to the run on disk, never start a second worker
    pg.get_by_text("Training member 1 of 1").first.wait_for(timeout=60_000)
    sync_api.expect(pg.get_by_role("button", name="Stop")).to_be_visible()
    sync_api.expect(pg.get_by_role("button", name="Resume")).to_have_count(0)
    assert len(list_runs([runs_root])) == len(before) + 1 and run.status()["pid"] == pid

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
