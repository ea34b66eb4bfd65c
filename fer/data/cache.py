"""Keyed ``.npz`` cache of parsed datasets (parse a 300 MB CSV or 35,887 image files once).

The key is a content hash for files and archives (SHA-256 of the bytes, so a renamed copy still
hits) and a listing hash for folders (names + sizes + modification times of the files read, so
an edited, added or removed image misses), combined with the load options and
:data:`PARSER_VERSION`. Entries are uncompressed, so a hit is a memory copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fer.data import FaceDataset

# Bump when a parser's output changes, so old cache entries are not reused.
PARSER_VERSION = 2


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_sha256(path: Path, cache_dir: Path) -> str:
    """:func:`file_sha256`, remembered per (absolute path, size, modification time in ns).

    An unchanged file is hashed once (a cached 94 MB load then skips ~0.1-0.3 s of hashing); any
    write changes the modification time, so the content is hashed again.
    """
    st = path.stat()
    who = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    memo = cache_dir / "sha256" / f"{hashlib.sha256(who).hexdigest()}.txt"
    try:
        known = memo.read_text().strip()
        if len(known) == 64:
            return known
    except OSError:
        pass
    digest = file_sha256(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:
        pass  # a read-only cache folder only costs re-hashing next time
    return digest


def combined_key(*parts: str) -> str:
    """Hex SHA-256 of several key parts (hashes and option strings), order-sensitive."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def dataset_sha256(ds: FaceDataset) -> str:
    """Hex SHA-256 of a dataset's content (images, labels, splits): the identity of a folder."""
    h = hashlib.sha256()
    for a in (ds.images, ds.labels.astype("<i8"), ds.splits.astype("<U16")):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def cached(key: str, build: Callable[[], FaceDataset], cache_dir: Path, source: str) -> FaceDataset:
    """``build()``, or the cached result stored under ``key`` by an earlier call.

    The entry is ``<cache_dir>/<key>-v<PARSER_VERSION>.npz``; the optional arrays of
    :class:`FaceDataset` are stored when present. A corrupt entry is ignored and rewritten.
    ``provenance`` gets ``source`` and ``cache`` ("hit" or "miss").
    """
    entry = cache_dir / f"{key}-v{PARSER_VERSION}.npz"
    if entry.exists():
        try:
            with np.load(entry, allow_pickle=False) as z:
                prov = json.loads(str(z["provenance"]))
                prov.update(source=source, cache="hit")
                extras = {k: z[k] for k in FaceDataset.OPTIONAL if k in z.files}
                return FaceDataset(z["images"], z["labels"], z["splits"], prov, **extras)
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry: fall through and parse again
    ds = build()
    ds.provenance.update(source=source)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp.npz")
    os.close(fd)
    extras = {k: getattr(ds, k) for k in FaceDataset.OPTIONAL if getattr(ds, k) is not None}
    try:
        np.savez(tmp, images=ds.images, labels=ds.labels, splits=ds.splits,
                 provenance=np.array(json.dumps(ds.provenance)), **extras)
        os.replace(tmp, entry)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    ds.provenance["cache"] = "miss"
    return ds


def stem(name: str) -> str:
    """A source's name without archive/CSV suffixes: ``fer2013.csv.gz`` → ``fer2013``."""
    for suffix in (".gz", ".tgz", ".zip", ".tar", ".csv"):
        name = name.removesuffix(suffix)
    return name or "dataset"
