"""Every page of the app in headless Chromium, on the shipped synthetic run and on a run trained
fresh for this session: it loads (the sidebar holds the run asked for in ``?run=``), shows no
exception box, and its main control works — Dataset's class picker, Ensemble size's test split,
a click on a confusion-matrix cell, Saliency's method, a turn of the Filters page, a photo on
Your face, Architecture's input size — checked against numbers computed here by ``fer``. The
Train page also stops a run mid-epoch and resumes it to the end.

The pages are walked from ``PAGES`` in streamlit_app.py (plus Home): a new page gets the load
checks at once; its main control gets a test by adding a function to ``EXERCISES``. One server
for the whole session (conftest.py); screenshots go to tests/e2e/artifacts/<page>-<run>[-<what>].png.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer.evaluation import evaluate_run
from fer.labels import CLASS_NAMES, SPLIT_TITLES
from fer.runs import SHIPPED_ROOT, Run, list_runs

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SHIPPED = "synthetic-demo"  # the shipped run every fresh machine has
FRESH = "fresh"             # stands for the session's fresh run (conftest.FreshRun)


def pages_table() -> list[tuple[str, str, str, str]]:
    """streamlit_app.PAGES (file, title, icon, blurb), read without running the app."""
    for node in ast.parse(APP.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PAGES":
            return ast.literal_eval(node.value)
    raise AssertionError("streamlit_app.py has no PAGES table")


def url_path(file: str) -> str:
    """The URL path Streamlit gives ``st.Page(file)``: the file name without a leading number."""
    return re.sub(r"^[0-9]+[_ -]*", "", Path(file).stem)


# ---------------------------------------------------------------- reading the page
def image_tiles(pg) -> list[tuple[str, str]]:
    """(caption, src) of every image the page draws, in page order."""
    return pg.evaluate("""() => [...document.querySelectorAll('[data-testid="stImageContainer"]')]
        .map(c => [(c.querySelector('[data-testid="stImageCaption"]') || {innerText: ''}).innerText.trim(),
                   (c.querySelector('img') || {src: ''}).src])""")


def metric(pg, label: str):
    """The ``st.metric`` box whose label contains ``label``."""
    return pg.locator('[data-testid="stMetric"]').filter(
        has=pg.locator('[data-testid="stMetricLabel"]', has_text=label)).first


def pick_option(pg, label: str, option: str) -> None:
    """Open the selectbox labelled ``label`` and pick ``option``."""
    pg.get_by_role("combobox", name=label, exact=True).click()
    pg.get_by_role("option", name=option, exact=True).click()


def members_of(run: Run) -> list:
    from fer.weights import load_model
    return [load_model(run.weights_path(m), run.config()["model"]) for m in run.finished_members()]


# ---------------------------------------------------------------- each page's main control
def exercise_home(pg, run: Run, drawn) -> str:
    """The active run's card names the run picked in the URL; a link per page of PAGES."""
    expect(pg.locator('[data-testid="stMain"]').get_by_text(f"{run.id} · ").first).to_be_visible()
    for _, title, _, _ in pages_table():
        expect(pg.locator('[data-testid="stMain"]').get_by_role("link", name=title, exact=True)).to_be_visible()
    return ""


def exercise_dataset(pg, run: Run, drawn) -> str:
    """Pick the class Happy: the caption counts its faces and the sample grid shows others."""
    classes = pg.locator(".st-key-ds_class")
    happy = classes.get_by_role("radio", name=re.compile(r"^Happy \("))
    n = int(re.search(r"\(([\d,]+)\)", happy.inner_text()).group(1).replace(",", ""))
    expect(pg.get_by_text(re.compile(r"faces of Angry in all splits"))).to_be_visible()
    before = {src for _, src in image_tiles(pg)}
    happy.click()
    pages = -(-n // 30)
    expect(pg.get_by_text(f"{n:,} faces of Happy in all splits; page 1 of {pages}")).to_be_visible()
    drawn(pg)
    new = {src for _, src in image_tiles(pg)} - before
    assert len(new) >= min(n, 30), f"the sample grid shows {len(new)} new faces after picking Happy"
    return "happy"


def exercise_train(pg, run: Run, drawn) -> str:
    """A finished run: done, the ensemble's PrivateTest accuracy as fer computes it, no Stop or
    Resume (Stop → Resume is tested below on a run started here)."""
    cfg = run.config()
    expect(pg.get_by_text(f"Done: all {cfg['members']} member(s) trained for {cfg['epochs']} epoch(s).")).to_be_visible()
    rep = evaluate_run(run.path, "private_test", curve=False)
    expect(metric(pg, "Majority vote · PrivateTest")).to_contain_text(f"{rep['majority']:.1%}")
    expect(metric(pg, "Soft vote · PrivateTest")).to_contain_text(f"{rep['soft']:.1%}")
    expect(pg.get_by_role("button", name="Stop")).to_have_count(0)
    expect(pg.get_by_role("button", name="Resume")).to_have_count(0)
    return ""


def exercise_ensemble_size(pg, run: Run, drawn) -> str:
    """Switch the test split: heading, one-member mean and the chart's axis follow it."""
    chart = pg.locator('[data-testid="stVegaLiteChart"]').first
    for split in ("private_test", "public_test"):
        title = SPLIT_TITLES[split]
        if split == "public_test":
            pg.locator(".st-key-size_split").get_by_text(title, exact=True).click()
        rep = evaluate_run(run.path, split, curve=False)
        pool = len(rep["member_ids"])
        expect(pg.get_by_text(f"{run.id} on {title}: {rep['n']:,} faces, a pool of {pool} member(s)")).to_be_visible()
        expect(metric(pg, "One member (mean)")).to_contain_text(f"{np.mean(rep['members']):.1%}")
        expect(metric(pg, f"Soft vote of all {pool}")).to_contain_text(f"{rep['soft']:.1%}")
        expect(chart).to_contain_text(f"accuracy on {title}")
    drawn(pg)
    return "publictest"


def exercise_confusion(pg, run: Run, drawn) -> str:
    """Click a matrix cell other than the one shown first: its faces, exactly as many as fer
    counts in that cell (first page of 20), replace the first cell's."""
    cm = np.array(evaluate_run(run.path, "private_test", curve=False)["confusion"])
    heading = re.compile(r"^(\w+) (?:taken for|recognised as) (\w+): ([\d,]+) faces$")
    first = pg.get_by_role("heading", name=heading)
    expect(first).to_be_visible()
    t0, p0, n0 = heading.match(first.inner_text()).groups()
    t0, p0 = CLASS_NAMES.index(t0), CLASS_NAMES.index(p0)
    assert int(n0.replace(",", "")) == cm[t0, p0]
    # the largest other confusion, else the largest other right answer
    cells = sorted(((int(cm[t, p]), t != p, t, p) for t in range(7) for p in range(7)
                    if cm[t, p] and (t, p) != (t0, p0)), key=lambda c: (c[1], c[0]), reverse=True)
    n, _, t, p = cells[0]
    verb = "recognised as" if t == p else "taken for"
    cell = pg.locator(f'[aria-roledescription="rect mark"][aria-label^="predicted class: {CLASS_NAMES[p]}; '
                      f'true class: {CLASS_NAMES[t]};"]')
    expect(cell).to_have_count(1)
    cell.click(position={"x": 6, "y": 6})  # a corner: the cell's numbers sit in its middle
    expect(pg.get_by_role("heading", name=f"{CLASS_NAMES[t]} {verb} {CLASS_NAMES[p]}: {n:,} faces")).to_be_visible()
    tiles = pg.locator(f'[class*="st-key-cm_cell_private_test_majority_{t}_{p}_"][class*="_open_"]')
    expect(tiles).to_have_count(min(n, 20))
    expect(pg.locator('[class*="st-key-cm_cell_"][class*="_open_"]')).to_have_count(min(n, 20))
    drawn(pg)
    return f"cell-{CLASS_NAMES[t]}-{CLASS_NAMES[p]}"


def exercise_saliency(pg, run: Run, drawn) -> str:
    """Switch the method from the vanilla gradient to Grad-CAM: every member's map and the mean
    are redrawn, the face itself is not."""
    m = len(run.finished_members())
    expect(pg.get_by_text(re.compile(r"^Vanilla gradient — ")).first).to_be_visible()
    before = dict(image_tiles(pg))
    maps = [c for c in before if c.startswith(("member ", "Mean of", "The only"))]
    assert len([c for c in maps if c.startswith("member ")]) == m, list(before)
    pick_option(pg, "Method", "Grad-CAM")
    expect(pg.get_by_text(re.compile(r"^Grad-CAM — ")).first).to_be_visible()
    expect(pg.locator('[data-testid="stVegaLiteChart"]', has_text="Grad-CAM (logit units)").first).to_be_visible()
    drawn(pg)
    after = dict(image_tiles(pg))
    face = next(c for c in before if c.startswith("The face"))
    assert after[face] == before[face], "the face itself changed with the method"
    unchanged = [c for c in maps if after.get(c) == before[c]]
    assert not unchanged, f"maps not redrawn for Grad-CAM: {unchanged}"
    return "gradcam"


def exercise_filters(pg, run: Run, drawn) -> str:
    """Turn to the second page of filters: cards 16–31 replace cards 0–15."""
    expect(pg.get_by_text(re.compile(r"^filter 0 · top ")).first).to_be_visible()
    slider = pg.get_by_role("slider", name="Filters shown")
    slider.focus()
    slider.press("ArrowRight")
    expect(slider).to_have_attribute("aria-valuetext", "16–31")
    expect(pg.get_by_text(re.compile(r"^filter 16 · top ")).first).to_be_visible(timeout=120_000)
    expect(pg.get_by_text(re.compile(r"^filter 0 · top "))).to_have_count(0)
    drawn(pg)
    captions = [c for c, _ in image_tiles(pg) if c.startswith("filter ")]
    assert [int(c.split()[1]) for c in captions] == list(range(16, 32)), captions
    return "page2"


def exercise_your_face(pg, run: Run, drawn) -> str:
    """Upload a photo of a (drawn) face, kept as artifacts/photo.jpg: the detector cuts it to
    48×48 and the verdict is the one ``fer.faces`` gives with the run's members."""
    from fer.data.synthetic import render_face
    from fer.faces import crop_face, ensemble_verdict, load_photo, member_probabilities

    face = render_face(3, np.random.default_rng(0), intensity=1.0)
    canvas = Image.new("RGB", (640, 480), (90, 120, 160))
    canvas.paste(Image.fromarray(np.rint(face * 255).astype(np.uint8)).resize((300, 300), Image.Resampling.BICUBIC)
                 .convert("RGB"), (250, 120))
    ARTIFACTS.mkdir(exist_ok=True)
    photo_path = ARTIFACTS / "photo.jpg"
    canvas.save(photo_path, "JPEG", quality=92)
    probs = member_probabilities(members_of(run), crop_face(load_photo(photo_path), 0)[None])[:, 0]
    v = ensemble_verdict(probs)

    pg.locator('input[type="file"]').set_input_files(photo_path)
    expect(pg.get_by_text("What the members see: 48×48 gray").first).to_be_visible(timeout=90_000)
    expect(pg.get_by_role("heading", name="The ensemble's verdict")).to_be_visible()
    if v.label is None:
        expect(pg.get_by_text("The ensemble is unsure").first).to_be_visible()
    else:
        expect(pg.get_by_text(f"The ensemble says {CLASS_NAMES[v.label]}: {v.votes[v.label]} of {len(probs)} "
                              "members vote for it").first).to_be_visible()
    expect(pg.locator('[data-testid="stVegaLiteChart"]', has_text=f"Votes of the {len(probs)} members")).to_be_visible()
    drawn(pg)
    return "photo"


def exercise_architecture(pg, run: Run, drawn) -> str:
    """Move the input size 48 → 49 → 47: the numbers follow ``fer.models.architecture`` (a size
    the model cannot take says where it stops)."""
    from app_pages.architecture_charts import compact_count
    from fer.models import architecture

    model = run.config()["model"]
    expect(pg.get_by_role("combobox", name="Model")).to_have_value(f"{model} (model of the run {run.id})")
    slider = pg.get_by_role("slider", name="Input size (pixels per side)")
    expect(slider).to_have_attribute("aria-valuetext", "48")
    slider.focus()
    for key, size in (("ArrowRight", 49), ("ArrowLeft", 48), ("ArrowLeft", 47)):
        slider.press(key)
        expect(slider).to_have_attribute("aria-valuetext", str(size))
        arch = architecture(model, size)
        if arch["error"]:
            expect(pg.get_by_text(f"A {size}×{size} input does not fit {model}: it stops at layer "
                                  f"{arch['error_layer']}")).to_be_visible()
            expect(metric(pg, "Output")).to_contain_text("does not fit")
        else:
            expect(pg.get_by_text(f"A {size}×{size} input does not fit")).to_have_count(0)
            expect(metric(pg, "Layers")).to_contain_text(str(arch["totals"]["layers"]))
            expect(metric(pg, "Parameters")).to_contain_text(f"{arch['totals']['params']:,}")
            expect(metric(pg, "Multiply-adds per image")).to_contain_text(compact_count(arch["totals"]["macs"]))
    drawn(pg)
    return "size47"


# file in PAGES → a check of its main control; "" is Home (the frame's own page). Each gets the
# loaded page, its run and the `drawn` waiter, and returns the suffix of a second screenshot
# ("" when the page did not change).
EXERCISES = {
    "": exercise_home,
    "app_pages/dataset.py": exercise_dataset,
    "app_pages/train.py": exercise_train,
    "app_pages/ensemble_size.py": exercise_ensemble_size,
    "app_pages/confusion.py": exercise_confusion,
    "app_pages/saliency.py": exercise_saliency,
    "app_pages/filters.py": exercise_filters,
    "app_pages/your_face.py": exercise_your_face,
    "app_pages/architecture.py": exercise_architecture,
}
WALK = [""] + [file for file, *_ in pages_table()]
# every page on the shipped run first: the fresh run trains meanwhile
CASES = [pytest.param(file, run, id=f"{url_path(file) or 'home'}-{run}") for run in (SHIPPED, FRESH) for file in WALK]


@pytest.mark.parametrize("file, which", CASES)
def test_page(file, which, server, page, fresh_run, drawn, shoot, no_exception_box):
    pg = page
    run = Run(SHIPPED_ROOT / SHIPPED) if which == SHIPPED else fresh_run.ready()
    name = url_path(file) or "home"
    pg.goto(f"{server}/{url_path(file)}?run={run.id}")
    drawn(pg)
    expect(pg.locator("h1").first).to_be_visible()
    sidebar_run = pg.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Run")
    expect(sidebar_run).to_have_value(re.compile(rf"^{re.escape(run.id)} · "))
    no_exception_box(pg)
    shoot(pg, f"{name}-{which}.png", full_page=True)

    exercise = EXERCISES.get(file)
    if exercise is None:  # a new page: loaded and checked; test_every_page_has_an_exercise flags it
        return
    what = exercise(pg, run, drawn)
    no_exception_box(pg)
    pg.mouse.move(0, 0)  # no tooltip left over from a click in the screenshot
    if what:
        shoot(pg, f"{name}-{which}-{what}.png", full_page=True)


def test_every_page_has_an_exercise():
    """A page added to PAGES gets its main control tested, not only loaded."""
    assert set(WALK) == set(EXERCISES), f"pages without an exercise: {set(WALK) - set(EXERCISES)}"


# ---------------------------------------------------------------- Train: Stop, Resume, done
def test_train_live_reload_stop_resume_to_the_end(server, page, runs_root, set_number, drawn, shoot,
                                                  no_exception_box):
    """One 1-member, 3-epoch run through the whole Train cycle: Start; the live view updates
    (status, epochs, charts); a reload mid-training reattaches to the running worker instead of
    starting a second one; Stop in a later epoch says where it stopped and offers Resume; Resume
    starts a new worker on the same run, which finishes it (no second run) and the accuracy
    chart has redrawn with the later epochs."""
    pg = page
    before = {r.id for r in list_runs([runs_root])}
    pg.goto(f"{server}/train")  # a fresh session's first request goes straight to a page
    pg.get_by_role("button", name="Start training").wait_for()
    expect(pg.get_by_text("not real FER2013 data")).to_be_visible()  # the frame's sidebar
    drawn(pg)
    set_number(pg, "Members", 1)
    set_number(pg, "Epochs per member", 3)
    drawn(pg)
    pg.get_by_role("button", name="Start training").click()

    pg.get_by_text("Training member 1 of 1 · epoch 1 of 3").first.wait_for(timeout=120_000)
    (run,) = [r for r in list_runs([runs_root]) if r.id not in before]
    first_pid = run.status()["pid"]
    assert pg.locator('[data-testid="stVegaLiteChart"]').count() == 2
    no_exception_box(pg)
    shoot(pg, "train_epoch1.png")

    pg.reload()  # a new browser session: reattach to the run on disk, never start a second worker
    pg.get_by_text("Training member 1 of 1").first.wait_for(timeout=60_000)
    expect(pg.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    expect(pg.get_by_role("button", name="Resume")).to_have_count(0)
    assert {r.id for r in list_runs([runs_root])} - before == {run.id} and run.status()["pid"] == first_pid

    pg.get_by_text("epoch 2 of 3").first.wait_for(timeout=120_000)
    # .first: while a full rerun replaces the live view, old and new copies coexist for a moment
    expect(pg.get_by_text("All members: 1 of 3 epochs finished").first).to_be_visible()
    after_epoch1 = pg.locator('[data-testid="stVegaLiteChart"]').nth(1).screenshot()
    pg.get_by_role("button", name="Stop", exact=True).click()
    pg.get_by_text(re.compile(r"Stopped on request in member 1 of 1, epoch [23] of 3, batch \d+ of \d+ "
                              r"\([12] of 3 epochs finished\)")).first.wait_for(timeout=60_000)
    status = run.status()
    assert status["state"] == "stopped", status
    assert len(run.metrics()) < 3 and run.finished_members() == []
    expect(pg.get_by_role("button", name="Resume", exact=True)).to_be_visible()
    expect(pg.get_by_role("button", name="Stop", exact=True)).to_have_count(0)
    no_exception_box(pg)
    shoot(pg, "train-stopped.png", full_page=True)

    pg.get_by_role("button", name="Resume", exact=True).click()
    pg.get_by_text("Done: all 1 member(s) trained for 3 epoch(s).").first.wait_for(timeout=180_000)
    status = run.status()
    assert status["state"] == "done" and status["pid"] != first_pid, status
    assert [m["epoch"] for m in run.metrics()] == [1, 2, 3] and run.finished_members() == [0]
    expect(pg.get_by_text("All members: 3 of 3 epochs finished").first).to_be_visible()
    assert {r.id for r in list_runs([runs_root])} - before == {run.id}, "Resume started a second run"
    expect(pg.get_by_text("Majority vote · PrivateTest").first).to_be_visible()
    expect(pg.get_by_role("button", name="Resume")).to_have_count(0)
    drawn(pg)
    assert pg.locator('[data-testid="stVegaLiteChart"]').nth(1).screenshot() != after_epoch1, \
        "the accuracy chart did not redraw with the later epochs"
    no_exception_box(pg)
    shoot(pg, "train-resumed-done.png", full_page=True)
    sidebar = pg.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text("yours · done · 1/1 members done", exact=True)).to_be_visible()
    # The picker's own text is the run's fixed label; its live state is the caption checked above.
    assert sidebar.get_by_role("combobox", name="Run").input_value() == f"{run.id} · yours"
