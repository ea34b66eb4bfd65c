"""Photo → 48x48 face, on images made here: drawn faces (fer.data.synthetic) upscaled into photos,
EXIF-rotated, RGBA, 16-bit, CMYK, huge, tiny, not an image, no face, two faces; and the
ensemble's verdict rule ("unsure" without a strict majority)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer.data.synthetic import render_face
from fer.errors import DataFormatError
from fer.faces import (
    centre_crop,
    crop_box,
    crop_face,
    detect_faces,
    ensemble_verdict,
    load_photo,
    member_probabilities,
)
from fer.weights import load_model

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-demo"


def drawn_face(seed: int = 2, side: int = 300) -> Image.Image:
    """A happy synthetic face upscaled to ``side`` px (mode L); the cascade finds seeds 0–6."""
    f = render_face(3, np.random.default_rng(seed), intensity=1.0)
    return Image.fromarray(np.rint(f * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)


def encode(im: Image.Image, fmt: str, **kw) -> io.BytesIO:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    buf.seek(0)
    buf.name = f"photo.{fmt.lower()}"
    return buf


def png_header(width: int, height: int) -> io.BytesIO:
    """A PNG that only claims its size (IHDR), as a decompression bomb does; no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    buf = io.BytesIO(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    buf.name = "bomb.png"
    return buf


def test_a_face_in_an_rgb_jpeg_is_found_and_cut_to_48():
    canvas = Image.new("RGB", (640, 480), (90, 120, 160))
    canvas.paste(drawn_face(0).convert("RGB"), (250, 120))
    photo = load_photo(encode(canvas, "JPEG", quality=92))
    assert photo.gray.shape == (480, 640) and photo.gray.dtype == np.uint8
    assert photo.size == (640, 480) and photo.mode == "RGB" and len(photo.faces) == 1
    x, y, w, h = photo.faces[0]
    assert 250 <= x + w / 2 - 0 <= 550 and 120 <= y + h / 2 <= 420  # inside the pasted face
    face = crop_face(photo, 0)
    assert face.shape == (48, 48) and face.dtype == np.uint8 and face.std() > 10
    left, top, right, bottom = crop_box(photo, 0)
    assert right - left == bottom - top > w  # square, with a margin


def test_exif_orientation_is_applied_before_detection():
    upright = drawn_face(2)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a phone held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    with_exif = load_photo(encode(stored.convert("RGB"), "JPEG", quality=95, exif=exif.tobytes()))
    without = load_photo(encode(stored.convert("RGB"), "JPEG", quality=95))
    assert with_exif.gray.shape == (300, 300)
    assert np.abs(with_exif.gray.astype(int) - np.asarray(upright, dtype=int)).mean() < 3
    assert len(with_exif.faces) == 1 and len(without.faces) == 0


def test_rgba_is_composited_on_white():
    rgba = drawn_face(0).convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:, :40, 3] = 0  # a transparent strip on the left
    photo = load_photo(encode(Image.fromarray(a), "PNG"))
    assert (photo.gray[:, :40] == 255).all()
    assert np.array_equal(photo.gray[:, 40:], np.asarray(drawn_face(0))[:, 40:])
    assert len(photo.faces) == 1


def test_sixteen_bit_gray_is_scaled_to_eight_bit():
    eight = np.asarray(drawn_face(0))
    sixteen = Image.fromarray(eight.astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    photo = load_photo(encode(sixteen, "PNG"))
    assert np.array_equal(photo.gray, eight)
    assert len(photo.faces) == 1


def test_cmyk_jpeg_is_converted():
    rgb = drawn_face(0).convert("RGB")
    photo = load_photo(encode(rgb.convert("CMYK"), "JPEG", quality=95))
    assert photo.mode == "CMYK"
    assert np.abs(photo.gray.astype(int) - np.asarray(drawn_face(0), dtype=int)).mean() < 6
    assert len(photo.faces) == 1


def test_first_frame_of_an_animation():
    frames = [drawn_face(0).convert("P"), Image.new("P", (300, 300), 0)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    buf.seek(0)
    assert len(load_photo(buf, "anim.gif").faces) == 1


def test_a_big_photo_is_searched_small_and_boxes_come_back_in_its_pixels():
    canvas = Image.new("L", (3000, 2000), 128)
    canvas.paste(drawn_face(0, 600), (1800, 700))
    photo = load_photo(encode(canvas, "PNG"))
    (x, y, w, h), = photo.faces
    assert 1800 < x < x + w < 2400 and 700 < y < y + h < 1300 and w > 300


@pytest.mark.parametrize("make, message", [
    (lambda: png_header(8000, 6000), "refused, the image is 8000x6000"),        # 48 MP > 40 MP
    (lambda: png_header(30000, 30000), "refused"),                              # Pillow's bomb guard
    (lambda: encode(Image.new("L", (1, 1)), "PNG"), "smaller than the minimum"),
    (lambda: encode(Image.new("RGB", (5, 300)), "PNG"), "smaller than the minimum"),
    (lambda: io.BytesIO(b"%PDF-1.4 not an image at all"), "not a readable image"),
    (lambda: io.BytesIO(encode(drawn_face(0), "JPEG").getvalue()[:600]), "corrupt or truncated"),
])
def test_refused_uploads_say_why(make, message):
    with pytest.raises(DataFormatError, match=message):
        load_photo(make(), "upload.bin")


def png_bomb(side: int) -> io.BytesIO:
    """A real side x side gray PNG, all black, its pixel data squeezed by zlib into a few MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, rows = zlib.compressobj(1), bytes(side + 1) * 256  # each row: filter byte 0, then side zeros
    idat = b"".join(z.compress(rows) for _ in range(side // 256)) + z.compress(bytes(side + 1) * (side % 256))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    buf = io.BytesIO(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat + z.flush())
                     + chunk(b"IEND", b""))
    buf.name = "bomb.png"
    return buf


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side, message", [
    # 100 MP: Pillow only warns (its limit is 89 MP warn, 179 MP refuse); our 40 MP limit refuses
    (10_000, r"^bomb.jpg: refused, the image is 10000x10000 = 100,000,000 pixels, more than the limit of 40,000,000"),
    (30_000, r"^bomb.jpg: refused, the image is larger than 40,000,000 pixels \(decompression-bomb guard"),
])
def test_a_real_decompression_bomb_is_refused_before_decoding(side, message):
    bomb = png_bomb(side)
    assert len(bomb.getvalue()) < side * side / 100  # ≥ 100:1, e.g. 900 MB of pixels in a few MB
    with pytest.raises(DataFormatError, match=message):
        load_photo(bomb, "bomb.jpg")


def _csv() -> io.BytesIO:
    return io.BytesIO(b"emotion,pixels,Usage\n3," + b"0 " * 2303 + b"0,Training\n")


def _zip() -> io.BytesIO:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("face.png", encode(drawn_face(0), "PNG").getvalue())
    return buf


@pytest.mark.parametrize("make, name", [
    (lambda: encode(drawn_face(0), "PNG"), "photo.jpg"),
    (lambda: encode(drawn_face(0).convert("RGB"), "JPEG", quality=95), "photo.png"),
    (lambda: encode(drawn_face(0), "WEBP", lossless=True), "photo.gif"),
    (lambda: encode(drawn_face(0), "PNG"), "photo"),
])
def test_an_image_whose_extension_lies_is_read_by_its_content(make, name):
    photo = load_photo(make(), name)
    assert photo.name == name and photo.size == (300, 300) and len(photo.faces) == 1


@pytest.mark.parametrize("make, name", [
    (_csv, "faces.png"),          # a CSV named like an image
    (_zip, "face.jpg"),           # a zip holding an image is still not an image
    (lambda: io.BytesIO(b""), "empty.png"),
])
def test_a_non_image_with_an_image_name_is_refused(make, name):
    with pytest.raises(DataFormatError, match=rf"^{name}: not a readable image: not a format Pillow knows "
                                              r"\(expected PNG, JPEG, WebP, BMP, TIFF, GIF, …\)$"):
        load_photo(make(), name)


def test_no_face_offers_the_centre_crop():
    rng = np.random.default_rng(0)
    photo = load_photo(encode(Image.fromarray(rng.integers(0, 256, (200, 320), dtype=np.uint8)), "PNG"))
    assert photo.faces == ()
    crop = centre_crop(photo)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    with pytest.raises(IndexError, match="0 found"):
        crop_face(photo, 0)


def test_a_tiny_image_gives_no_face_and_a_centre_crop():
    photo = load_photo(encode(Image.new("L", (8, 8), 200), "PNG"))
    assert photo.faces == () and centre_crop(photo).shape == (48, 48)


def test_two_faces_largest_first_and_a_crop_at_the_edge_stays_inside():
    canvas = Image.new("L", (700, 320), 90)
    canvas.paste(drawn_face(1, 200), (480, 60))
    canvas.paste(drawn_face(0, 300), (0, 10))  # touches the left edge: the margin reaches outside
    photo = load_photo(encode(canvas, "PNG"))
    assert len(photo.faces) == 2
    assert photo.faces[0][2] > photo.faces[1][2] and photo.faces[0][0] < 300
    left, top, right, bottom = crop_box(photo, 0)
    assert left == 0 <= top and bottom <= 320 and right - left == bottom - top  # moved inside
    assert crop_box(photo, 0, margin=5.0) == (0, 0, 320, 320)  # shrunk to the photo's height
    a, b = crop_face(photo, 0), crop_face(photo, 1)
    assert a.shape == b.shape == (48, 48) and not np.array_equal(a, b)
    with pytest.raises(IndexError):
        crop_face(photo, 2)


def test_detect_faces_on_a_blank_image():
    assert detect_faces(np.zeros((100, 100), np.uint8)) == ()


# ---------------------------------------------------------------- the verdict
def one_hot_probs(votes: list[int], p: float = 0.6) -> np.ndarray:
    probs = np.full((len(votes), 7), (1 - p) / 6, dtype=np.float32)
    probs[np.arange(len(votes)), votes] = p
    return probs


def test_strict_majority_names_the_class():
    v = ensemble_verdict(one_hot_probs([3, 3, 3, 3, 3, 4, 4, 0, 6]))  # 5 of 9
    assert v.label == 3 and not v.unsure and v.votes.tolist() == [1, 0, 0, 5, 2, 0, 1]
    np.testing.assert_allclose(v.mean.sum(), 1.0, rtol=1e-6)


def test_no_strict_majority_is_unsure():
    v = ensemble_verdict(one_hot_probs([3, 3, 3, 3, 4, 4, 4, 0, 6]))  # 4 of 9: a plurality only
    assert v.unsure and v.label is None and v.top == 3
    v = ensemble_verdict(one_hot_probs([2, 5]))  # 1-1: half is not more than half
    assert v.unsure
    probs = one_hot_probs([2, 5])
    probs[1, 5] = 0.9  # the tie for the leading guess goes to the higher mean probability
    assert ensemble_verdict(probs).top == 5
    assert ensemble_verdict(one_hot_probs([1])).label == 1


def test_verdict_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(M, 7\)"):
        ensemble_verdict(np.zeros((3, 6)))


def test_member_probabilities_of_the_demo_members():
    members = [load_model(DEMO / "members" / f"m0{m}.safetensors", "seed_cnn") for m in range(2)]
    faces = np.stack([np.rint(render_face(c, np.random.default_rng(0), 1.0) * 255).astype(np.uint8)
                      for c in (3, 5)])
    probs = member_probabilities(members, faces)
    assert probs.shape == (2, 2, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
