"""Saliency of one face for a 15-member ensemble: ours vs the plain ways, same process.

Ours: :func:`fer.explain.saliency.ensemble_maps` (Captum on a channels-last copy of each member,
parameters frozen, float32, one torch thread). Baselines:
- "Captum default": the same Captum call on each member as loaded (NCHW), one member after the
  other, with torch's default threads (``--threads``) — what a first version of the page did;
- for SmoothGrad also the "naive loop": one backward pass per noisy copy (25 per member), the way
  SmoothGrad is often written from the paper.
Budgets: vanilla gradient < 0.5 s, SmoothGrad with 25 samples < 3 s.
Members: 15 freshly seeded ``seed_cnn`` models (speed does not depend on the weights).
Each figure is the median of ``--repeats`` timed runs after one warm-up (the naive loop: one
run). The machine may be shared (background trainings): the load average is printed too.
Prints a table, then one JSON line with the figures and ``ratio`` (SmoothGrad: naive loop / ours).

    python benchmarks/saliency_speed.py [--members 15] [--repeats 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captum.attr import Saliency

from fer.data.synthetic import render_face
from fer.explain.base import explaining
from fer.explain.saliency import (
    METHODS,
    SMOOTHGRAD_NOISE,
    SMOOTHGRAD_SAMPLES,
    ensemble_maps,
)
from fer.models import create_model

BUDGET_S = {"gradient": 0.5, "smoothgrad": 3.0}


def median_time(fn, repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_smoothgrad(models, x, t):
    gen = torch.Generator().manual_seed(0)
    out = []
    for m in models:
        with explaining(m):
            acc = torch.zeros_like(x)
            for _ in range(SMOOTHGRAD_SAMPLES):
                noisy = (x + SMOOTHGRAD_NOISE * torch.randn(x.shape, generator=gen)).requires_grad_(True)
                acc += Saliency(m).attribute(noisy, target=t, abs=True)
            out.append(acc / SMOOTHGRAD_SAMPLES)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    for seed in range(args.members):
        torch.manual_seed(seed)
        models.append(create_model("seed_cnn").eval())
    face = render_face(3, np.random.default_rng(0), intensity=1.0)  # a happy face, 0..1
    x = torch.from_numpy(face).float()[None, None]  # (1, 1, 48, 48)
    t = torch.tensor([3])

    res: dict[str, float] = {}
    for key in METHODS:
        res[f"{key}_s"] = median_time(lambda key=key: ensemble_maps(models, x, t, key), args.repeats)
        res[f"{key}_captum_default_s"] = median_time(
            lambda key=key: [METHODS[key](m, x, t) for m in models], args.repeats)
    # The slow baseline runs once: the same kernels are warm from the runs above.
    res["smoothgrad_naive_loop_s"] = median_time(lambda: naive_smoothgrad(models, x, t), 1, warm_up=False)

    print(f"{args.members} members, one face, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'method':<22}{'ours (s)':>10}{'Captum default (s)':>20}{'budget (s)':>12}")
    for key in METHODS:
        budget = BUDGET_S.get(key)
        print(f"{key:<22}{res[f'{key}_s']:>10.3f}{res[f'{key}_captum_default_s']:>20.3f}"
              f"{budget if budget else '':>12}")
    print(f"{'smoothgrad naive loop':<22}{res['smoothgrad_naive_loop_s']:>10.3f}")
    out = dict(benchmark="saliency_speed", members=args.members, threads=torch.get_num_threads(),
               load_average=round(os.getloadavg()[0], 2),
               **{k: round(v, 4) for k, v in res.items()},
               vanilla_within_budget=res["gradient_s"] < BUDGET_S["gradient"],
               smoothgrad_within_budget=res["smoothgrad_s"] < BUDGET_S["smoothgrad"],
               ratio_vanilla=round(res["gradient_captum_default_s"] / res["gradient_s"], 2),
               ratio_smoothgrad_captum_default=round(
                   res["smoothgrad_captum_default_s"] / res["smoothgrad_s"], 2),
               ratio=round(res["smoothgrad_naive_loop_s"] / res["smoothgrad_s"], 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
