"""What each recipe change does to one member's PrivateTest accuracy on real FER2013.

Trains member 0 (seed 0) of ``seed_cnn`` once per recipe, each adding one change to the
previous one, and records PublicTest/PrivateTest accuracy of the best-validation weights (and
PrivateTest recall per class, for recipes trained since it was added).
Resumable: each recipe is a run directory under ``--work``; recipes already in the results
file are skipped, and each result is merged into ``benchmarks/results/recipe_ablation.json``
as it finishes. Takes hours on a CPU: run it in the background, one process per core if you
like (a recipe another process is training is waited for, not trained twice), e.g.
    nohup python benchmarks/recipe_ablation.py --data fer2013.csv.gz --threads 1 &
    nohup python benchmarks/recipe_ablation.py --data fer2013.csv.gz --threads 1 --only 3 &
Ends by printing one JSON line: accuracies per recipe and ``ratio`` = best / first (baseline) PrivateTest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = [  # (name, config changes on top of the previous recipe)
    ("baseline: flip, constant lr", dict(augment="flip", schedule="constant", label_smoothing=0.0)),
    ("+ shift/rotate/scale augmentation", dict(augment="standard")),
    ("+ cosine lr schedule", dict(schedule="cosine")),
    ("+ label smoothing 0.1", dict(label_smoothing=0.1)),
    ("no label smoothing, + balanced class weights", dict(label_smoothing=0.0, class_weights="balanced")),
]


def _read(out: Path) -> dict:
    """Results already in ``out`` by recipe name (the run folders of earlier runs may be gone)."""
    return {r["recipe"]: r for r in json.loads(out.read_text())} if out.exists() else {}


def _record(out: Path, result: dict) -> None:
    """Merge ``result`` into ``out`` under a lock (other processes may be writing theirs)."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = _read(out) | {result["recipe"]: result}
        order = [name for name, _ in RECIPES]
        out.write_text(json.dumps(sorted(rows.values(), key=lambda r: order.index(r["recipe"])
                                         if r["recipe"] in order else len(order)), indent=2) + "\n")


def main() -> None:
    import fcntl

    import torch

    from fer.data import load_dataset
    from fer.evaluation import evaluate_run
    from fer.runs import Run
    from fer.training import TrainConfig, create_run, dataset_fields, run_training

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--only", default="", help="comma-separated recipe numbers (0 = baseline) to train here; "
                                              "another process can train the others at the same time")
    p.add_argument("--work", default=str(ROOT / "runs" / "ablation"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recipe_ablation.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    only = {int(x) for x in args.only.split(",") if x.strip()} or set(range(len(RECIPES)))
    out = Path(args.out)
    ds = load_dataset(args.data)
    changes = {}
    for i, (name, delta) in enumerate(RECIPES):
        changes.update(delta)
        if i not in only:
            continue
        run_dir = Path(args.work) / f"r{i}"
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(run_dir.parent / f"r{i}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a process training this recipe already: wait for it
            have = _read(out).get(name)
            if have and have.get("epochs") == args.epochs:
                continue
            if not (run_dir / "config.json").exists():
                create_run(TrainConfig(data=args.data, members=1, epochs=args.epochs, **changes,
                                       **dataset_fields(ds)), run_dir)
            t0 = time.time()
            status = run_training(run_dir, progress=True, dataset=ds)
            if status["state"] != "done":
                sys.exit(f"{name}: {status}")
            best = max(Run(run_dir).metrics(), key=lambda r: r["val_acc"])
            result = dict(recipe=name, config=dict(changes), epochs=args.epochs, best_epoch=best["epoch"],
                          val_acc=best["val_acc"],
                          public_test=evaluate_run(run_dir, "public_test")["members"][0],
                          private_test=evaluate_run(run_dir, "private_test")["members"][0],
                          private_test_recall={c["class"]: c["recall"] for c in
                                               evaluate_run(run_dir, "private_test", curve=False)["per_class"]},
                          seconds_this_process=round(time.time() - t0, 1))
            _record(out, result)
            print(json.dumps(result), flush=True)
    results = [r for r in _read(out).values() if r.get("epochs") == args.epochs]
    if results:
        base = results[0]["private_test"]
        print(json.dumps({"recipes": {r["recipe"]: r["private_test"] for r in results},
                          "ratio": max(r["private_test"] for r in results) / base}))


if __name__ == "__main__":
    main()
