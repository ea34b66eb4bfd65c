"""Runs as .zip archives (fer.run_archive): the shipped demo run packed and imported back, then
hostile and broken archives, each refused with a message naming the member and what is wrong,
and never leaving anything in the runs root."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fer import run_archive
from fer.errors import CheckpointError, ConfigError, RunDirError
from fer.models import create_model
from fer.run_archive import MAX_FILES, import_run, zip_run
from fer.runs import Run, list_runs
from fer.weights import save_model

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-demo"


@pytest.fixture(scope="module")
def demo_files() -> dict[str, bytes]:
    """The demo run's importable files by their path in the run folder."""
    with zipfile.ZipFile(io.BytesIO(zip_run(DEMO))) as zf:
        return {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}


def zipped(files: dict[str, bytes], top: str = "demo/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            zf.writestr(top + rel, data)
    return buf.getvalue()


def with_entry(files: dict[str, bytes], info: zipfile.ZipInfo, data: bytes) -> bytes:
    buf = io.BytesIO(zipped(files))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(info, data)
    return buf.getvalue()


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def refused(data: bytes, root: Path, expected: str, error=RunDirError, name: str = "run.zip"):
    """Import must fail with ``expected`` (a regex) and leave ``root`` empty."""
    with pytest.raises(error, match=expected):
        import_run(data, root, name=name)
    assert not root.exists() or not any(root.iterdir())


# ---------------------------------------------------------------- the good path
def test_a_packed_run_imports_back_identical(tmp_path):
    data = zip_run(DEMO)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "synthetic-demo/config.json" in names and "synthetic-demo/members/m08.safetensors" in names
    assert not [n for n in names if n.endswith(("status.json", ".last.safetensors", "worker.log"))]
    run = import_run(data, tmp_path, name="synthetic-demo.zip")
    assert run.path.parent == tmp_path and run.id.endswith("-imported-synthetic-demo")
    assert [r.id for r in list_runs([tmp_path])] == [run.id]  # the sidebar's picker lists it
    assert run.config() == Run(DEMO).config()
    assert run.finished_members() == list(range(9)) and run.status()["state"] == "done"
    assert run.status()["imported_from"] == "synthetic-demo.zip"
    for split in ("train", "public_test", "private_test"):
        got, want = run.predictions(split), Run(DEMO).predictions(split)
        assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)
    assert run.metrics() == Run(DEMO).metrics()
    assert [p.name for p in tmp_path.iterdir()] == [run.id]  # no temporary folder left


def test_files_at_the_top_and_a_partial_run_import_as_stopped(tmp_path, demo_files):
    files = {k: v for k, v in demo_files.items() if k != "metrics.jsonl"}
    for split in ("train", "public_test", "private_test"):  # keep members 0 and 1 only
        z = dict(np.load(io.BytesIO(demo_files[f"predictions/{split}.npz"])))
        files[f"predictions/{split}.npz"] = npz(**{k: (v[:2] if v.ndim >= 2 or k == "members" else v)
                                                   for k, v in z.items()})
    files = {k: v for k, v in files.items() if not k.startswith("members/") or k < "members/m02"}
    run = import_run(zipped(files, top=""), tmp_path, name="../../etc/evil name!.zip")
    assert run.path.parent == tmp_path and run.id.endswith("-imported-evil-name")
    assert run.finished_members() == [0, 1] and run.metrics() == []
    assert {k: run.status()[k] for k in ("state", "member", "epoch")} == {"state": "stopped", "member": 2, "epoch": 0}


# ---------------------------------------------------------------- not a run archive at all
class Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def _torch_save() -> bytes:
    buf = io.BytesIO()
    torch.save(create_model("seed_cnn").state_dict(), buf)
    return buf.getvalue()


@pytest.mark.parametrize("make, expected", [
    (_torch_save, r"^model.zip: refused: this is a PyTorch torch.save \(.pt\) file: a zip holding the "
                  r"pickle .*data.pkl, not a .zip of a run folder. Pickle files are refused for safety: "
                  r"loading one can run any code$"),
    (lambda: pickle.dumps(Boom(), protocol=4), r"^model.zip: refused: this is a Python pickle \(protocol 4\), "
                                               r"not a .zip of a run folder. Pickle files are refused for safety"),
    (lambda: b"emotion,pixels,Usage\n0,1 2 3,Training\n", r"^model.zip: not a .zip archive \(expected a zipped "
                                                          r"run folder: config.json, members/m00.safetensors"),
    (lambda: b"PK\x03\x04" + b"\0" * 100, r"^model.zip: corrupt zip archive"),
    (lambda: b"", r"^model.zip: the file is empty"),
])
def test_a_file_that_is_not_a_run_zip_is_refused_by_content(tmp_path, monkeypatch, make, expected):
    monkeypatch.chdir(tmp_path)
    refused(make(), tmp_path / "runs", expected, name="model.zip")
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------- weights inside the archive
def _weights(tmp_path: Path, model: str = "seed_cnn", rename: bool = False) -> bytes:
    m = create_model(model)
    save_model(tmp_path / "w.safetensors", m, model)
    if rename:
        from fer.weights import load_tensors, save_tensors

        t, meta = load_tensors(tmp_path / "w.safetensors")
        t["features.0.conv.weight"] = t.pop("features.0.0.weight")
        save_tensors(tmp_path / "w.safetensors", t, meta)
    return (tmp_path / "w.safetensors").read_bytes()


@pytest.mark.parametrize("member, make, expected", [
    ("m04.safetensors", lambda tmp, good: _torch_save(),
     r"^run.zip: members/m04.safetensors: refused: this is a PyTorch torch.save \(.pt\) file.*for safety only "
     r"safetensors weights are accepted \(pickle can run code\)$"),
    ("m03.safetensors", lambda tmp, good: good[: len(good) // 3],
     r"^run.zip: members/m03.safetensors: not a valid safetensors file \(corrupt or truncated: "),
    ("m05.safetensors", lambda tmp, good: b"\xff" * 4096, r"^run.zip: members/m05.safetensors: not a valid safetensors"),
    ("m01.safetensors", lambda tmp, good: _weights(tmp, "simple_cnn"),
     r"^run.zip: members/m01.safetensors: weights are for model 'simple_cnn', expected 'seed_cnn'$"),
    ("m02.safetensors", lambda tmp, good: _weights(tmp, rename=True),
     r"^run.zip: members/m02.safetensors: keys do not match seed_cnn: 1 missing \(features.0.0.weight\); "
     r"1 unexpected \(features.0.conv.weight\)"),
])
def test_bad_weights_name_the_member_file(tmp_path, demo_files, member, make, expected):
    files = dict(demo_files)
    files[f"members/{member}"] = make(tmp_path, files[f"members/{member}"])
    refused(zipped(files), tmp_path / "runs", expected, error=CheckpointError)


def test_a_pt_file_inside_the_archive_is_refused_by_name(tmp_path, demo_files):
    files = dict(demo_files, **{"members/m00.pt": _torch_save()})
    refused(zipped(files), tmp_path / "runs", r"^run.zip: refused: members/m00.pt looks like a pickle/PyTorch "
                                              r"file; pickle is refused for safety")


# ---------------------------------------------------------------- unsafe names and sizes
def _info(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.external_attr = mode << 16
    return info


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("info, expected", [
    (_info("../evil.txt"), r"^run.zip: refused: member '../evil.txt' points outside the run folder \(..\)$"),
    (_info("demo/members/../../../evil.txt"), r"points outside the run folder"),
    (_info("/etc/cron.d/evil"), r"^run.zip: refused: member '/etc/cron.d/evil' has an absolute path$"),
    (_info("C:/Windows/evil.dll"), r"has an absolute path"),
    (_info("demo\\..\\evil.txt"), r"^run.zip: refused: member 'demo\\\\..\\\\evil.txt' has a backslash"),
    (_info("demo/predictions/link.npz", 0o120777), r"^run.zip: refused: member 'demo/predictions/link.npz' "
                                                    r"is a symbolic link$"),
    (_info("demo/config.json"), r"^run.zip: refused: demo/config.json appears twice in the archive$"),
    (_info("demo/notes.txt"), r"^run.zip: unexpected file notes.txt; a run archive holds only config.json"),
])
def test_unsafe_names_are_refused(tmp_path, demo_files, info, expected):
    refused(with_entry(demo_files, info, b"/etc/passwd"), tmp_path / "runs", expected)
    assert not (tmp_path / "evil.txt").exists()


def test_left_out_files_are_not_unpacked(tmp_path, demo_files):
    extra = {"status.json": b'{"state": "running", "pid": 1}', "worker.log": b"log",
             "members/m00.last.safetensors": b"resume state", "__MACOSX/._config.json": b"junk"}
    run = import_run(zipped(dict(demo_files, **extra)), tmp_path)
    assert run.status()["state"] == "done" and "pid" not in run.status()
    assert not (run.path / "worker.log").exists() and not (run.path / "members" / "m00.last.safetensors").exists()


def test_too_many_files_are_refused(tmp_path, demo_files):
    files = dict(demo_files, **{f"predictions/x{i}.npz": b"" for i in range(MAX_FILES)})
    refused(zipped(files), tmp_path / "runs", rf"^run.zip: holds {len(files):,} files, more than the limit of 512")


def test_a_zip_bomb_is_refused_from_its_directory(tmp_path, demo_files):
    buf = io.BytesIO(zipped(demo_files))
    before = len(buf.getvalue())
    info = zipfile.ZipInfo("demo/predictions/bomb.npz")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "a") as zf, zf.open(info, "w", force_zip64=True) as f:
        zeros = bytes(1 << 20)
        for _ in range(210):  # + the demo's 11 MB
            f.write(zeros)
    assert len(buf.getvalue()) < before + 1_000_000  # 210 MB in under 1 MB
    refused(buf.getvalue(), tmp_path / "runs", r"^run.zip: would unpack to 221 MB, more than the limit of "
                                               r"200 MB \(zip-bomb guard\)$")


def _declare_size(data: bytes, name: str, size: int) -> bytes:
    """``data`` with the central directory's uncompressed size of ``name`` set to ``size``."""
    out, pos = bytearray(data), 0
    while (entry := out.find(b"PK\x01\x02", pos)) >= 0:
        n = int.from_bytes(out[entry + 28: entry + 30], "little")
        if out[entry + 46: entry + 46 + n] == name.encode():
            out[entry + 24: entry + 28] = size.to_bytes(4, "little")
        pos = entry + 4
    return bytes(out)


def test_a_directory_that_lies_about_sizes_is_caught_while_unpacking(tmp_path, demo_files):
    data = _declare_size(zipped(demo_files), "demo/predictions/train.npz", 1000)
    assert zipfile.ZipFile(io.BytesIO(data)).getinfo("demo/predictions/train.npz").file_size == 1000
    refused(data, tmp_path / "runs", r"^run.zip: demo/predictions/train.npz is a corrupt or unsupported zip "
                                     r"member \(Bad CRC-32")


def test_the_unpacking_budget_is_counted_byte_by_byte(tmp_path, demo_files, monkeypatch):
    # Whatever the directory says, _read_member stops at the budget (here: 1 MB left for 9 MB).
    zf = zipfile.ZipFile(io.BytesIO(zipped(demo_files)))
    info = zf.getinfo("demo/predictions/train.npz")
    with pytest.raises(RunDirError, match=r"^run.zip: unpacks to more than the limit of 200 MB \(zip-bomb guard\)$"):
        run_archive._read_member(zf, info, "run.zip", io.BytesIO(), budget=1 << 20)


# ---------------------------------------------------------------- config, predictions, metrics
@pytest.mark.parametrize("change, error, expected", [
    (lambda c: dict(c, evil="rm -rf"), ConfigError, r"^run.zip: config.json: unknown key\(s\) evil; known: data"),
    (lambda c: dict(c, members="9"), ConfigError, r"^run.zip: config.json: key 'members' is '9' \(str\), expected int$"),
    (lambda c: dict(c, model="resnet152"), ConfigError, r"resnet152"),
    (lambda c: [c], RunDirError, r"^run.zip: config.json holds a JSON list, expected an object of config keys$"),
    (lambda c: dict(c, members=3), RunDirError, r"^run.zip: members/m03.safetensors is member 3, but config.json "
                                                r"has 3 member\(s\) \(0..2\)$"),
])
def test_bad_configs_are_refused(tmp_path, demo_files, change, error, expected):
    cfg = change(json.loads(demo_files["config.json"]))
    refused(zipped(dict(demo_files, **{"config.json": json.dumps(cfg).encode()})), tmp_path / "runs", expected, error)


def test_no_config_is_refused(tmp_path, demo_files):
    files = {k: v for k, v in demo_files.items() if k != "config.json"}
    refused(zipped(files), tmp_path / "runs", r"^run.zip: no config.json at the top of the archive or in one top "
                                              r"folder \(found demo/members/m00.safetensors")


def _preds(demo_files, **change) -> bytes:
    z = dict(np.load(io.BytesIO(demo_files["predictions/public_test.npz"])))
    return npz(**dict(z, **change))


@pytest.mark.parametrize("change, expected", [
    (dict(probs=np.array([object()] * 3, dtype=object)),
     r"^run.zip: predictions/public_test.npz: holds Python objects, which only pickle can load; refused for safety$"),
    (dict(probs=np.zeros((9, 10, 3), np.float32)), r"probs is float32 \(9, 10, 3\), expected float \(M, N, 7\)"),
    (dict(members=np.arange(9) + 5), r"members \[5, 6, .*\] must be distinct numbers 0..8"),
    (dict(labels=np.full(3589, 9)), r"labels must be class numbers 0..6"),
])
def test_bad_predictions_are_refused(tmp_path, demo_files, change, expected):
    z = dict(np.load(io.BytesIO(demo_files["predictions/public_test.npz"])))
    if "labels" in change:
        change["labels"] = np.full(len(z["labels"]), 9)
    files = dict(demo_files, **{"predictions/public_test.npz": _preds(demo_files, **change)})
    refused(zipped(files), tmp_path / "runs", expected)


def test_predictions_without_weights_are_refused(tmp_path, demo_files):
    files = {k: v for k, v in demo_files.items() if k != "members/m07.safetensors"}
    refused(zipped(files), tmp_path / "runs", r"^run.zip: predictions name member 7, but the archive has no "
                                              r"members/m07.safetensors$")


@pytest.mark.parametrize("line, expected", [
    (b"not json", r"^run.zip: metrics.jsonl line 109: not JSON"),
    (b'{"member": 0, "epoch": 1}', r"^run.zip: metrics.jsonl line 109: train_loss is None, expected a number$"),
    (b'{"member": 12, "epoch": 1, "train_loss": 1, "train_acc": 0, "val_loss": 1, "val_acc": 0, "seconds": 1}',
     r"^run.zip: metrics.jsonl line 109: member 12, epoch 1; expected member 0..8 and epoch ≥ 1$"),
])
def test_bad_metrics_lines_are_named(tmp_path, demo_files, line, expected):
    assert demo_files["metrics.jsonl"].count(b"\n") == 108
    files = dict(demo_files, **{"metrics.jsonl": demo_files["metrics.jsonl"] + line + b"\n"})
    refused(zipped(files), tmp_path / "runs", expected)
