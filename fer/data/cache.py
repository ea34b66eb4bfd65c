"""Content-hash keyed ``.npz`` cache of parsed datasets (parse a 300 MB CSV once)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from fer.data import FaceDataset

# Bump when a parser's output changes, so old cache entries are not reused.
PARSER_VERSION = 1


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_parse(path: Path, parse: Callable[[Path], FaceDataset], cache_dir: Path) -> FaceDataset:
    """``parse(path)``, or the cached result for a file with the same content hash.

    The cache entry is ``<cache_dir>/<sha256>-v<PARSER_VERSION>.npz`` (uncompressed, so loading
    is a memory copy). A corrupt cache entry is ignored and rewritten.
    """
    digest = file_sha256(path)
    entry = cache_dir / f"{digest}-v{PARSER_VERSION}.npz"
    if entry.exists():
        try:
            with np.load(entry, allow_pickle=False) as z:
                prov = json.loads(str(z["provenance"]))
                prov.update(source=str(path), cache="hit")
                return FaceDataset(z["images"], z["labels"], z["splits"], prov)
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry: fall through and parse again
    ds = parse(path)
    ds.provenance.update(sha256=digest, id=f"{_stem(path)}-{digest[:12]}", synthetic=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, images=ds.images, labels=ds.labels, splits=ds.splits,
                 provenance=np.array(json.dumps(ds.provenance)))
        os.replace(tmp, entry)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    ds.provenance["cache"] = "miss"
    return ds


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".zip", ".csv"):
        name = name.removesuffix(suffix)
    return name or "dataset"
