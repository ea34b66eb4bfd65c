"""The runs shipped in checkpoints/: configs, weights and predictions load and agree.

The FER2013 run's recompute check needs the real data (skips without FER2013_CSV); the
synthetic run's recompute always runs (its dataset is generated).
"""

from __future__ import annotations

import numpy as np
import pytest

from fer.evaluation import evaluate_run
from fer.runs import SHIPPED_ROOT, Run
from fer.training import TrainConfig
from fer.weights import load_model, load_tensors

FER15 = SHIPPED_ROOT / "fer2013-seed-cnn-15"
DEMO = SHIPPED_ROOT / "synthetic-demo"
# Class counts (angry, disgust, fear, happy, sad, surprise, neutral) of the official test splits.
PUBLIC_COUNTS = [467, 56, 496, 895, 653, 415, 607]
PRIVATE_COUNTS = [491, 55, 528, 879, 594, 416, 626]


def test_the_real_run_is_the_documented_recipe():
    cfg = TrainConfig.from_dict(Run(FER15).config())
    assert (cfg.model, cfg.members, cfg.base_seed) == ("seed_cnn", 15, 0)
    assert (cfg.augment, cfg.schedule, cfg.label_smoothing, cfg.epochs) == ("standard", "cosine", 0.1, 30)
    assert Run(FER15).config()["dataset_sha256"].startswith("aee2206a1e4b")  # Kaggle's fer2013.csv


@pytest.mark.parametrize("split, counts, first_row", [("public_test", PUBLIC_COUNTS, 28709),
                                                      ("private_test", PRIVATE_COUNTS, 32298)])
def test_real_run_predictions_cover_the_official_test_split(split, counts, first_row):
    run = Run(FER15)
    z = run.predictions(split)
    m = len(z["members"])
    assert m >= 1 and z["probs"].shape == (m, 3589, 7) and z["probs"].dtype == np.float32
    np.testing.assert_allclose(z["probs"].sum(-1), 1.0, atol=1e-4)
    assert np.bincount(z["labels"], minlength=7).tolist() == counts
    np.testing.assert_array_equal(z["indices"], np.arange(first_row, first_row + 3589))
    # Every member that voted has its weights shipped, and members are seeds 0..14.
    assert set(z["members"].tolist()) <= set(range(15))
    for mid in z["members"]:
        assert run.weights_path(int(mid)).exists()


def test_shipped_runs_hold_no_images_and_no_resume_state_in_git():
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "checkpoints"], cwd=SHIPPED_ROOT.parent,
                             capture_output=True, text=True, check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [p for p in tracked if p.endswith((".last.safetensors", ".csv", ".gz", "worker.log"))]
    for p in tracked:
        if p.endswith(".npz"):
            with np.load(SHIPPED_ROOT.parent / p, allow_pickle=False) as z:
                assert not any(z[k].dtype == np.uint8 and z[k].ndim >= 3 for k in z.files), p


@pytest.mark.parametrize("run_dir", [FER15, DEMO], ids=["fer2013-seed-cnn-15", "synthetic-demo"])
def test_every_finished_member_loads_as_its_model(run_dir):
    run = Run(run_dir)
    cfg = TrainConfig.from_dict(run.config())
    finished = run.finished_members()
    assert finished
    for m in finished:
        model = load_model(run.weights_path(m), cfg.model)
        assert sum(p.numel() for p in model.parameters()) == 538_951
        _, meta = load_tensors(run.weights_path(m))
        assert meta["member"] == m and meta["seed"] == cfg.base_seed + m
    if run.status().get("state") == "done":
        assert finished == list(range(cfg.members))


def test_synthetic_demo_is_complete_and_its_predictions_recompute():
    run = Run(DEMO)
    assert run.status()["state"] == "done" and run.finished_members() == list(range(9))
    report = evaluate_run(DEMO, "private_test", data="synthetic", recompute=True, curve=False)
    assert report["stored_max_abs_diff"] < 2e-2  # fp16 weights vs the fp32 ones that predicted
    assert report["stored_argmax_agreement"] > 0.99
    stored = evaluate_run(DEMO, "private_test", curve=False)
    assert abs(report["majority"] - stored["majority"]) < 0.005
    assert stored["majority"] == pytest.approx(0.788, abs=0.001)


def test_evaluate_with_a_dataset_recomputes_from_the_weights(capsys):
    """``evaluate --data`` (no --recompute) computes from the weights and compares; without
    --data it reads the stored predictions."""
    import json

    from fer.cli import main as cli

    base = ["evaluate", "--run-dir", str(DEMO), "--split", "private_test", "--members", "0-1", "--json"]
    assert cli(base + ["--data", "synthetic"]) == 0
    recomputed = json.loads(capsys.readouterr().out)
    assert recomputed["stored_max_abs_diff"] < 2e-2 and recomputed["stored_argmax_agreement"] > 0.99
    assert cli(base) == 0
    stored = json.loads(capsys.readouterr().out)
    assert "stored_max_abs_diff" not in stored
    assert recomputed["member_ids"] == stored["member_ids"] == [0, 1]


def test_real_run_predictions_recompute_from_the_shipped_weights(real_csv):
    """Two members (first and last finished) keep the test short; the CLI recomputes them all:
    ``python -m fer evaluate --run-dir checkpoints/fer2013-seed-cnn-15 --data … --json``."""
    ids = Run(FER15).finished_members()
    two = sorted({ids[0], ids[-1]})
    report = evaluate_run(FER15, "private_test", data=str(real_csv), recompute=True, curve=False, members=two)
    stored = evaluate_run(FER15, "private_test", curve=False, members=two)
    assert report["member_ids"] == stored["member_ids"]
    assert report["stored_max_abs_diff"] < 2e-2
    assert report["stored_argmax_agreement"] > 0.99
    assert abs(report["majority"] - stored["majority"]) < 0.005
