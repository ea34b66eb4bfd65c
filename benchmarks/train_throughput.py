"""Training throughput of one member: our batch pipeline vs course-style code, same process.

Baseline (the way course code is usually written): a ``Dataset`` whose ``__getitem__`` turns
one row into a PIL image, flips it with PIL, converts it to a float tensor, batched by a
``DataLoader``; fp32 model. Ours: the whole training set as one uint8 tensor, batches
augmented in torch (:func:`fer.training.augment_batch`), bf16 autocast + channels_last
(the ``auto`` precision). Same ``seed_cnn``, batch size, optimizer and machine.
Also reports ours in fp32, and achieved GFLOP/s against this machine's measured matmul GFLOP/s.
Prints a table, then one JSON line with the figures and ``ratio`` (ours / baseline images/s).

    python benchmarks/train_throughput.py [--batches 10] [--repeats 7] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.data import load_dataset  # noqa: E402
from fer.models import create_model  # noqa: E402
from fer.training import augment_batch, autocast_for, to_input  # noqa: E402


class CourseDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        if torch.rand(1).item() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)
        return x, int(self.labels[i])


def forward_flops(model: torch.nn.Module) -> float:
    """FLOPs (2 per multiply-add) of one forward pass on one 1x48x48 image: convs and linears."""
    total = 0.0

    def hook(m, i, o):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += 2 * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * o[0].numel() / m.out_channels
        elif isinstance(m, torch.nn.Linear):
            total += 2 * m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 48, 48))
    for h in hs:
        h.remove()
    return total


def step(model, opt, x, y, precision):
    with autocast_for(precision, torch.device("cpu")):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class Baseline:
    """Course-style training: per-sample PIL through a DataLoader, fp32 model."""

    def __init__(self, images, labels, batch):
        torch.manual_seed(0)
        self.model = create_model("seed_cnn").train()
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-3)
        self.loader = torch.utils.data.DataLoader(CourseDataset(images, labels), batch_size=batch,
                                                  shuffle=True, num_workers=0, drop_last=True)
        self.it, self.batch = iter(self.loader), batch

    def one(self):
        try:
            x, y = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            x, y = next(self.it)
        step(self.model, self.opt, x, y, "fp32")


class Ours:
    """Our pipeline: one uint8 tensor, batch augmentation in torch, ``precision`` as in training."""

    def __init__(self, images, labels, batch, precision):
        torch.manual_seed(0)
        self.cl, self.precision, self.batch = precision != "fp32", precision, batch
        self.model = create_model("seed_cnn").train()
        if self.cl:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-3)
        self.x_all, self.y_all = torch.from_numpy(images), torch.from_numpy(labels)
        self.gen = torch.Generator().manual_seed(0)
        self.b = 0

    def one(self):
        n = len(self.x_all) // self.batch
        if self.b % n == 0:
            self.perm = torch.randperm(len(self.x_all), generator=self.gen)
        b = self.b % n
        self.b += 1
        idx = self.perm[b * self.batch:(b + 1) * self.batch]
        x = augment_batch(to_input(self.x_all[idx]), "flip", self.gen)
        x = x.contiguous(memory_format=torch.channels_last) if self.cl else x
        step(self.model, self.opt, x, self.y_all[idx], self.precision)


def images_per_s(trainer, n_batches: int) -> float:
    """Member-images/s of ``n_batches`` training steps of ``trainer``."""
    t0 = time.perf_counter()
    for _ in range(n_batches):
        trainer.one()
    return n_batches * trainer.batch / (time.perf_counter() - t0)


def matmul_gflops(dtype, n=1024, reps=20):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batches", type=int, default=10, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="interleaved blocks per pipeline (medians reported)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset("synthetic")
    tr = ds.indices("train")
    images, labels = ds.images[tr], ds.labels[tr]
    trainers = {"baseline": Baseline(images, labels, args.batch_size),
                "fast": Ours(images, labels, args.batch_size, "auto"),
                "fp32": Ours(images, labels, args.batch_size, "fp32")}
    for t in trainers.values():  # warm-up: allocator, oneDNN kernels
        images_per_s(t, 3)
    # Interleaved blocks, medians: a background process slows all three alike instead of
    # whichever happened to run while it was busy.
    runs = {k: [] for k in trainers}
    for _ in range(args.repeats):
        for k, t in trainers.items():
            runs[k].append(images_per_s(t, args.batches))
    base, fast, fp32 = (float(np.median(runs[k])) for k in ("baseline", "fast", "fp32"))
    ratios = [f / b for f, b in zip(runs["fast"], runs["baseline"])]
    n = args.batches
    train_flops = 3 * forward_flops(create_model("seed_cnn"))  # forward + 2x for backward
    mm32, mm16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    rows = [("course-style DataLoader, fp32", base), ("ours, fp32", fp32), ("ours, bf16 + channels_last", fast)]
    print(f"threads={torch.get_num_threads()} batch={args.batch_size} {args.repeats} interleaved blocks "
          f"of {n} steps each; medians")
    for name, v in rows:
        print(f"{name:32s} {v:8.0f} member-images/s  {v * train_flops / 1e9:6.1f} GFLOP/s")
    print(f"matmul 1024x1024: fp32 {mm32:.0f} GFLOP/s, bf16 {mm16:.0f} GFLOP/s")
    print(f"ratio per block (ours / baseline): min {min(ratios):.2f}, median {np.median(ratios):.2f}, "
          f"max {max(ratios):.2f}")
    print(json.dumps(dict(baseline_images_per_s=round(base, 1), ours_images_per_s=round(fast, 1),
                          ours_fp32_images_per_s=round(fp32, 1),
                          train_gflop_per_image=round(train_flops / 1e9, 4),
                          ours_gflops=round(fast * train_flops / 1e9, 1),
                          matmul_fp32_gflops=round(mm32, 1), matmul_bf16_gflops=round(mm16, 1),
                          fast_vs_fp32=round(fast / fp32, 2), repeats=args.repeats,
                          ratio_min=round(min(ratios), 2), ratio=round(fast / base, 2))))


if __name__ == "__main__":
    main()
