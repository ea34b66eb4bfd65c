"""Readers for the CSV layouts FER2013 circulates in (told apart by their header).

| layout | header | split | source |
| --- | --- | --- | --- |
| ``fer2013.csv`` | ``emotion,pixels,Usage`` | from Usage | Kaggle, "Challenges in Representation Learning: Facial Expression Recognition Challenge" (2013) |
| ``icml_face_data.csv`` | ``emotion, Usage, pixels`` (leading spaces) | from Usage | the same competition's other download |
| homework ``train.csv`` | ``label,feature`` | all ``train`` | course copies of the Training rows |
| homework ``test.csv`` | ``id,feature`` | all ``test``, label -1 | course copies, unlabelled (predict, export ``id,label``) |

``emotion``/``label`` is 0..6 (see :mod:`fer.labels`); ``pixels``/``feature`` is 2304
space-separated gray values 0..255 of a 48x48 image in row-major order; ``Usage`` is
Training / PublicTest / PrivateTest. Column names are matched without surrounding spaces or
quotes, in any order. Row numbers in errors are 0-based data rows (the header is line 1, so
row r is on line r + 2), the numbering SOURCES-style defect lists use.

Parsing: a fast path splits lines and fields with ``bytes.find`` and the pixel fields with
:func:`fer.data.pixels.parse_pixel_fields` (about 1 s for the real file); files it cannot split
simply (quoted commas, blank lines, ragged rows) go through pyarrow's CSV reader, which also
words the structural errors.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pacsv

from fer.data import UNLABELLED_SPLIT, FaceDataset, archives
from fer.data.pixels import PIXELS, Workspace, parse_pixel_fields
from fer.errors import DataFormatError
from fer.labels import USAGE_TO_SPLIT

EXPECTED_HEADERS = ("emotion,pixels,Usage (fer2013.csv), emotion, Usage, pixels (icml_face_data.csv), "
                    "label,feature (homework train.csv) or id,feature (homework test.csv)")
FERPLUS_COLUMNS = ("usage", "image name", "neutral")


@dataclass(frozen=True)
class Layout:
    """Which column holds what (indices into the header), and the layout's name."""

    format: str
    ncols: int
    pixels: int
    label: int | None
    usage: int | None
    id: int | None


def header_names(line: bytes) -> list[str]:
    """Column names of a header line, without BOM, quotes or surrounding spaces, lower-cased."""
    text = line.decode("utf-8-sig", errors="replace").strip()
    return [h.strip().strip('"').strip().lower() for h in text.split(",")]


def is_ferplus_header(names: list[str]) -> bool:
    return all(c in names for c in FERPLUS_COLUMNS)


def csv_layout(names: list[str], name: str, raw_header: str = "") -> Layout:
    """The :class:`Layout` of a header; DataFormatError naming the missing column(s) otherwise."""
    found = raw_header[:120] or ",".join(names)[:120]
    pix = _first(names, "pixels", "feature")
    label = _first(names, "emotion", "label")
    usage = _first(names, "usage")
    ident = _first(names, "id")
    kaggle = "emotion" in names or "pixels" in names
    missing = []
    if pix is None:
        missing.append("pixels" if kaggle else "feature")
    if kaggle:
        missing += [c for c, i in (("emotion", label), ("Usage", usage)) if i is None]
    elif label is None and ident is None:
        missing.append("label (or id)")
    if missing:
        raise DataFormatError(f"{name}: missing column(s) {', '.join(missing)}; found header {found!r}, "
                              f"expected {EXPECTED_HEADERS}")
    if kaggle:
        fmt = "icml_face_data.csv" if names[:3] == ["emotion", "usage", "pixels"] else "fer2013.csv"
    else:
        fmt = "train.csv (label,feature)" if label is not None else "test.csv (id,feature)"
    return Layout(fmt, len(names), pix, label, usage, ident)


def _first(names: list[str], *wanted: str) -> int | None:
    return next((names.index(w) for w in wanted if w in names), None)


def parse_csv_bytes(data: bytes, name: str) -> FaceDataset:
    """Parse the bytes of any layout above into a :class:`FaceDataset` (no caching).

    ``name`` is the display name used in errors. ``row_ids`` is the ``id`` column when there is
    one, else the 0-based data row.
    Raises DataFormatError naming the file, the row and the field: an empty file, a missing
    column, a row whose pixels do not hold 2304 integers, a pixel outside 0..255, a label outside
    0..6, a Usage other than Training/PublicTest/PrivateTest, or a non-integer id.
    """
    return parse_csv_blocks(iter([data]), name, size_hint=len(data))


def parse_csv_blocks(blocks: Iterator[bytes], name: str, size_hint: int = 0) -> FaceDataset:
    """:func:`parse_csv_bytes` over a file given in consecutive pieces (parsed as they arrive).

    Whole lines are parsed block by block, so a reader thread can decompress the next block
    meanwhile (see :func:`read_fer2013_csv`); a block the fast path cannot split sends the whole
    file to pyarrow's reader. ``size_hint`` (the text's total bytes, 0 if unknown) sizes the
    image buffer once instead of concatenating the blocks' images at the end.
    """
    seen: list[bytes] = []
    carry = b""    # an unfinished line, completed by the next block
    header = None
    parts: list[tuple] = []
    row0 = 0
    ws = Workspace()
    rows = _ImageRows(size_hint)

    def parse(data: bytes, lo: int, hi: int) -> bool:
        nonlocal row0
        part = _parse_lines(data, lo, hi, header, name, row0, ws, rows.next)
        if part is not None:
            parts.append(part)
            row0 += len(part[0])
        return part is not None

    for block in blocks:
        seen.append(block)
        start = 0
        if header is None or carry:
            nl = block.find(b"\n")
            if nl < 0:
                carry += block
                continue
            line, carry, start = carry + block[:nl + 1], b"", nl + 1
            if header is None:
                header = _header(line, name)
            elif not parse(line, 0, len(line)):
                return _careful(b"".join(seen) + b"".join(blocks), name, *header)
        k = block.rfind(b"\n", start)
        if k < 0:
            carry = block[start:]
            continue
        # slices of bytes copy, so the block is parsed in place between offsets
        if not parse(block, start, k + 1):
            return _careful(b"".join(seen) + b"".join(blocks), name, *header)
        carry = block[k + 1:]
    if header is None:
        header = _header(carry, name)
        carry = b""
    if carry.strip() and not parse(carry, 0, len(carry)):
        return _careful(b"".join(seen), name, *header)
    if row0 == 0:
        raise DataFormatError(f"{name}: header only, no data rows")
    labels, splits, row_ids = (a[0] if len(a) == 1 else np.concatenate(a) for a in list(zip(*parts))[1:])
    return FaceDataset(rows.images(), labels, splits.astype("<U12"),
                       dict(format=header[1].format, rows=row0, synthetic=False), row_ids=row_ids)


class _ImageRows:
    """One growing uint8 ``(rows, 2304)`` buffer that blocks write their images into."""

    def __init__(self, size_hint: int):
        self.hint, self.n, self.buf = size_hint, 0, np.empty((0, PIXELS), dtype=np.uint8)

    def next(self, n: int, nbytes: int) -> np.ndarray:
        """A view for the next ``n`` rows, whose text takes ``nbytes``; grows the buffer as needed."""
        need = self.n + n
        if need > len(self.buf):
            guess = int(self.hint / max(nbytes / max(n, 1), 1) * 1.02) + 64 if self.hint else 0
            grown = np.empty((max(need, guess, 2 * len(self.buf)), PIXELS), dtype=np.uint8)
            grown[:self.n] = self.buf[:self.n]
            self.buf = grown
        view = self.buf[self.n:need]
        self.n = need
        return view

    def images(self) -> np.ndarray:
        """uint8 ``(rows, 48, 48)``; copied out when the buffer is more than 5% too large."""
        out = self.buf[:self.n]
        if len(self.buf) > 1.05 * self.n + 64:
            out = out.copy()
        return out.reshape(self.n, 48, 48)


def _header(line: bytes, name: str) -> tuple[list[str], Layout]:
    if not line.strip():
        raise DataFormatError(f"{name}: the file is empty (expected a header such as emotion,pixels,Usage)")
    names = header_names(line)
    return names, csv_layout(names, name, line.decode("utf-8", errors="replace").strip())


def _parse_lines(data: bytes, lo: int, hi: int, header: tuple[list[str], Layout], name: str, row0: int,
                 ws: Workspace | None = None, out_rows=None) -> tuple | None:
    """(images, labels, splits, row_ids) of the whole lines in ``data[lo:hi]``, or None when not
    simply split."""
    names, layout = header
    fields = _fast_fields(data, lo, layout.ncols, hi)
    if fields is None:
        return None
    starts, ends = fields

    def column(c: int) -> list[bytes]:
        return [data[a:b] for a, b in zip(starts[:, c].tolist(), ends[:, c].tolist())]

    n = len(starts)
    labels = (_labels(column(layout.label), name, names[layout.label], row0) if layout.label is not None
              else np.full(n, -1, dtype=np.int64))
    splits = (_splits(column(layout.usage), name, row0) if layout.usage is not None
              else np.full(n, "train" if layout.label is not None else UNLABELLED_SPLIT, dtype="<U12"))
    row_ids = (_ids(column(layout.id), name, row0) if layout.id is not None
               else np.arange(row0, row0 + n, dtype=np.int64))
    px = layout.pixels
    images = parse_pixel_fields(
        np.frombuffer(data, dtype=np.uint8), starts[:, px], ends[:, px],
        lambda r: _pixel_row(data[starts[r, px]:ends[r, px]], name, row0 + r, names[px]), ws,
        out=out_rows(n, hi - lo) if out_rows else None)
    return images, labels, splits, row_ids


def _fast_fields(data: bytes, pos: int, k: int, end: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Byte spans ``(N, k)`` of every field of every line in ``data[pos:end]``, or None when a
    line is not simple: exactly k-1 commas, no blank line inside. Quotes around a field are dropped.
    """
    end = len(data) if end is None else end
    while end > pos and data[end - 1] in b"\r\n":
        end -= 1
    find = data.find
    starts: list[int] = []
    ends: list[int] = []
    while pos < end:
        le = find(b"\n", pos, end)
        if le < 0:
            le = end
        stop = le - 1 if le > pos and data[le - 1] == 13 else le
        p = pos
        for _ in range(k - 1):
            c = find(b",", p, stop)
            if c < 0:
                return None
            starts.append(p)
            ends.append(c)
            p = c + 1
        if find(b",", p, stop) >= 0:
            return None
        starts.append(p)
        ends.append(stop)
        pos = le + 1
    s = np.asarray(starts, dtype=np.int64).reshape(-1, k)
    e = np.asarray(ends, dtype=np.int64).reshape(-1, k)
    buf = np.frombuffer(data, dtype=np.uint8)
    quoted = (e - s >= 2) & (buf[np.minimum(s, len(buf) - 1)] == 34) & (buf[np.maximum(e - 1, 0)] == 34)
    s[quoted] += 1
    e[quoted] -= 1
    return s, e


def _careful(data: bytes, name: str, names: list[str], layout: Layout) -> FaceDataset:
    """pyarrow's CSV reader for files the fast path cannot split (quotes, blank lines, errors)."""
    bad_rows: list[str] = []

    def on_invalid(row) -> str:
        where = f"line {row.number}: " if row.number else ""
        bad_rows.append(f"{where}{row.text[:80]!r} has {row.actual_columns} fields, "
                        f"expected {row.expected_columns}")
        return "skip"

    unique = [f"{h}__{i}" if names.count(h) > 1 else h for i, h in enumerate(names)]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(column_names=unique, skip_rows=1, use_threads=True),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in unique}))
    except pa.ArrowInvalid as e:
        raise DataFormatError(f"{name}: not a readable CSV ({e})") from e
    if bad_rows:
        raise DataFormatError(f"{name}: malformed CSV, {bad_rows[0]}")
    n = table.num_rows
    if n == 0:
        raise DataFormatError(f"{name}: header only, no data rows")

    def col(i: int) -> list[bytes]:
        return [(v or "").encode() for v in table.column(i).to_pylist()]

    labels = (_labels(col(layout.label), name, names[layout.label]) if layout.label is not None
              else np.full(n, -1, dtype=np.int64))
    splits = (_splits(col(layout.usage), name) if layout.usage is not None
              else np.full(n, "train" if layout.label is not None else UNLABELLED_SPLIT, dtype="<U12"))
    row_ids = _ids(col(layout.id), name) if layout.id is not None else np.arange(n, dtype=np.int64)
    # One space after each field keeps the last value of a row apart from the next row's first.
    pixels = pc.binary_join_element_wise(pc.fill_null(table.column(layout.pixels), ""), "", " ")
    pixels = pixels.combine_chunks() if isinstance(pixels, pa.ChunkedArray) else pixels
    offsets = np.frombuffer(pixels.buffers()[1], dtype=np.int32)[pixels.offset: pixels.offset + n + 1]
    buf = np.frombuffer(pixels.buffers()[2], dtype=np.uint8)
    starts, ends = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64) - 1
    images = parse_pixel_fields(buf, starts, ends,
                                lambda r: _pixel_row(buf[starts[r]:ends[r]].tobytes(), name, r, names[layout.pixels]))
    return FaceDataset(images, labels, splits, dict(format=layout.format, rows=n, synthetic=False),
                       row_ids=row_ids)


def row_error(name: str, row: int, msg: str) -> DataFormatError:
    """``<name> row <r> (line <r+2>): <msg>``."""
    return DataFormatError(f"{name} row {row} (line {row + 2}): {msg}")


def _clean(v: bytes) -> str:
    return v.decode("utf-8", errors="replace").strip().strip('"').strip()


_LABEL_CODES = {str(i).encode(): i for i in range(7)}


def _labels(values: list[bytes], name: str, column: str = "emotion", row0: int = 0) -> np.ndarray:
    out = np.fromiter((_LABEL_CODES.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    for r in np.flatnonzero(out < 0):
        text = _clean(values[r])
        if not text.isdigit():
            raise row_error(name, row0 + int(r), f"{column} is {text!r}, expected an integer 0..6")
        if int(text) > 6:
            raise row_error(name, row0 + int(r), f"{column} is {int(text)}, expected 0..6")
        out[r] = int(text)
    return out


def _splits(values: list[bytes], name: str, row0: int = 0) -> np.ndarray:
    mapping = {k.encode(): v for k, v in USAGE_TO_SPLIT.items()}
    out = np.empty(len(values), dtype="<U12")
    for r, v in enumerate(values):
        split = mapping.get(v) or USAGE_TO_SPLIT.get(_clean(v))
        if split is None:
            raise row_error(name, row0 + r, f"Usage is {_clean(v)!r}, expected Training, PublicTest or PrivateTest")
        out[r] = split
    return out


def _ids(values: list[bytes], name: str, row0: int = 0) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for r, v in enumerate(values):
        text = _clean(v)
        try:
            out[r] = int(text)
        except ValueError:
            raise row_error(name, row0 + r, f"id is {text!r}, expected an integer") from None
    return out


def _pixel_row(field: bytes, name: str, row: int, column: str = "pixels") -> np.ndarray:
    """One row's pixel field parsed the slow, exact way; raises the error that names the value."""
    tokens = _clean(field).split()
    if len(tokens) != PIXELS:
        raise row_error(name, row, f"{column} has {len(tokens)} values, expected {PIXELS} (48x48)")
    for i, t in enumerate(tokens):
        if not (t.isascii() and t.isdigit()):
            raise row_error(name, row, f"{column} value {i} is {t!r}, expected an integer 0..255")
        if int(t) > 255:
            raise row_error(name, row, f"{column} value {i} is {int(t)}, expected 0..255")
    return np.array(tokens, dtype=np.int64).astype(np.uint8)


def check_text(head: bytes, name: str) -> None:
    """Raise DataFormatError when the first bytes of a would-be CSV are binary (an image, …)."""
    kind = next((k for magic, k in BINARY_MAGIC if head.startswith(magic)), None)
    if kind is None and b"\x00" not in head[:4096]:
        try:
            head[:4096].decode("utf-8")
            return
        except UnicodeDecodeError as e:
            if e.start < 4090:  # not just a multi-byte character cut at the end of the sample
                kind = "binary data"
            else:
                return
    hint = (" (to load images, give the folder that holds the class folders)"
            if kind and kind.endswith("image") else "")
    raise DataFormatError(f"{name}: not a CSV: the file holds {kind or 'binary data'} "
                          f"(first bytes {head[:8]!r}); expected a text header such as emotion,pixels,Usage{hint}")


BINARY_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                (b"BM", "a BMP image"), (b"RIFF", "a RIFF (WebP/WAV) file"), (b"II*\x00", "a TIFF image"),
                (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"), (b"7z\xbc\xaf", "a 7-Zip archive"),
                (b"Rar!", "a RAR archive"), (b"\x93NUMPY", "a NumPy array"), (b"BZh", "a bzip2 archive"),
                (b"\xfd7zXZ", "an xz archive"))


def read_fer2013_csv(path: Path, name: str | None = None) -> FaceDataset:
    """Read and parse a CSV file of any layout above, plain or gzip-compressed (no caching).

    A gzip file is decompressed by a reader thread (pyarrow's gzip stream; zlib releases the
    GIL) while this thread parses the blocks already out, so a cold load costs about
    max(gunzip, parse) rather than their sum.
    Raises DataFormatError as :func:`parse_csv_bytes`, and for binary, empty or truncated files.
    """
    name = name or path.name
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise DataFormatError(f"{name}: the file is empty (expected a header such as emotion,pixels,Usage)")
    if head[:2] == b"\x1f\x8b":
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(size - 4, 0))
            isize = int.from_bytes(f.read(4), "little")  # uncompressed size mod 2**32 (RFC 1952)
        blocks = _threaded_blocks(lambda: pa.input_stream(str(path), compression="gzip"), name)
        return parse_csv_blocks(_checked_text(blocks, name), name, size_hint=min(isize, archives.MAX_UNPACKED_BYTES))
    check_text(head, name)
    return parse_csv_bytes(path.read_bytes(), name)


_BLOCK = 1 << 23  # 8 MB of text: ~1,000 rows per block


def _checked_text(blocks: Iterator[bytes], name: str) -> Iterator[bytes]:
    first, total = True, 0
    for b in blocks:
        total += len(b)
        if total > archives.MAX_UNPACKED_BYTES:  # a gzip bomb of CSV text
            raise archives.too_big(name)
        if first:
            if not b.strip():
                raise DataFormatError(f"{name}: the file is empty (expected a header such as emotion,pixels,Usage)")
            check_text(b[:4096], name)
            first = False
        yield b
    if first:
        raise DataFormatError(f"{name}: the file is empty (expected a header such as emotion,pixels,Usage)")


def _threaded_blocks(open_stream, name: str) -> Iterator[bytes]:
    """Blocks read by a background thread from ``open_stream()``; errors re-raised here, named."""
    q: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()
    end = object()

    def put(item) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            with open_stream() as f:
                while not stop.is_set():
                    b = f.read(_BLOCK)
                    if not b:
                        break
                    put(b)
            put(end)
        except (OSError, EOFError, pa.ArrowException) as e:
            put(e)

    t = threading.Thread(target=work, name=f"read {name}", daemon=True)
    t.start()
    try:
        while (item := q.get()) is not end:
            if isinstance(item, Exception):
                raise DataFormatError(f"{name}: cannot decompress/read the file (truncated or corrupt: {item})") from item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
