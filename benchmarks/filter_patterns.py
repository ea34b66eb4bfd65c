"""A page of 16 gradient-ascent filter images: batched (one optimisation for all 16) vs one filter
at a time (the baseline), same process, same settings.

Both call :func:`fer.explain.filters.filter_patterns` (32 steps, jitter, blur, seed 0) on the
last conv layer of member 0 of the shipped ``synthetic-demo`` run (``seed_cnn``); the baseline
calls it 16 times with one channel each. Each filter draws its start and jitter from its own
seeded generator, so both follow the same recipe; the images are alike but not equal, as batches
round differently and max pooling amplifies that (the mean and largest pixel differences are
printed). Budget: a page of 16
images under 5 s. Each figure is the median of ``--repeats`` timed runs after one warm-up, as wall
time and as this process's CPU time; the machine may be shared (background trainings), so the
load average is printed with the figures.

    python benchmarks/filter_patterns.py [--repeats 3] [--steps 32] [--layer features.3.0]

Ends by printing one JSON line with the figures and ``ratio`` = one-at-a-time / batched.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer.explain.filters import PATTERN_STEPS, filter_patterns  # noqa: E402
from fer.models import model_spec  # noqa: E402
from fer.weights import load_model  # noqa: E402

RUN = ROOT / "checkpoints" / "synthetic-demo"
BUDGET_S = 5.0
FILTERS = 16


def median_time(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds of ``repeats`` calls after a warm-up, and the last result."""
    out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=PATTERN_STEPS)
    p.add_argument("--layer", default=model_spec("seed_cnn").target_layer)
    args = p.parse_args()

    model = load_model(RUN / "members" / "m00.safetensors", "seed_cnn")
    channels = list(range(FILTERS))

    def batched():
        return filter_patterns(model, args.layer, channels, steps=args.steps)

    def one_at_a_time():
        return [filter_patterns(model, args.layer, [c], steps=args.steps) for c in channels]

    load_before = os.getloadavg()[0]
    t_batch, c_batch, pats = median_time(batched, args.repeats)
    t_loop, c_loop, singles = median_time(one_at_a_time, args.repeats)
    load_after = os.getloadavg()[0]
    gap = np.abs(pats.images - np.stack([s.images[0] for s in singles]))
    diff, mean_diff = float(gap.max()), float(gap.mean())
    rose = int((pats.end > pats.start).sum())

    print(f"{FILTERS} filters of {args.layer} (seed_cnn, synthetic-demo member 0), {args.steps} steps, "
          f"torch {torch.__version__}, {os.cpu_count()} cores, load average {load_before:.1f} → "
          f"{load_after:.1f}")
    print(f"  batched (one optimisation of 16 images): {t_batch:7.2f} s wall {c_batch:7.2f} s CPU   "
          f"budget {BUDGET_S:.0f} s: {'within' if t_batch < BUDGET_S else 'OVER'}")
    print(f"  one filter at a time (16 calls):         {t_loop:7.2f} s wall {c_loop:7.2f} s CPU")
    print(f"  ratio (one at a time / batched):         {t_loop / t_batch:7.2f}x wall {c_loop / c_batch:5.2f}x CPU")
    print(f"  mean activation rose for {rose}/{FILTERS} filters (median "
          f"{np.median(pats.start):.2f} → {np.median(pats.end):.2f}); pixel difference batched vs "
          f"one at a time: mean {mean_diff:.3f}, largest {diff:.3f} (0..1 scale)")
    print(json.dumps(dict(benchmark="filter_patterns", layer=args.layer, filters=FILTERS, steps=args.steps,
                          repeats=args.repeats, batched_s=round(t_batch, 3),
                          one_at_a_time_s=round(t_loop, 3), ratio=round(t_loop / t_batch, 2),
                          batched_cpu_s=round(c_batch, 3), one_at_a_time_cpu_s=round(c_loop, 3),
                          cpu_ratio=round(c_loop / c_batch, 2), mean_pixel_diff=round(mean_diff, 4),
                          budget_s=BUDGET_S, within_budget=t_batch < BUDGET_S, activation_rose=rose,
                          max_pixel_diff=diff, load_average=[round(load_before, 2), round(load_after, 2)],
                          cpu_count=os.cpu_count())))


if __name__ == "__main__":
    main()
