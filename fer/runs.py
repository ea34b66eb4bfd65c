"""Run directories: the one contract between the training worker and the pages.

```
<run>/config.json              TrainConfig as JSON (fer.training.TrainConfig)
<run>/metrics.jsonl            one JSON line per (member, epoch)
<run>/members/m00.safetensors  best-validation weights of member 0 (no pickle)
<run>/members/m00.last.safetensors  resume state: weights, optimiser, position (no pickle)
<run>/predictions/<split>.npz  probs float (M, N, 7), members (M,), labels (N,), indices (N,)
<run>/status.json              state, pid, heartbeat (unix seconds), progress, error
<run>/stop.request             present while a Stop is pending
<run>/worker.log               the worker's stdout/stderr
```
Every write is atomic (temporary file in the same folder, then ``os.replace``), so a reader or a
killed writer never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer.errors import RunDirError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ROOT = REPO_ROOT / "checkpoints"
HEARTBEAT_TIMEOUT_S = 45.0


def user_runs_root() -> Path:
    """Where new runs go: ``$FER_RUNS`` or ``<repo>/runs``."""
    return Path(os.environ.get("FER_RUNS", REPO_ROOT / "runs"))


# ---------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename. Raises RunDirError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        kept = "; the previous version of the file is left unchanged" if os.path.exists(path) else ""
        raise RunDirError(f"{path}: cannot write ({e.strerror or e}){kept}") from e


def atomic_write_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def append_jsonl(path: Path, obj) -> None:
    """Append one JSON line (flushed and fsynced, so a killed worker loses at most this line)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RunDirError(f"{path}: cannot append ({e.strerror or e})") from e


def read_json(path: Path, default=None):
    """Parsed JSON of ``path``; ``default`` when the file is missing. Raises RunDirError if corrupt."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable JSON ({e})") from e


def read_jsonl(path: Path) -> list[dict]:
    """All complete JSON lines of ``path`` (a torn last line, left by a kill, is skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# ---------------------------------------------------------------- runs
@dataclass
class Run:
    """A run directory on disk (read side). ``shipped`` runs live under ``checkpoints/``."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def shipped(self) -> bool:
        return self.path.resolve().parent == SHIPPED_ROOT.resolve()

    def config(self) -> dict:
        cfg = read_json(self.path / "config.json")
        if cfg is None:
            raise RunDirError(f"{self.path}: no config.json, not a run directory")
        return cfg

    def metrics(self) -> list[dict]:
        """Per-(member, epoch) records; a re-done epoch replaces the earlier line."""
        seen: dict[tuple, dict] = {}
        for rec in read_jsonl(self.path / "metrics.jsonl"):
            if "member" in rec and "epoch" in rec:
                seen[(rec["member"], rec["epoch"])] = rec
        return [seen[k] for k in sorted(seen)]

    def status(self) -> dict:
        """status.json plus ``state`` corrected for a dead worker: running → interrupted."""
        st = read_json(self.path / "status.json", default={"state": "new"}) or {"state": "new"}
        if st.get("state") == "running" and not worker_alive(st):
            st = dict(st, state="interrupted")
        return st

    def weights_path(self, member: int) -> Path:
        return self.path / "members" / f"m{member:02d}.safetensors"

    def finished_members(self) -> list[int]:
        """Members whose predictions are stored, ascending."""
        z = self.predictions_file("public_test")
        if z is None:
            for split in ("private_test", "train", "validation"):
                z = self.predictions_file(split)
                if z is not None:
                    break
        if z is None:
            return []
        with np.load(z, allow_pickle=False) as f:
            return [int(m) for m in f["members"]]

    def predictions_file(self, split: str) -> Path | None:
        p = self.path / "predictions" / f"{split}.npz"
        return p if p.exists() else None

    def predictions(self, split: str) -> dict[str, np.ndarray]:
        """``probs`` float32 (M, N, 7), ``members`` int64 (M,), ``labels`` int64 (N,),
        ``indices`` int64 (N,) dataset rows. Raises RunDirError when the split has none."""
        p = self.predictions_file(split)
        if p is None:
            raise RunDirError(f"{self.path}: no predictions for split {split!r} yet")
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise RunDirError(f"{p}: unreadable predictions ({e})") from e

    def request_stop(self) -> None:
        """Ask the worker to finish its current batch, save and stop."""
        atomic_write_bytes(self.path / "stop.request", b"stop\n")

    def stop_requested(self) -> bool:
        """True while a Stop is pending: requested, not yet acted on by the worker."""
        return (self.path / "stop.request").exists()


@contextlib.contextmanager
def _predictions_lock(run: Run):
    """Exclusive ``flock`` on ``<run>/predictions/.lock`` around a read-modify-write of an npz."""
    folder = run.path / "predictions"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunDirError(f"{folder}: cannot write predictions ({e.strerror or e})") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_member_predictions(run: Run, split: str, member: int, stacks: dict[str, np.ndarray],
                           labels: np.ndarray, indices: np.ndarray) -> None:
    """Put one member's arrays into ``<run>/predictions/<split>.npz`` (replacing its old ones).

    ``stacks``: per-member arrays, e.g. ``probs`` float32 (N, 7) and, for train, ``validation``
    and ``trained`` bool (N,); stored stacked (M, ...) in ascending member order with ``members``
    int64 (M,), ``labels`` int64 (N,) and ``indices`` int64 (N,). Safe against a concurrent
    writer (a file lock) and a kill (atomic rename). Raises RunDirError when ``indices`` differ
    from the file's (another dataset) or the folder is not writable.
    """
    path = run.path / "predictions" / f"{split}.npz"
    with _predictions_lock(run):
        old = run.predictions(split) if path.exists() else {}
        if old and not np.array_equal(old["indices"], indices):
            raise RunDirError(f"{path}: member {member}'s predictions cover other faces than the "
                              f"stored ones ({len(indices)} vs {len(old['indices'])}); another dataset?")
        members = [int(m) for m in old.get("members", [])]
        arrays = {}
        for key, value in stacks.items():
            prev = old.get(key)
            if prev is None or len(prev) != len(members):
                prev = np.zeros((len(members), *value.shape), value.dtype)
            if member in members:
                prev = prev.copy()
                prev[members.index(member)] = value
                arrays[key] = prev
            else:
                arrays[key] = np.concatenate([prev, value[None]])
        if member not in members:
            members.append(member)
        order = np.argsort(members)
        out = {k: v[order] for k, v in arrays.items()}
        out["probs"] = out["probs"].astype(np.float32)
        buf = io.BytesIO()
        np.savez(buf, **out, members=np.asarray(members)[order].astype(np.int64),
                 labels=np.asarray(labels).astype(np.int64), indices=np.asarray(indices).astype(np.int64))
        atomic_write_bytes(path, buf.getvalue())


# Config keys that may differ between runs whose members can be merged: a member is defined by
# the rest of the config and its seed.
_MERGE_FREE_KEYS = {"base_seed", "members", "created"}


def _same_member(src: Run, j: int, dst: Run, m: int) -> bool:
    """True when src member ``j`` and dst member ``m`` have identical stored predictions."""
    for split in ("public_test", "private_test", "train"):
        if src.predictions_file(split) and dst.predictions_file(split):
            a, b = src.predictions(split), dst.predictions(split)
            pa = a["probs"][[int(x) for x in a["members"]].index(j)]
            pb = b["probs"][[int(x) for x in b["members"]].index(m)]
            return pa.shape == pb.shape and bool(np.array_equal(pa, pb))
    return False


def merge_members(src_dir: Path, dst_dir: Path) -> list[int]:
    """Copy the finished members of run ``src_dir`` into run ``dst_dir``; returns their numbers
    in ``dst_dir`` (ascending).

    Members are defined by their seed, so two workers (two processes, two laptops, a class
    where each student trains a few seeds) can train disjoint seeds of one ensemble with
    ``--seed`` and merge them: source member j (seed ``src.base_seed + j``) becomes member
    ``seed - dst.base_seed``. Weights, metrics and predictions are copied; predictions last, so
    a kill mid-merge leaves the member unfinished rather than half there.

    A member merged before (identical stored predictions) is skipped, so merging again after the
    source has finished more members adds just those.
    Raises ConfigError when a config.json is not a valid config, RunDirError when the configs
    differ in anything but seed/members (naming the key),
    a seed falls outside ``dst``'s members, ``dst`` already has a different member with that
    seed, or ``dst``'s worker is training it right now.
    """
    from fer.weights import load_tensors, save_tensors

    from fer.training import TrainConfig  # here: fer.training imports this module

    src, dst = Run(Path(src_dir)), Run(Path(dst_dir))
    # Through TrainConfig, so a key a newer version added (at its default) is no difference.
    cs, cd = (TrainConfig.from_dict(r.config(), where=str(r.path / "config.json")).to_dict()
              for r in (src, dst))
    for key in sorted((set(cs) | set(cd)) - _MERGE_FREE_KEYS):
        a, b = cs[key], cd[key]
        if a != b:
            raise RunDirError(f"cannot merge {src.path} into {dst.path}: config {key!r} differs "
                              f"({a!r} vs {b!r}); members of one ensemble share everything but the seed")
    have, st = set(dst.finished_members()), dst.status()
    plan = []
    for j in src.finished_members():
        seed = int(cs["base_seed"]) + j
        m = seed - int(cd["base_seed"])
        if not 0 <= m < int(cd["members"]):
            raise RunDirError(f"{src.path} member {j} has seed {seed}; {dst.path} has seeds "
                              f"{cd['base_seed']}..{int(cd['base_seed']) + int(cd['members']) - 1}")
        if m in have:
            if _same_member(src, j, dst, m):
                continue  # merged before: merging again is a no-op
            raise RunDirError(f"{dst.path} already has a different member {m} (seed {seed})")
        if st.get("state") == "running" and st.get("member") == m:
            raise RunDirError(f"{dst.path}: its worker is training member {m} (seed {seed}) right now")
        plan.append((j, m))
    splits = [p.stem for p in sorted((src.path / "predictions").glob("*.npz"))]
    for j, m in plan:
        tensors, meta = load_tensors(src.weights_path(j))
        save_tensors(dst.weights_path(m), tensors, dict(meta, member=m))
        for rec in src.metrics():
            if rec["member"] == j:
                append_jsonl(dst.path / "metrics.jsonl", dict(rec, member=m))
        for split in splits:
            z = src.predictions(split)
            i = [int(x) for x in z["members"]].index(j)
            stacks = {k: z[k][i] for k in z if k not in ("members", "labels", "indices")}
            add_member_predictions(dst, split, m, stacks, z["labels"], z["indices"])
    return [m for _, m in plan]


def list_runs(roots: list[Path] | None = None) -> list[Run]:
    """Runs under ``roots`` (default: user runs, then shipped), newest first within each root."""
    roots = roots if roots is not None else [user_runs_root(), SHIPPED_ROOT]
    out: list[Run] = []
    for root in roots:
        if not Path(root).is_dir():
            continue
        found = [Run(p) for p in Path(root).iterdir() if (p / "config.json").exists()]
        found.sort(key=lambda r: (r.path / "config.json").stat().st_mtime, reverse=True)
        out.extend(found)
    return out


def new_run_dir(root: Path | None = None, name: str = "run") -> Path:
    """A fresh, unique run directory ``<root>/<YYYYmmdd-HHMMSS>-<name>`` (created)."""
    root = Path(root) if root else user_runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        p = root / (f"{stamp}-{name}" if i == 0 else f"{stamp}-{name}-{i}")
        try:
            p.mkdir(parents=True, exist_ok=False)
            return p
        except FileExistsError:
            continue
        except OSError as e:
            raise RunDirError(f"{root}: cannot create a run directory ({e.strerror or e})") from e
    raise RunDirError(f"{root}: too many runs named {stamp}-{name}")


# ---------------------------------------------------------------- worker process
def pid_alive(pid: int | None) -> bool:
    """True when process ``pid`` exists and is not a zombie (reaps our own dead children)."""
    if not pid:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fine, fall back to the signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def worker_alive(status: dict) -> bool:
    """A worker is alive when its pid runs and its heartbeat is recent."""
    beat = status.get("heartbeat") or 0
    return pid_alive(status.get("pid")) and (time.time() - beat) < HEARTBEAT_TIMEOUT_S


def start_worker(run_dir: Path, extra_args: list[str] | None = None) -> int:
    """Start ``python -m fer train --run-dir RUN --resume`` detached; returns its pid.

    The worker outlives the page's script run (its own session), logs to ``worker.log`` and is
    the only writer of the run directory. Raises RunDirError if a live worker already owns it.
    """
    run = Run(Path(run_dir))
    if run.status().get("state") == "running":
        raise RunDirError(f"{run_dir}: a worker (pid {run.status().get('pid')}) is already "
                          f"training this run")
    try:
        (run.path / "stop.request").unlink(missing_ok=True)
        log = open(run.path / "worker.log", "ab")
    except OSError as e:
        raise RunDirError(f"{run_dir}: cannot start the worker ({e.strerror or e})") from e
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fer", "train", "--run-dir", str(run.path), "--resume",
         "--no-progress", *(extra_args or [])],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env,
        start_new_session=True)
    log.close()
    # Reap the worker when it exits, so a long-lived app server collects no zombies.
    threading.Thread(target=proc.wait, daemon=True, name=f"reap-{proc.pid}").start()
    # Mark the run as running at once, so a rerun in the next second does not start a second
    # worker; the worker overwrites this with its own heartbeat.
    atomic_write_json(run.path / "status.json", {"state": "running", "pid": proc.pid,
                                                 "heartbeat": time.time(), "phase": "starting"})
    return proc.pid


def kill_worker(run_dir: Path, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the run's worker (tests and emergencies; Stop is :meth:`Run.request_stop`)."""
    pid = Run(Path(run_dir)).status().get("pid")
    if pid and pid_alive(pid):
        os.kill(pid, sig)


def pack_run(run_dir: Path, half: bool = True) -> dict:
    """Make a finished run shippable: weights to float16 (``half``), resume state, log and stop
    files removed. Returns ``{"bytes_before", "bytes_after"}``. Raises RunDirError unless done.
    """
    import torch

    from fer.weights import load_tensors, save_tensors

    run = Run(Path(run_dir))
    if run.status().get("state") != "done":
        raise RunDirError(f"{run_dir}: only a finished run can be packed (state: {run.status().get('state')})")
    size = lambda: sum(p.stat().st_size for p in run.path.rglob("*") if p.is_file())  # noqa: E731
    before = size()
    for p in sorted((run.path / "members").glob("m*.safetensors")):
        if p.name.endswith(".last.safetensors"):
            p.unlink()
            continue
        tensors, meta = load_tensors(p)
        if half:
            tensors = {k: (v.half() if v.dtype == torch.float32 else v) for k, v in tensors.items()}
        save_tensors(p, tensors, meta)
    for name in ("worker.log", "stop.request", "worker.lock"):
        (run.path / name).unlink(missing_ok=True)
    st = read_json(run.path / "status.json", {})
    atomic_write_json(run.path / "status.json", {k: st.get(k) for k in ("state", "members", "epochs",
                                                                          "started", "finished")})
    return {"bytes_before": before, "bytes_after": size()}
