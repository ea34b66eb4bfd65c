"""Ensemble size curve: vectorised over subsets vs a plain Python loop over subsets.

A pool of M = 25 members on N = 3,589 faces (FER2013 PrivateTest's size and class counts),
random but realistic: each face has a difficulty and a confusion pattern that every member
shares, plus member noise, so members are ~65% accurate, overconfident, and correlated (the
ensemble gains a few points, not twenty). For every k = 1..M, 200 k-subsets (all when fewer
exist, 4,451 ensembles in all) are scored for majority vote, soft vote, oracle, disagreement,
NLL and ECE twice: by ``fer.ensemble.size_curve`` (vectorised; best of --repeats) and by a loop
calling ``majority_vote`` / ``soft_vote`` / ``nll`` / ``expected_calibration_error`` per subset.
Both must give the same accuracies exactly (checked per subset, then per k); NLL, ECE and
disagreement to float rounding (the largest difference is printed).

    python benchmarks/size_curve.py            # ~1 s vectorised, ~10-30 s for the loop

Ends by printing one JSON line with the figures and ``ratio`` = loop time / vectorised time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer.ensemble import (accuracy, k_subsets, majority_vote, member_accuracies, size_curve,  # noqa: E402
                          soft_vote, subset_scores)
from fer.metrics import expected_calibration_error, nll  # noqa: E402

PRIVATE_TEST_COUNTS = [491, 55, 528, 879, 594, 416, 626]  # angry .. neutral, 3,589 faces
KEYS = ("majority", "soft", "oracle", "disagreement", "nll", "ece")


def realistic_pool(members: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (M, N, 7) softmax outputs and int64 (N,) labels: shared face effects + member noise."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(7), PRIVATE_TEST_COUNTS))
    n = len(labels)
    ease = rng.normal(size=(n, 1))  # how recognisable the face is, for every member
    shared = (2.4 + ease) * np.eye(7)[labels] + 1.2 * rng.normal(size=(n, 7))  # (N, 7)
    logits = (shared[None] + 0.55 * rng.normal(size=(members, n, 7))) / 0.55  # T < 1: overconfident
    p = np.exp(logits - logits.max(axis=2, keepdims=True))
    return (p / p.sum(axis=2, keepdims=True)).astype(np.float32), labels.astype(np.int64)


def loop_scores(probs: np.ndarray, labels: np.ndarray, subsets: np.ndarray) -> dict[str, np.ndarray]:
    """The plain loop: one ensemble at a time, through the per-ensemble functions."""
    votes = probs.argmax(axis=2)
    out = {key: [] for key in KEYS}
    for row in subsets:
        q = probs[row]
        mean = q.mean(axis=0)
        out["majority"].append(accuracy(majority_vote(q), labels))
        out["soft"].append(accuracy(soft_vote(q), labels))
        out["oracle"].append(float((votes[row] == labels).any(axis=0).mean()))
        pairs = list(itertools.combinations(row, 2))
        out["disagreement"].append(float(np.mean([(votes[a] != votes[b]).mean() for a, b in pairs]))
                                   if pairs else np.nan)
        out["nll"].append(nll(mean, labels))
        out["ece"].append(expected_calibration_error(mean, labels))
    return {key: np.array(v) for key, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=25)
    p.add_argument("--subsets", type=int, default=200, help="ensembles per size k")
    p.add_argument("--repeats", type=int, default=5, help="vectorised runs (best is reported)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    probs, labels = realistic_pool(args.members, args.seed)
    m, n, _ = probs.shape
    subsets = {k: k_subsets(m, k, args.subsets, args.seed) for k in range(1, m + 1)}
    total = sum(len(s) for s in subsets.values())

    size_curve(probs, labels, args.subsets, args.seed)  # warm-up (allocations, BLAS)
    wall, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        curve = size_curve(probs, labels, args.subsets, args.seed)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)

    t0, c0 = time.perf_counter(), time.process_time()
    loop = {k: loop_scores(probs, labels, k_subsets(m, k, args.subsets, args.seed)) for k in range(1, m + 1)}
    loop_wall, loop_cpu = time.perf_counter() - t0, time.process_time() - c0

    identical, max_diff = True, {key: 0.0 for key in ("disagreement", "nll", "ece")}
    for k, row in zip(range(1, m + 1), curve):
        fast = subset_scores(probs, labels, subsets[k], chunk_elements=1_000_000)
        for key in ("majority", "soft", "oracle"):
            identical &= np.array_equal(fast[key], loop[k][key])
            identical &= row[key] == dict(mean=float(loop[k][key].mean()), std=float(loop[k][key].std()),
                                          min=float(loop[k][key].min()), max=float(loop[k][key].max()))
        for key in max_diff:
            if k > 1 or key != "disagreement":
                max_diff[key] = max(max_diff[key], float(np.abs(fast[key] - loop[k][key]).max()))

    accs = member_accuracies(probs, labels)
    print(f"pool: {m} members x {n} faces, member accuracy {accs.mean():.3f} "
          f"({accs.min():.3f}..{accs.max():.3f}); {total} ensembles over k = 1..{m}")
    print("   k  ensembles  majority mean ± std   soft mean    oracle   disagree  ECE     NLL")
    for r in curve:
        if r["k"] in (1, 2, 3, 5, 9, 15, 25) or r["k"] == m:
            dis = f"{r['disagreement']['mean']:.4f}" if r["disagreement"] else "   -  "
            print(f"  {r['k']:2d}  {r['subsets']:9d}  {r['majority']['mean']:.4f} ± {r['majority']['std']:.4f}"
                  f"     {r['soft']['mean']:.4f}    {r['oracle']['mean']:.4f}   {dis}    "
                  f"{r['ece']['mean']:.4f}  {r['nll']['mean']:.4f}")
    print(f"\n  vectorised (size_curve, best of {args.repeats}): {min(wall):8.3f} s wall  "
          f"{min(cpu):8.3f} s CPU")
    print(f"  plain loop over {total} subsets:           {loop_wall:8.3f} s wall  {loop_cpu:8.3f} s CPU")
    print(f"  ratio (loop / vectorised, wall):            {loop_wall / min(wall):8.1f}x")
    print(f"  accuracies identical: {identical}; largest differences "
          + ", ".join(f"{k} {v:.1e}" for k, v in max_diff.items()))
    print(json.dumps(dict(
        benchmark="size_curve", members=m, faces=n, subsets_per_k=args.subsets, ensembles=total,
        vectorised_s=round(min(wall), 4), vectorised_cpu_s=round(min(cpu), 4),
        vectorised_all_s=[round(x, 4) for x in wall], loop_s=round(loop_wall, 3),
        loop_cpu_s=round(loop_cpu, 3), ratio=round(loop_wall / min(wall), 1),
        identical_accuracies=bool(identical), max_abs_diff={k: float(f"{v:.3g}") for k, v in max_diff.items()},
        member_accuracy=round(float(accs.mean()), 4), majority_k1=curve[0]["majority"]["mean"],
        majority_kM=curve[-1]["majority"]["mean"], soft_kM=curve[-1]["soft"]["mean"],
        exhaustive_k=[r["k"] for r in curve if r["exhaustive"]],
        subsets_check=all(len(s) == min(math.comb(m, k), args.subsets) for k, s in subsets.items()))))


if __name__ == "__main__":
    main()
