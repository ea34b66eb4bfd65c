"""The Architecture page through Streamlit's AppTest, opened from the entrypoint like a user does:
the layer table of seed_cnn, an input size it cannot take, the conv output-size rule against
torch, and the BatchNorm and softmax gradients against autograd."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fer.models import create_model

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
PAGE = "app_pages/architecture.py"


def open_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label_start: str) -> str:
    (m,) = [m for m in at.metric if m.label.startswith(label_start)]
    return m.value


def layer_table(at: AppTest):
    (df,) = [d.value for d in at.dataframe if "output C×H×W" in d.value.columns]
    return df


@pytest.fixture
def page() -> AppTest:
    at = open_page()
    at.selectbox(key="arch_model").set_value("seed_cnn").run()
    assert not at.exception, at.exception
    return at


def test_the_page_renders_every_section(page):
    assert page.title[0].value == "Architecture and the maths inside"
    assert [t.label for t in page.tabs] == ["Layers and shapes", "Conv output size",
                                           "BatchNorm backward", "Softmax + cross-entropy"]
    assert len(page.latex) >= 12  # the formulas of all four sections
    assert not page.error and not page.warning


def test_seed_cnn_table_shows_every_shape_and_the_parameter_total(page):
    df = layer_table(page)
    shapes = df.set_index("layer")["output C×H×W"]
    assert shapes["features.0.3"] == "32×24×24"
    assert shapes["features.3.3"] == "128×3×3"
    assert shapes["classifier.0"] == "1152" and shapes["classifier.4"] == "7"
    # receptive field of the last conv block by hand: 5, +1 (pool, jump 1), +2·2, +1·2,
    # +2·4, +1·4, +2·8 = 40 after its conv, +1·8 = 48 after its pool; jump 2⁴ = 16
    rf = df.set_index("layer")
    assert rf.loc["features.3.0", "receptive field (px)"] == 40
    assert rf.loc["features.3.3", "receptive field (px)"] == 48
    assert rf.loc["features.3.3", "jump (px)"] == 16
    total = sum(p.numel() for p in create_model("seed_cnn").parameters())
    assert total == 538_951
    assert metric(page, "Parameters") == "538,951"
    assert df["parameters"].sum() == total
    assert metric(page, "Output") == "7"


def test_the_picked_runs_model_is_offered_first():
    at = open_page()
    options = at.selectbox(key="arch_model").options
    run_id = at.sidebar.selectbox(key="run_id").value
    assert run_id and options[0].endswith(f"(model of the run {run_id})")
    assert {"seed_cnn", "simple_cnn"} <= set(options)


@pytest.mark.parametrize("size, layer, rows", [(40, "classifier.1", 17), (10, "features.3.3", 15)])
def test_an_input_size_seed_cnn_cannot_take_is_a_warning_not_an_exception(page, size, layer, rows):
    page.slider(key="arch_size").set_value(size).run()
    assert not page.exception, page.exception
    (warning,) = page.warning
    assert f"{size}×{size}" in warning.value and f"`{layer}`" in warning.value
    assert len(layer_table(page)) == rows  # the layers that do run
    assert metric(page, "Output") == "does not fit"
    assert not page.error


def test_simple_cnn_takes_any_size_through_its_global_pool(page):
    page.selectbox(key="arch_model").set_value("simple_cnn").run()
    page.slider(key="arch_size").set_value(40).run()
    assert not page.exception and not page.warning
    assert layer_table(page).set_index("layer").loc["features.2.3", "output C×H×W"] == "512×5×5"
    assert metric(page, "Output") == "7"


def test_conv_size_matches_torch_and_says_when_the_floor_matters(page):
    # the default 8×8, K 3, S 2: (8 − 3)/2 is not whole
    assert any("they match" in s.value for s in page.success)
    assert any("floor matters" in i.value for i in page.info)
    for key, value in (("conv_h", 9), ("conv_w", 11), ("conv_pw", 1), ("conv_d", 2),
                       ("conv_s", 3)):
        page.number_input(key=key).set_value(value).run()
    assert not page.exception, page.exception
    assert any("outputs 2×3, the formula gives 2×3: they match" in s.value for s in page.success)
    assert any(r"\left\lfloor \frac{4}{3} \right\rfloor + 1 = 1 + 1 = 2" in x.value
               for x in page.latex)
    # exact division on both axes: no floor note
    for key, value in (("conv_h", 7), ("conv_w", 7), ("conv_pw", 0), ("conv_d", 1),
                       ("conv_s", 2)):
        page.number_input(key=key).set_value(value).run()
    assert any("outputs 3×3, the formula gives 3×3" in s.value for s in page.success)
    assert not any("floor matters" in i.value for i in page.info)


def test_a_kernel_wider_than_the_input_is_an_error_in_its_section_only(page):
    page.number_input(key="conv_k").set_value(15).run()
    assert not page.exception, page.exception
    assert any("the output would be empty" in e.value for e in page.error)
    # the sections after it still render
    assert float(metric(page, "Largest difference, all six gradients")) < 1e-6
    assert metric(page, "Largest |formula − autograd|")


def test_batchnorm_gradients_equal_autograd(page):
    assert float(metric(page, "Largest difference, all six gradients")) < 1e-6
    assert any("equal autograd's" in s.value for s in page.success)
    assert [s.value for s in page.subheader] == ["∂l/∂x̂", "∂l/∂σ²", "∂l/∂μ", "∂l/∂x",
                                                 "∂l/∂γ", "∂l/∂β"]
    page.slider(key="bn_m").set_value(5).run()
    page.slider(key="bn_features").set_value(3).run()
    page.number_input(key="bn_seed").set_value(7).run()
    assert not page.exception, page.exception
    assert float(metric(page, "Largest difference, all six gradients")) < 1e-6
    shapes = [d.value.shape for d in page.dataframe]
    assert (5, 3) in shapes and (1, 3) in shapes  # ∂l/∂x per sample; ∂l/∂γ per feature


def test_softmax_gradient_table_marks_the_true_class(page):
    (df,) = [d.value for d in page.dataframe if "ŷ − y (formula)" in d.value.columns]
    assert list(df["class"]) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert df["true class"].sum() == 1
    true = df[df["true class"]].iloc[0]
    assert true["ŷ − y (formula)"] == pytest.approx(true["ŷ (softmax)"] - 1)
    assert abs(df["ŷ − y (formula)"].sum()) < 1e-12
    assert float(metric(page, "Largest |formula − autograd|")) < 1e-6
    page.slider(key="sm_classes").set_value(4).run()
    assert not page.exception, page.exception
    (df,) = [d.value for d in page.dataframe if "ŷ − y (formula)" in d.value.columns]
    assert list(df["class"]) == ["class 0", "class 1", "class 2", "class 3"]
