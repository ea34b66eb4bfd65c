"""The Saliency and Your face pages through AppTest, from the entrypoint, on the shipped run
checkpoints/synthetic-demo (9 members, synthetic faces): maps for a dataset row picked by
``?face=``, by session state and by the confusion-cell finder; a method and target switch; the
sanity-check button; a photo with a face, one without (centre crop), two faces, and uploads that
are refused with a message."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from fer.data.synthetic import render_face

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"

SALIENCY, YOUR_FACE = "app_pages/saliency.py", "app_pages/your_face.py"
RUN = "synthetic-demo"


def open_page(page: str, face: str | None = None, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.query_params["run"] = RUN
    if face is not None:
        at.query_params["face"] = face
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def images(at: AppTest) -> list[list[str]]:
    """The media URLs of each st.image call in the main area, in page order."""
    return [list(el.value) for el in at.main.image]


def member_maps(at: AppTest) -> list[str]:
    """The row of per-member maps: the st.image call with one picture per member (9)."""
    return next(urls for urls in images(at) if len(urls) == 9)


def texts(at: AppTest) -> str:
    return " ".join(str(el.value) for el in [*at.markdown, *at.caption, *at.warning, *at.info, *at.error])


def by_label(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def photo_bytes(*faces: tuple[int, int, int], size=(400, 320), fmt="JPEG") -> bytes:
    """A gray photo with drawn happy faces (seed, side, x) pasted on it, as file bytes."""
    canvas = Image.new("RGB", size, (110, 110, 110))
    for seed, side, x in faces:
        f = render_face(3, np.random.default_rng(seed), intensity=1.0)
        canvas.paste(Image.fromarray(np.rint(f * 255).astype(np.uint8)).resize((side, side)).convert("RGB"),
                     (x, 10))
    buf = io.BytesIO()
    canvas.save(buf, fmt)
    return buf.getvalue()


def test_saliency_page_from_a_query_param_with_a_method_and_target_switch():
    at = open_page(SALIENCY, face="123")
    assert at.title[0].value.startswith("Saliency")
    assert by_label(at.number_input, "Dataset row").value == 123
    assert at.session_state["saliency_index"] == 123
    assert "Row **123**" in texts(at)
    assert len(member_maps(at)) == 9  # one map per member
    assert "Vanilla gradient" in texts(at)
    by_label(at.selectbox, "Method").set_value("grad_cam").run()
    assert not at.exception, at.exception
    assert "Grad-CAM" in texts(at) and "Selvaraju" in texts(at)
    by_label(at.radio, "Explain the score of").set_value("chosen").run()
    by_label(at.selectbox, "Expression").set_value(5).run()
    assert not at.exception, at.exception
    assert "logit of **surprise**" in texts(at)


def test_another_page_links_by_session_state_and_the_finder_picks_a_confusion_cell():
    at = open_page(SALIENCY, state={"saliency_index": 4001})
    assert "Row **4001**" in texts(at)
    by_label(at.selectbox, "True class (row of the confusion matrix)").set_value(3).run()
    by_label(at.selectbox, "Ensemble's majority vote (column)").set_value(3).run()
    pick = by_label(at.selectbox, "Explain this face")
    row = pick.options[1]
    pick.set_value(int(row)).run()
    assert not at.exception, at.exception
    assert at.session_state["saliency_index"] == int(row)
    assert f"Row **{row}**" in texts(at) and "true class **happy**" in texts(at)


def test_a_bad_face_param_and_an_out_of_range_row_are_explained():
    at = open_page(SALIENCY, face="abc")
    assert "is not a row number" in texts(at)
    at = open_page(SALIENCY, state={"saliency_index": 10**9})
    assert "is not in this dataset" in texts(at)


def test_sanity_check_button_randomises_and_restores():
    at = open_page(SALIENCY)
    before = member_maps(at)[0]
    by_label(at.button, "Randomise the next layer").click().run()
    assert not at.exception, at.exception
    assert "top 1 of 6 layers" in texts(at) and "classifier.4" in texts(at)
    assert member_maps(at)[0] != before  # the maps were redrawn
    by_label(at.button, "Randomise the next layer").click().run()
    assert "top 2 of 6 layers" in texts(at)
    by_label(at.button, "Restore the trained weights").click().run()
    assert not at.exception, at.exception
    assert "top 1 of 6" not in texts(at) and "Random now: **0 of 6**" in texts(at)


def test_saliency_of_an_uploaded_photo():
    at = open_page(SALIENCY)
    at.get("button_group")[0].set_value("A photo").run()
    assert "Upload a photo" in texts(at)
    at.file_uploader[0].set_value(("me.jpg", photo_bytes((0, 300, 50)), "image/jpeg")).run()
    assert not at.exception, at.exception
    assert len(images(at)) >= 3 and "true label" not in texts(at)


def test_your_face_with_a_face():
    at = open_page(YOUR_FACE)
    assert "synthetic drawn faces" in texts(at)
    at.file_uploader[0].set_value(("me.jpg", photo_bytes((0, 300, 50)), "image/jpeg")).run()
    assert not at.exception, at.exception
    t = texts(at)
    assert "The ensemble says **happy**" in t or "The ensemble is **unsure**" in t
    assert "more than half" in t
    assert len(at.get("vega_lite_chart")) >= 4  # votes, probabilities, legends
    by_label(at.selectbox, "Method").set_value("smoothgrad").run()
    assert not at.exception, at.exception
    assert "SmoothGrad" in texts(at)


def test_your_face_without_a_face_offers_the_centre_crop():
    at = open_page(YOUR_FACE)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    at.file_uploader[0].set_value(("wall.png", buf.getvalue(), "image/png")).run()
    assert not at.exception, at.exception
    assert "No face found" in texts(at) and "verdict" not in " ".join(s.value for s in at.subheader)
    by_label(at.toggle, "Use the centre of the photo instead").set_value(True).run()
    assert not at.exception, at.exception
    assert "The ensemble's verdict" in [s.value for s in at.subheader]


def test_your_face_with_two_faces_lets_you_pick_one():
    at = open_page(YOUR_FACE)
    data = photo_bytes((0, 300, 10), (1, 200, 480), size=(700, 320))
    at.file_uploader[0].set_value(("us.jpg", data, "image/jpeg")).run()
    assert not at.exception, at.exception
    which = by_label(at.radio, "2 faces found: which one?")
    first = images(at)[1][0]
    which.set_value(1).run()
    assert not at.exception, at.exception
    assert images(at)[1][0] != first


def test_refused_uploads_show_a_message():
    at = open_page(YOUR_FACE)
    at.file_uploader[0].set_value(("notes.txt", b"not an image", "text/plain")).run()
    assert not at.exception, at.exception
    assert "not a readable image" in at.error[0].value
    tiny = io.BytesIO()
    Image.new("L", (1, 1)).save(tiny, "PNG")
    at.file_uploader[0].set_value(("dot.png", tiny.getvalue(), "image/png")).run()
    assert "smaller than the minimum" in at.error[0].value


def test_uploads_whose_name_lies_are_judged_by_content():
    import struct
    import zlib

    at = open_page(YOUR_FACE)
    at.file_uploader[0].set_value(("face.png", b"emotion,pixels,Usage\n3,0 0 0,Training\n", "image/png")).run()
    assert not at.exception, at.exception
    assert at.error[0].value == ("face.png: not a readable image: not a format Pillow knows (expected PNG, "
                                 "JPEG, WebP, BMP, TIFF, GIF, …)")
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)  # 900 MP declared, no pixels sent
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\0\0\0\0IEND\xaeB`\x82")
    at.file_uploader[0].set_value(("holiday.jpg", bomb, "image/jpeg")).run()
    assert not at.exception, at.exception
    assert at.error[0].value.startswith("holiday.jpg: refused, the image is larger than 40,000,000 pixels")
    at.file_uploader[0].set_value(("me.png", photo_bytes((0, 300, 50)), "image/png")).run()  # a JPEG named .png
    assert not at.exception, at.exception
    assert not at.error and "The ensemble's verdict" in [h.value for h in at.subheader]


def test_a_one_member_run_has_no_spread_to_show(tmp_path, monkeypatch):
    import shutil

    demo = APP.parent / "checkpoints" / RUN
    run = tmp_path / "one-member"
    shutil.copytree(demo, run)
    for split in ("public_test", "private_test"):
        path = run / "predictions" / f"{split}.npz"
        with np.load(path) as z:
            kept = {k: z[k] for k in z.files}
        kept["probs"], kept["members"] = kept["probs"][:1], kept["members"][:1]
        np.savez(path, **kept)
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.query_params["run"] = "one-member"
    at.run()
    at.switch_page(SALIENCY).run()
    assert not at.exception, at.exception
    assert "no spread to show" in texts(at)


def test_a_run_is_shown_on_its_own_faces_and_says_so_when_the_sidebar_differs(tmp_path):
    from conftest import fer_rows, write_csv

    tiny_csv = write_csv(tmp_path / "tiny.csv", fer_rows(12)[0])
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.query_params["run"] = RUN
    at.query_params["data"] = str(tiny_csv)
    at.run()
    at.switch_page(SALIENCY).run()
    assert not at.exception, at.exception
    assert "own dataset `synthetic-seed0`, not the sidebar's `tiny-" in texts(at)
    assert len(member_maps(at)) == 9  # drawn on the run's synthetic faces
    same = open_page(SALIENCY)  # sidebar on the run's own dataset: nothing to explain
    assert "own dataset" not in texts(same)
