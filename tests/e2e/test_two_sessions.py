"""Two browser sessions on one server train at once: session A asks for 1 member × 1 epoch (base
seed 7, no augmentation), session B, opened after A has typed its settings, for 2 members × 1
epoch (base seed 3, flip). B's form starts from the defaults, not from A's values; both click
Start within a moment; both runs finish, in two run folders holding the config each session
asked for, and each session keeps showing its own run and its own settings.

Screenshots: tests/e2e/artifacts/two-sessions-{a,b}.png.
"""

from __future__ import annotations

import time

import pytest

from fer.runs import list_runs
from fer.training import TrainConfig

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

DEFAULTS = {"Members": "3", "Epochs per member": "5", "Base seed": "0"}  # the Train page's form
ASKS = {  # session → what it types, and the augmentation it picks
    "a": ({"Members": 1, "Epochs per member": 1, "Base seed": 7}, "none"),
    "b": ({"Members": 2, "Epochs per member": 1, "Base seed": 3}, "flip"),
}


def form_values(pg) -> dict[str, str]:
    """The Train form's number fields and augmentation, as the browser shows them."""
    values = {label: pg.get_by_label(label, exact=True).input_value() for label in DEFAULTS}
    values["Augmentation"] = pg.get_by_role("combobox", name="Augmentation", exact=True).input_value()
    return values


def fill_form(pg, set_number, drawn, session: str) -> None:
    numbers, augment = ASKS[session]
    for label, value in numbers.items():
        set_number(pg, label, value)
    pg.get_by_role("combobox", name="Augmentation", exact=True).click()
    pg.get_by_role("option", name=augment, exact=True).click()
    expect(pg.get_by_role("combobox", name="Augmentation", exact=True)).to_have_value(augment)
    drawn(pg)


def expected_form(session: str) -> dict[str, str]:
    numbers, augment = ASKS[session]
    return {**{k: str(v) for k, v in numbers.items()}, "Augmentation": augment}


def test_two_sessions_train_at_once(browser, server, runs_root, set_number, drawn, shoot, no_exception_box):
    before = {r.id for r in list_runs([runs_root])}
    contexts = [browser.new_context(viewport={"width": 1400, "height": 2200}) for _ in range(2)]
    try:
        a, b = (ctx.new_page() for ctx in contexts)
        for pg in (a, b):
            pg.set_default_timeout(60_000)

        a.goto(f"{server}/train")
        a.get_by_role("button", name="Start training").wait_for()
        drawn(a)
        fill_form(a, set_number, drawn, "a")

        b.goto(f"{server}/train")  # a second session, opened after A typed its settings
        b.get_by_role("button", name="Start training").wait_for()
        drawn(b)
        assert form_values(b) == {**DEFAULTS, "Augmentation": TrainConfig.augment}, \
            "B's form picked up A's settings"
        fill_form(b, set_number, drawn, "b")

        a.get_by_role("button", name="Start training").click()
        b.get_by_role("button", name="Start training").click()

        deadline = time.time() + 60
        while len(new := [r for r in list_runs([runs_root]) if r.id not in before]) < 2:
            assert time.time() < deadline, f"runs started: {[r.id for r in new]}"
            time.sleep(0.5)
        assert len(new) == 2, f"more runs than Start clicks: {[r.id for r in new]}"
        runs = {("a" if r.config()["members"] == 1 else "b"): r for r in new}
        assert set(runs) == {"a", "b"}, {r.id: r.config()["members"] for r in new}
        assert runs["a"].path != runs["b"].path

        for session, pg in (("a", a), ("b", b)):
            run, (numbers, augment) = runs[session], ASKS[session]
            members = numbers["Members"]
            cfg = run.config()
            assert (cfg["members"], cfg["epochs"], cfg["base_seed"], cfg["augment"]) == (
                members, numbers["Epochs per member"], numbers["Base seed"], augment), cfg
            expect(pg.get_by_role("heading", name=f"Run {run.id}", exact=True)).to_be_visible()
            expect(pg.get_by_text(f"{members} member(s) × 1 epoch(s)").first).to_be_visible()
            expect(pg.get_by_text(f"base seed {numbers['Base seed']} · augment {augment}").first).to_be_visible()

        for session, pg in (("a", a), ("b", b)):
            members = ASKS[session][0]["Members"]
            pg.get_by_text(f"Done: all {members} member(s) trained for 1 epoch(s).").first.wait_for(timeout=300_000)
        for session, pg in (("a", a), ("b", b)):
            run, members = runs[session], ASKS[session][0]["Members"]
            assert run.status()["state"] == "done", run.status()
            assert run.finished_members() == list(range(members))
            assert [(m["member"], m["epoch"]) for m in run.metrics()] == [(m, 1) for m in range(members)]
            # each session still shows its own run, picked in its own sidebar, and its own form
            expect(pg.get_by_role("heading", name=f"Run {run.id}", exact=True)).to_be_visible()
            sidebar = pg.locator('[data-testid="stSidebar"]')
            expect(sidebar.get_by_role("combobox", name="Run")).to_have_value(f"{run.id} · yours")
            expect(sidebar.get_by_text(f"yours · done · {members}/{members} members done", exact=True)).to_be_visible()
            assert form_values(pg) == expected_form(session)
            drawn(pg)
            no_exception_box(pg)
            shoot(pg, f"two-sessions-{session}.png", full_page=True)
        assert {r.id for r in list_runs([runs_root])} - before == {runs["a"].id, runs["b"].id}
    finally:
        for ctx in contexts:
            ctx.close()
