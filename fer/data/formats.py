"""What a path holds, told from content and structure, and the reader for it (with the cache).

| the path is | recognised by | read by |
| --- | --- | --- |
| a CSV (plain or ``.gz``) | its header line (:mod:`fer.data.kaggle`) | :func:`fer.data.kaggle.parse_csv_bytes` |
| FER+ ``fer2013new.csv`` | header ``Usage,Image name,neutral,…`` | joined to the FER2013 CSV beside it (:mod:`fer.data.ferplus`) |
| a folder, ``.zip``, ``.tar(.gz)`` | holding a FER2013-layout CSV | that CSV (+ FER+ votes when present) |
| | holding homework ``train.csv`` / ``test.csv`` | both, concatenated (train rows, then test rows) |
| | holding images in class folders | :func:`fer.data.folders.read_image_folder` |

File names never decide the format (``data.txt`` holding ``emotion,pixels,Usage`` is read as
fer2013.csv; a PNG renamed ``fer2013.csv`` is refused as not a CSV).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer.data import UNLABELLED_SPLIT, FaceDataset
from fer.data.archives import Tree, open_tree, read_file_bytes, read_magic
from fer.data.cache import (
    PARSER_VERSION,
    cached,
    combined_key,
    dataset_sha256,
    source_sha256,
    stem,
)
from fer.data.kaggle import check_text, csv_layout, header_names, is_ferplus_header
from fer.errors import DataFormatError

CSV_SUFFIXES = (".csv", ".csv.gz")
BESIDE_NAMES = ("fer2013.csv", "fer2013.csv.gz", "fer2013.zip", "icml_face_data.csv", "icml_face_data.csv.gz")


def load_path(path: Path, cache_dir: Path, unknown_classes: str = "refuse",
              ferplus: Path | None = None) -> FaceDataset:
    """Load any supported file, folder or archive at ``path`` (see the module table), cached.

    Raises DataFormatError naming the file, member, row or field when the source is unusable.
    """
    tree = open_tree(path)
    if tree is None:
        return _load_csv_file(path, cache_dir, ferplus)
    csvs = _classify_csvs(tree)
    fer = [f for f, kind in csvs.items() if kind in ("fer2013.csv", "icml_face_data.csv")]
    plus = [f for f, kind in csvs.items() if kind == "ferplus"]
    homework = [f for f, kind in csvs.items() if kind.startswith(("train.csv", "test.csv"))]
    if len(fer) > 1:
        raise DataFormatError(f"{tree.name}: holds {len(fer)} FER2013 CSVs ({', '.join(fer[:4])}); "
                              f"expected one (point at the file you mean)")
    if len(plus) > 1 or (ferplus is not None and plus):
        raise DataFormatError(f"{tree.name}: more than one FER+ vote file ({', '.join(plus)}); expected one")
    sig = tree.signature()
    if fer:
        key_parts = [sig, "csv", fer[0], *plus]
        votes = None
        if ferplus is not None:
            key_parts.append(source_sha256(ferplus, cache_dir))
            votes = (lambda: read_file_bytes(ferplus), ferplus.name)
        elif plus:
            votes = (lambda: tree.read(plus[0]), tree.display(plus[0]))

        def build() -> FaceDataset:
            ds = _parse_member(tree, fer[0])
            return _with_votes(ds, votes)
        return _finish(combined_key(*key_parts), build, cache_dir, str(path), tree.name,
                       suffix="-ferplus" if votes else "", content=None if tree.root_name == "" else "arrays")
    if ferplus is not None:
        raise DataFormatError(f"{tree.name}: FER+ votes need a FER2013 CSV (fer2013.csv), none found here")
    if homework:
        return _finish(combined_key(sig, "homework", *homework), lambda: _homework(tree, homework),
                       cache_dir, str(path), tree.name, content=None if tree.root_name == "" else "arrays")
    if plus:
        raise DataFormatError(f"{tree.display(plus[0])}: FER+ votes hold no pixels; put the FER2013 CSV "
                              f"(fer2013.csv) beside it")
    from fer.data.folders import read_image_folder

    return _finish(combined_key(sig, "images", unknown_classes), lambda: read_image_folder(tree, unknown_classes),
                   cache_dir, str(path), tree.name, content=None if tree.root_name == "" else "arrays")


def _load_csv_file(path: Path, cache_dir: Path, ferplus: Path | None) -> FaceDataset:
    """A single CSV file (plain or gzip): any layout, or FER+ votes with the FER2013 CSV beside."""
    head = _file_head(path)
    if not head.strip():
        raise DataFormatError(f"{path.name}: the file is empty (expected a header such as emotion,pixels,Usage)")
    check_text(head, path.name)
    names = header_names(head.split(b"\n", 1)[0])
    if is_ferplus_header(names):
        if ferplus is not None:
            raise DataFormatError(f"{path.name}: is a FER+ vote file; pass the FER2013 CSV as the source")
        return load_path(_beside(path), cache_dir, ferplus=path)
    csv_layout(names, path.name, head.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip())
    digest = source_sha256(path, cache_dir)
    from fer.data import kaggle

    if ferplus is None:
        return _finish(digest, lambda: kaggle.read_fer2013_csv(path), cache_dir, str(path), path.name,
                       sha=digest)
    plus_digest = source_sha256(ferplus, cache_dir)
    combined = combined_key(digest, plus_digest)

    def build() -> FaceDataset:
        return _with_votes(kaggle.read_fer2013_csv(path), (lambda: read_file_bytes(ferplus), ferplus.name))
    ds = _finish(combined, build, cache_dir, str(path), path.name, sha=combined, suffix="-ferplus")
    ds.provenance.setdefault("ferplus", {}).update(sha256=plus_digest)
    return ds


def _file_head(path: Path, n: int = 1 << 16) -> bytes:
    if read_magic(path, 2) == b"\x1f\x8b":
        import zlib

        with open(path, "rb") as f:
            try:
                return zlib.decompressobj(wbits=31).decompress(f.read(1 << 16), n)
            except zlib.error as e:
                raise DataFormatError(f"{path.name}: cannot decompress the gzip file ({e})") from e
    with open(path, "rb") as f:
        return f.read(n)


def _beside(ferplus_path: Path) -> Path:
    """The FER2013 CSV in the same folder as a FER+ file (by content among the usual names)."""
    for n in BESIDE_NAMES:
        p = ferplus_path.with_name(n)
        if p.exists():
            return p
    raise DataFormatError(f"{ferplus_path.name}: FER+ votes hold no pixels and no FER2013 CSV lies beside it "
                          f"(looked for {', '.join(BESIDE_NAMES)}); put fer2013.csv in the same folder, or "
                          f"load the FER2013 CSV with ferplus={ferplus_path.name!r}")


def _classify_csvs(tree: Tree) -> dict[str, str]:
    """CSV members of a tree → their layout's format name, ``ferplus``, or skipped when unknown."""
    out = {}
    for f in tree.files:
        if not f.lower().endswith(CSV_SUFFIXES):
            continue
        head = tree.head(f)
        try:
            check_text(head, tree.display(f))
        except DataFormatError:
            continue
        names = header_names(head.split(b"\n", 1)[0])
        if is_ferplus_header(names):
            out[f] = "ferplus"
            continue
        try:
            out[f] = csv_layout(names, f).format
        except DataFormatError:
            continue  # e.g. FER+'s per-folder label.csv: not a dataset CSV
    return out


def _parse_member(tree: Tree, rel: str) -> FaceDataset:
    from fer.data.kaggle import parse_csv_bytes

    data = tree.read(rel)
    if not data.strip():
        raise DataFormatError(f"{tree.display(rel)}: the file is empty (expected a header such as emotion,pixels,Usage)")
    return parse_csv_bytes(data, tree.display(rel))


def _with_votes(ds: FaceDataset, votes) -> FaceDataset:
    if votes is None:
        return ds
    from fer.data.ferplus import join_ferplus

    read, name = votes
    return join_ferplus(ds, read(), name)


def _homework(tree: Tree, members: list[str]) -> FaceDataset:
    """Homework train.csv and/or test.csv of one folder, train rows first."""
    pairs = [(m, _parse_member(tree, m)) for m in members]
    kinds = [p.provenance["format"] for _, p in pairs]
    if len(set(kinds)) != len(kinds):
        raise DataFormatError(f"{tree.name}: holds several CSVs of the same layout ({', '.join(members)}); "
                              f"expected at most one train.csv (label,feature) and one test.csv (id,feature)")
    pairs.sort(key=lambda mp: mp[1].provenance["format"].startswith("test"))
    parts = [p for _, p in pairs]
    ds = FaceDataset(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                     np.concatenate([p.splits for p in parts]).astype("<U12"),
                     dict(format=" + ".join(p.provenance["format"] for p in parts),
                          rows=sum(len(p) for p in parts), synthetic=False, members=[m for m, _ in pairs]),
                     row_ids=np.concatenate([p.row_ids for p in parts]))
    return ds


def _finish(key: str, build, cache_dir: Path, source: str, name: str, sha: str | None = None,
            suffix: str = "", content: str | None = None) -> FaceDataset:
    """Cache ``build`` under ``key``; set sha256 (given, or of the arrays for folders) and id."""
    def build_and_name() -> FaceDataset:
        ds = build()
        digest = sha or (dataset_sha256(ds) if content == "arrays" else key)
        ds.provenance.update(sha256=digest, id=f"{stem(name)}{suffix}-{digest[:12]}", synthetic=False,
                             parser_version=PARSER_VERSION)
        if (ds.splits == UNLABELLED_SPLIT).any():
            ds.provenance["unlabelled_rows"] = int((ds.splits == UNLABELLED_SPLIT).sum())
        return ds
    return cached(key, build_and_name, cache_dir, source)
