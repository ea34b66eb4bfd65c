"""Folders and archives (``.zip``, ``.tar``, ``.tar.gz``) as one listing of member files, and
plain/gzip file reading.

A :class:`Tree` lists the files under a folder or inside an archive by relative POSIX path
(``train/angry/Training_3908.jpg``), without junk: hidden files and folders (``.DS_Store``,
macOS ``._*`` resource forks), ``__MACOSX/``, ``Thumbs.db``, ``desktop.ini``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pyarrow as pa

from fer.errors import DataFormatError

JUNK_FILES = {"thumbs.db", "desktop.ini", "ehthumbs.db", ".ds_store", "icon\r"}
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
# Decompression-bomb guards (an upload of a few MB can unpack to terabytes): one unpacked file, or
# all of a tar, at most 1 GiB (Kaggle's fer2013.csv is 0.3 GB); at most 500,000 files in a folder
# or archive (FER2013 as images is 35,887).
MAX_UNPACKED_BYTES = 1 << 30
MAX_TREE_FILES = 500_000


def too_big(name: str) -> DataFormatError:
    """The error for a file or archive over :data:`MAX_UNPACKED_BYTES`."""
    limit = (f"{MAX_UNPACKED_BYTES / 2**30:g} GB" if MAX_UNPACKED_BYTES >= 2**30
             else f"{MAX_UNPACKED_BYTES / 2**20:g} MB")
    return DataFormatError(f"{name}: refused, it unpacks to more than {limit} "
                           f"(decompression-bomb guard; Kaggle's fer2013.csv is 0.3 GB)")


def too_many(name: str, n: int) -> DataFormatError:
    """The error for a folder or archive over :data:`MAX_TREE_FILES` files."""
    return DataFormatError(f"{name}: refused, it holds more than {MAX_TREE_FILES:,} files ({n:,}+; "
                           f"FER2013 as images is 35,887)")


def is_junk(rel: str) -> bool:
    """True for OS clutter: hidden files/folders, ``__MACOSX``, Thumbs.db, desktop.ini."""
    parts = PurePosixPath(rel).parts
    return (any(p.startswith(".") or p == "__MACOSX" for p in parts)
            or (bool(parts) and parts[-1].lower() in JUNK_FILES))


def read_magic(path: Path, n: int = 8) -> bytes:
    """The first ``n`` bytes of a file."""
    with open(path, "rb") as f:
        return f.read(n)


def read_file_bytes(path: Path, name: str | None = None) -> bytes:
    """The bytes of a file, gunzipped when it starts with the gzip magic.

    Raises DataFormatError naming the file for a truncated or corrupt gzip stream, or one that
    unpacks to more than :data:`MAX_UNPACKED_BYTES`.
    """
    name = name or path.name
    if read_magic(path, 2) == GZIP_MAGIC:
        try:
            with pa.input_stream(str(path), compression="gzip") as s:
                data = s.read(MAX_UNPACKED_BYTES + 1)
        except (OSError, pa.ArrowException) as e:
            raise DataFormatError(f"{name}: cannot decompress the gzip file (truncated or corrupt: {e})") from e
        if len(data) > MAX_UNPACKED_BYTES:
            raise too_big(name)
        return data
    return path.read_bytes()


def gunzip_bytes(data: bytes, name: str) -> bytes:
    """Gunzip an in-memory ``.gz`` member; DataFormatError naming it when corrupt or a bomb."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, MAX_UNPACKED_BYTES + 1)
    except zlib.error as e:
        raise DataFormatError(f"{name}: cannot decompress the gzip data (truncated or corrupt: {e})") from e
    if len(out) > MAX_UNPACKED_BYTES:
        raise too_big(name)
    if not d.eof:
        raise DataFormatError(f"{name}: cannot decompress the gzip data (truncated or corrupt: "
                              f"the stream ends early)")
    return out


class Tree:
    """Files under a folder or inside an archive: ``files``, ``read(rel)``, ``signature()``."""

    name: str            # display name, used in errors
    root_name: str = ""  # the folder's own name (a split name such as train counts), "" for archives
    files: list[str]     # sorted relative POSIX paths, junk removed
    junk: int = 0        # how many junk files were skipped

    def open(self, rel: str) -> BinaryIO:
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        """A member's bytes, gunzipped when its name ends in ``.gz``."""
        with self.open(rel) as f:
            data = f.read()
        return gunzip_bytes(data, self.display(rel)) if rel.lower().endswith(".gz") else data

    def head(self, rel: str, n: int = 1 << 16) -> bytes:
        """The first ``n`` bytes of a member (after gunzip for ``.gz``), to sniff its header."""
        with self.open(rel) as f:
            if not rel.lower().endswith(".gz"):
                return f.read(n)
            d = zlib.decompressobj(wbits=31)
            try:
                return d.decompress(f.read(1 << 16), n)
            except zlib.error as e:
                raise DataFormatError(f"{self.display(rel)}: cannot decompress the gzip data ({e})") from e

    def display(self, rel: str) -> str:
        """How errors name a member: ``folder/rel`` or ``archive.zip:rel``."""
        return f"{self.name}/{rel}"

    def signature(self) -> str:
        raise NotImplementedError

    def _keep(self, names: list[str]) -> None:
        self.files = sorted(n for n in names if not is_junk(n))
        self.junk = len(names) - len(self.files)


class DirTree(Tree):
    """A folder on disk; its signature hashes names, sizes and modification times (fast)."""

    def __init__(self, root: Path):
        self.root, self.name, self.root_name = root, root.name or str(root), root.name
        self._stat: dict[str, tuple[int, int]] = {}
        names = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not (d.startswith(".") or d == "__MACOSX")]
            rel_dir = os.path.relpath(dirpath, root)
            for f in filenames:
                rel = f if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{f}"
                names.append(rel)
            if len(names) > MAX_TREE_FILES:
                raise too_many(self.name, len(names))
        self._keep(names)

    def open(self, rel: str) -> BinaryIO:
        return open(self.root / rel, "rb")

    def signature(self) -> str:
        h = hashlib.sha256()
        for rel in self.files:
            st = os.stat(self.root / rel)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


class ZipTree(Tree):
    """A ``.zip`` archive; its signature is the archive's SHA-256."""

    def __init__(self, path: Path):
        self.path, self.name = path, path.name
        try:
            self.zf = zipfile.ZipFile(path)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, OSError) as e:
            raise DataFormatError(f"{path.name}: corrupt zip archive ({e})") from e
        if len(infos) > MAX_TREE_FILES:
            raise too_many(path.name, len(infos))
        self._keep([i.filename for i in infos if not i.is_dir()])

    def open(self, rel: str) -> BinaryIO:
        return _ZipMember(self.zf, rel, self.display(rel))

    def display(self, rel: str) -> str:
        return f"{self.name}:{rel}"

    def signature(self) -> str:
        from fer.data.cache import file_sha256

        return file_sha256(self.path)


class _ZipMember(io.BytesIO):
    """A zip member read whole (CRC checked), with a corrupt member named in the error."""

    def __init__(self, zf: zipfile.ZipFile, rel: str, display: str):
        # zipfile stops at the size the directory declares and then fails the CRC, so checking
        # the declared size bounds what is unpacked.
        if zf.getinfo(rel).file_size > MAX_UNPACKED_BYTES:
            raise too_big(display)
        try:
            super().__init__(zf.read(rel))
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise DataFormatError(f"{display}: corrupt member of the zip archive ({e})") from e


class TarTree(Tree):
    """A ``.tar`` / ``.tar.gz`` archive, read once sequentially (gzip cannot seek cheaply)."""

    def __init__(self, path: Path):
        self.path, self.name = path, path.name
        self._data: dict[str, bytes] = {}
        total = 0
        try:
            with tarfile.open(path, mode="r|*") as tf:
                for m in tf:
                    if m.isfile():
                        total += m.size
                        if total > MAX_UNPACKED_BYTES:
                            raise too_big(path.name)
                        if len(self._data) >= MAX_TREE_FILES:
                            raise too_many(path.name, len(self._data) + 1)
                        f = tf.extractfile(m)
                        self._data[m.name.removeprefix("./")] = f.read() if f else b""
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataFormatError(f"{path.name}: corrupt tar archive ({e})") from e
        self._keep(list(self._data))

    def open(self, rel: str) -> BinaryIO:
        return io.BytesIO(self._data[rel])

    def display(self, rel: str) -> str:
        return f"{self.name}:{rel}"

    def signature(self) -> str:
        from fer.data.cache import file_sha256

        return file_sha256(self.path)


def open_tree(path: Path) -> Tree | None:
    """A :class:`Tree` for a folder, zip or tar(.gz) archive; None for any other file."""
    if path.is_dir():
        return DirTree(path)
    magic = read_magic(path, 4)
    if magic == ZIP_MAGIC or (magic[:2] == b"PK" and zipfile.is_zipfile(path)):
        return ZipTree(path)
    if magic[:2] == GZIP_MAGIC or _ustar(path):
        try:
            is_tar = tarfile.is_tarfile(path)
        except (OSError, EOFError, zlib.error):
            is_tar = False  # a truncated .gz: read_file_bytes words the error
        if is_tar:
            return TarTree(path)
    return None


def _ustar(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(257)
        return f.read(5) == b"ustar"
