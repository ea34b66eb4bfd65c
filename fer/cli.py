"""``python -m fer``: train and evaluate ensembles headless (same code as the app's worker)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fer.errors import FerError


def _train(args: argparse.Namespace) -> int:
    from fer.data import load_dataset
    from fer.runs import Run
    from fer.training import TrainConfig, create_run, dataset_fields, make_run_dir, run_training

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    if (run_dir / "config.json").exists():
        if not args.resume:
            raise FerError(f"{run_dir}: already holds a run; pass --resume to continue it "
                           f"or choose a new --run-dir")
        ds = None
    else:
        make_run_dir(run_dir)  # fail before loading the data, not after
        ds = load_dataset(args.data, ferplus=args.ferplus or None)
        cfg = TrainConfig(data=args.data, ferplus=args.ferplus, model=args.model, members=args.members, epochs=args.epochs,
                          base_seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                          val_fraction=args.val_fraction, precision=args.precision,
                          augment=args.augment, schedule=args.schedule,
                          label_smoothing=args.label_smoothing, class_weights=args.class_weights,
                          weight_decay=args.weight_decay,
                          exclude_flagged=args.exclude_flagged,
                          **dataset_fields(ds))
        create_run(cfg, run_dir)
    status = run_training(run_dir, progress=not args.no_progress, dataset=ds)
    if status.get("state") == "failed":
        print(f"training failed: {status.get('error')}", file=sys.stderr)
        return 1
    print(f"{Run(run_dir).id}: {status.get('state')}")
    return 0


def _member_list(text: str | None) -> list[int] | None:
    """``"0-8"``, ``"0,3,5"`` or ``"0-4,9"`` → member ids; None for None/empty. Raises FerError."""
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            out.extend(range(int(a), int(b or a) + 1))
    except ValueError:
        raise FerError(f"--members {text!r}: expected member ids like 0-8 or 0,3,5") from None
    return out


def _evaluate(args: argparse.Namespace) -> int:
    from fer.evaluation import evaluate_run

    # A dataset given means: compute the predictions from the weights on it (and compare them
    # with the stored ones), never silently ignore it.
    recompute = args.recompute or args.data is not None
    report = evaluate_run(Path(args.run_dir), args.split, data=args.data, recompute=recompute,
                          max_subsets=args.subsets, members=_member_list(args.members))
    if args.json:
        print(json.dumps(report))
    else:
        print(f"run {report['run']}  split {report['split']}  faces {report['n']}")
        for m, acc in zip(report["member_ids"], report["members"]):
            print(f"  member {m:2d}: {acc:.4f}")
        if report["majority"] is not None:
            print(f"  majority vote: {report['majority']:.4f}\n  soft vote:     {report['soft']:.4f}")
        if "stored_max_abs_diff" in report:
            print(f"  recomputed vs stored predictions: max |diff| {report['stored_max_abs_diff']:.2e}, "
                  f"same top class {report['stored_argmax_agreement']:.4%}")
        if report.get("size_curve"):
            print("   k  ensembles  majority (mean ± std)  soft (mean ± std)  oracle   ECE     NLL")
            for r in report["size_curve"]:
                print(f"  {r['k']:2d}  {r['subsets']:9d}  {r['majority']['mean']:.4f} ± {r['majority']['std']:.4f}"
                      f"      {r['soft']['mean']:.4f} ± {r['soft']['std']:.4f}   {r['oracle']['mean']:.4f}"
                      f"  {r['ece']['mean']:.4f}  {r['nll']['mean']:.4f}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from fer.runs import pack_run

    sizes = pack_run(Path(args.run_dir), half=not args.fp32)
    print(f"packed {args.run_dir}: {sizes['bytes_before'] / 1e6:.1f} MB -> {sizes['bytes_after'] / 1e6:.1f} MB")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from fer.runs import Run, merge_members

    added = merge_members(Path(args.source), Path(args.run_dir))
    if added:
        print(f"merged {len(added)} member(s) into {args.run_dir}: {added}")
    elif Run(Path(args.source)).finished_members():
        print(f"nothing new: every finished member of {args.source} is in {args.run_dir} already")
    else:
        print(f"{args.source} has no finished members yet")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from fer.data import load_dataset
    from fer.data.audit import audit

    ds = load_dataset(args.data, unknown_classes="exclude" if args.exclude_unknown_classes else "refuse",
                      ferplus=args.ferplus)
    s = audit(ds, near_constant_std=args.std_threshold).summary
    if args.json:
        print(json.dumps(s))
        return 0
    d = s["duplicates"]
    print(f"dataset {s['dataset']}  rows {s['rows']}")
    for split, c in s["class_counts"].items():
        print(f"  {split:13s} " + "  ".join(f"{k} {v}" for k, v in c.items()))
    print(f"  blank (all pixels equal): {s['blank']['count']}  rows {s['blank']['rows']}")
    print(f"  near-constant (std < {s['thresholds']['near_constant_std']:g}): {s['near_constant']['count']}")
    print(f"  duplicate groups {d['groups']} holding {d['rows']} rows ({d['redundant']} redundant), "
          f"{d['conflicting_groups']} with conflicting labels, {d['cross_split_groups']} spanning splits")
    for k, v in s["leakage"].items():
        print(f"  leakage {k}: {v['count']} rows")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a user error, with its message)."""
    from fer.models import list_models
    from fer.training import AUGMENTS, CLASS_WEIGHTS, PRECISIONS, SCHEDULES, TrainConfig as D  # defaults: one source

    p = argparse.ArgumentParser(prog="python -m fer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a seeded ensemble into a run directory",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--data", default=D.data, help="path to fer2013.csv[.gz|.zip] or 'synthetic'")
    t.add_argument("--ferplus", default=D.ferplus, help="FER+ fer2013new.csv: train on its majority-vote labels")
    t.add_argument("--members", type=int, default=D.members, help="how many members (seeds) to train")
    t.add_argument("--epochs", type=int, default=D.epochs,
                   help="passes over each member's training faces; the best-validation epoch is kept")
    t.add_argument("--seed", type=int, default=D.base_seed, help="base seed; member k uses seed+k")
    t.add_argument("--run-dir", required=True, help="the run folder to create (or continue with --resume)")
    t.add_argument("--model", default=D.model, choices=list_models(), help="the network")
    t.add_argument("--val-fraction", type=float, default=D.val_fraction,
                   help="share of the Training faces each member holds out")
    t.add_argument("--batch-size", type=int, default=D.batch_size, help="faces per gradient step")
    t.add_argument("--lr", type=float, default=D.lr, help="Adam's learning rate")
    t.add_argument("--weight-decay", type=float, default=D.weight_decay, help="Adam's L2 penalty")
    t.add_argument("--precision", default=D.precision, choices=PRECISIONS,
                   help="auto: bf16 autocast + channels_last on CPU, AMP on CUDA")
    t.add_argument("--augment", default=D.augment, choices=AUGMENTS,
                   help="standard: flip + shift/rotate/scale (best in the README's recipe ablation)")
    t.add_argument("--schedule", default=D.schedule, choices=SCHEDULES,
                   help="learning rate: constant, or cosine decay to 0 over all epochs")
    t.add_argument("--label-smoothing", type=float, default=D.label_smoothing,
                   help="share of each target spread over the other classes")
    t.add_argument("--class-weights", default=D.class_weights, choices=CLASS_WEIGHTS,
                   help="balanced: weigh each class's faces by N / (7 n_c) in the loss (Disgust ~9x)")
    t.add_argument("--exclude-flagged", action="store_true",
                   help="leave out train faces the audit flags (blank, conflicting duplicates, test copies)")
    t.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    t.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    t.add_argument("--no-progress", action="store_true", help="no tqdm bar (worker mode)")
    t.set_defaults(func=_train)
    e = sub.add_parser("evaluate", help="member and ensemble accuracy of a run on a split")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--data", default=None,
                   help="recompute the predictions from the weights on this dataset and compare them "
                        "with the stored ones (without it: the stored predictions)")
    e.add_argument("--split", default="private_test",
                   choices=["train", "validation", "public_test", "private_test"])
    e.add_argument("--recompute", action="store_true", help="kept for old scripts: --data alone recomputes")
    e.add_argument("--subsets", type=int, default=200,
                   help="size curve: ensembles scored per size k (all when fewer exist)")
    e.add_argument("--members", default=None,
                   help="only these members vote, e.g. 0-8 (the first 9) or 0,3,5; default all finished")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_evaluate)
    k = sub.add_parser("pack", help="make a finished run shippable (fp16 weights, no resume state)")
    k.add_argument("--run-dir", required=True)
    k.add_argument("--fp32", action="store_true", help="keep float32 weights")
    k.set_defaults(func=_pack)
    g = sub.add_parser("merge", help="copy the finished members of a run trained with other seeds into this run")
    g.add_argument("--run-dir", required=True, help="the ensemble to add members to")
    g.add_argument("--from", dest="source", required=True,
                   help="a run with the same config and other seeds (trained with --seed)")
    g.set_defaults(func=_merge)
    a = sub.add_parser("audit", help="blank images, exact duplicates, cross-split leakage, class counts")
    a.add_argument("--data", required=True, help="any dataset source load_dataset reads")
    a.add_argument("--ferplus", default=None, help="FER+ fer2013new.csv to relabel a FER2013 CSV with")
    a.add_argument("--exclude-unknown-classes", action="store_true",
                   help="image folders: skip class folders FER2013 lacks (e.g. contempt) instead of refusing")
    a.add_argument("--std-threshold", type=float, default=10.0, help="near-constant: pixel std below this")
    a.add_argument("--json", action="store_true", help="print the audit summary as one JSON object")
    a.set_defaults(func=_audit)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except FerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
