"""Vectorised parser of FER2013 ``pixels`` fields: 2304 space-separated integers 0..255 per row.

The field format is Kaggle's (fer2013.csv, icml_face_data.csv, and the homework CSVs'
``feature``): a 48x48 image in row-major order, each value written in decimal. Parsing it with
``str.split`` per row costs ~10 s for the 35,887 rows of FER2013; here numpy works on the raw
bytes, a few dozen rows at a time so that each step stays in the CPU cache:

1. bytes → digit values (``byte - 48``; everything between the fields becomes a separator);
2. a token ends where a digit is followed by a non-digit; ``flatnonzero`` finds the ends;
3. the value of the token ending at ``i`` is ``100*d[i-2] + 10*d[i-1] + d[i]`` with the digits
   that do not belong to the token zeroed: the last two digits are combined for every byte
   (uint8), the hundreds only at the ends, where a value above 255 is caught before it wraps.

Every check a row needs (only digits and spaces, 2304 values, at most 3 digits, at most 255) is
made per chunk; a chunk that fails any of them is handed row by row to ``slow_row``, which
either parses the row some other way (e.g. tabs as separators) or raises the precise error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PIXELS = 48 * 48
_SEP = np.uint8(0xF0)  # separator code: ``& 15`` turns it into digit value 0
_ROWS_PER_CHUNK = 48   # ~400 KB of text: fits in L2, measured fastest among 32..512


def parse_pixel_fields(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                       slow_row: Callable[[int], np.ndarray], workspace: Workspace | None = None,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Parse the pixel field ``buf[starts[r]:ends[r]]`` of every row r.

    Args:
        buf: uint8 ``(M,)``, the text (e.g. a whole CSV file). Spans must be ascending and
            disjoint; bytes between spans are ignored.
        starts, ends: int64 ``(N,)`` byte offsets of each row's field (end exclusive).
        slow_row: called with a row index for each row of a chunk that fails a check; returns
            that row's uint8 ``(2304,)`` values or raises the error that names the problem.

    Returns: uint8 ``(N, 48, 48)``.
    """
    n = len(starts)
    out = np.empty((n, PIXELS), dtype=np.uint8) if out is None else out
    if n == 0:
        return out.reshape(0, 48, 48)
    chunk_starts = np.arange(0, n, _ROWS_PER_CHUNK)
    chunk_ends = np.minimum(chunk_starts + _ROWS_PER_CHUNK, n) - 1
    ws = workspace or Workspace()
    ws.ensure(int((ends[chunk_ends] - starts[chunk_starts]).max()) + 3, _ROWS_PER_CHUNK * PIXELS)
    for lo in chunk_starts.tolist():
        hi = min(lo + _ROWS_PER_CHUNK, n)
        if not _parse_chunk(buf, starts[lo:hi], ends[lo:hi], out[lo:hi].reshape(-1), ws):
            for r in range(lo, hi):
                out[r] = slow_row(r)
    return out.reshape(n, 48, 48)


class Workspace:
    """Scratch arrays reused by every chunk: fresh temporaries per chunk cost more in page
    faults (the allocator hands ~MB blocks back to the OS) than the arithmetic itself."""

    nbytes = ntokens = -1

    def ensure(self, nbytes: int, ntokens: int) -> None:
        """Make the arrays hold at least ``nbytes`` text bytes and ``ntokens`` values."""
        if nbytes <= self.nbytes and ntokens <= self.ntokens:
            return
        nbytes, ntokens = max(nbytes, self.nbytes), max(ntokens, self.ntokens)
        self.nbytes, self.ntokens = nbytes, ntokens
        self.z = np.empty(nbytes, np.uint8)
        self.d = np.empty(nbytes, np.uint8)
        self.two = np.empty(nbytes, np.uint8)
        self.hund = np.empty(nbytes, np.uint8)
        self.isd = np.empty(nbytes, bool)
        self.tmp = np.empty(nbytes, bool)
        self.tmp2 = np.empty(nbytes, bool)
        self.h = np.empty(ntokens, np.uint8)
        self.low = np.empty(ntokens, np.uint8)
        self.b1 = np.empty(ntokens, bool)
        self.b2 = np.empty(ntokens, bool)


def _parse_chunk(buf: np.ndarray, s: np.ndarray, e: np.ndarray, out: np.ndarray, ws: Workspace) -> bool:
    """Parse one chunk of rows into ``out`` (uint8, rows*2304); False when any check fails."""
    rows = len(s)
    base = int(s[0]) - 2  # z[j] is buf[base + j]; z[0:2] are separators so j-2 is always valid
    n = int(e[-1]) - base + 1
    z = ws.z[:n]
    z[:2] = _SEP
    z[-1] = _SEP
    np.subtract(buf[s[0]:e[-1]], np.uint8(48), out=z[2:-1])
    gaps = s[1:] - e[:-1]
    if len(gaps) and gaps.sum():
        # bytes between fields (other columns, newlines) become separators
        first = e[:-1] - base
        idx = np.repeat(first - np.cumsum(gaps) + gaps, gaps) + np.arange(int(gaps.sum()))
        z[idx] = _SEP
    isd, tmp = ws.isd[:n], ws.tmp[:n]
    np.less(z, np.uint8(10), out=isd)
    np.equal(z, _SEP, out=tmp)
    if np.count_nonzero(isd) + np.count_nonzero(tmp) != n:
        return False  # a byte that is neither a digit nor a space
    pair, quad = ws.tmp[:n - 1], ws.tmp2[:n - 3]
    np.logical_and(isd[1:], isd[:-1], out=pair)
    np.logical_and(pair[2:], pair[:-2], out=quad)
    if quad.any():
        return False  # 4 or more digits in a row
    d = ws.d[:n]
    np.bitwise_and(z, np.uint8(15), out=d)
    # token ending at j (0-based in z): value = 100*hund + two, with hund = d[j-2] when d[j-1] is
    # a digit and two = 10*d[j-1] + d[j]; both indexed by j - 2
    two, hund = ws.two[:n - 3], ws.hund[:n - 3]
    np.multiply(d[1:-2], np.uint8(10), out=two)
    np.add(two, d[2:-1], out=two)
    np.multiply(d[:-3], isd[1:-2], out=hund)
    ends = ws.tmp[:n - 3]
    np.greater(isd[2:-1], isd[3:], out=ends)
    ends_at = np.flatnonzero(ends)  # j - 2 for each token end j
    t = len(ends_at)
    if t != rows * PIXELS:
        return False
    if (np.searchsorted(ends_at, e - base - 2) != np.arange(PIXELS, t + 1, PIXELS)).any():
        return False  # some row has a wrong number of values
    h, low, b1, b2 = ws.h[:t], ws.low[:t], ws.b1[:t], ws.b2[:t]
    np.take(hund, ends_at, out=h, mode="clip")  # mode clip: no buffering copy (indices are valid)
    np.take(two, ends_at, out=low, mode="clip")
    np.equal(h, np.uint8(2), out=b1)
    np.greater(low, np.uint8(55), out=b2)
    np.logical_and(b1, b2, out=b1)
    if h.max() > 2 or b1.any():
        return False  # above 255
    np.multiply(h, np.uint8(100), out=h)
    np.add(h, low, out=out)
    return True
