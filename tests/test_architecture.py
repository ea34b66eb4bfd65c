"""Per-layer summary, receptive fields, input-size errors and the block diagram (fer.models)."""

import pytest
import torch
from torch import nn

from fer.errors import ConfigError, FerError
from fer.models import (InputSizeError, architecture, block_diagram, create_model, list_models,
                        summarize)


def _by_name(rows):
    return {r["name"]: r for r in rows}


def test_seed_cnn_shapes_block_by_block():
    rows = _by_name(summarize(create_model("seed_cnn")))
    assert rows["features.0.0"]["output_shape"] == (32, 48, 48)  # 5×5 conv, padding 2 keeps 48
    assert [rows[f"features.{b}.3"]["output_shape"] for b in range(4)] == [
        (32, 24, 24), (64, 12, 12), (128, 6, 6), (128, 3, 3)]
    assert rows["classifier.0"]["output_shape"] == (1152,)  # 128·3·3
    assert rows["classifier.1"]["output_shape"] == (256,)
    assert rows["classifier.4"]["output_shape"] == (7,)
    assert rows["features.1.0"]["input_shape"] == (32, 24, 24)
    assert (rows["features.0.0"]["kernel"], rows["features.0.0"]["stride"],
            rows["features.0.0"]["padding"]) == (5, 1, 2)
    pool = rows["features.0.3"]
    assert pool["kernel_hw"] == (2, 2) and pool["stride_hw"] == (2, 2)
    assert rows["features.0.1"]["kernel"] is None and rows["features.0.1"]["kernel_hw"] is None


@pytest.mark.parametrize("name", list_models())
def test_parameter_totals_equal_the_model(name):
    model = create_model(name)
    arch = architecture(model)
    total = sum(p.numel() for p in model.parameters())
    assert arch["error"] is None
    assert sum(r["params"] for r in arch["rows"]) == arch["totals"]["params"] == total
    assert arch["totals"]["flops"] == 2 * arch["totals"]["macs"] > 0
    assert arch["totals"]["output_shape"] == (7,)


def test_seed_cnn_per_layer_params_and_macs():
    rows = _by_name(summarize(create_model("seed_cnn")))
    assert rows["features.0.0"]["params"] == 32 * (1 * 5 * 5 + 1) == 832
    assert rows["features.3.0"]["params"] == 128 * (128 * 3 * 3 + 1) == 147_584
    assert rows["features.0.2"]["params"] == 2 * 32  # BN γ and β
    assert rows["classifier.1"]["params"] == 256 * (1152 + 1) == 295_168
    assert rows["features.0.0"]["macs"] == 32 * 48 * 48 * (1 * 5 * 5) == 1_843_200
    assert rows["features.3.0"]["macs"] == 128 * 6 * 6 * (128 * 3 * 3) == 5_308_416
    assert rows["classifier.1"]["macs"] == 1152 * 256
    assert rows["features.0.1"]["macs"] == 0


def test_seed_cnn_receptive_field_by_hand():
    rows = _by_name(summarize(create_model("seed_cnn")))
    # r += (k−1)·j, j ·= s.  conv5: 1+4·1=5 (j1); pool2: 5+1·1=6 (j2); conv3: 6+2·2=10;
    # pool: 10+1·2=12 (j4); conv3: 12+2·4=20; pool: 20+1·4=24 (j8); last conv block
    # features.3.0: 24+2·8=40 (j8); its pool: 40+1·8=48 (j16); the Linear after the flatten
    # sees the whole 3×3 map: 48+(3−1)·16=80 (counts zero padding, so > 48).
    assert [rows[f"features.{b}.0"]["receptive_field"] for b in range(4)] == [5, 10, 20, 40]
    assert [rows[f"features.{b}.0"]["jump"] for b in range(4)] == [1, 2, 4, 8]
    assert (rows["features.3.3"]["receptive_field"], rows["features.3.3"]["jump"]) == (48, 16)
    assert rows["classifier.0"]["receptive_field"] == 48  # Flatten alone mixes nothing
    assert rows["classifier.1"]["receptive_field"] == 80
    assert rows["features.3.0"]["receptive_field_hw"] == (40, 40)


def test_simple_cnn_receptive_field_by_hand_and_global_pool():
    rows = _by_name(summarize(create_model("simple_cnn")))
    # conv3: 1+2=3; pool: 3+1=4 (j2); conv3: 4+2·2=8; pool: 8+2=10 (j4); last conv block
    # features.2.0: 10+2·4=18 (j4); pool: 18+4=22 (j8); global average pool over 6×6 is a
    # 6×6 window of stride 6: 22+5·8=62 (j48).
    assert rows["features.2.0"]["receptive_field"] == 18 and rows["features.2.0"]["jump"] == 4
    assert (rows["classifier.0"]["receptive_field"], rows["classifier.0"]["jump"]) == (62, 48)
    assert rows["classifier.0"]["kernel_hw"] == (6, 6)


def test_asymmetric_dilated_conv_per_axis():
    model = nn.Sequential(nn.Conv2d(1, 4, (3, 5), stride=(1, 2), padding=(1, 0),
                                    dilation=(1, 2)), nn.MaxPool2d((2, 1)))
    conv, pool = summarize(model, (1, 10, 21))
    # height: ⌊(10+2−1·2−1)/1⌋+1 = 10; width: ⌊(21+0−2·4−1)/2⌋+1 = 7.
    assert conv["output_shape"] == (4, 10, 7)
    assert conv["dilation_hw"] == (1, 2) and conv["padding_hw"] == (1, 0)
    # rf_h = 1+1·2·1 = 3, rf_w = 1+2·4·1 = 9; jump (1, 2). Pool (2,1): rf_h 3+1·1 = 4, j (2, 2).
    assert conv["receptive_field_hw"] == (3, 9) and conv["jump_hw"] == (1, 2)
    assert pool["receptive_field_hw"] == (4, 9) and pool["jump_hw"] == (2, 2)
    assert pool["output_shape"] == (4, 5, 7)
    assert conv["macs"] == 4 * 10 * 7 * 15


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_even_kernel():
    rows = summarize(nn.Sequential(nn.Conv2d(1, 2, 4, padding="same")), (1, 10, 10))
    assert rows[0]["output_shape"] == (2, 10, 10) and rows[0]["receptive_field"] == 4


@pytest.mark.parametrize("size, shapes", [
    (64, [(32, 32, 32), (64, 16, 16), (128, 8, 8), (128, 4, 4)]),
    (96, [(32, 48, 48), (64, 24, 24), (128, 12, 12), (128, 6, 6)]),
])
def test_seed_cnn_other_sizes_stop_at_its_fixed_classifier(size, shapes):
    arch = architecture("seed_cnn", size)
    rows = _by_name(arch["rows"])
    assert [rows[f"features.{b}.3"]["output_shape"] for b in range(4)] == shapes
    flat = shapes[-1][0] * shapes[-1][1] * shapes[-1][2]
    assert arch["error_layer"] == "classifier.1" and arch["totals"]["output_shape"] is None
    assert f"expects 1152 input features but gets {flat}" in arch["error"]
    assert list(rows)[-1] == "classifier.0" and arch["totals"]["params"] == 538_951


def test_simple_cnn_takes_any_size_through_global_pool():
    arch = architecture("simple_cnn", (96, 64))
    rows = _by_name(arch["rows"])
    assert arch["error"] is None and arch["input_shape"] == (1, 96, 64)
    assert rows["features.2.3"]["output_shape"] == (512, 12, 8)
    assert arch["totals"]["output_shape"] == (7,)


def test_too_small_input_names_the_layer_and_the_smallest_size():
    with pytest.raises(InputSizeError) as info:
        summarize(create_model("seed_cnn"), (1, 8, 8))
    e = info.value
    assert isinstance(e, ConfigError) and isinstance(e, FerError)
    assert e.layer == "features.3.3"  # 8 → 4 → 2 → 1 → the last 2×2 pool has nothing to pool
    assert "128×1×1" in str(e) and "128×0×0" in str(e)
    assert "smallest input that gets through it is 16×16" in str(e)  # four ÷2 pools
    assert len(e.rows) == 15 and e.rows[-1]["name"] == "features.3.2"
    arch = architecture("seed_cnn", 8)
    assert arch["error_layer"] == "features.3.3" and len(arch["rows"]) == 15


def test_kernel_larger_than_input_names_the_conv():
    model = nn.Sequential(nn.Conv2d(1, 1, 7), nn.Conv2d(1, 1, 7))
    with pytest.raises(InputSizeError, match=r"layer 1 \(Conv2d, kernel 7×7.*gets 1×4×4.*1×-2×-2"):
        summarize(model, (1, 10, 10))


@pytest.mark.parametrize("shape", [(1, 0, 48), (1, 48), (1, 48.5, 48), ("a", 48, 48)])
def test_malformed_input_shape(shape):
    with pytest.raises(InputSizeError, match="three positive integers"):
        summarize(create_model("seed_cnn"), shape)


def test_wrong_channels_names_the_first_conv():
    with pytest.raises(InputSizeError, match=r"features\.0\.0 \(Conv2d\) expects 1 channels"):
        summarize(create_model("seed_cnn"), (3, 48, 48))


def test_summary_restores_training_mode_after_an_error():
    model = create_model("seed_cnn").train()
    with pytest.raises(InputSizeError):
        summarize(model, (1, 4, 4))
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_architecture_by_name_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    architecture("simple_cnn")
    assert torch.equal(torch.get_rng_state(), state)


def test_block_diagram_seed_cnn():
    arch = architecture("seed_cnn")
    boxes = arch["diagram"]
    assert [b["label"] for b in boxes] == ["1", "32", "32", "64", "64", "128", "128", "128",
                                          "128", "1152", "256", "7"]
    assert boxes[0]["type"] == "Input" and boxes[0]["shape_label"] == "1×48×48"
    pool1 = boxes[2]
    assert pool1["name"] == "features.0.3" and pool1["shape_label"] == "32×24×24"
    assert (pool1["x2"] - pool1["x"], pool1["y2"] - pool1["y"]) == (24.0, 24.0)
    assert all(a["x2"] < b["x"] for a, b in zip(boxes, boxes[1:]))
    assert boxes[-1]["y2"] - boxes[-1]["y"] == pytest.approx(4 + 7 ** 0.5)
    assert block_diagram([], (1, 48, 48))[0]["x2"] == 48.0
