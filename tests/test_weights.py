"""Weights files a user may hand in (fer.weights): corrupt, truncated, empty, pickled under any
name, another architecture's, renamed or mis-shaped keys, NaN. Each is a CheckpointError that
names the file and what does not match; nothing is ever unpickled."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from fer.errors import CheckpointError
from fer.models import create_model
from fer.weights import load_model, load_tensors, save_model, save_tensors

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch.save's legacy-format note


@pytest.fixture(scope="module")
def seed_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("seed_cnn").state_dict()


def good_bytes(tmp_path: Path, sd) -> bytes:
    save_tensors(tmp_path / "good.safetensors", sd, {"model": "seed_cnn"})
    return (tmp_path / "good.safetensors").read_bytes()


def test_a_saved_member_loads_back_exactly(tmp_path, seed_sd):
    model = create_model("seed_cnn")
    model.load_state_dict(seed_sd)
    save_model(tmp_path / "m00.safetensors", model, "seed_cnn")
    back = load_model(tmp_path / "m00.safetensors", "seed_cnn")
    assert not back.training
    assert all(torch.equal(back.state_dict()[k], v) for k, v in seed_sd.items())


@pytest.mark.parametrize("make, expected", [
    (lambda good: b"\x00\x01garbage" * 100,
     r"^bad.safetensors: not a valid safetensors file \(corrupt or truncated: .*header too large"),
    (lambda good: good[: len(good) // 2],
     r"^bad.safetensors: not a valid safetensors file \(corrupt or truncated: .*incomplete metadata"),
    (lambda good: good[:5], r"^bad.safetensors: not a valid safetensors file \(corrupt or truncated: "),
    (lambda good: b"", r"^bad.safetensors: not a valid safetensors file .*header too small"),
])
def test_corrupt_truncated_and_empty_files_are_named(tmp_path, seed_sd, make, expected):
    (tmp_path / "bad.safetensors").write_bytes(make(good_bytes(tmp_path, seed_sd)))
    with pytest.raises(CheckpointError, match=expected):
        load_model(tmp_path / "bad.safetensors", "seed_cnn")


def _torch_zip(sd) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def _torch_legacy(sd) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


class Boom:
    """Unpickling this would run os.system: the file must be refused before any unpickling."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("make, kind", [
    (_torch_zip, r"a PyTorch torch\.save \(\.pt\) file: a zip holding the pickle .*data\.pkl"),
    (_torch_legacy, r"a Python pickle \(protocol 2\)"),
    (lambda sd: pickle.dumps(Boom(), protocol=4), r"a Python pickle \(protocol 4\)"),
    (lambda sd: pickle.dumps({k: v.numpy() for k, v in sd.items()}, protocol=5), r"a Python pickle \(protocol 5\)"),
])
def test_a_pickle_named_safetensors_is_refused_by_content(tmp_path, seed_sd, monkeypatch, make, kind):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m00.safetensors").write_bytes(make(seed_sd))
    with pytest.raises(CheckpointError, match=rf"^m00.safetensors: refused: this is {kind}; for safety only "
                                              r"safetensors weights are accepted \(pickle can run code\)"):
        load_model(tmp_path / "m00.safetensors", "seed_cnn")
    assert not (tmp_path / "PWNED").exists()


def test_a_zip_that_is_not_a_torch_file_is_not_called_a_pickle(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m00.safetensors", b"x")
    (tmp_path / "m00.safetensors").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match=r"^m00.safetensors: a zip archive, not a safetensors file$"):
        load_tensors(tmp_path / "m00.safetensors")


def test_weights_of_another_architecture_name_it(tmp_path):
    save_model(tmp_path / "m00.safetensors", create_model("simple_cnn"), "simple_cnn")
    with pytest.raises(CheckpointError, match=r"^m00.safetensors: weights are for model 'simple_cnn', "
                                              r"expected 'seed_cnn'$"):
        load_model(tmp_path / "m00.safetensors", "seed_cnn")


def test_another_architecture_without_metadata_lists_the_key_differences(tmp_path):
    save_tensors(tmp_path / "m00.safetensors", create_model("simple_cnn").state_dict())  # no "model"
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "m00.safetensors", "seed_cnn")
    assert str(e.value) == (
        "m00.safetensors: keys do not match seed_cnn: 16 missing (classifier.1.bias, classifier.1.weight, "
        "classifier.3.bias, …); 4 unexpected (classifier.2.bias, classifier.2.weight, classifier.5.bias, …) "
        "(weights of another model, or renamed keys?)")


def test_renamed_keys_are_named(tmp_path, seed_sd):
    sd = dict(seed_sd)
    sd["features.0.conv.weight"] = sd.pop("features.0.0.weight")
    save_tensors(tmp_path / "m03.safetensors", sd, {"model": "seed_cnn"})
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "m03.safetensors", "seed_cnn")
    assert str(e.value) == ("m03.safetensors: keys do not match seed_cnn: 1 missing (features.0.0.weight); "
                            "1 unexpected (features.0.conv.weight) (weights of another model, or renamed keys?)")


def test_a_mis_shaped_tensor_gives_both_shapes(tmp_path, seed_sd):
    sd = dict(seed_sd)
    sd["classifier.1.weight"] = torch.zeros(256, 512)  # an FC layer for another input size
    save_tensors(tmp_path / "m01.safetensors", sd, {"model": "seed_cnn"})
    with pytest.raises(CheckpointError, match=r"^m01.safetensors: tensor classifier.1.weight has shape "
                                              r"\(256, 512\), seed_cnn expects \(256, 1152\)$"):
        load_model(tmp_path / "m01.safetensors", "seed_cnn")


def test_nan_weights_are_refused(tmp_path, seed_sd):
    sd = dict(seed_sd)
    sd["features.1.0.bias"] = sd["features.1.0.bias"].clone()
    sd["features.1.0.bias"][3] = float("nan")
    save_tensors(tmp_path / "m02.safetensors", sd, {"model": "seed_cnn"})
    with pytest.raises(CheckpointError, match=r"^m02.safetensors: tensor features.1.0.bias holds NaN or infinite"):
        load_model(tmp_path / "m02.safetensors", "seed_cnn")


def test_metadata_that_is_not_json_is_named(tmp_path, seed_sd):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in seed_sd.items()}, str(tmp_path / "m00.safetensors"),
              metadata={"fer": "{not json"})
    with pytest.raises(CheckpointError, match=r"^m00.safetensors: metadata 'fer' is not JSON"):
        load_tensors(tmp_path / "m00.safetensors")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"m09.safetensors: cannot read weights \(No such file"):
        load_model(tmp_path / "m09.safetensors", "seed_cnn")
