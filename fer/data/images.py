"""Any image file → the models' 48x48 uint8 gray face, with Pillow; reused for uploaded faces.

:func:`open_image` opens with limits and EXIF orientation, :func:`to_gray` turns any Pillow mode
into 8-bit gray, :func:`to_gray48` does both and fits the result to 48x48. The steps follow
Pillow's documentation (https://pillow.readthedocs.io: ``ImageOps.exif_transpose``,
``Image.alpha_composite``, ``ImageOps.fit``, mode ``L`` = ITU-R 601-2 luma).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer.errors import DataFormatError

MAX_PIXELS = 40_000_000  # width*height above this is refused (decompression-bomb guard; a 40 MP photo passes)
MIN_SIDE = 8             # images narrower or shorter than 8 px hold no face
SIZE = 48
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".pgm", ".ppm", ".pbm", ".pnm", ".jfif")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def open_image(src: str | os.PathLike | BinaryIO, name: str | None = None) -> Image.Image:
    """Open and decode an image, refusing bombs and tiny images, with EXIF orientation applied.

    Args:
        src: a path or a binary file object (e.g. an upload).
        name: how errors name the image (default: the path's name).

    Returns: the decoded Pillow image (first frame of an animation), upright.
    Raises: DataFormatError naming the image when it is not a readable image, is corrupt or
        truncated, has more than :data:`MAX_PIXELS` pixels, or a side below :data:`MIN_SIDE`.
    """
    name = name or (Path(src).name if isinstance(src, (str, os.PathLike)) else getattr(src, "name", "image"))
    try:
        im = Image.open(src)
    except Image.DecompressionBombError as e:
        raise DataFormatError(f"{name}: refused, the image is larger than {MAX_PIXELS:,} pixels "
                              f"(decompression-bomb guard; {e})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        what = ("not a readable image: not a format Pillow knows (expected PNG, JPEG, WebP, BMP, "
                "TIFF, GIF, …)" if isinstance(e, UnidentifiedImageError)
                else f"not a readable image: corrupt or truncated ({e})")
        raise DataFormatError(f"{name}: {what}") from e
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise DataFormatError(f"{name}: refused, the image is {w}x{h} = {w * h:,} pixels, more than the "
                              f"limit of {MAX_PIXELS:,} (decompression-bomb guard)")
    if min(w, h) < MIN_SIDE:
        raise DataFormatError(f"{name}: the image is {w}x{h} pixels, smaller than the minimum "
                              f"{MIN_SIDE}x{MIN_SIDE}")
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise DataFormatError(f"{name}: corrupt or truncated image ({type(e).__name__}: {e})") from e
    return im


def to_gray(im: Image.Image, name: str = "image") -> Image.Image:
    """Any Pillow mode → mode ``L`` (8-bit gray), same size.

    16-bit modes (``I;16*``) are scaled 0..65535 → 0..255 (divide by 257, rounded); mode ``I``
    is treated as 16-bit when its maximum exceeds 255; ``F`` as 0..1 when its maximum is at
    most 1, else clipped to 0..255. Transparency (``LA``, ``RGBA``, ``PA``, ``P`` with a
    transparent colour) is composited on white. Colour (``RGB``, ``CMYK``, ``YCbCr``, ``LAB``,
    ``HSV``) goes through RGB to luma, L = 0.299 R + 0.587 G + 0.114 B.
    Raises DataFormatError naming the image for a mode Pillow cannot convert.
    """
    mode = im.mode
    if mode == "L":
        return im
    if mode in _SIXTEEN_BIT or mode == "I":
        a = np.asarray(im).astype(np.float64)
        if mode in _SIXTEEN_BIT or a.max(initial=0) > 255:
            a = np.clip(a, 0, 65535) / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0) <= 1.0 else a
        return Image.fromarray(np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8), "L")
    try:
        if mode in ("LA", "La", "RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("L")
        if mode in ("1", "P", "RGB"):
            return im.convert("L")
        return im.convert("RGB").convert("L")
    except (ValueError, OSError) as e:
        raise DataFormatError(f"{name}: cannot convert image mode {mode} to gray ({e})") from e


def fit48(gray: Image.Image) -> np.ndarray:
    """Centre-crop to the largest square and resize to 48x48 (Lanczos) → uint8 ``(48, 48)``.

    A 48x48 image is returned unchanged (no resampling).
    """
    if gray.size != (SIZE, SIZE):
        gray = ImageOps.fit(gray, (SIZE, SIZE), method=Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8).copy()


def to_gray48(src: str | os.PathLike | BinaryIO, name: str | None = None) -> np.ndarray:
    """An image file → uint8 ``(48, 48)`` gray 0..255 (:func:`open_image`, :func:`to_gray`, :func:`fit48`).

    Raises DataFormatError naming the image (see :func:`open_image`).
    """
    im = open_image(src, name)
    return fit48(to_gray(im, name or getattr(im, "filename", "") or "image"))
