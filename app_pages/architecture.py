"""Architecture page: the model layer by layer, the conv output-size rule, and the BatchNorm and
softmax + cross-entropy gradients, each formula checked live against PyTorch.

Numbers come from ``fer.models.architecture`` and ``fer.derivations``; tables and charts from
``architecture_charts``.
"""

import streamlit as st

from fer.derivations import FORMULAS, Formula, formulas
from fer.errors import FerError
from fer.models import list_models
from app_pages import architecture_charts as charts
from app_pages import ui


def show_formula(f: Formula, heading: bool = True) -> None:
    """A formula's title, LaTeX, plain-language reading and source."""
    if heading:
        st.markdown(f"**{f.title}**")
    st.latex(f.latex)
    st.caption(f"{f.explanation}  \nSource: {f.source}.")


st.title("Architecture and the maths inside")
st.markdown(
    "What happens to a 48×48 face inside the network, layer by layer, and three results a "
    "course report derives by hand. Every formula on this page is computed twice: by the "
    "formula, and by PyTorch itself, so you can check the derivation with your own numbers.")
layers_tab, conv_tab, bn_tab, softmax_tab = st.tabs(
    ["Layers and shapes", "Conv output size", "BatchNorm backward", "Softmax + cross-entropy"])

# ---------------------------------------------------------------- layers and shapes
with layers_tab, charts.contained():
    run = ui.current_run()
    choices = {}  # label in the picker → registered model name
    if run is not None:
        try:
            choices[f"{run.config()['model']} (model of the run {run.id})"] = run.config()["model"]
        except FerError as e:
            st.caption(f"The run picked in the sidebar cannot be read: {e}")
    choices.update({name: name for name in list_models()})
    c1, c2 = st.columns([1, 1])
    label = c1.selectbox("Model", list(choices), key="arch_model",
                         help="The registered models, and the model of the run picked in the "
                              "sidebar.")
    size = c2.slider("Input size (pixels per side)", 4, 160, 48, key="arch_size",
                     help="FER2013 faces are 48×48. Change it to see how every shape changes, "
                          "and which layer stops a size the model was not built for.")
    arch = charts.cached_architecture(choices[label], size)
    totals = arch["totals"]

    if arch["error"]:
        st.warning(f"**A {size}×{size} input does not fit {arch['model']}: it stops at layer "
                   f"`{arch['error_layer']}`.** {arch['error']}. The table shows the "
                   f"{totals['layers']} layers before it.", icon=":material/warning:")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Parameters", f"{totals['params']:,}",
              help="Weights and biases of the whole model (BatchNorm's γ and β included). "
                   "They do not depend on the input size.")
    m2.metric("Output", charts.shape_text(totals["output_shape"]) if not arch["error"]
              else "does not fit", help="What the last layer gives for one image.")
    m3.metric("Multiply-adds per image", charts.compact_count(totals["macs"]),
              help="Conv and fully connected layers; FLOPs ≈ 2 × this. It grows with the "
                   "input size.")
    m4.metric("Layers", totals["layers"] if not arch["error"] else f"{totals['layers']}, then stops",
              help="Leaf layers (conv, activation, BatchNorm, pool, flatten, fully connected).")

    st.markdown("**Block diagram** (each box is one feature map: width and height drawn to "
                "scale in pixels, the number above is its channels; vectors are thin bars)")
    st.altair_chart(charts.block_diagram(arch["diagram"]), width="content")
    st.dataframe(charts.layer_table(arch), hide_index=True, width="stretch", height="content",
                 column_config={"type": st.column_config.TextColumn(width="medium"),
                                "parameters": st.column_config.NumberColumn(format="localized"),
                                "MACs": st.column_config.NumberColumn(format="localized")})
    st.caption(
        "**Output C×H×W**: channels × height × width for one image. **Receptive field**: how "
        "many input pixels (per side) one unit of the layer can see; **jump**: how many input "
        "pixels apart two neighbouring units are. Padding counts, so the receptive field can "
        "grow beyond the image. A Flatten followed by a fully connected layer fixes the input "
        "size (its weights expect one number of inputs); a global average pool lets any size "
        "through.")
    with st.expander("How the columns are computed"):
        show_formula(FORMULAS["conv_params"])
        show_formula(FORMULAS["linear_params"])
        show_formula(FORMULAS["receptive_field"])
        show_formula(FORMULAS["conv_macs"])

# ---------------------------------------------------------------- conv output size
with conv_tab, charts.contained():
    show_formula(FORMULAS["conv_output_size"], heading=False)
    st.markdown("**The input** (zero padding P is added on each side of an axis)")
    i1, i2, i3, i4 = st.columns(4)
    height = i1.number_input("Height H", 1, 1024, 8, key="conv_h")
    width = i2.number_input("Width W", 1, 1024, 8, key="conv_w")
    pad_h = i3.number_input("Padding P (top and bottom)", 0, 16, 0, key="conv_ph")
    pad_w = i4.number_input("Padding P (left and right)", 0, 16, 0, key="conv_pw")
    st.markdown("**The kernel** (square)")
    k1, k2, k3, _ = st.columns(4)
    kernel = k1.number_input("Kernel K", 1, 15, 3, key="conv_k")
    stride = k2.number_input("Stride S", 1, 8, 2, key="conv_s")
    dilation = k3.number_input("Dilation D", 1, 6, 1, key="conv_d",
                               help="D > 1 spreads the kernel's taps D pixels apart: it spans "
                                    "D·(K−1)+1 pixels with only K×K weights.")
    conv = charts.cached_conv(height, width, kernel, stride, (pad_h, pad_w), dilation)

    st.markdown("**With your numbers**")
    st.latex(charts.plugged_latex(conv["axes"]["height"], "H"))
    st.latex(charts.plugged_latex(conv["axes"]["width"], "W"))
    (oh, ow), (th, tw) = conv["formula"], conv["torch"]
    if conv["match"]:
        st.success(f"PyTorch agrees: `torch.nn.Conv2d` on a 1×1×{height}×{width} tensor outputs "
                   f"{th}×{tw}, the formula gives {oh}×{ow}: they match.",
                   icon=":material/check_circle:")
    else:
        st.error(f"PyTorch disagrees: `torch.nn.Conv2d` outputs {th}×{tw}, the formula gives "
                 f"{oh}×{ow}.", icon=":material/error:")
    if conv["floor_matters"]:
        st.info("**The floor matters here.** " + charts.floor_note(conv), icon=":material/info:")
    else:
        st.caption("The division is exact on both axes: the last window ends on the last "
                   "padded pixel and the floor changes nothing.")

    st.markdown("**The kernel sliding over the padded grid**")
    try:
        windows = charts.cached_windows(height, width, kernel, stride, (pad_h, pad_w), dilation)
    except FerError as e:
        st.info(f"No picture for this size: {e}. Try a smaller input.")
    else:
        n = len(windows["corners"])
        pick = st.slider("Window (one per output pixel, row by row)", 1, max(n, 2), 1,
                         key=f"conv_window_{oh}x{ow}", disabled=n == 1,
                         help="Move the kernel: each position computes one output pixel.")
        pick = min(pick, n) - 1
        corner = windows["corners"][pick]
        st.altair_chart(charts.sliding_chart(windows, pick), width="content")
        lost = charts.uncovered_inputs(windows)
        st.caption(
            f"Window {pick + 1} of {n} starts at row {corner['row']}, column {corner['col']} of "
            f"the padded grid and computes output pixel ({corner['out_row']}, "
            f"{corner['out_col']}). Dark cells are the {kernel}×{kernel} pixels it reads"
            + (f" ({dilation - 1} skipped between taps: dilation {dilation})" if dilation > 1
               else "")
            + f". {lost} of the {height * width} input pixels are never read by any window"
            + (" (orange): cut off by the floor at the end, or skipped in the gaps a stride "
               "or dilation leaves between taps." if lost else "."))

# ---------------------------------------------------------------- BatchNorm backward
with bn_tab, charts.contained():
    show_formula(FORMULAS["bn_forward"])
    st.markdown(
        "A random mini-batch x of **m** samples × **features**, a scale γ and shift β, and an "
        "upstream gradient R: the loss is ℓ = Σ y ⊙ R, so ∂ℓ/∂y = R. The six gradients below "
        "are computed by the closed-form formulas (Ioffe & Szegedy 2015) in NumPy and by "
        "PyTorch's autograd, both in float64.")
    b1, b2, b3 = st.columns(3)
    m = b1.slider("Mini-batch size m", 2, 32, 8, key="bn_m")
    features = b2.slider("Features", 1, 8, 4, key="bn_features")
    bn_seed = b3.number_input("Seed", 0, 1_000_000, 0, key="bn_seed")
    bn = charts.cached_batchnorm(m, features, bn_seed)

    agree = bn["max_abs_diff"] < 1e-6
    s1, s2 = st.columns([1, 3])
    s1.metric("Largest difference, all six gradients", f"{bn['max_abs_diff']:.1e}",
              help="max |closed form − autograd| over every entry of every gradient.")
    (s2.success if agree else s2.error)(
        "The closed-form gradients equal autograd's to float64 rounding (under 1e-6)." if agree
        else "The closed-form gradients differ from autograd's by more than 1e-6.")
    with st.expander("The mini-batch: x, R, and γ, β, μ, σ² per feature"):
        tables = charts.batch_tables(bn)
        x_col, r_col = st.columns(2)
        x_col.markdown("**x** (input)")
        x_col.dataframe(tables["x"])
        r_col.markdown("**R = ∂ℓ/∂y** (upstream gradient)")
        r_col.dataframe(tables["upstream"])
        st.dataframe(tables["vectors"])

    for key, formula_key in charts.BN_GRADIENTS.items():
        grad, f = bn["gradients"][key], FORMULAS[formula_key]
        st.subheader(f.title, divider="gray")
        st.latex(f.latex)
        st.caption(f.explanation)
        closed, auto = charts.gradient_tables(grad, f.title)
        left, right = st.columns(2)
        left.markdown("Closed form (NumPy)")
        left.dataframe(closed, height="content")
        right.markdown("Autograd (PyTorch)")
        right.dataframe(auto, height="content")
        st.caption(f"max |closed form − autograd| = {grad['max_abs_diff']:.1e}")

# ---------------------------------------------------------------- softmax + cross-entropy
with softmax_tab, charts.contained():
    for f in formulas("softmax"):
        show_formula(f)
    c1, c2, c3 = st.columns(3)
    classes = c1.slider("Classes K", 2, 10, 7, key="sm_classes",
                        help="7 uses FER2013's expressions as class names.")
    scale = c2.slider("Logit spread", 0.5, 6.0, 2.0, step=0.5, key="sm_scale",
                      help="Logits are drawn from N(0, spread²): a large spread makes a "
                           "confident prediction, right or wrong.")
    sm_seed = c3.number_input("Seed", 0, 1_000_000, 0, key="sm_seed")
    sm = charts.cached_softmax(classes, sm_seed, scale)

    frame = charts.softmax_frame(sm)
    true_name = charts.class_names(classes)[int(sm["target"][0])]
    n1, n2, n3 = st.columns(3)
    n1.metric(f"Loss −log ŷ of the true class ({true_name})", f"{sm['loss']:.4f}",
              help=f"PyTorch's F.cross_entropy gives {sm['loss_torch']:.6f}.")
    n2.metric("Largest |formula − autograd|", f"{sm['max_abs_diff']:.1e}")
    n3.metric("Largest |formula − finite differences|",
              f"{sm['finite_difference_max_abs_diff']:.1e}",
              help="Central differences (L(z+h) − L(z−h)) / 2h with h = 1e-6: a check that "
                   "needs no calculus at all.")
    st.dataframe(charts.softmax_table(frame), hide_index=True, width="stretch")
    st.caption(f"The highlighted row is the true class, **{true_name}**: its gradient ŷ − 1 is "
               "negative, so a gradient step raises its logit; every other logit is lowered by "
               "its probability. The gradients sum to 0.")
    st.altair_chart(charts.softmax_chart(frame), width="stretch")
