import pytest
import torch

from fer.errors import ConfigError
from fer.models import create_model, list_models, model_spec, summarize


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_gives_logits_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.rand(4, *model_spec(name).input_shape, requires_grad=True)
    out = model(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert torch.isfinite(out).all() and x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())
    dict(model.named_modules())[model_spec(name).target_layer]  # Grad-CAM layer exists


def test_seed_cnn_layer_shapes_and_params():
    rows = summarize(create_model("seed_cnn"))
    convs = [r["output_shape"] for r in rows if r["type"] == "Conv2d"]
    pools = [r["output_shape"] for r in rows if r["type"] == "MaxPool2d"]
    assert convs[0] == (32, 48, 48)
    assert pools == [(32, 24, 24), (64, 12, 12), (128, 6, 6), (128, 3, 3)]
    assert rows[-1]["output_shape"] == (7,)
    assert [r["output_shape"] for r in rows if r["type"] == "Linear"] == [(256,), (7,)]
    model = create_model("seed_cnn")
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters()) == 538_951
    # Receptive field after the 4th block's pool: 1 +4 +1 +2*2 +2 +4*2 +4 +8*2 +8 = 48 pixels.
    assert rows[15]["receptive_field"] == 48 and rows[15]["jump"] == 16


def test_summary_restores_training_mode():
    model = create_model("seed_cnn").train()
    summarize(model)
    assert model.training


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ConfigError, match="seed_cnn"):
        create_model("resnet9000")
