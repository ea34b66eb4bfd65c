"""What each recipe change does to one member's PrivateTest accuracy on real FER2013.

Trains member 0 (seed 0) of ``seed_cnn`` once per recipe, each adding one change to the
previous one, and records PublicTest/PrivateTest accuracy of the best-validation weights.
Resumable: each recipe is a run directory under ``--work``; recipes already in the results
file are skipped, and
``benchmarks/results/recipe_ablation.json`` is rewritten after each one. Takes hours on a CPU:
run it in the background, e.g.
    nohup python benchmarks/recipe_ablation.py --data fer2013.csv.gz --threads 1 &
Ends by printing one JSON line: accuracies per recipe and ``ratio`` = best / baseline PrivateTest.
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
]


def main() -> None:
    import torch

    from fer.data import load_dataset
    from fer.evaluation import evaluate_run
    from fer.runs import Run
    from fer.training import TrainConfig, create_run, dataset_fields, run_training

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "runs" / "ablation"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recipe_ablation.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    done = {}
    if Path(args.out).exists():  # results of earlier sessions: their run folders may be gone
        done = {r["recipe"]: r for r in json.loads(Path(args.out).read_text())}
    results, changes = [], {}
    for i, (name, delta) in enumerate(RECIPES):
        changes.update(delta)
        if name in done and done[name].get("epochs") == args.epochs:
            results.append(done[name])
            continue
        run_dir = Path(args.work) / f"r{i}"
        if not (run_dir / "config.json").exists():
            create_run(TrainConfig(data=args.data, members=1, epochs=args.epochs, **changes,
                                   **dataset_fields(ds)), run_dir)
        t0 = time.time()
        status = run_training(run_dir, progress=True, dataset=ds)
        if status["state"] != "done":
            sys.exit(f"{name}: {status}")
        best = max(Run(run_dir).metrics(), key=lambda r: r["val_acc"])
        results.append(dict(recipe=name, config=dict(changes), epochs=args.epochs, best_epoch=best["epoch"],
                            val_acc=best["val_acc"],
                            public_test=evaluate_run(run_dir, "public_test")["members"][0],
                            private_test=evaluate_run(run_dir, "private_test")["members"][0],
                            seconds_this_session=round(time.time() - t0, 1)))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results[-1]), flush=True)
    base = results[0]["private_test"]
    print(json.dumps({"recipes": {r["recipe"]: r["private_test"] for r in results},
                      "ratio": max(r["private_test"] for r in results) / base}))


if __name__ == "__main__":
    main()
