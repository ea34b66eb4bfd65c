"""Every FER2013 format people have (fer.data.formats): CSV layouts, FER+, image folders, archives,
images of any mode, and the error for each way a file can be wrong. All files are made here."""

import gzip
import io
import os
import struct
import tarfile
import zipfile
import zlib

import numpy as np
import pytest
from conftest import fer_rows, write_csv
from PIL import Image

from fer.data import load_dataset
from fer.data.images import MAX_PIXELS, to_gray48
from fer.data.pixels import parse_pixel_fields
from fer.data.submission import submission_csv, unlabelled_rows, write_submission
from fer.errors import DataFormatError


def pix(im: np.ndarray) -> str:
    return " ".join(map(str, im.ravel()))


def faces(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def save(path, arr_or_img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, **kw)
    return path


# ---------------------------------------------------------------- CSV layouts
def test_icml_face_data_layout_reads_like_fer2013(tmp_path):
    _, images, labels, usages = fer_rows()
    rows = [f"{l}, {u}, {pix(im)}" for im, l, u in zip(images, labels, usages)]
    # named like anything: the header decides (leading spaces, other column order)
    ds = load_dataset(write_csv(tmp_path / "data.txt", rows, header="emotion, Usage, pixels"))
    assert ds.provenance["format"] == "icml_face_data.csv"
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert list(ds.splits[-3:]) == ["public_test", "private_test", "private_test"]
    np.testing.assert_array_equal(ds.row_ids, np.arange(12))


def test_quoted_crlf_and_awkward_csvs_give_the_same_faces(tmp_path):
    _, images, labels, usages = fer_rows()
    quoted = "emotion,pixels,Usage\r\n" + "".join(f'{l},"{pix(im)}",{u}\r\n'
                                                 for im, l, u in zip(images, labels, usages))
    (tmp_path / "q.csv").write_bytes(quoted.encode())
    # a blank line and a quoted Usage with a comma force pyarrow's careful path
    awkward = ("emotion,pixels,Usage\n" + f'{labels[0]},{pix(images[0])},"Training"\n\n'
               + "".join(f'{l},"{pix(im)}",{u}\n' for im, l, u in zip(images[1:], labels[1:], usages[1:])))
    (tmp_path / "a.csv").write_text(awkward)
    for name in ("q.csv", "a.csv"):
        ds = load_dataset(tmp_path / name)
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)


def test_homework_train_and_test_csv_with_submission(tmp_path):
    imgs = faces(9)
    (tmp_path / "hw").mkdir()
    train = write_csv(tmp_path / "hw" / "train.csv", [f"{i % 7},{pix(im)}" for i, im in enumerate(imgs[:6])],
                      header="label,feature")
    test = write_csv(tmp_path / "hw" / "test.csv", [f"{100 + 3 * i},{pix(im)}" for i, im in enumerate(imgs[6:])],
                     header="id,feature")
    tr = load_dataset(train)
    assert tr.provenance["format"] == "train.csv (label,feature)"
    assert set(tr.splits) == {"train"} and tr.labels.tolist() == [0, 1, 2, 3, 4, 5]
    te = load_dataset(test)
    assert te.provenance["format"] == "test.csv (id,feature)"
    assert te.labels.tolist() == [-1, -1, -1] and set(te.splits) == {"test"}
    assert te.row_ids.tolist() == [100, 103, 106]
    np.testing.assert_array_equal(te.images, imgs[6:])
    # the folder holding both: train rows first, then the unlabelled test rows
    both = load_dataset(tmp_path / "hw")
    assert len(both) == 9 and both.split_names() == ["train", "test"]
    assert both.counts()["train"].sum() == 6
    rows, ids = unlabelled_rows(both)
    assert rows.tolist() == [6, 7, 8] and ids.tolist() == [100, 103, 106]
    out = write_submission(tmp_path / "sub.csv", ids, np.array([3, 0, 6]))
    assert out.read_text() == "id,label\n100,3\n103,0\n106,6\n"
    with pytest.raises(DataFormatError, match="label for id 103 is 7, expected 0..6"):
        submission_csv(ids, np.array([3, 7, 6]))
    with pytest.raises(DataFormatError, match="no unlabelled test rows"):
        unlabelled_rows(tr)


def test_archives_of_csvs(tmp_path):
    imgs = faces(4)
    body = "label,feature\n" + "".join(f"{i},{pix(im)}\n" for i, im in enumerate(imgs))
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress(body.encode()))
    np.testing.assert_array_equal(load_dataset(tmp_path / "train.csv.gz").images, imgs)
    with zipfile.ZipFile(tmp_path / "hw.zip", "w") as z:
        z.writestr("course/train.csv", body)
        z.writestr("course/test.csv", "id,feature\n" + f"7,{pix(imgs[0])}\n")
        z.writestr("__MACOSX/course/._train.csv", b"\x00\x05\x16\x07junk")
    ds = load_dataset(tmp_path / "hw.zip")
    assert len(ds) == 5 and ds.row_ids.tolist() == [0, 1, 2, 3, 7]


# ---------------------------------------------------------------- FER+
FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
# (votes in FER+ column order, expected FER2013 label or the exclusion reason)
FERPLUS_CASES = [
    ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], 6),            # all neutral
    ([0, 6, 0, 0, 0, 0, 0, 0, 4, 0], 3),             # happiness 6 of 10
    ([1, 1, 1, 1, 3, 1, 1, 1, 0, 0], 0),             # singles dropped: anger 3 of 3
    ([0, 0, 0, 4, 4, 0, 0, 0, 2, 0], "no_majority"),  # tie sadness/anger
    ([0, 0, 5, 0, 0, 0, 0, 5, 0, 0], "no_majority"),  # 5 of 10 is not more than half
    ([0, 0, 0, 0, 0, 0, 0, 8, 2, 0], "contempt"),
    ([2, 0, 0, 0, 0, 0, 0, 0, 8, 0], "unknown"),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], "NF"),
    ([0, 0, 0, 0, 0, 2, 7, 0, 0, 0], 2),             # fear
    ([0, 0, 0, 0, 0, 9, 0, 0, 0, 0], 1),             # disgust, 9 votes (FER+ has such a row)
    ([0, 0, 7, 3, 0, 0, 0, 0, 0, 0], 5),             # surprise
    ([3, 0, 0, 6, 0, 0, 0, 0, 1, 0], 4),             # sadness
]


def _ferplus_files(folder):
    lines, images, labels, usages = fer_rows(len(FERPLUS_CASES))
    write_csv(folder / "fer2013.csv", lines)
    # image names deliberately NOT row numbers: the join must be by position
    rows = [f"{u},{'' if v[-1] == 10 else f'fer{9000 - i:07d}.png'},{','.join(map(str, v))}"
            for i, (u, (v, _)) in enumerate(zip(usages, FERPLUS_CASES))]
    write_csv(folder / "fer2013new.csv", rows, header=FERPLUS_HEADER)
    return images, labels


def test_ferplus_majority_joined_by_position(tmp_path):
    images, labels = _ferplus_files(tmp_path)
    kept = [i for i, (_, want) in enumerate(FERPLUS_CASES) if isinstance(want, int)]
    for source, kw in ((tmp_path / "fer2013.csv", dict(ferplus=tmp_path / "fer2013new.csv")),
                       (tmp_path / "fer2013new.csv", {}),   # points at FER+: the FER2013 CSV beside is used
                       (tmp_path, {})):                      # the folder holding both
        ds = load_dataset(source, **kw)
        assert ds.row_ids.tolist() == kept
        assert ds.labels.tolist() == [FERPLUS_CASES[i][1] for i in kept]
        assert ds.fer2013_labels.tolist() == labels[kept].tolist()
        np.testing.assert_array_equal(ds.images, images[kept])
        assert ds.votes.dtype == np.uint8 and ds.votes.shape == (len(kept), 10)
        assert ds.votes[2].tolist() == FERPLUS_CASES[2][0]
        assert ds.provenance["ferplus"]["excluded"] == {"no_majority": 2, "contempt": 1, "unknown": 1, "NF": 1}
        assert ds.provenance["ferplus"]["kept"] == 7 and "-ferplus-" in ds.id
    again = load_dataset(tmp_path, unknown_classes="refuse")
    assert again.provenance["cache"] == "hit" and again.votes[2].tolist() == FERPLUS_CASES[2][0]


def test_ferplus_errors(tmp_path):
    _ferplus_files(tmp_path)
    text = (tmp_path / "fer2013new.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(text[:-1]) + "\n")
    with pytest.raises(DataFormatError, match="short.csv has 11 rows but the FER2013 CSV has 12; .*row position"):
        load_dataset(tmp_path / "fer2013.csv", ferplus=tmp_path / "short.csv")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "fer2013new.csv").write_text((tmp_path / "fer2013new.csv").read_text())
    with pytest.raises(DataFormatError, match="fer2013new.csv: FER\\+ votes hold no pixels"):
        load_dataset(alone / "fer2013new.csv")


def test_real_ferplus_majority_counts(real_csv, tmp_path):
    plus = os.environ.get("FERPLUS_CSV", "")
    if not plus or not os.path.exists(plus):
        pytest.skip("real FER+ votes not available: set FERPLUS_CSV to fer2013new.csv")
    ds = load_dataset(real_csv, ferplus=plus)
    # FER+ majority-mode Training counts as FER+'s own reader reports them (contempt left out)
    assert ds.counts()["train"].tolist() == [2100, 119, 532, 7287, 3014, 3149, 8740]
    assert ds.provenance["ferplus"]["excluded"] == {"no_majority": 4200, "contempt": 148, "unknown": 99, "NF": 176}
    assert len(ds) == 31264 and ds.votes.shape == (31264, 10)


# ---------------------------------------------------------------- image folders
def test_image_folders_by_class_name_split_and_prefix(tmp_path):
    imgs = faces(6)
    root = tmp_path / "fer"
    save(root / "train" / "Happy" / "a.png", imgs[0])
    save(root / "train" / "ANGER" / "b.png", imgs[1])
    save(root / "test" / "neutral" / "PublicTest_77.png", imgs[2])   # prefix beats folder
    save(root / "test" / "neutral" / "PrivateTest_12.png", imgs[3])
    save(root / "val" / "sadness" / "c.png", imgs[4])
    save(root / "train" / "fear" / "PrivateTest_5.png", imgs[5])
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / "Happy" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "train" / "Happy" / "._a.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "README.txt").write_text("faces")
    ds = load_dataset(root)
    assert ds.provenance["format"] == "image folders"
    got = dict(zip(ds.files.tolist(), zip(ds.labels.tolist(), ds.splits.tolist())))
    assert got == {
        "test/neutral/PrivateTest_12.png": (6, "private_test"),
        "test/neutral/PublicTest_77.png": (6, "public_test"),
        "train/ANGER/b.png": (0, "train"),
        "train/Happy/a.png": (3, "train"),
        "train/fear/PrivateTest_5.png": (2, "private_test"),
        "val/sadness/c.png": (4, "public_test"),
    }
    np.testing.assert_array_equal(ds.images[ds.files.tolist().index("train/Happy/a.png")], imgs[0])
    assert ds.provenance["skipped_files"] == 1 and ds.provenance["junk_files"] == 3
    # cached by names+sizes+mtimes: a hit, then a miss once an image is added
    assert load_dataset(root).provenance["cache"] == "hit"
    save(root / "train" / "Happy" / "z.png", imgs[5])
    again = load_dataset(root)
    assert again.provenance["cache"] == "miss" and len(again) == 7


def test_plain_class_folders_and_archives(tmp_path):
    imgs = faces(3)
    root = tmp_path / "mine"
    for i, c in enumerate(["surprised", "disgust", "happiness"]):
        save(root / c / f"{i}.png", imgs[i])
    ds = load_dataset(root)
    assert sorted(zip(ds.labels.tolist(), ds.splits.tolist())) == [(1, "train"), (3, "train"), (5, "train")]
    zp, tg = tmp_path / "faces.zip", tmp_path / "faces.tar.gz"
    with zipfile.ZipFile(zp, "w") as z, tarfile.open(tg, "w:gz") as t:
        for f in sorted(root.rglob("*.png")):
            z.write(f, f"mine/{f.relative_to(root)}")
            t.add(f, f"mine/{f.relative_to(root)}")
    for src in (zp, tg):
        other = load_dataset(src)
        np.testing.assert_array_equal(other.images, ds.images)
        np.testing.assert_array_equal(other.labels, ds.labels)


def test_unknown_class_folder_refused_or_excluded(tmp_path):
    imgs = faces(3)
    save(tmp_path / "d" / "happy" / "0.png", imgs[0])
    save(tmp_path / "d" / "contempt" / "1.png", imgs[1])
    save(tmp_path / "d" / "contempt" / "2.png", imgs[2])
    with pytest.raises(DataFormatError, match=r"d: class folder\(s\) 'contempt' \(2 images\) are not FER2013 "
                                              r"classes.*unknown_classes='exclude'"):
        load_dataset(tmp_path / "d")
    ds = load_dataset(tmp_path / "d", unknown_classes="exclude")
    assert len(ds) == 1 and ds.labels.tolist() == [3]
    assert ds.provenance["excluded_classes"] == {"contempt": 2}


def test_image_modes_sizes_and_formats(tmp_path):
    w = tmp_path / "x"
    cases = {}
    a16 = np.full((48, 48), 257 * 100, dtype=np.uint16)
    a16[0, 0] = 65535
    cases["i16.png"] = (Image.fromarray(a16), dict(at=(0, 0), value=255, rest=100))
    rgba = Image.new("RGBA", (48, 48), (0, 0, 0, 0))                           # fully transparent black
    cases["rgba.png"] = (rgba, dict(value=255))
    la = Image.new("LA", (48, 48), (0, 128))                                   # half-transparent black
    cases["la.png"] = (la, dict(value=127))
    cases["rgb.png"] = (Image.new("RGB", (48, 48), (255, 0, 0)), dict(value=76))  # luma of pure red
    cases["cmyk.tif"] = (Image.new("CMYK", (48, 48), (0, 0, 0, 0)), dict(value=255))
    p = Image.new("P", (48, 48), 1)
    p.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)                            # index 1 = pure blue
    cases["p.png"] = (p, dict(value=29))
    pt = Image.new("P", (48, 48), 1)
    pt.putpalette([0, 0, 0, 10, 10, 10] + [0] * 762)
    pt.info["transparency"] = 1
    cases["ptrans.png"] = (pt, dict(value=255))
    cases["big.jpg"] = (Image.new("L", (96, 96), 200), dict(value=200, tol=2))
    cases["wide.bmp"] = (Image.new("L", (100, 60), 90), dict(value=90))
    cases["tiny.gif"] = (Image.new("L", (8, 8), 40), dict(value=40, tol=1))
    cases["one.webp"] = (Image.new("RGB", (50, 50), (120, 120, 120)), dict(value=120, tol=3))
    for name, (img, want) in cases.items():
        kw = dict(format="WEBP", lossless=True) if name.endswith("webp") else {}
        save(w / name, img, **kw)
        out = to_gray48(w / name)
        assert out.dtype == np.uint8 and out.shape == (48, 48), name
        if "at" in want:
            assert out[want["at"]] == want["value"] and out[1, 1] == want["rest"], name
        else:
            assert np.abs(out.astype(int) - want["value"]).max() <= want.get("tol", 0), (name, out.min(), out.max())


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((40, 60), dtype=np.uint8)   # 60 wide, 40 tall: left half black, right half white
    a[:, 30:] = 255
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6                          # "rotate 90 CW to display": the right half ends at the bottom
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = to_gray48(tmp_path / "r.jpg").astype(int)
    assert out[:20].mean() < 30 and out[28:].mean() > 225
    # the same file object interface the "your own face" upload uses
    with open(tmp_path / "r.jpg", "rb") as f:
        np.testing.assert_array_equal(to_gray48(f, "upload.jpg"), out)


# ---------------------------------------------------------------- errors, one file each
def _png(img) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, "PNG")
    return buf.getvalue()


def _set(text: str, i: int, value: str) -> str:
    """A pixel string with value ``i`` replaced."""
    t = text.split(" ")
    t[i] = value
    return " ".join(t)


def _with_size(png: bytes, w: int, h: int) -> bytes:
    """The same PNG claiming another size in its IHDR (CRC fixed): a decompression bomb's header."""
    ihdr = bytearray(png[12:29])
    ihdr[4:12] = struct.pack(">II", w, h)
    return png[:8] + png[8:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + png[33:]


@pytest.mark.parametrize("header, row, expected", [
    ("label,feature", lambda im: f"3,{pix(im)[:-2].rstrip()}", r"t.csv row 1 \(line 3\): feature has 2303 values, expected 2304"),
    ("label,feature", lambda im: f"3,{_set(pix(im), 1, '300')}", r"t.csv row 1 \(line 3\): feature value 1 is 300, expected 0..255"),
    ("label,feature", lambda im: f"7,{pix(im)}", r"t.csv row 1 \(line 3\): label is 7, expected 0..6"),
    ("label,feature", lambda im: f"3,{_set(pix(im), 1, 'x9')}", r"row 1 .*feature value 1 is 'x9', expected an integer"),
    ("label,feature", lambda im: f"3,{_set(pix(im), 5, '-1')}", r"row 1 .*feature value 5 is '-1', expected an integer 0..255"),
    ("id,feature", lambda im: f"a7,{pix(im)}", r"t.csv row 1 \(line 3\): id is 'a7', expected an integer"),
    ("emotion, Usage, pixels", lambda im: f"3, Validation, {pix(im)}", r"row 1 .*Usage is 'Validation'"),
    ("emotion,Usage", lambda im: "3,Training", r"t.csv: missing column\(s\) pixels; found header 'emotion,Usage'"),
    ("id,label,pix", lambda im: f"1,2,{pix(im)}", r"missing column\(s\) feature; .*expected emotion,pixels,Usage"),
])
def test_csv_errors_name_file_row_and_field(tmp_path, header, row, expected):
    im = faces(2)
    first = "3," + pix(im[0]) if header.startswith("label") else ("5," + pix(im[0]) if header.startswith("id")
                                                                  else f"3, Training, {pix(im[0])}")
    write_csv(tmp_path / "t.csv", [first, row(im[1])], header=header)
    with pytest.raises(DataFormatError, match=expected):
        load_dataset(tmp_path / "t.csv")


def test_not_a_csv_and_empty_files(tmp_path):
    (tmp_path / "face.csv").write_bytes(_png(faces(1)[0]))
    with pytest.raises(DataFormatError, match=r"face.csv: not a CSV: the file holds a PNG image"):
        load_dataset(tmp_path / "face.csv")
    (tmp_path / "noise.csv").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)))
    with pytest.raises(DataFormatError, match=r"noise.csv: not a CSV"):
        load_dataset(tmp_path / "noise.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"empty.csv: the file is empty"):
        load_dataset(tmp_path / "empty.csv")
    (tmp_path / "blank.csv").write_text("\n\n")
    with pytest.raises(DataFormatError, match=r"blank.csv: the file is empty"):
        load_dataset(tmp_path / "blank.csv")
    (tmp_path / "head.csv").write_text("label,feature\n")
    with pytest.raises(DataFormatError, match=r"head.csv: header only, no data rows"):
        load_dataset(tmp_path / "head.csv")


def test_folder_errors(tmp_path):
    (tmp_path / "none" / "happy").mkdir(parents=True)
    (tmp_path / "none" / "happy" / "notes.txt").write_text("no faces here")
    with pytest.raises(DataFormatError, match=r"none: no images found"):
        load_dataset(tmp_path / "none")
    save(tmp_path / "flat" / "train" / "a.png", faces(1)[0])
    with pytest.raises(DataFormatError, match=r"flat/train/a.png: the image is not inside a class folder"):
        load_dataset(tmp_path / "flat")


@pytest.mark.parametrize("name, content, expected", [
    ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, r"happy/corrupt.png: not a readable image"),
    ("cut.png", "truncated", r"happy/cut.png: corrupt or truncated image"),
    ("one.png", "1x1", r"happy/one.png: the image is 1x1 pixels, smaller than the minimum 8x8"),
    ("bomb.png", "bomb", (rf"happy/bomb.png: refused, the image is 8000x8000 = 64,000,000 pixels, more than the "
                          rf"limit of {MAX_PIXELS:,}")),
    ("huge.png", "huge", r"happy/huge.png: refused, the image is larger than 40,000,000 pixels"),
])
def test_bad_images_are_named(tmp_path, name, content, expected):
    png = _png(faces(1)[0])
    data = {"truncated": png[: len(png) // 2],
            "1x1": _png(Image.new("L", (1, 1), 7)),
            "bomb": _with_size(png, 8000, 8000),
            "huge": _with_size(png, 20000, 20000)}.get(content, content)
    save(tmp_path / "d" / "sad" / "ok.png", faces(1)[0])
    (tmp_path / "d" / "happy").mkdir()
    (tmp_path / "d" / "happy" / name).write_bytes(data)
    with pytest.raises(DataFormatError, match=expected):
        load_dataset(tmp_path / "d")


# ---------------------------------------------------------------- the vectorised pixel parser
def test_pixel_parser_fast_and_slow_rows_agree():
    imgs = faces(3)
    fields = [pix(imgs[0]), "  " + pix(imgs[1]).replace(" ", "\t", 5) + " ", " ".join(t.zfill(3) for t in pix(imgs[2]).split())]
    text = "".join(f"x,{f},y\n" for f in fields).encode()
    starts, ends, pos = [], [], 0
    for f in fields:
        starts.append(pos + 2)
        ends.append(pos + 2 + len(f))
        pos += len(f) + 5
    slow_calls = []

    def slow(r):
        slow_calls.append(r)
        return np.array(fields[r].split(), dtype=np.int64).astype(np.uint8)

    out = parse_pixel_fields(np.frombuffer(text, np.uint8), np.array(starts), np.array(ends), slow)
    np.testing.assert_array_equal(out, imgs)
    assert slow_calls == [0, 1, 2]  # the tab makes the (only) chunk take the slow path
    out = parse_pixel_fields(np.frombuffer(text, np.uint8), np.array(starts[2:]), np.array(ends[2:]), slow)
    np.testing.assert_array_equal(out[0], imgs[2])  # leading zeros parse on the fast path
    assert slow_calls == [0, 1, 2]


def test_blockwise_parse_matches_whole_file():
    """parse_csv_blocks (used while a thread gunzips) on pieces cut anywhere, even mid-header."""
    from fer.data.kaggle import parse_csv_blocks, parse_csv_bytes

    lines, images, labels, _ = fer_rows(30)
    data = ("emotion,pixels,Usage\n" + "\n".join(lines) + "\n").encode()
    whole = parse_csv_bytes(data, "w.csv")
    for size in (7, 1000, 9000, 50000):
        pieces = iter([data[i:i + size] for i in range(0, len(data), size)])
        ds = parse_csv_blocks(pieces, "b.csv", size_hint=len(data) if size > 1000 else 0)
        np.testing.assert_array_equal(ds.images, whole.images)
        np.testing.assert_array_equal(ds.labels, labels)
        np.testing.assert_array_equal(ds.row_ids, np.arange(30))
    # an error in a later block still names the file's row; a blank line falls back to pyarrow
    bad = lines[:]
    bad[25] = "9" + bad[25][1:]
    data_bad = ("emotion,pixels,Usage\n" + "\n".join(bad) + "\n").encode()
    with pytest.raises(DataFormatError, match=r"b.csv row 25 \(line 27\): emotion is 9"):
        parse_csv_blocks(iter([data_bad[i:i + 9000] for i in range(0, len(data_bad), 9000)]), "b.csv")
    blank = data.replace(b"\n", b"\n\n", 20)
    ds = parse_csv_blocks(iter([blank[i:i + 9000] for i in range(0, len(blank), 9000)]), "b.csv")
    np.testing.assert_array_equal(ds.images, images)


def test_gzip_read_through_the_reader_thread(tmp_path):
    lines, images, _, _ = fer_rows(20)
    body = ("emotion,pixels,Usage\n" + "\n\n".join(lines) + "\n").encode()  # blank lines: careful path too
    (tmp_path / "f.csv.gz").write_bytes(gzip.compress(body))
    from fer.data import kaggle

    ds = kaggle.read_fer2013_csv(tmp_path / "f.csv.gz")
    np.testing.assert_array_equal(ds.images, images)
    (tmp_path / "x.gz").write_bytes(gzip.compress(_png(faces(1)[0])))
    with pytest.raises(DataFormatError, match=r"x.gz: not a CSV: the file holds a PNG image"):
        load_dataset(tmp_path / "x.gz")


def test_take_keeps_the_extras():
    from fer.data import FaceDataset

    ds = FaceDataset(faces(3), np.array([0, 1, 2]), np.array(["train", "test", "train"]), {"id": "x"},
                     row_ids=np.array([5, 6, 7]), files=np.array(["a", "b", "c"]))
    sub = ds.take(np.array([2, 0]))
    assert sub.row_ids.tolist() == [7, 5] and sub.files.tolist() == ["c", "a"] and sub.votes is None
    assert ds.split_names() == ["train", "test"]
    with pytest.raises(DataFormatError, match="row_ids has 2 rows, expected 3"):
        FaceDataset(faces(3), np.zeros(3, np.int64), np.array(["train"] * 3), row_ids=np.zeros(2, np.int64))


# ---------------------------------------------------------------- uploads that lie or explode
def _declare_size(data: bytes, name: str, size: int) -> bytes:
    """A zip with the central directory's uncompressed size of ``name`` set to ``size``."""
    out, pos = bytearray(data), 0
    while (entry := out.find(b"PK\x01\x02", pos)) >= 0:
        n = int.from_bytes(out[entry + 28: entry + 30], "little")
        if out[entry + 46: entry + 46 + n] == name.encode():
            out[entry + 20: entry + 28] = struct.pack("<II", 1 << 20, size)  # compressed, uncompressed
        pos = entry + 4
    return bytes(out)


def _fer_csv(n: int) -> bytes:
    lines, *_ = fer_rows(n)
    return ("emotion,pixels,Usage\n" + "\n".join(lines) + "\n").encode()


def test_a_zip_whose_member_unpacks_past_the_limit_is_refused_unread(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("fer2013.csv", _fer_csv(12))
    (tmp_path / "upload.csv").write_bytes(_declare_size(buf.getvalue(), "fer2013.csv", 3 << 30))  # says 3 GB
    with pytest.raises(DataFormatError, match=r"^upload.csv:fer2013.csv: refused, it unpacks to more than 1 GB "
                                              r"\(decompression-bomb guard; Kaggle's fer2013.csv is 0.3 GB\)$"):
        load_dataset(tmp_path / "upload.csv")


@pytest.fixture
def small_limits(monkeypatch):
    """Bomb limits of 1 MB and 5 files, so that small files test them."""
    from fer.data import archives

    monkeypatch.setattr(archives, "MAX_UNPACKED_BYTES", 1 << 20)
    monkeypatch.setattr(archives, "MAX_TREE_FILES", 5)


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("name, make, expected", [
    ("big.csv.gz", lambda csv: gzip.compress(csv), r"^big.csv.gz: refused, it unpacks to more than 1 MB"),
    ("inner.zip", lambda csv: _zip_of({"fer2013.csv.gz": gzip.compress(csv)}),
     r"^inner.zip:fer2013.csv.gz: refused, it unpacks to more than 1 MB"),
    ("big.zip", lambda csv: _zip_of({"fer2013.csv": csv}), r"^big.zip:fer2013.csv: refused, it unpacks to more than 1 MB"),
    ("big.tar.gz", lambda csv: _tar_gz({"fer2013.csv": csv}), r"^big.tar.gz: refused, it unpacks to more than 1 MB"),
    ("many.zip", lambda csv: _zip_of({f"happy/{i}.png": _png(faces(1)[0]) for i in range(6)}),
     r"^many.zip: refused, it holds more than 5 files \(6\+; FER2013 as images is 35,887\)$"),
    ("many.tar.gz", lambda csv: _tar_gz({f"happy/{i}.png": _png(faces(1)[0]) for i in range(6)}),
     r"^many.tar.gz: refused, it holds more than 5 files \(6\+"),
])
def test_decompression_bombs_are_refused(tmp_path, small_limits, name, make, expected):
    csv = _fer_csv(300)  # 1.4 MB of CSV text: over the 1 MB limit
    assert len(csv) > 1 << 20
    (tmp_path / name).write_bytes(make(csv))
    with pytest.raises(DataFormatError, match=expected):
        load_dataset(tmp_path / name)


def test_a_folder_with_too_many_files_is_refused(tmp_path, small_limits):
    for i in range(6):
        save(tmp_path / "d" / "happy" / f"{i}.png", faces(1)[0])
    with pytest.raises(DataFormatError, match=r"^d: refused, it holds more than 5 files \(6\+"):
        load_dataset(tmp_path / "d")


def test_a_file_is_read_by_its_content_whatever_its_name(tmp_path):
    """Uploads are stored as <sha256>.csv: a zip, a gzip or an image folder zip named .csv is read
    by content; a PNG named .csv or a CSV named .png is refused as what it is."""
    csv = _fer_csv(12)
    (tmp_path / "ref.csv").write_bytes(csv)
    ref = load_dataset(tmp_path / "ref.csv")
    (tmp_path / "zip.csv").write_bytes(_zip_of({"data/fer2013.csv": csv}))
    (tmp_path / "gz.csv").write_bytes(gzip.compress(csv))
    for name in ("zip.csv", "gz.csv"):
        np.testing.assert_array_equal(load_dataset(tmp_path / name).images, ref.images)
    (tmp_path / "faces.csv").write_bytes(_zip_of({"train/happy/a.png": _png(faces(1)[0]),
                                                  "train/sad/b.png": _png(faces(1, seed=2)[0])}))
    assert load_dataset(tmp_path / "faces.csv").labels.tolist() == [3, 4]
    (tmp_path / "d" / "happy").mkdir(parents=True)
    (tmp_path / "d" / "happy" / "photo.jpg").write_bytes(_png(faces(1)[0]))  # a PNG named .jpg
    (tmp_path / "d" / "happy" / "table.png").write_bytes(csv)                # a CSV named .png
    with pytest.raises(DataFormatError, match=r"d/happy/table.png: not a readable image: not a format Pillow knows"):
        load_dataset(tmp_path / "d")
    (tmp_path / "d" / "happy" / "table.png").unlink()
    np.testing.assert_array_equal(load_dataset(tmp_path / "d").images, faces(1))
