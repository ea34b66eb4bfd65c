"""Any photo → the models' 48x48 gray face, and what the ensemble makes of it.

:func:`load_photo` opens an upload with :func:`fer.data.images.open_image` (size limits, EXIF
orientation, first frame), converts it to 8-bit gray (:func:`fer.data.images.to_gray`) and finds
faces with OpenCV's bundled frontal-face Haar cascade (Viola & Jones 2001; the model file is
``cv2.data.haarcascades + "haarcascade_frontalface_default.xml"``). :func:`crop_face` cuts one
face with a margin and resizes it to 48x48 — the exact array the members see;
:func:`centre_crop` is the fallback when no face is found. :func:`ensemble_verdict` turns the
members' probabilities into a vote histogram, the mean probabilities and a label, or "unsure".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw

from fer.data.images import SIZE, fit48, open_image, to_gray
from fer.errors import DataFormatError
from fer.labels import NUM_CLASSES

CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 640      # faces are searched on a copy whose longer side is at most this (speed)
MIN_FACE = 0.08        # smallest face searched, as a fraction of the shorter side (≥ 24 px)
MARGIN = 0.25          # crop margin on each side, as a fraction of the detected box's side
MAJORITY = 0.5         # a label needs more than this fraction of the members' votes


@dataclass(frozen=True)
class Photo:
    """A decoded upload: ``gray`` uint8 ``(H, W)`` upright, ``faces`` boxes ``(x, y, w, h)`` in
    its pixels, largest first; ``size`` the original (width, height); ``mode`` the file's Pillow
    mode; ``name`` the upload's name."""

    gray: np.ndarray
    faces: tuple[tuple[int, int, int, int], ...]
    size: tuple[int, int]
    mode: str
    name: str


def load_photo(src: str | os.PathLike | BinaryIO, name: str | None = None) -> Photo:
    """Open, orient, gray and search an image for faces.

    Args: src a path or a binary file (e.g. an ``st.file_uploader`` upload); name how errors
        name it.
    Returns: a :class:`Photo`.
    Raises: DataFormatError naming the image when it is not an image, is corrupt, has more than
        :data:`fer.data.images.MAX_PIXELS` pixels or a side under 8 px (see ``open_image``).
    """
    name = name or getattr(src, "name", None) or (os.fspath(src) if isinstance(src, (str, os.PathLike)) else "image")
    im = open_image(src, name)
    gray = np.asarray(to_gray(im, name), dtype=np.uint8).copy()
    return Photo(gray, detect_faces(gray), im.size, im.mode, str(name))


def _cascade():
    import cv2

    path = os.path.join(cv2.data.haarcascades, CASCADE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise DataFormatError(f"OpenCV's face detector {path} is missing: install "
                              "opencv-python-headless 4.x (OpenCV 5 no longer ships Haar cascades)")
    return cascade


def detect_faces(gray: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    """Frontal faces in a uint8 ``(H, W)`` gray image: boxes ``(x, y, w, h)``, largest first.

    The search runs on a copy shrunk to at most :data:`DETECT_SIDE` px (area averaging) and
    histogram-equalised; boxes are mapped back to ``gray``'s pixels. Cascade settings:
    scaleFactor 1.1, minNeighbors 5, smallest face :data:`MIN_FACE` of the shorter side.
    """
    import cv2

    h, w = gray.shape
    scale = min(1.0, DETECT_SIDE / max(h, w))
    small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                 interpolation=cv2.INTER_AREA)
    side = max(24, int(MIN_FACE * min(small.shape)))
    found = _cascade().detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=5,
                                        minSize=(side, side))
    boxes = [tuple(round(v / scale) for v in box) for box in np.asarray(found).reshape(-1, 4)]
    return tuple(sorted(boxes, key=lambda b: -b[2] * b[3]))


def crop_box(photo: Photo, face: int, margin: float = MARGIN) -> tuple[int, int, int, int]:
    """The square ``(left, top, right, bottom)`` cut for face number ``face``: its box grown by
    ``margin`` × its side on every side (FER2013 faces show the whole head, the cascade's box
    brows to chin), then moved — and if need be shrunk — to lie inside the photo, so that no
    made-up pixels enter the crop (a face at the edge ends up off-centre instead).
    Raises IndexError for a face number the photo does not have."""
    if not 0 <= face < len(photo.faces):
        raise IndexError(f"{photo.name}: face {face} asked, {len(photo.faces)} found")
    x, y, w, h = photo.faces[face]
    height, width = photo.gray.shape
    side = round(min(max(w, h) * (1 + 2 * margin), width, height))
    left = round(x + w / 2 - side / 2)
    top = round(y + h / 2 - side / 2)
    left, top = min(max(left, 0), width - side), min(max(top, 0), height - side)
    return left, top, left + side, top + side


def crop_face(photo: Photo, face: int, margin: float = MARGIN) -> np.ndarray:
    """Face number ``face`` of ``photo`` as the models' input: uint8 ``(48, 48)`` gray 0..255.

    Cut :func:`crop_box`, then resize with Lanczos (Pillow). Raises IndexError for a face
    number the photo does not have.
    """
    left, top, right, bottom = crop_box(photo, face, margin)
    return fit48(Image.fromarray(np.ascontiguousarray(photo.gray[top:bottom, left:right])))


def centre_crop(photo: Photo) -> np.ndarray:
    """The largest centred square of ``photo`` at 48x48: uint8 ``(48, 48)`` (no face found)."""
    return fit48(Image.fromarray(photo.gray))


def annotated(photo: Photo, max_side: int = 480, chosen: int | None = None,
              margin: float = MARGIN) -> Image.Image:
    """A preview of ``photo`` at most ``max_side`` px with each face's crop (at ``margin``)
    outlined and numbered from 1 (the chosen one thick and orange, the others thin and cyan); RGB."""
    h, w = photo.gray.shape
    scale = min(1.0, max_side / max(h, w))
    img = Image.fromarray(photo.gray).convert("RGB")
    if scale < 1:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(img)
    for i in range(len(photo.faces)):
        box = [round(v * scale) for v in crop_box(photo, i, margin)]
        box[2:] = [min(box[2], img.width) - 1, min(box[3], img.height) - 1]
        mine = i == chosen
        draw.rectangle(box, outline=(255, 140, 0) if mine else (0, 200, 255), width=4 if mine else 2)
        draw.text((box[0] + 5, box[1] + 3), str(i + 1), fill=(255, 140, 0) if mine else (0, 200, 255))
    return img


# ---------------------------------------------------------------- the ensemble's verdict
@dataclass(frozen=True)
class Verdict:
    """What the members say about one face.

    ``probs`` float32 ``(M, 7)`` each member's softmax; ``votes`` int64 ``(7,)`` how many members
    name each class (their arg-max); ``mean`` float32 ``(7,)`` the soft vote (mean probability);
    ``label`` the class index more than half of the members name, else None ("unsure");
    ``top`` the class with the most votes (ties: the higher mean probability), shown as the
    leading guess when unsure.
    """

    probs: np.ndarray
    votes: np.ndarray
    mean: np.ndarray
    label: int | None
    top: int

    @property
    def unsure(self) -> bool:
        return self.label is None


def ensemble_verdict(probs: np.ndarray) -> Verdict:
    """The members' probabilities for one face (float ``(M, 7)``) → :class:`Verdict`.

    Rule: a class is named only when more than half of the members (strictly more than M/2)
    vote for it; otherwise the ensemble is "unsure". Why: with a plain plurality, 3 of 9
    members could name a face's expression while 6 say something else — a label a student
    would read as the ensemble's confident answer.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES or len(probs) == 0:
        raise ValueError(f"probs must be (M, {NUM_CLASSES}) with M ≥ 1, got {probs.shape}")
    votes = np.bincount(probs.argmax(1), minlength=NUM_CLASSES).astype(np.int64)
    mean = probs.mean(0)
    top = int(np.where(votes == votes.max(), mean, -np.inf).argmax())
    label = top if votes[top] > MAJORITY * len(probs) else None
    return Verdict(probs, votes, mean, label, top)


def member_probabilities(models: Sequence, faces_u8: np.ndarray) -> np.ndarray:
    """Each member's softmax on uint8 ``(N, 48, 48)`` faces: float32 ``(M, N, 7)``."""
    from fer.training import predict_proba

    faces_u8 = np.asarray(faces_u8, dtype=np.uint8).reshape(-1, SIZE, SIZE)
    return np.stack([predict_proba(m, faces_u8) for m in models]).astype(np.float32)
