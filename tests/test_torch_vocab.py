"""The PyTorch converter on every layer-case row, in process and in seconds: the generated
model.py, run in float64 with its weights, computes every blob of the float64 NumPy
reference (to 1e-9, the verify oracle's own bar), and its training loss has a finite
gradient for every learned parameter. (tests/test_engines.py runs the same rows through
verify, in child processes, in float32 and with a training step.)"""

import numpy as np
import pytest

import zoo
from conftest import require_engine
from layer_cases import CASES
from zoo import data, reference
from zoo import weights as W

ORACLE_RTOL = 1e-9


@pytest.fixture(autouse=True)
def _torch():
    require_engine("torch")


def _model(net):
    """model.py's module built from source and its state, in float64."""
    import torch
    from zoo.converters import torch as conv

    source, ctx = conv.generate(net, W.for_net(net, 0))
    scope: dict = {"__name__": "zoo_generated_model"}
    exec(compile(source, conv.MODEL_FILE, "exec"), scope)   # zoo's own generated code
    model = scope[conv.class_name(net.name)]()
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ctx.state.items()})
    return model.double().eval(), ctx   # as model.load() returns it


def _feed(torch, net, inputs, blobs):
    return {name: torch.from_numpy(inputs[b]) if inputs[b].dtype.kind in "iu"
            else torch.from_numpy(inputs[b]).double() for b, name in blobs.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_float64_model_is_the_reference(case):
    import torch

    net = zoo.from_text(CASES[case], file=f"tests/layer_cases.py:{case}").with_batch(3)
    model, ctx = _model(net)
    inputs = data.make(net, 0)
    ref = reference.forward(net, W.for_net(net, 0), inputs, with_loss=False)
    args = {ctx.v(b): b for b in net.data_inputs}
    with torch.no_grad():
        got = model(**_feed(torch, net, inputs, args), return_all=True)
    assert set(got) <= set(ref)
    for blob, y in got.items():
        np.testing.assert_allclose(y.detach().numpy(), ref[blob], rtol=ORACLE_RTOL, atol=ORACLE_RTOL,
                                   err_msg=f"{case}: blob {blob!r}")

    model.train()
    loss = model.training_loss(**_feed(torch, net, inputs, {ctx.v(b): b for b in net.data_inputs + net.labels}))
    loss.backward()
    learned = [name for name, p in model.named_parameters() if p.requires_grad]
    assert sorted(learned) == sorted(n for n in ctx.names.values() if n in dict(model.named_parameters()))
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{case}: {name}"


def test_every_learned_blob_is_a_parameter_under_its_canonical_name():
    net = zoo.from_text(CASES["Scale-Bias"], file="Scale-Bias")
    _, ctx = _model(net)
    assert ctx.names == {"c.weight": "c.weight", "c.bias": "c.bias", "s.scale": "s.scale",
                         "s.bias": "s.bias", "b.bias": "b.bias", "fc.weight": "fc.weight",
                         "fc.bias": "fc.bias"}


@pytest.mark.parametrize("case,want", [
    ("Clip-ReLU6", "nn.Hardtanh(0.0, 0.5)"),
    ("Convolution-asymmetric-pad", "F.pad(x, (2, 1, 0, 1))"),
    ("Convolution-per-axis", "nn.Conv2d(4, 6, (3, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 2)"),
    ("Pooling-MAX-asymmetric-ceil", "value=float('-inf')"),
    ("GELU-tanh", "nn.GELU(approximate='tanh')"),
    ("HardSigmoid", "F.hardtanh(0.30000001192092896 * "),
    ("LayerNorm", "nn.LayerNorm([6], eps="),
    ("Slice-unequal", "torch.split(c, [1, 2, 3], dim=1)"),
])
def test_generated_code_uses_the_native_layer(case, want):
    from zoo.converters import torch as conv
    net = zoo.from_text(CASES[case], file=case)
    assert want in conv.generate(net, W.for_net(net, 0))[0]


def test_hardsigmoid_uses_the_specs_constants_even_where_pytorchs_are_close():
    """nn.Hardsigmoid's exact 1/6 is not the spec's float alpha: the float64 oracle must
    compute the spec's (it is checked against the reference at 1e-9)."""
    from zoo.converters import torch as conv
    text = CASES["HardSigmoid"].replace("alpha: 0.3 beta: 0.4", "alpha: 0.16666667 beta: 0.5")
    net = zoo.from_text(text, file="hsig")
    source = conv.generate(net, W.for_net(net, 0))[0]
    assert "nn.Hardsigmoid()" not in source and "F.hardtanh(0.1666666716337204 * " in source


# pads PyTorch's pools do not take (pad > kernel/2): padded beforehand, CEIL overhang and
# divisor included; zoo/engines.py's torch gaps for these cases are no longer needed
WIDE_PAD = {
    "AVE-VALID-ceil": "pool: AVE kernel_size: 3 stride: 2 pad: 2 round_mode: CEIL avg_divisor: VALID",
    "AVE-PADDED-ceil": "pool: AVE kernel_size: 3 stride: 2 pad: 2 round_mode: CEIL avg_divisor: PADDED",
    "MAX-ceil": "pool: MAX kernel_size: 3 stride: 2 pad: 2 round_mode: CEIL",
    "AVE-VALID-asymmetric-wide": "pool: AVE kernel_h: 3 kernel_w: 4 stride: 2 pad_top: 2 pad_bottom: 0 "
                                 "pad_left: 1 pad_right: 3 round_mode: CEIL avg_divisor: VALID",
}


@pytest.mark.parametrize("name", list(WIDE_PAD))
def test_pooling_pytorch_cannot_pad_natively_is_the_reference(name):
    import torch
    from layer_cases import IMG, LABEL4, head, pool, spec
    text = spec("t-widepad", IMG.replace("8, 8", "7, 7") + LABEL4 + pool("p", "x", WIDE_PAD[name]) + head("p"))
    net = zoo.from_text(text, file=name)
    model, ctx = _model(net)
    inputs = data.make(net, 0)
    ref = reference.forward(net, W.for_net(net, 0), inputs, with_loss=False)
    with torch.no_grad():
        got = model(**_feed(torch, net, inputs, {ctx.v("x"): "x"}), return_all=True)
    np.testing.assert_allclose(got["p"].numpy(), ref["p"], rtol=ORACLE_RTOL, atol=ORACLE_RTOL)


def test_global_pooling_hands_the_convolution_a_channels_last_gradient():
    """In a channels-last model, a copy of the gradient into channels-last order inside the
    convolution's backward cost it as much as the convolution itself (benchmarks/depthwise.py).
    AdaptiveAvgPool2d(1) (a mean) or torch.flatten of (N, C, 1, 1) would hand back NCHW."""
    import torch
    net = zoo.from_text(CASES["Pooling-global"], file="Pooling-global")
    model, ctx = _model(net)
    model = model.float().train()
    assert model.channels_last
    conv = model.get_submodule(ctx.attrs.named()["c"])
    seen = []

    def keep_gradient(module, args, out):
        out.register_hook(seen.append)      # the gradient of the convolution's output
    conv.register_forward_hook(keep_gradient)
    inputs = data.make(net, 0)
    feed = {ctx.v(b): torch.from_numpy(inputs[b]) if inputs[b].dtype.kind in "iu"
            else torch.from_numpy(inputs[b]).float() for b in net.data_inputs + net.labels}
    model.training_loss(**feed).backward()
    g = seen[0]
    assert g.shape[1] > 1 and g.shape[2] * g.shape[3] > 1, g.shape   # the two orders differ
    assert g.is_contiguous(memory_format=torch.channels_last) and not g.is_contiguous()
