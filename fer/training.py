"""Training a seeded ensemble: one readable loop per member, one worker per run.

:func:`train_member` is a generator yielding one dict per epoch; :func:`run_training` drives all
members of a run directory (see :mod:`fer.runs`), writing metrics, best-validation weights,
resume state and predictions, and obeying Stop requests. Everything a member does is a pure
function of its seed: the split (:func:`fer.ensemble.member_split`), the initial weights
(``torch.manual_seed``), the batch order of epoch e (seeded by ``[seed, e]``) and the
augmentation of batch b (seeded by ``[seed, e, b]``) — so a resumed member continues exactly
where it stopped, and the same seed gives the same numbers on the same machine.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer.data import SPLITS, FaceDataset, load_dataset
from fer.ensemble import member_seed, member_split
from fer.errors import ConfigError, FerError, RunDirError
from fer.labels import NUM_CLASSES
from fer.models import create_model, model_spec
from fer.runs import Run, add_member_predictions, append_jsonl, atomic_write_bytes, atomic_write_json
from fer.weights import load_model, load_tensors, save_model, save_tensors

PRECISIONS = ("auto", "bf16", "fp32")
AUGMENTS = ("none", "flip", "standard")
SCHEDULES = ("constant", "cosine")
CLASS_WEIGHTS = ("none", "balanced")


@dataclass
class TrainConfig:
    """Everything that decides a run's numbers; written to ``config.json``.

    ferplus, when set, is a FER+ ``fer2013new.csv`` whose majority-vote labels replace
    FER2013's (see :mod:`fer.data.ferplus`); lr is Adam's learning rate; val_fraction the
    share of the train split each member holds out (its own, seeded); precision ``auto`` =
    bf16 autocast + channels_last on CPU/AMP on CUDA when available, ``fp32`` = plain float32;
    augment ``flip`` = random horizontal flip, ``standard`` = flip + shift ±4 px + rotation
    ±10° + scale 0.9–1.1 (on whole batches); schedule ``cosine`` decays lr to 0 over all
    epochs; class_weights ``balanced`` weighs each class's faces in the loss by N / (7 · n_c)
    (:func:`class_weights`); exclude_flagged leaves out the train rows
    :func:`fer.data.audit.training_exclusions` flags (blank images, conflicting-label
    duplicates, copies of test faces, repeated copies). The defaults (standard augmentation,
    cosine, no label smoothing) are the recipe ablation's best (README).
    """

    data: str = "synthetic"
    ferplus: str = ""
    model: str = "seed_cnn"
    members: int = 3
    epochs: int = 5
    base_seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    precision: str = "auto"
    augment: str = "standard"
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    class_weights: str = "none"
    exclude_flagged: bool = False
    dataset_id: str = ""
    dataset_sha256: str = ""
    dataset_synthetic: bool = False
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def __post_init__(self) -> None:
        checks = [
            ("members", 1 <= self.members <= 100, "an integer 1..100"),
            ("epochs", 1 <= self.epochs <= 1000, "an integer 1..1000"),
            ("batch_size", 1 <= self.batch_size <= 8192, "an integer 1..8192"),
            ("lr", 0 < self.lr < 10, "a positive number below 10"),
            ("weight_decay", 0 <= self.weight_decay < 1, "0 ≤ weight_decay < 1"),
            ("val_fraction", 0 < self.val_fraction < 0.9, "0 < val_fraction < 0.9"),
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("augment", self.augment in AUGMENTS, f"one of {AUGMENTS}"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "0 ≤ label_smoothing < 1"),
            ("class_weights", self.class_weights in CLASS_WEIGHTS, f"one of {CLASS_WEIGHTS}"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"config field {name!r} is {getattr(self, name)!r}, expected {expected}")
        model_spec(self.model)  # raises ConfigError for an unknown model

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "TrainConfig":
        """Build from a dict; an unknown key or a value of the wrong type raises ConfigError."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        kwargs = {}
        for k, v in d.items():
            t = {"int": int, "float": float, "str": str, "bool": bool}[fields[k].type]
            if t is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, t) or (t is int and isinstance(v, bool)):
                raise ConfigError(f"{where}: key {k!r} is {v!r} ({type(v).__name__}), expected {t.__name__}")
            kwargs[k] = v
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- devices and precision
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_for(precision: str, dev: torch.device):
    """The autocast context for a precision setting (bf16 on CPU, fp16 AMP on CUDA)."""
    if precision == "fp32":
        return torch.autocast(dev.type, enabled=False)
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def to_input(images_u8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(B, 48, 48)`` → float32 ``(B, 1, 48, 48)`` in 0..1 (the models' input)."""
    x = images_u8.unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------- augmentation
def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch ``(B, 1, H, W)`` in torch, all images at once.

    ``flip``: each image mirrored left-right with probability 1/2. ``standard``: flip, then one
    random affine per image (shift ±4 px, rotation ±10°, scale 0.9–1.1, bilinear, border
    replicated). Deterministic given ``gen``.
    """
    if mode == "none":
        return x
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if mode == "flip":
        return x
    h, w = x.shape[-2:]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + torch.rand(b, generator=gen) * 0.2
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * 4 / torch.tensor([w / 2, h / 2])
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def class_weights(labels: np.ndarray | torch.Tensor, mode: str) -> torch.Tensor | None:
    """Per-class weights of the cross-entropy for a member's training labels.

    ``labels``: int (N,) class ids 0..6. ``none`` → None (every face counts the same);
    ``balanced`` → float32 (7,) with w_c = N / (7 · n_c), so each class weighs as much in total
    as it would in a balanced set (scikit-learn's ``compute_class_weight("balanced")`` when all
    7 classes are present); on FER2013 Training that is ≈ 9.4 for Disgust (436 faces) and ≈ 0.57
    for Happy. A class with no faces gets weight 0 (it is never a target). Raises ConfigError for
    another ``mode``.
    """
    if mode == "none":
        return None
    if mode != "balanced":
        raise ConfigError(f"class_weights is {mode!r}, expected one of {CLASS_WEIGHTS}")
    counts = torch.bincount(torch.as_tensor(labels).long(), minlength=NUM_CLASSES).float()
    return torch.where(counts > 0, counts.sum() / (NUM_CLASSES * counts.clamp_min(1)), 0.0)


def lr_at(cfg: TrainConfig, epoch: int, batch: int, n_batches: int) -> float:
    """Learning rate for a step: constant, or cosine from lr to 0 over all steps."""
    if cfg.schedule == "constant":
        return cfg.lr
    t = (epoch * n_batches + batch) / max(1, cfg.epochs * n_batches)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


# ---------------------------------------------------------------- prediction
@torch.no_grad()
def predict_proba(model: nn.Module, images_u8: np.ndarray | torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Softmax probabilities float32 ``(N, 7)`` of an eval-mode model on uint8 ``(N, 48, 48)``.

    Always float32 (no autocast), so stored predictions can be recomputed from the weights.
    """
    was_training = model.training
    model.eval()
    imgs = torch.as_tensor(images_u8)
    out = []
    for i in range(0, len(imgs), batch_size):
        out.append(F.softmax(model(to_input(imgs[i:i + batch_size]).to(next(model.parameters()).device)).float(), 1).cpu())
    model.train(was_training)
    return (torch.cat(out) if out else torch.zeros(0, NUM_CLASSES)).numpy()


def _evaluate(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor,
              weight: torch.Tensor | None = None) -> tuple[float, float]:
    """(cross-entropy weighted by ``weight`` like the training loss, accuracy) on faces x_u8."""
    probs = torch.from_numpy(predict_proba(model, x_u8))
    if len(y) == 0:
        return float("nan"), float("nan")
    loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), y,
                      weight=None if weight is None else weight.cpu()).item()
    return loss, (probs.argmax(1) == y).float().mean().item()


# ---------------------------------------------------------------- one member
@dataclass
class MemberState:
    """Where a member's training stands; saved in its ``.last.safetensors`` metadata."""

    epoch: int = 0            # 0-based epoch in progress (== epochs when finished)
    next_batch: int = 0       # first batch of ``epoch`` not yet trained
    loss_sum: float = 0.0     # running sums over the batches of ``epoch`` already trained
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    best_val_acc: float = -1.0
    best_epoch: int = 0
    done: bool = False


def train_member(cfg: TrainConfig, ds: FaceDataset, member: int, state: MemberState | None = None,
                 model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_batch: Callable[[int, int, int], None] | None = None,
                 save_best: Callable[[nn.Module, MemberState], None] | None = None,
                 save_state: Callable[[nn.Module, torch.optim.Optimizer, MemberState], None] | None = None,
                 ) -> Iterator[dict]:
    """Train member ``member`` of ``cfg`` on ``ds``'s train split, yielding one dict per epoch.

    Each dict: member, seed, epoch (1-based), train_loss (mean cross-entropy, nats; both losses
    weighted by class when ``cfg.class_weights`` is ``balanced``), train_acc, val_loss, val_acc
    (on the member's own validation faces), lr, seconds (wall time of the epoch), images_per_s
    (training images per second), best (bool: new best val_acc).
    ``save_best`` is called when val_acc improves; ``save_state`` after every epoch and on stop.
    When ``should_stop()`` turns true the current batch finishes, the state is saved and the
    generator returns without finishing the epoch (resume by passing the saved state back).
    """
    seed = member_seed(cfg.base_seed, member)
    dev = device()
    tr_rows, va_rows = member_rows(ds, cfg, member)
    x_tr, y_tr = torch.from_numpy(ds.images[tr_rows]), torch.from_numpy(ds.labels[tr_rows])
    x_va, y_va = torch.from_numpy(ds.images[va_rows]), torch.from_numpy(ds.labels[va_rows])
    if len(x_tr) == 0:
        raise ConfigError(f"dataset {ds.id}: member {member} has no training faces")
    channels_last = cfg.precision != "fp32" and dev.type == "cpu"
    if model is None:
        torch.manual_seed(seed)
        model = create_model(cfg.model)
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = state or MemberState()
    weight = class_weights(y_tr, cfg.class_weights)
    weight = weight.to(dev) if weight is not None else None
    n = len(x_tr)
    n_batches = math.ceil(n / cfg.batch_size)
    while state.epoch < cfg.epochs:
        e = state.epoch
        perm = torch.from_numpy(np.random.default_rng([seed, e]).permutation(n))
        model.train()
        t0 = time.perf_counter()
        for b in range(state.next_batch, n_batches):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if len(idx) < 2 and b > 0:
                continue  # BatchNorm cannot train on a batch of one
            gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, e, b]).integers(2**62)))
            x = augment_batch(to_input(x_tr[idx]), cfg.augment, gen)
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            x, y = x.to(dev), y_tr[idx].to(dev)
            for g in optimizer.param_groups:
                g["lr"] = lr_at(cfg, e, b, n_batches)
            with autocast_for(cfg.precision, dev):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.loss_sum += loss.item() * len(idx)
            state.correct += int((logits.argmax(1) == y).sum())
            state.seen += len(idx)
            state.next_batch = b + 1
            if on_batch:
                on_batch(e, b + 1, n_batches)
            if should_stop() and b + 1 < n_batches:
                state.seconds += time.perf_counter() - t0
                if save_state:
                    save_state(model, optimizer, state)
                return
        state.seconds += time.perf_counter() - t0
        val_loss, val_acc = _evaluate(model, x_va, y_va, weight)
        rec = dict(member=member, seed=seed, epoch=e + 1,
                   train_loss=state.loss_sum / max(1, state.seen), train_acc=state.correct / max(1, state.seen),
                   val_loss=val_loss, val_acc=val_acc, lr=lr_at(cfg, e, n_batches - 1, n_batches),
                   seconds=state.seconds, images_per_s=state.seen / max(state.seconds, 1e-9),
                   best=bool(val_acc > state.best_val_acc))
        if rec["best"]:
            state.best_val_acc, state.best_epoch = val_acc, e + 1
        state.epoch, state.next_batch = e + 1, 0
        state.loss_sum, state.correct, state.seen, state.seconds = 0.0, 0, 0, 0.0
        if rec["best"] and save_best:
            save_best(model, state)
        yield rec
        if save_state:
            save_state(model, optimizer, state)
        if should_stop():
            return


# ---------------------------------------------------------------- resume state on disk
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in sd["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["groups"]})


def save_member_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: MemberState,
                      model_name: str) -> None:
    """Write resume state (weights + optimiser + position) as one safetensors file."""
    otensors, ometa = _optimizer_tensors(opt)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | otensors
    save_tensors(path, tensors, {"model": model_name, "state": dataclasses.asdict(state), "optim": ometa})


def load_member_state(path: Path, cfg: TrainConfig) -> tuple[nn.Module, torch.optim.Optimizer, MemberState]:
    """Inverse of :func:`save_member_state`. Raises CheckpointError for a bad file."""
    tensors, meta = load_tensors(path)
    model = create_model(cfg.model)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    _load_optimizer(opt, tensors, meta["optim"])
    return model, opt, MemberState(**meta["state"])


# ---------------------------------------------------------------- the worker
class _Heartbeat:
    """status.json writer: on demand from the training loop, and every ``period`` seconds from a
    background thread, so a worker busy loading a 300 MB CSV or predicting still looks alive."""

    def __init__(self, run: Run, period: float = 2.0):
        self.run, self.period, self.info = run, period, {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="heartbeat")

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self._write()
            except FerError:
                pass  # a full disk: the training loop's own write raises and reports it

    def _write(self) -> None:
        with self._lock:
            atomic_write_json(self.run.path / "status.json",
                              dict(self.info, pid=os.getpid(), heartbeat=time.time()))

    def beat(self, force: bool = False, **info) -> None:
        """Update the status fields; write now when ``force`` (state changes)."""
        with self._lock:
            self.info.update(info)
        if force:
            self._write()


class _WorkerLock:
    """An exclusive ``flock`` on ``<run>/worker.lock``: one worker per run, whatever the status
    file says (released by the kernel when the worker dies, even by SIGKILL)."""

    def __init__(self, run: Run):
        self.path = run.path / "worker.lock"
        self.fd: int | None = None

    def __enter__(self) -> "_WorkerLock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(self.fd)
            raise RunDirError(f"{self.path.parent}: another worker is already training this run") from e
        except OSError as e:
            raise RunDirError(f"{self.path.parent}: cannot lock the run ({e.strerror or e})") from e
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


def store_member_predictions(run: Run, ds: FaceDataset, member: int, model: nn.Module,
                             cfg: TrainConfig | None = None) -> None:
    """Add member ``member``'s probabilities on every labelled split to ``predictions/*.npz``.

    Each file: probs float32 (M, N, 7), members int64 (M,), labels int64 (N,), indices int64
    (N,) dataset rows. ``train.npz`` also holds ``validation`` and ``trained`` bool (M, N): the
    faces each member held out and trained on (both False for a face the run excluded), so
    out-of-bag and per-member validation views need neither the dataset nor the split rule.
    """
    for split in SPLITS:
        rows = ds.indices(split)
        rows = rows[ds.labels[rows] >= 0]
        if len(rows) == 0:
            continue
        probs = predict_proba(model, ds.images[rows])
        masks = member_masks(ds, cfg, member, rows) if split == "train" and cfg is not None else {}
        add_member_predictions(run, split, member, {"probs": probs, **masks},
                               ds.labels[rows], rows)


def member_masks(ds: FaceDataset, cfg: TrainConfig, member: int, rows: np.ndarray) -> dict[str, np.ndarray]:
    """bool (len(rows),) masks ``validation`` and ``trained``: which of the dataset rows ``rows``
    member ``member`` held out and trained on (both False for a row the run excluded)."""
    tr, va = member_rows(ds, cfg, member)
    return {"validation": np.isin(rows, va), "trained": np.isin(rows, tr)}


def member_rows(ds: FaceDataset, cfg: TrainConfig, member: int) -> tuple[np.ndarray, np.ndarray]:
    """Dataset rows (int64, ascending) member ``member`` trains on and validates on.

    The member's seed splits the train rows (minus the audit's flagged rows when
    ``cfg.exclude_flagged``) with :func:`fer.ensemble.member_split`.
    """
    rows = ds.indices("train")
    rows = rows[ds.labels[rows] >= 0]
    if cfg.exclude_flagged:
        from fer.data.audit import training_exclusions

        rows = np.setdiff1d(rows, training_exclusions(ds), assume_unique=True)
    tr_pos, va_pos = member_split(len(rows), member_seed(cfg.base_seed, member), cfg.val_fraction)
    return rows[tr_pos], rows[va_pos]


def _prune_metrics(run: Run, cfg: TrainConfig) -> None:
    """Drop metrics lines for epochs the resume state does not hold (a kill between the two)."""
    keep = []
    finished = set(run.finished_members())
    for rec in run.metrics():
        if rec["member"] in finished:
            keep.append(rec)
            continue
        last = run.path / "members" / f"m{rec['member']:02d}.last.safetensors"
        done_epochs = 0
        if last.exists():
            try:
                _, meta = load_tensors(last)
                done_epochs = meta["state"]["epoch"]
            except FerError:
                done_epochs = 0
        if rec["epoch"] <= done_epochs:
            keep.append(rec)
    atomic_write_bytes(run.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in keep).encode())


def run_training(run_dir: Path, progress: bool = True, dataset: FaceDataset | None = None) -> dict:
    """Train (or resume) every member of the run in ``run_dir``; returns the final status dict.

    Members whose resume state says ``done`` are skipped; the member in progress continues from
    its last saved position. status.json goes running → done, stopped or failed (with the
    error message). Raises nothing for training errors (they go to status.json), but RunDirError
    when the run directory itself is unusable: locked by another worker, or so full that not even
    the failure can be written to status.json (the message then starts with the original error).
    """
    run = Run(Path(run_dir))
    cfg = TrainConfig.from_dict(run.config(), where=str(run.path / "config.json"))
    with _WorkerLock(run), _Heartbeat(run) as hb:
        return _train_members(run, cfg, hb, progress, dataset)


def _record_failure(hb: _Heartbeat, error: str, **extra) -> None:
    """status.json := failed with ``error``; when even that cannot be written (a disk with no
    room left at all), raise RunDirError carrying the original error first."""
    try:
        hb.beat(force=True, state="failed", phase="failed", error=error, **extra)
    except FerError as e:
        raise RunDirError(f"{error} (the failure could not be recorded either: {e})") from e


def _train_members(run: Run, cfg: TrainConfig, hb: _Heartbeat, progress: bool,
                   dataset: FaceDataset | None) -> dict:
    stop_file = run.path / "stop.request"
    hb.beat(force=True, state="running", phase="loading data", members=cfg.members,
            epochs=cfg.epochs, started=time.time(), error=None)
    bar = None
    try:
        ds = dataset or load_dataset(cfg.data, ferplus=cfg.ferplus or None)
        _prune_metrics(run, cfg)
        (run.path / "members").mkdir(exist_ok=True)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.members * cfg.epochs, unit="epoch", desc=run.id)
        # A member whose predictions are stored is finished, even when its resume state was
        # dropped (shipped runs keep only best weights and predictions).
        for m in range(cfg.members):
            # Re-read each time: members merged in from another worker (fer.runs.merge_members)
            # while this one trains are skipped.
            if m in run.finished_members():
                continue
            last = run.path / "members" / f"m{m:02d}.last.safetensors"
            model = opt = None
            state = MemberState()
            if last.exists():
                model, opt, state = load_member_state(last, cfg)
            if bar:
                bar.n = m * cfg.epochs + state.epoch
                bar.refresh()
            if state.done:
                continue
            hb.beat(force=True, phase="training", member=m, epoch=state.epoch, batch=state.next_batch)

            def save_best(model, st, m=m):
                save_model(run.weights_path(m), model, cfg.model,
                           {"member": m, "seed": member_seed(cfg.base_seed, m), "epoch": st.best_epoch,
                            "val_acc": st.best_val_acc})

            def save_state(model, opt, st, last=last):
                save_member_state(last, model, opt, st, cfg.model)

            for rec in train_member(cfg, ds, m, state, model, opt,
                                    should_stop=stop_file.exists,
                                    on_batch=lambda e, b, nb, m=m: hb.beat(member=m, epoch=e, batch=b, n_batches=nb),
                                    save_best=save_best, save_state=save_state):
                append_jsonl(run.path / "metrics.jsonl", rec)
                if bar:
                    bar.update(1)
                    bar.set_postfix(member=m, val_acc=f"{rec['val_acc']:.3f}")
            if state.epoch < cfg.epochs:  # stopped
                stop_file.unlink(missing_ok=True)
                hb.beat(force=True, state="stopped", phase="stopped")
                return run.status()
            hb.beat(force=True, phase="predicting", member=m)
            store_member_predictions(run, ds, m, load_model(run.weights_path(m), cfg.model), cfg)
            state.done = True
            model, opt, _ = load_member_state(last, cfg)
            save_member_state(last, model, opt, state, cfg.model)
            if stop_file.exists() and m + 1 < cfg.members:
                stop_file.unlink(missing_ok=True)
                hb.beat(force=True, state="stopped", phase="stopped")
                return run.status()
        stop_file.unlink(missing_ok=True)
        hb.beat(force=True, state="done", phase="done", finished=time.time())
    except FerError as e:
        _record_failure(hb, str(e))
    except Exception as e:  # a bug: keep the traceback for the log and the page
        traceback.print_exc()
        _record_failure(hb, f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    finally:
        if bar:
            bar.close()
    return run.status()


def make_run_dir(run_dir: Path) -> Path:
    """Create folder ``run_dir`` (and its parents) if missing; returns it as a Path.

    Raises RunDirError naming ``run_dir`` and why when it cannot be created: a parent (or the
    path itself) is a regular file, no permission, a full disk... Cheap, so callers check it
    before a slow step (loading a 300 MB CSV) rather than after.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in (run_dir, *run_dir.parents)
                        if os.path.exists(p) and not os.path.isdir(p)), None)
        why = f"{blocker} is a file, not a folder" if blocker else (e.strerror or str(e))
        raise RunDirError(f"{run_dir}: cannot create the run directory ({why})") from e
    return run_dir


def create_run(cfg: TrainConfig, run_dir: Path) -> Run:
    """Write ``config.json`` into a new or empty ``run_dir`` (created if missing).

    Raises RunDirError if it already holds a run or cannot be created (see :func:`make_run_dir`).
    """
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        raise RunDirError(f"{run_dir}: already holds a run (use --resume to continue it)")
    make_run_dir(run_dir)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    atomic_write_json(run_dir / "status.json", {"state": "new"})
    return Run(run_dir)


def dataset_fields(ds: FaceDataset) -> dict:
    """The config fields that pin a run to its dataset."""
    return dict(dataset_id=ds.id, dataset_sha256=str(ds.provenance.get("sha256", "")),
                dataset_synthetic=ds.is_synthetic)
