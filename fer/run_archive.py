"""Runs as ``.zip`` archives: :func:`zip_run` packs a run to hand on, :func:`import_run` unpacks
one a user hands in, validated in full because the archive may come from anyone.

An archive holds a run folder's files, at its top or inside one top folder (``my-run/…``):
```
config.json                  required: a TrainConfig (an unknown key or wrong type is refused)
members/mNN.safetensors      weights of member NN (NN < the config's members), safetensors only
predictions/<split>.npz      probs (M, N, 7), members (M,), labels (N,), indices (N,) [+ (M, N) masks]
metrics.jsonl                optional: one JSON object per line with integer member and epoch
```
Left out, never unpacked: ``status.json`` (written anew), resume state
``members/mNN.last.safetensors``, ``worker.log``, ``worker.lock``, ``stop.request``,
``predictions/.lock`` and OS clutter (``__MACOSX/``, ``.DS_Store``). Anything else is refused by name.

Hostile archives (see the warnings of https://docs.python.org/3/library/zipfile.html, "Decompression
pitfalls"): nothing is ever unpickled (weights go through :func:`fer.weights.load_model`, npz
through ``np.load(allow_pickle=False)``, a pickle or ``torch.save`` file is refused by its
content, whatever its name); names with ``..``, absolute names, backslashes, symbolic links,
duplicates and encrypted members are refused; at most :data:`MAX_FILES` members and
:data:`MAX_BYTES` unpacked, checked from the zip's directory and again, byte by byte, while
unpacking (a directory can lie). The run is unpacked into a hidden temporary folder inside the
runs root, validated, and only then renamed into place: a refused import leaves nothing behind.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from fer.data.archives import is_junk
from fer.errors import CheckpointError, RunDirError
from fer.runs import Run, atomic_write_json, new_run_dir, user_runs_root
from fer.training import TrainConfig
from fer.weights import load_model, pickle_kind

MAX_FILES = 512                    # a 100-member run with resume state and 4 splits holds ~210
MAX_BYTES = 200 * 1024 * 1024      # unpacked; 25 seed_cnn members + predictions take ~30 MB
MAX_CONFIG_BYTES = 64 * 1024
_CHUNK = 1 << 20
_WEIGHTS = re.compile(r"members/m(\d{2,3})\.safetensors")
_PREDICTIONS = re.compile(r"predictions/([a-z][a-z0-9_]{0,31})\.npz")
_LEFT_OUT = re.compile(r"status\.json|worker\.log|worker\.lock|stop\.request|predictions/\.lock"
                       r"|members/m\d{2,3}\.last\.safetensors")
_METRIC_NUMBERS = ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")
_PICKLE_NAMES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")
_S_IFMT, _S_IFLNK = 0o170000, 0o120000
LAYOUT = "config.json, members/m00.safetensors …, predictions/<split>.npz, metrics.jsonl"


def zip_run(run_dir: str | os.PathLike) -> bytes:
    """A run as ``.zip`` bytes in the layout :func:`import_run` reads, inside a folder named
    after the run: config.json, metrics.jsonl, members/mNN.safetensors, predictions/*.npz (no
    resume state, status, log or lock files). Deflate-compressed.

    Raises RunDirError when ``run_dir`` has no config.json or a file cannot be read.
    """
    run = Run(Path(run_dir))
    run.config()  # raises RunDirError when it is not a run
    weights = [p for p in (run.path / "members").glob("m*.safetensors") if _WEIGHTS.fullmatch(f"members/{p.name}")]
    files = [run.path / "config.json", run.path / "metrics.jsonl", *sorted(weights),
             *sorted((run.path / "predictions").glob("*.npz"))]
    buf = io.BytesIO()
    try:
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                if p.is_file():
                    zf.write(p, f"{run.id}/{p.relative_to(run.path).as_posix()}")
    except OSError as e:
        raise RunDirError(f"{run.path}: cannot pack the run ({e.strerror or e})") from e
    return buf.getvalue()


def import_run(src: bytes | str | os.PathLike, root: str | os.PathLike | None = None,
               name: str | None = None) -> Run:
    """Validate a ``.zip`` of a run and unpack it as a new run under ``root``.

    Args:
        src: the archive's bytes (e.g. an upload) or its path.
        root: the runs root to import into (default :func:`fer.runs.user_runs_root`).
        name: how errors name the archive and what the new run is called after (default: the
            path's name, or ``run.zip``).
    Returns: the new :class:`fer.runs.Run`, ``<root>/<YYYYmmdd-HHMMSS>-imported-<name>``; its
        status is ``done`` when every member of the config has finished, else ``stopped``
        (Resume trains the missing members).
    Raises: RunDirError for a file that is not a zip (a pickle / ``torch.save`` file is refused
        as such), unsafe or unexpected names, too many or too large members, missing files, bad
        predictions or metrics; ConfigError for a bad config.json; CheckpointError naming the
        weights file that does not load into the config's model. Nothing is left in ``root``
        after an error.
    """
    data, label = _read_source(src, name)
    if (kind := pickle_kind(data)) is not None:
        raise RunDirError(f"{label}: refused: this is {kind}, not a .zip of a run folder. Pickle "
                          f"files are refused for safety: loading one can run any code")
    if data[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise RunDirError(f"{label}: not a .zip archive (expected a zipped run folder: {LAYOUT})")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise RunDirError(f"{label}: corrupt zip archive ({e})") from e
    with zf:
        plan = _plan(zf, label)
        cfg, cfg_json = _config(zf, plan.pop("config.json"), label)
        root = Path(root) if root else user_runs_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
        except OSError as e:
            raise RunDirError(f"{root}: cannot create a run folder ({e.strerror or e})") from e
        final = None
        try:
            _unpack(zf, plan, tmp, label)
            finished = _validate(tmp, cfg, label)
            missing = [m for m in range(cfg.members) if m not in finished]
            status = {"state": "stopped" if missing else "done", "members": cfg.members,
                      "epochs": cfg.epochs, "imported_from": label, "imported": time.time()}
            if missing:
                status.update(member=missing[0], epoch=0, batch=0)
            atomic_write_json(tmp / "status.json", status)
            atomic_write_json(tmp / "config.json", cfg_json)  # last: only now is it a run
            final = new_run_dir(root, f"imported-{_stem(label)}")
            os.replace(tmp, final)  # onto the empty folder new_run_dir reserved: atomic
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if final is not None and final.is_dir() and not any(final.iterdir()):
                final.rmdir()
            raise
    return Run(final)


def _read_source(src, name: str | None) -> tuple[bytes, str]:
    """(bytes, label) of an archive given as bytes or a path; too-large files refused unread."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, label = bytes(src), name or "run.zip"
    else:
        path = Path(src)
        label = name or path.name
        try:
            if path.stat().st_size > MAX_BYTES:
                raise RunDirError(f"{label}: the archive is {path.stat().st_size / 2**20:.0f} MB, more "
                                  f"than the limit of {MAX_BYTES / 2**20:.0f} MB")
            data = path.read_bytes()
        except OSError as e:
            raise RunDirError(f"{label}: cannot read ({e.strerror or e})") from e
    if len(data) > MAX_BYTES:
        raise RunDirError(f"{label}: the archive is {len(data) / 2**20:.0f} MB, more than the limit "
                          f"of {MAX_BYTES / 2**20:.0f} MB")
    if not data:
        raise RunDirError(f"{label}: the file is empty (expected a zipped run folder: {LAYOUT})")
    return data, label


def _stem(label: str) -> str:
    """A folder-safe short name from an archive's name (a leading run timestamp dropped)."""
    stem = re.sub(r"\.zip$", "", Path(label).name, flags=re.IGNORECASE)
    stem = re.sub(r"^\d{8}-\d{6}-", "", stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip(".-")[:48] or "run"


def _plan(zf: zipfile.ZipFile, label: str) -> dict[str, zipfile.ZipInfo]:
    """The members to unpack by their path in the run folder; every name and size checked."""
    infos = zf.infolist()
    if len(infos) > MAX_FILES:
        raise RunDirError(f"{label}: holds {len(infos):,} files, more than the limit of {MAX_FILES} "
                          f"(a run folder holds {LAYOUT})")
    declared = sum(i.file_size for i in infos)
    if declared > MAX_BYTES:
        raise RunDirError(f"{label}: would unpack to {declared / 2**20:,.0f} MB, more than the limit of "
                          f"{MAX_BYTES / 2**20:.0f} MB (zip-bomb guard)")
    names: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        raw = info.filename
        if "\\" in raw:
            raise RunDirError(f"{label}: refused: member {raw!r} has a backslash in its name")
        if raw.startswith("/") or re.match(r"[A-Za-z]:", raw):
            raise RunDirError(f"{label}: refused: member {raw!r} has an absolute path")
        parts = PurePosixPath(raw).parts
        if ".." in parts:
            raise RunDirError(f"{label}: refused: member {raw!r} points outside the run folder (..)")
        if (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
            raise RunDirError(f"{label}: refused: member {raw!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise RunDirError(f"{label}: refused: member {raw!r} is encrypted")
        if info.is_dir() or is_junk(raw):
            continue
        rel = "/".join(parts)
        if rel in names:
            raise RunDirError(f"{label}: refused: {rel} appears twice in the archive")
        names[rel] = info
    top = _top_folder(names, label)
    plan: dict[str, zipfile.ZipInfo] = {}
    for rel, info in names.items():
        rel = rel[len(top):]
        if rel in ("config.json", "metrics.jsonl") or _WEIGHTS.fullmatch(rel) or _PREDICTIONS.fullmatch(rel):
            plan[rel] = info
        elif _LEFT_OUT.fullmatch(rel):
            continue
        elif rel.lower().endswith(_PICKLE_NAMES):
            raise RunDirError(f"{label}: refused: {rel} looks like a pickle/PyTorch file; pickle is "
                              f"refused for safety (loading one can run any code): weights must be "
                              f"members/mNN.safetensors")
        else:
            raise RunDirError(f"{label}: unexpected file {rel}; a run archive holds only {LAYOUT}")
    return plan


def _top_folder(names: dict[str, zipfile.ZipInfo], label: str) -> str:
    """``""`` when config.json is at the archive's top, ``"folder/"`` when all lies in one folder."""
    if "config.json" in names:
        return ""
    tops = {rel.split("/", 1)[0] for rel in names}
    if len(tops) == 1 and f"{next(iter(tops))}/config.json" in names:
        return f"{next(iter(tops))}/"
    found = ", ".join(sorted(names)[:5]) or "no files"
    raise RunDirError(f"{label}: no config.json at the top of the archive or in one top folder "
                      f"(found {found}); expected a zipped run folder: {LAYOUT}")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, out, budget: int) -> int:
    """Copy one member to ``out`` in chunks, counting: never more than its declared size or
    ``budget`` bytes. Returns the bytes written. Raises RunDirError (bomb, corrupt member)."""
    n = 0
    try:
        with zf.open(info) as f:
            while chunk := f.read(_CHUNK):
                n += len(chunk)
                if n > info.file_size:
                    raise RunDirError(f"{label}: {info.filename} unpacks to more than the "
                                      f"{info.file_size:,} bytes its directory entry declares (zip-bomb guard)")
                if n > budget:
                    raise RunDirError(f"{label}: unpacks to more than the limit of "
                                      f"{MAX_BYTES / 2**20:.0f} MB (zip-bomb guard)")
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise RunDirError(f"{label}: {info.filename} is a corrupt or unsupported zip member ({e})") from e
    return n


def _config(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> tuple[TrainConfig, dict]:
    """The archive's config.json as a TrainConfig (ConfigError names an unknown key) and as read."""
    where = f"{label}: config.json"
    if info.file_size > MAX_CONFIG_BYTES:
        raise RunDirError(f"{where} is {info.file_size:,} bytes, more than the limit of {MAX_CONFIG_BYTES:,}")
    buf = io.BytesIO()
    _read_member(zf, info, label, buf, MAX_CONFIG_BYTES)
    try:
        d = json.loads(buf.getvalue().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RunDirError(f"{where} is not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise RunDirError(f"{where} holds a JSON {type(d).__name__}, expected an object of config keys")
    return TrainConfig.from_dict(d, where=where), d


def _unpack(zf: zipfile.ZipFile, plan: dict[str, zipfile.ZipInfo], dest: Path, label: str) -> None:
    """Write the planned members under ``dest`` (new files only, inside ``dest``), byte-counted."""
    budget = MAX_BYTES
    for rel, info in sorted(plan.items()):
        target = dest / rel
        if not target.resolve().is_relative_to(dest.resolve()):  # cannot happen after _plan; belt and braces
            raise RunDirError(f"{label}: refused: member {info.filename!r} points outside the run folder")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:
                budget -= _read_member(zf, info, label, out, budget)
        except OSError as e:
            raise RunDirError(f"{dest.parent}: cannot unpack {rel} ({e.strerror or e})") from e


def _validate(run_dir: Path, cfg: TrainConfig, label: str) -> list[int]:
    """Check the unpacked weights, predictions and metrics against the config; the finished
    members (those with predictions), ascending."""
    weights = {}
    for p in sorted((run_dir / "members").glob("*.safetensors")):
        m = int(_WEIGHTS.fullmatch(f"members/{p.name}").group(1))
        if m >= cfg.members:
            raise RunDirError(f"{label}: members/{p.name} is member {m}, but config.json has "
                              f"{cfg.members} member(s) (0..{cfg.members - 1})")
        try:
            model = load_model(p, cfg.model)
        except CheckpointError as e:
            raise CheckpointError(f"{label}: members/{e}") from e
        del model
        weights[m] = p
    finished: list[int] | None = None
    for p in sorted((run_dir / "predictions").glob("*.npz")):
        members = _check_predictions(p, cfg, f"{label}: predictions/{p.name}")
        if finished is not None and members != finished:
            raise RunDirError(f"{label}: predictions/{p.name} holds members {members}, the other "
                              f"splits {finished}; every split must hold the same members")
        finished = members
    finished = finished or []
    if not finished:
        raise RunDirError(f"{label}: holds no finished member (members/mNN.safetensors with its "
                          f"predictions/<split>.npz); nothing to import")
    if lacking := [m for m in finished if m not in weights]:
        raise RunDirError(f"{label}: predictions name member {lacking[0]}, but the archive has no "
                          f"members/m{lacking[0]:02d}.safetensors")
    _check_metrics(run_dir / "metrics.jsonl", cfg, f"{label}: metrics.jsonl")
    return finished


def _check_predictions(path: Path, cfg: TrainConfig, where: str) -> list[int]:
    """Members of one predictions npz after checking its arrays; never unpickles."""
    try:
        with zipfile.ZipFile(path) as inner:  # an npz is a zip: no bomb inside either
            size = sum(i.file_size for i in inner.infolist())
            if size > MAX_BYTES or len(inner.infolist()) > 64:
                raise RunDirError(f"{where}: unpacks to {size / 2**20:,.0f} MB in {len(inner.infolist())} "
                                  f"arrays, more than the limit (zip-bomb guard)")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        why = ("holds Python objects, which only pickle can load; refused for safety"
               if "allow_pickle" in str(e) else f"unreadable ({e})")
        raise RunDirError(f"{where}: {why}") from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise RunDirError(f"{where}: not a readable .npz file ({e})") from e
    for key in ("probs", "members", "labels", "indices"):
        if key not in arrays:
            raise RunDirError(f"{where}: no array {key!r} (expected probs, members, labels, indices)")
    probs, members, labels, indices = (arrays[k] for k in ("probs", "members", "labels", "indices"))
    if probs.dtype.kind != "f" or probs.ndim != 3 or probs.shape[2] != 7:
        raise RunDirError(f"{where}: probs is {probs.dtype} {probs.shape}, expected float (M, N, 7)")
    m_count, n = probs.shape[:2]
    for key, arr in (("members", members), ("labels", labels), ("indices", indices)):
        want = (m_count,) if key == "members" else (n,)
        if arr.dtype.kind not in "iu" or arr.shape != want:
            raise RunDirError(f"{where}: {key} is {arr.dtype} {arr.shape}, expected integers {want}")
    for key, arr in arrays.items():
        if key not in ("probs", "members", "labels", "indices") and (
                arr.dtype.kind not in "biuf" or arr.shape[:2] != (m_count, n)):
            raise RunDirError(f"{where}: {key} is {arr.dtype} {arr.shape}, expected numbers ({m_count}, {n}, …)")
    if not np.isfinite(probs).all() or probs.min(initial=0) < 0 or probs.max(initial=0) > 1:
        raise RunDirError(f"{where}: probs must be finite probabilities in 0..1")
    ids = [int(m) for m in members]
    if len(set(ids)) != len(ids) or any(not 0 <= m < cfg.members for m in ids):
        raise RunDirError(f"{where}: members {ids} must be distinct numbers 0..{cfg.members - 1} "
                          f"(config.json has {cfg.members} member(s))")
    if labels.size and (labels.min() < -1 or labels.max() > 6):
        raise RunDirError(f"{where}: labels must be class numbers 0..6 (or -1 for unlabelled)")
    if indices.size and indices.min() < 0:
        raise RunDirError(f"{where}: indices must be dataset rows ≥ 0")
    return sorted(ids)


def _check_metrics(path: Path, cfg: TrainConfig, where: str) -> None:
    """Every line of metrics.jsonl: a JSON object with integer member < members and epoch ≥ 1,
    and the numbers the Train page draws (losses, accuracies, seconds)."""
    if not path.exists():
        return
    for i, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise RunDirError(f"{where} line {i}: not JSON ({e})") from e
        if not isinstance(rec, dict):
            raise RunDirError(f"{where} line {i}: a JSON {type(rec).__name__}, expected an object")
        for key in ("member", "epoch", *_METRIC_NUMBERS):
            v = rec.get(key)
            integer = key in ("member", "epoch")
            if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
                raise RunDirError(f"{where} line {i}: {key} is {v!r}, expected "
                                  f"{'an integer' if integer else 'a number'}")
        if not 0 <= rec["member"] < cfg.members or rec["epoch"] < 1:
            raise RunDirError(f"{where} line {i}: member {rec['member']}, epoch {rec['epoch']}; expected "
                              f"member 0..{cfg.members - 1} and epoch ≥ 1")
