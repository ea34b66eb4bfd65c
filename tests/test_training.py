import json
import time

import numpy as np
import pytest
import torch

from fer.cli import main as cli
from fer.data import load_dataset
from fer.errors import ConfigError, RunDirError
from fer.runs import Run, start_worker
from fer.training import MemberState, TrainConfig, create_run, dataset_fields, run_training


def make_run(tmp_path, data, name="run", **kw):
    cfg = TrainConfig(data=data, **dict(dict(members=2, epochs=1, batch_size=64), **kw),
                      **dataset_fields(load_dataset(data)))
    return create_run(cfg, tmp_path / name)


def test_cli_two_members_one_epoch_makes_a_complete_run_dir(tmp_path, tiny_csv, capsys):
    run_dir = tmp_path / "r"
    assert cli(["train", "--data", tiny_csv, "--members", "2", "--epochs", "1", "--run-dir",
                str(run_dir), "--no-progress", "--batch-size", "64"]) == 0
    run = Run(run_dir)
    cfg = run.config()
    assert cfg["members"] == 2 and cfg["dataset_id"].startswith("tiny-")
    # The recipe the ablation measured best (README) is what a run gets when it asks for nothing.
    assert (cfg["augment"], cfg["schedule"], cfg["label_smoothing"]) == ("standard", "cosine", 0.0)
    assert run.status()["state"] == "done"
    metrics = run.metrics()
    assert [(m["member"], m["epoch"]) for m in metrics] == [(0, 1), (1, 1)]
    assert [m["seed"] for m in metrics] == [0, 1]
    for rec in metrics:
        assert 0 <= rec["val_acc"] <= 1 and rec["train_loss"] > 0 and rec["images_per_s"] > 0
    assert run.weights_path(0).exists() and run.weights_path(1).exists()
    for split, n in (("train", 400), ("public_test", 60), ("private_test", 60)):
        p = run.predictions(split)
        assert p["probs"].shape == (2, n, 7) and p["members"].tolist() == [0, 1]
        np.testing.assert_allclose(p["probs"].sum(2), 1, atol=1e-5)
    capsys.readouterr()
    assert cli(["evaluate", "--run-dir", str(run_dir), "--split", "private_test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["members"]) == 2 and 0 <= report["majority"] <= 1 and 0 <= report["soft"] <= 1
    assert np.array(report["confusion"]).sum() == 60
    # The CLI refuses to overwrite a run without --resume.
    assert cli(["train", "--data", tiny_csv, "--run-dir", str(run_dir), "--no-progress"]) == 2


def test_same_seed_same_numbers_and_members_differ(tmp_path, tiny_csv):
    a, b = make_run(tmp_path, tiny_csv, "a"), make_run(tmp_path, tiny_csv, "b")
    run_training(a.path, progress=False)
    run_training(b.path, progress=False)
    assert [m["train_loss"] for m in a.metrics()] == [m["train_loss"] for m in b.metrics()]
    pa, pb = a.predictions("public_test")["probs"], b.predictions("public_test")["probs"]
    np.testing.assert_array_equal(pa, pb)
    assert not np.allclose(pa[0], pa[1])  # members 0 and 1 differ (seed 0 vs 1)


def test_stop_mid_epoch_then_resume_equals_uninterrupted(tmp_path, tiny_csv):
    full = make_run(tmp_path, tiny_csv, "full", members=1, epochs=2)
    run_training(full.path, progress=False)
    part = make_run(tmp_path, tiny_csv, "part", members=1, epochs=2)
    (part.path / "stop.request").write_text("stop")  # Stop pressed before the first batch ends
    assert run_training(part.path, progress=False)["state"] == "stopped"
    assert not (part.path / "stop.request").exists()
    from fer.weights import load_tensors

    _, meta = load_tensors(part.path / "members" / "m00.last.safetensors")
    assert MemberState(**meta["state"]).next_batch == 1 and part.metrics() == []
    assert run_training(part.path, progress=False)["state"] == "done"
    assert [m["epoch"] for m in part.metrics()] == [1, 2]
    np.testing.assert_allclose(part.predictions("private_test")["probs"],
                               full.predictions("private_test")["probs"], atol=1e-6)


def wait_for(cond, timeout=120.0, what=""):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_second_worker_on_a_running_run_is_refused(tmp_path, tiny_csv):
    run = make_run(tmp_path, tiny_csv, "d", members=1, epochs=8)
    start_worker(run.path)
    from fer.errors import RunDirError

    with pytest.raises(RunDirError, match="already training"):
        start_worker(run.path)
    # Even past the status check (a stale or hand-edited status.json), the run's lock refuses
    # a second worker, and the refused one leaves the status alone.
    wait_for(lambda: (run.path / "worker.lock").exists(), 60, "the worker's lock")
    time.sleep(1.0)
    with pytest.raises(RunDirError, match="another worker is already training"):
        run_training(run.path, progress=False)
    assert run.status()["state"] == "running"
    wait_for(lambda: run.status()["state"] == "done", 120, "run to finish")


def test_config_rejects_unknown_keys_and_bad_types():
    with pytest.raises(ConfigError, match="unknown key.*epochz"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ConfigError, match="'members' is '3'"):
        TrainConfig.from_dict({"members": "3"})
    with pytest.raises(ConfigError, match="val_fraction"):
        TrainConfig(val_fraction=0.0)
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0


def test_resume_of_a_packed_partial_run_skips_finished_members(tmp_path, tiny_csv):
    """Shipped runs keep only best weights, metrics and predictions: resuming one trains only
    the members it lacks and keeps the finished members' numbers."""
    run = make_run(tmp_path, tiny_csv, "p", members=2, epochs=1)
    from fer.training import run_training as rt

    cfg = run.config()
    cfg["members"] = 1
    # Train member 0 alone, then drop its resume state as packing does, then ask for 2 members.
    import json as _json

    (run.path / "config.json").write_text(_json.dumps(cfg))
    assert rt(run.path, progress=False)["state"] == "done"
    for p in (run.path / "members").glob("*.last.safetensors"):
        p.unlink()
    member0 = run.metrics()
    before = run.predictions("public_test")["probs"][0].copy()
    cfg["members"] = 2
    (run.path / "config.json").write_text(_json.dumps(cfg))
    assert rt(run.path, progress=False)["state"] == "done"
    assert run.metrics()[:1] == member0 and [m["member"] for m in run.metrics()] == [0, 1]
    after = run.predictions("public_test")
    assert after["members"].tolist() == [0, 1]
    np.testing.assert_array_equal(after["probs"][0], before)


def test_validation_masks_match_the_member_split_and_exclusions(tmp_path, tiny_csv):
    from fer.ensemble import member_split
    from fer.evaluation import evaluate_run
    from fer.training import member_rows

    run = make_run(tmp_path, tiny_csv, "v", members=2, epochs=1)
    run_training(run.path, progress=False)
    tr = run.predictions("train")
    assert tr["validation"].shape == tr["trained"].shape == (2, 400)
    for i in range(2):
        _, va = member_split(400, i, 0.1)
        assert np.flatnonzero(tr["validation"][i]).tolist() == va.tolist()
        assert not (tr["validation"][i] & tr["trained"][i]).any()
        assert (tr["validation"][i] | tr["trained"][i]).all()
    # A face only counts for members that held it out: accuracy over exactly 40 faces each.
    report = evaluate_run(run.path, "validation")
    for i, acc in enumerate(report["members"]):
        p = tr["probs"][i][tr["validation"][i]]
        assert acc == pytest.approx(float((p.argmax(1) == tr["labels"][tr["validation"][i]]).mean()))
    # With exclusions, the flagged rows are in neither mask.
    ds = load_dataset(tiny_csv)
    flagged = np.array([3, 17])
    import fer.data.audit as audit

    cfg = TrainConfig.from_dict(dict(run.config(), exclude_flagged=True))
    orig = audit.training_exclusions
    audit.training_exclusions = lambda d, *a, **k: flagged
    try:
        t, v = member_rows(ds, cfg, 0)
    finally:
        audit.training_exclusions = orig
    assert len(t) + len(v) == 398 and not set(flagged) & (set(t) | set(v))
    # Recomputed from the weights (evaluate --data), the held-out faces are the member's own
    # even with exclusions, not a split of all Training rows.
    from fer.evaluation import split_predictions

    (run.path / "config.json").write_text(json.dumps(cfg.to_dict()))
    audit.training_exclusions = lambda d, *a, **k: flagged
    try:
        again = split_predictions(run, "validation", tiny_csv, recompute=True)
    finally:
        audit.training_exclusions = orig
    held_out = ~np.isnan(again["probs"][:, :, 0])
    assert again["indices"][held_out[0]].tolist() == v.tolist()
    assert not held_out[:, flagged].any() and not again["trained"][:, flagged].any()


def test_members_trained_apart_and_merged_equal_one_run(tmp_path, tiny_csv, capsys):
    """A member is defined by config + seed: seeds 1..2 trained in a second run (--seed 1) and
    merged give exactly the predictions, weights and masks of one 3-member run."""
    from fer.runs import merge_members
    from fer.training import run_training as rt
    from fer.weights import load_tensors

    whole = make_run(tmp_path, tiny_csv, "whole", members=3)
    part_a = make_run(tmp_path, tiny_csv, "a", members=3)
    part_b = make_run(tmp_path, tiny_csv, "b", members=2, base_seed=1)
    for run in (whole, part_b):
        assert rt(run.path, progress=False)["state"] == "done"
    cfg = part_a.config()
    (part_a.path / "config.json").write_text(json.dumps(dict(cfg, members=1)))
    assert rt(part_a.path, progress=False)["state"] == "done"
    (part_a.path / "config.json").write_text(json.dumps(cfg))

    assert merge_members(part_b.path, part_a.path) == [1, 2]
    assert part_a.finished_members() == [0, 1, 2]
    assert merge_members(part_b.path, part_a.path) == []  # again: nothing new, nothing refused
    from fer.cli import main as cli

    assert cli(["merge", "--from", str(part_b.path), "--run-dir", str(part_a.path)]) == 0
    assert capsys.readouterr().out == f"nothing new: every finished member of {part_b.path} is in {part_a.path} already\n"
    for split in ("train", "public_test", "private_test"):
        got, want = part_a.predictions(split), whole.predictions(split)
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=f"{split} {key}")
    t_got, meta = load_tensors(part_a.weights_path(2))
    t_want, _ = load_tensors(whole.weights_path(2))
    assert meta["member"] == 2 and meta["seed"] == 2
    assert all(torch.equal(t_got[k], t_want[k]) for k in t_want)
    assert [(r["member"], r["seed"]) for r in part_a.metrics()] == [(0, 0), (1, 1), (2, 2)]
    # Resuming the merged run has nothing left to train.
    assert rt(part_a.path, progress=False)["state"] == "done"
    assert part_a.finished_members() == [0, 1, 2]


def test_merge_refuses_other_recipes_existing_members_and_foreign_seeds(tmp_path, tiny_csv):
    from fer.runs import merge_members
    from fer.training import run_training as rt

    dst = make_run(tmp_path, tiny_csv, "dst", members=2)
    assert rt(dst.path, progress=False)["state"] == "done"
    other = make_run(tmp_path, tiny_csv, "lr", members=1, base_seed=1, lr=0.01)
    with pytest.raises(RunDirError, match="config 'lr' differs"):
        merge_members(other.path, dst.path)
    again = make_run(tmp_path, tiny_csv, "again", members=1, base_seed=1)
    assert rt(again.path, progress=False)["state"] == "done"
    # A config written before a key existed (here class_weights) means that key's default.
    old = json.loads((again.path / "config.json").read_text())
    del old["class_weights"]
    (again.path / "config.json").write_text(json.dumps(old))
    # Training is deterministic: the same seed again is the same member, so merging is a no-op...
    assert merge_members(again.path, dst.path) == []
    weighted = make_run(tmp_path, tiny_csv, "weighted", members=1, base_seed=1, class_weights="balanced")
    with pytest.raises(RunDirError, match="config 'class_weights' differs"):
        merge_members(weighted.path, dst.path)
    # ...but a member that differs (another machine's arithmetic) never overwrites the one there.
    z = again.predictions("public_test")
    z["probs"] = np.roll(z["probs"], 1, axis=-1)
    np.savez(again.path / "predictions" / "public_test.npz", **z)
    with pytest.raises(RunDirError, match="already has a different member 1"):
        merge_members(again.path, dst.path)
    far = make_run(tmp_path, tiny_csv, "far", members=1, base_seed=5)
    assert rt(far.path, progress=False)["state"] == "done"
    with pytest.raises(RunDirError, match="seed 5.*seeds 0..1"):
        merge_members(far.path, dst.path)
    assert dst.finished_members() == [0, 1]


def test_balanced_class_weights_by_hand():
    from fer.training import class_weights

    labels = np.array([0, 0, 0, 3, 3, 1])  # 6 faces: 3 angry, 1 disgust, 2 happy, no others
    w = class_weights(labels, "balanced")
    # w_c = N / (7 n_c): 6/21, 6/7, 6/14; classes without faces weigh 0.
    np.testing.assert_allclose(w.numpy(), [6 / 21, 6 / 7, 0, 6 / 14, 0, 0, 0], rtol=1e-6)
    assert w.dtype == torch.float32
    # Each present class weighs the same in total: n_c * w_c = N / 7.
    np.testing.assert_allclose((np.bincount(labels, minlength=7) * w.numpy())[[0, 1, 3]], 6 / 7, rtol=1e-6)
    assert class_weights(labels, "none") is None
    with pytest.raises(ConfigError, match="class_weights is 'inverse'"):
        class_weights(labels, "inverse")
    with pytest.raises(ConfigError, match="'class_weights' is 'sqrt'"):
        TrainConfig(class_weights="sqrt")


def test_class_weights_change_what_a_member_learns(tmp_path, tiny_csv):
    from fer.weights import load_tensors

    plain = make_run(tmp_path, tiny_csv, "plain", members=1)
    weighted = make_run(tmp_path, tiny_csv, "weighted", members=1, class_weights="balanced")
    for r in (plain, weighted):
        assert run_training(r.path, progress=False)["state"] == "done"
    assert weighted.config()["class_weights"] == "balanced"
    a, b = (load_tensors(r.weights_path(0))[0] for r in (plain, weighted))
    # Same seed, same batches: the loss's weights are the only difference.
    assert (a["features.0.0.weight"] - b["features.0.0.weight"]).abs().max() > 1e-4
