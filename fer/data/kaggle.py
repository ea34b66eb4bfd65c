"""Reader for Kaggle's ``fer2013.csv`` (columns ``emotion,pixels,Usage``; plain, gzip or zip).

Format (Kaggle, "Challenges in Representation Learning: Facial Expression Recognition
Challenge", 2013): one row per face; ``emotion`` is 0..6 (see :mod:`fer.labels`), ``pixels`` is
2304 space-separated gray values 0..255 of a 48x48 image in row-major order, ``Usage`` is
Training / PublicTest / PrivateTest. Row numbers in errors are 0-based data rows (the header is
line 1, so row r is on line r + 2), the numbering SOURCES-style defect lists use.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pacsv

from fer.data import FaceDataset
from fer.errors import DataFormatError
from fer.labels import USAGE_TO_SPLIT

PIXELS = 48 * 48
REQUIRED = ("emotion", "pixels", "Usage")


def open_text_stream(path: Path) -> tuple[io.BufferedIOBase, str]:
    """A binary stream of the CSV inside ``path`` (plain, gzip or zip, told by magic bytes).

    Returns the stream and a display name (``archive.zip:fer2013.csv`` for a zip member).
    Raises DataFormatError for an empty file, an empty or multi-CSV zip, or a corrupt archive.
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise DataFormatError(f"{path.name}: the file is empty (expected a FER2013 CSV)")
    if magic[:2] == b"\x1f\x8b":
        return pa.input_stream(str(path), compression="gzip"), path.name
    if magic == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise DataFormatError(f"{path.name}: corrupt zip archive ({e})") from e
        csvs = [n for n in zf.namelist() if n.lower().endswith(".csv") and not n.startswith("__MACOSX")]
        if len(csvs) != 1:
            raise DataFormatError(f"{path.name}: expected exactly one .csv inside the zip, found "
                                  f"{len(csvs)} ({', '.join(csvs[:5]) or 'none'})")
        return zf.open(csvs[0]), f"{path.name}:{csvs[0]}"
    return open(path, "rb"), path.name


def read_fer2013_csv(path: Path) -> FaceDataset:
    """Parse a Kaggle ``fer2013.csv`` into a :class:`FaceDataset` (no caching; see load_dataset).

    Raises DataFormatError naming the file, the row and the field: a missing column, a row whose
    ``pixels`` does not hold 2304 integers, a pixel outside 0..255, an ``emotion`` outside 0..6,
    or a ``Usage`` other than Training/PublicTest/PrivateTest.
    """
    stream, name = open_text_stream(path)
    try:
        data = stream.read()
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"{name}: cannot decompress/read the file ({e})") from e
    finally:
        stream.close()
    return parse_fer2013_bytes(data, name, source=str(path))


def parse_fer2013_bytes(data: bytes, name: str, source: str = "") -> FaceDataset:
    """Parse the bytes of a fer2013.csv (see :func:`read_fer2013_csv`); ``name`` is for errors."""
    header_line = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").strip()
    if not header_line:
        raise DataFormatError(f"{name}: the file is empty (expected header emotion,pixels,Usage)")
    header = [h.strip().strip('"') for h in header_line.split(",")]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataFormatError(f"{name}: missing column(s) {', '.join(missing)}; found header "
                              f"{header_line[:120]!r}, expected emotion,pixels,Usage")
    bad_rows: list[str] = []

    def on_invalid(row) -> str:
        bad_rows.append(f"line {row.number}: {row.text[:80]!r} has {row.actual_columns} fields, "
                        f"expected {row.expected_columns}" if row.number else
                        f"{row.text[:80]!r} has {row.actual_columns} fields, expected {row.expected_columns}")
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, use_threads=True),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 include_columns=list(REQUIRED)))
    except pa.ArrowInvalid as e:
        raise DataFormatError(f"{name}: not a readable CSV ({e})") from e
    if bad_rows:
        raise DataFormatError(f"{name}: malformed CSV, {bad_rows[0]}")
    n = table.num_rows
    if n == 0:
        raise DataFormatError(f"{name}: header only, no data rows")

    labels = _labels(table.column("emotion"), name)
    splits = _splits(table.column("Usage"), name)
    images = _pixels(table.column("pixels"), name)
    return FaceDataset(images, labels, splits, dict(source=source or name, format="fer2013.csv",
                                                    rows=n, synthetic=False))


def _row_error(name: str, row: int, msg: str) -> DataFormatError:
    return DataFormatError(f"{name} row {row} (line {row + 2}): {msg}")


def _labels(col: pa.ChunkedArray, name: str) -> np.ndarray:
    text = pc.utf8_trim_whitespace(col)
    ok = pc.match_substring_regex(text, r"^[0-9]+$").to_numpy(zero_copy_only=False)
    ok &= ~pc.is_null(text).to_numpy(zero_copy_only=False)
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0])
        raise _row_error(name, r, f"emotion is {text[r].as_py()!r}, expected an integer 0..6")
    labels = pc.cast(text, pa.int64()).to_numpy()
    bad = np.flatnonzero((labels < 0) | (labels > 6))
    if len(bad):
        raise _row_error(name, int(bad[0]), f"emotion is {labels[bad[0]]}, expected 0..6")
    return labels.astype(np.int64)


def _splits(col: pa.ChunkedArray, name: str) -> np.ndarray:
    usage = np.asarray(pc.utf8_trim_whitespace(col).to_numpy(zero_copy_only=False), dtype=object)
    out = np.empty(len(usage), dtype="<U12")
    known = np.zeros(len(usage), dtype=bool)
    for kaggle_name, split in USAGE_TO_SPLIT.items():
        hit = usage == kaggle_name
        out[hit] = split
        known |= hit
    if not known.all():
        r = int(np.flatnonzero(~known)[0])
        raise _row_error(name, r, f"Usage is {usage[r]!r}, expected Training, PublicTest or PrivateTest")
    return out


def _pixels(col: pa.ChunkedArray, name: str) -> np.ndarray:
    col = pc.fill_null(col, "")
    parts = pc.utf8_split_whitespace(col)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(counts != PIXELS)
    if len(bad):
        r = int(bad[0])
        raise _row_error(name, r, f"pixels has {counts[r]} values, expected {PIXELS} (48x48)")
    flat = pc.list_flatten(parts)
    numeric = pc.match_substring_regex(flat, r"^[0-9]{1,3}$").to_numpy(zero_copy_only=False)
    if not numeric.all():
        i = int(np.flatnonzero(~numeric)[0])
        raise _row_error(name, i // PIXELS, f"pixels value {i % PIXELS} is {flat[i].as_py()!r}, "
                                            f"expected an integer 0..255")
    values = pc.cast(flat, pa.int16()).to_numpy()
    over = np.flatnonzero(values > 255)
    if len(over):
        i = int(over[0])
        raise _row_error(name, i // PIXELS, f"pixels value {i % PIXELS} is {values[i]}, expected 0..255")
    return values.astype(np.uint8).reshape(-1, 48, 48)
