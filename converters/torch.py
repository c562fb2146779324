"""Spec + weights -> a plain PyTorch model: a generated, readable model.py (an nn.Module as a
person would write it) and weights.safetensors with PyTorch's names and layouts.

model.py imports only torch and safetensors; `model.load()` returns the module with its
weights, in eval mode. `forward(...)` returns the network outputs (or every blob, with
return_all=True); `training_loss(...)` takes the inputs and labels and returns the spec's
loss. Generating the code needs no torch; writing safetensors uses safetensors.numpy.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re

import numpy as np

from zoo import spec_pb2
from zoo.layers import pooling as P

from .registry import Registry, UniqueNames

CONVERTERS = Registry("torch")
MODEL_FILE = "model.py"
WEIGHTS_FILE = "weights.safetensors"
MAX_IDENT = 60

# The rule for model.py: a spec string is never code. Identifiers (attributes, variables,
# arguments, the class) come from UniqueNames over `ident` (plain ASCII, one per spec
# string); every other spec string (blob names as dict keys, name, description, source)
# is a repr() literal.

# names the generated module defines or imports at top level
MODULE_NAMES = {"Path", "torch", "F", "nn", "load", "Model", "NAME", "DESCRIPTION", "SOURCE",
                "annotations"}
# nn.Module's public attributes (dir(nn.Module()) without "_" names; a test compares it with
# the installed torch): a submodule attribute must not shadow one. `ident` never starts
# with "_", so the private ones cannot be hit.
NN_MODULE_ATTRS = {
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr",
    "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule",
    "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children",
    "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule",
    "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad", "training_loss"}
PYTHON_NAMES = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
ATTR_RESERVED = PYTHON_NAMES | NN_MODULE_ATTRS
LOCAL_RESERVED = PYTHON_NAMES | MODULE_NAMES | {"self", "return_all", "b"}


def ident(name: str) -> str:
    """A plain ASCII Python identifier made from a spec string ("layer1.0.conv1" ->
    "layer1_0_conv1"); not yet unique, and not yet checked against reserved names: the
    Context's UniqueNames do both."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)[:MAX_IDENT]
    return s if s[:1].isalpha() else "x" + s


def num(x: float) -> str:
    """A float literal; inf and nan (not Python literals) as float('inf')."""
    x = float(x)
    return repr(x) if math.isfinite(x) else f"float({str(x)!r})"


class Context:
    def __init__(self, net, weights):
        self.net, self.weights = net, weights
        self.init: list[str] = []       # lines of __init__ (after super().__init__())
        self.fwd: list[str] = []        # lines of forward
        self.loss: list[str] = []       # loss terms of training_loss
        self.state: dict[str, np.ndarray] = {}   # torch state_dict name -> array
        self.names: dict[str, str] = {}          # canonical "layer.w" -> torch name
        self.attrs = UniqueNames(ident, ATTR_RESERVED)     # layer -> self.ATTR
        self.vars = UniqueNames(ident, LOCAL_RESERVED)     # blob -> local variable / argument

    def v(self, blob: str) -> str:
        return self.vars.name(blob)

    def temp(self, base: str) -> str:
        """A local variable of zoo's own (e.g. a padded copy)."""
        return self.vars.fresh(base)

    def out(self, layer) -> str:
        return self.v(layer.tops[0])

    def attr(self, layer) -> str:
        return self.attrs.name(layer.name)

    def param(self, layer, key: str, torch_key: str, array: np.ndarray | None = None) -> None:
        """Copy canonical weight `layer.key` to state_dict entry `ATTR.torch_key`."""
        name = f"{self.attr(layer)}.{torch_key}"
        self.state[name] = self.weights[f"{layer.name}.{key}"] if array is None else array
        self.names[f"{layer.name}.{key}"] = name


@CONVERTERS.register("Input")
def input_(ctx, layer):
    ctx.v(layer.tops[0])   # an argument of forward


@CONVERTERS.register("InnerProduct")
def inner_product(ctx, layer):
    p, a = layer.p, ctx.attr(layer)
    ctx.init.append(f"self.{a} = nn.Linear({layer.in_shapes[0][-1]}, {p.num_output}, "
                    f"bias={p.bias_term})")
    ctx.param(layer, "weight", "weight")
    if p.bias_term:
        ctx.param(layer, "bias", "bias")
    x = ctx.v(layer.bottoms[0])
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x})")


@CONVERTERS.register("Convolution")
def convolution(ctx, layer):
    p, a = layer.p, ctx.attr(layer)
    ctx.init.append(f"self.{a} = nn.Conv2d({layer.in_shapes[0][1]}, {p.num_output}, "
                    f"{p.kernel_size}, stride={p.stride}, padding={p.pad}, dilation={p.dilation}, "
                    f"groups={p.group}, bias={p.bias_term})")
    ctx.param(layer, "weight", "weight")
    if p.bias_term:
        ctx.param(layer, "bias", "bias")
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({ctx.v(layer.bottoms[0])})")


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    p, a, x = layer.p, ctx.attr(layer), ctx.v(layer.bottoms[0])
    if p.global_pooling:
        cls = "AdaptiveMaxPool2d" if p.pool == P.MAX else "AdaptiveAvgPool2d"
        ctx.init.append(f"self.{a} = nn.{cls}(1)")
        ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x})")
        return
    k, s, pad, ceil = int(p.kernel_size), int(p.stride), int(p.pad), p.round_mode == P.CEIL
    if 2 * pad > k:
        # PyTorch's pools take pad <= kernel/2 only: pad explicitly, then pool unpadded.
        # The output-size rule and the divisor are re-derived for the padded input.
        padded = ctx.temp(f"{x}_pad")
        if p.pool == P.MAX:
            ctx.fwd.append(f"{padded} = F.pad({x}, ({pad},) * 4, value=float('-inf'))")
        elif p.avg_divisor == P.PADDED:
            ctx.fwd.append(f"{padded} = F.pad({x}, ({pad},) * 4)")
        else:
            from .registry import Unsupported
            raise Unsupported(f"torch: layer {layer.name!r}: AVE pooling with pad > kernel/2 "
                              "and the VALID divisor")
        x, pad = padded, 0
        if ceil:
            from .registry import Unsupported
            raise Unsupported(f"torch: layer {layer.name!r}: CEIL pooling with pad > kernel/2")
    if p.pool == P.MAX:
        ctx.init.append(f"self.{a} = nn.MaxPool2d({k}, stride={s}, padding={pad}, ceil_mode={ceil})")
    else:
        include = p.avg_divisor != P.VALID   # PADDED: padding counts (Caffe's divisor)
        ctx.init.append(f"self.{a} = nn.AvgPool2d({k}, stride={s}, padding={pad}, "
                        f"ceil_mode={ceil}, count_include_pad={include})")
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x})")


@CONVERTERS.register("ReLU", "Sigmoid", "TanH")
def activation(ctx, layer):
    cls = {"ReLU": "ReLU", "Sigmoid": "Sigmoid", "TanH": "Tanh"}[layer.type]
    a = ctx.attr(layer)
    ctx.init.append(f"self.{a} = nn.{cls}()")
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({ctx.v(layer.bottoms[0])})")


@CONVERTERS.register("LRN")
def lrn(ctx, layer):
    # PyTorch divides alpha by size, as the spec does: alpha passes through unchanged
    p, a = layer.p, ctx.attr(layer)
    ctx.init.append(f"self.{a} = nn.LocalResponseNorm({p.local_size}, alpha={num(p.alpha)}, "
                    f"beta={num(p.beta)}, k={num(p.k)})")
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({ctx.v(layer.bottoms[0])})")


@CONVERTERS.register("Dropout")
def dropout(ctx, layer):
    a = ctx.attr(layer)
    ctx.init.append(f"self.{a} = nn.Dropout({num(layer.p.dropout_ratio)})")
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({ctx.v(layer.bottoms[0])})")


@CONVERTERS.register("Softmax")
def softmax(ctx, layer):
    ctx.fwd.append(f"{ctx.out(layer)} = torch.softmax({ctx.v(layer.bottoms[0])}, dim={layer.p.axis})")


@CONVERTERS.register("Flatten")
def flatten(ctx, layer):
    ctx.fwd.append(f"{ctx.out(layer)} = torch.flatten({ctx.v(layer.bottoms[0])}, {layer.p.axis})")


@CONVERTERS.register("Reshape")
def reshape(ctx, layer):
    x = ctx.v(layer.bottoms[0])
    dims = ", ".join(f"{x}.shape[{i}]" if d == 0 else str(d) for i, d in enumerate(layer.p.shape))
    ctx.fwd.append(f"{ctx.out(layer)} = {x}.reshape({dims})")


@CONVERTERS.register("Concat")
def concat(ctx, layer):
    xs = ", ".join(ctx.v(b) for b in layer.bottoms)
    ctx.fwd.append(f"{ctx.out(layer)} = torch.cat([{xs}], dim={layer.p.axis})")


@CONVERTERS.register("Eltwise")
def eltwise(ctx, layer):
    xs = [ctx.v(b) for b in layer.bottoms]
    op = layer.p.operation
    if op == spec_pb2.EltwiseParam.SUM:
        coeff = list(layer.p.coeff) or [1.0] * len(xs)
        expr = " + ".join(x if c == 1.0 else f"{num(c)} * {x}" for c, x in zip(coeff, xs))
    elif op == spec_pb2.EltwiseParam.PROD:
        expr = " * ".join(xs)
    else:
        expr = xs[0]
        for x in xs[1:]:
            expr = f"torch.maximum({expr}, {x})"
    ctx.fwd.append(f"{ctx.out(layer)} = {expr}")


@CONVERTERS.register("BatchNorm")
def batch_norm(ctx, layer):
    p, a = layer.p, ctx.attr(layer)
    c = layer.in_shapes[0][1]
    cls = "BatchNorm2d" if len(layer.in_shapes[0]) == 4 else "BatchNorm1d"
    ctx.init.append(f"self.{a} = nn.{cls}({c}, eps={num(p.eps)}, affine={p.scale_bias})")
    if p.scale_bias:
        ctx.param(layer, "gamma", "weight")
        ctx.param(layer, "beta", "bias")
    ctx.param(layer, "running_mean", "running_mean")
    ctx.param(layer, "running_var", "running_var")
    ctx.state[f"{a}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({ctx.v(layer.bottoms[0])})")


@CONVERTERS.register("Embedding")
def embedding(ctx, layer):
    p, a = layer.p, ctx.attr(layer)
    ctx.init.append(f"self.{a} = nn.Embedding({p.input_dim}, {p.num_output})")
    ctx.param(layer, "weight", "weight")
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({ctx.v(layer.bottoms[0])})")


@CONVERTERS.register("LSTM")
def lstm(ctx, layer):
    # PyTorch's gate order (i, f, g, o) is the spec's; it has two bias vectors: the spec's one
    # bias goes to bias_ih and bias_hh stays zero and frozen, so training keeps one bias.
    p, a = layer.p, ctx.attr(layer)
    h = int(p.num_output)
    ctx.init.append(f"self.{a} = nn.LSTM({layer.in_shapes[0][-1]}, {h}, batch_first=True)")
    ctx.init.append(f"self.{a}.bias_hh_l0.requires_grad_(False)   # one bias: see bias_ih_l0")
    ctx.param(layer, "weight_ih", "weight_ih_l0")
    ctx.param(layer, "weight_hh", "weight_hh_l0")
    ctx.param(layer, "bias", "bias_ih_l0")
    ctx.state[f"{a}.bias_hh_l0"] = np.zeros(4 * h, dtype=np.float32)
    ctx.fwd.append(f"{ctx.out(layer)}, _ = self.{a}({ctx.v(layer.bottoms[0])})")


@CONVERTERS.register("SoftmaxWithLoss")
def softmax_with_loss(ctx, layer):
    logits, label = layer.bottoms
    k = layer.in_shapes[0][-1]
    w = layer.p.loss_weight
    scale = "" if w == 1.0 else f"{num(w)} * "
    ctx.loss.append(f"{scale}F.cross_entropy(b[{logits!r}].reshape(-1, {k}), "
                    f"{ctx.v(label)}.reshape(-1))")


@CONVERTERS.register("EuclideanLoss")
def euclidean_loss(ctx, layer):
    a, b2 = layer.bottoms
    w = layer.p.loss_weight
    scale = "" if w == 1.0 else f"{num(w)} * "
    rhs = f"b[{b2!r}]" if b2 not in ctx.net.labels else ctx.v(b2)
    ctx.loss.append(f"{scale}((b[{a!r}] - {rhs}) ** 2).sum() / (2 * b[{a!r}].shape[0])")


def class_name(net_name: str) -> str:
    """The model's class: the net name in CamelCase ("alexnet-r" -> "AlexnetR"), kept clear
    of Python's names and the module's own."""
    camel = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]", net_name) if part)
    camel = camel[:MAX_IDENT] if camel[:1].isalpha() else "Net" + camel[:MAX_IDENT]
    return UniqueNames(lambda s: s, PYTHON_NAMES | MODULE_NAMES).fresh(camel)


def generate(net, weights) -> tuple[str, Context]:
    ctx = Context(net, weights)
    CONVERTERS.check(net.layers)
    labels = set(net.labels)
    for blob in net.data_inputs + net.labels:
        ctx.v(blob)     # the arguments get the plainest names
    for layer in net.layers:
        if layer.kind.is_loss or (layer.kind.is_input and layer.tops[0] in labels):
            continue
        CONVERTERS.get(layer.type)(ctx, layer)
    for layer in net.loss_layers:
        CONVERTERS.get(layer.type)(ctx, layer)

    data_args = ", ".join(ctx.v(b) for b in net.data_inputs)
    label_args = ", ".join(ctx.v(b) for b in net.labels)
    blobs = [t for l in net.deploy_layers if not l.kind.is_input for t in l.tops]
    outs = [ctx.v(o) for o in net.outputs]
    cls = class_name(net.name)
    ind = " " * 8
    lines = [
        '"""A zoo network as a plain PyTorch module (NAME, DESCRIPTION and SOURCE below).',
        "",
        f"Generated by zoo from its spec (sha256 {net.sha256[:16]}...). Plain PyTorch: needs only",
        "torch and safetensors. Layout NCHW / batch first, as the spec.",
        "",
        "    import model; net = model.load()          # weights.safetensors beside this file",
        f"    y = net({data_args})",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        f"NAME = {net.name!r}",
        f"DESCRIPTION = {net.description!r}",
        f"SOURCE = {net.proto.source!r}",
        "",
        "",
        f"class {cls}(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        *[ind + l for l in ctx.init],
        "",
        f"    def forward(self, {data_args}, return_all: bool = False):",
        *[ind + l for l in ctx.fwd],
        "        if return_all:",
        "            return {" + ", ".join(f"{b!r}: {ctx.v(b)}" for b in blobs) + "}",
        f"        return {', '.join(outs)}",
    ]
    if ctx.loss:
        lines += [
            "",
            f"    def training_loss(self, {data_args}, {label_args}):",
            '        """The spec\'s loss layers, summed."""',
            f"        b = self.forward({data_args}, return_all=True)",
            "        return " + " + ".join(ctx.loss),
        ]
    lines += [
        "",
        "",
        f"Model = {cls}",
        "",
        "",
        f"def load(weights: str | Path | None = None) -> {cls}:",
        '    """The model with its weights (safetensors: no pickle), in eval mode."""',
        "    from safetensors.torch import load_file",
        "",
        f"    net = {cls}()",
        f'    net.load_state_dict(load_file(str(weights or Path(__file__).with_name("{WEIGHTS_FILE}"))))',
        "    return net.eval()",
        "",
    ]
    return "\n".join(lines), ctx


def build(net, weights, outdir, options=None) -> dict:
    from safetensors.numpy import save_file

    source, ctx = generate(net, weights)
    compile(source, MODEL_FILE, "exec")   # a generator bug fails the build, not the run
    (outdir / MODEL_FILE).write_text(source)
    save_file({k: np.ascontiguousarray(v) for k, v in ctx.state.items()}, str(outdir / WEIGHTS_FILE))
    return {"files": [MODEL_FILE, WEIGHTS_FILE], "class": class_name(net.name),
            "dtype": (options or {}).get("dtype", "float32"),
            "names": ctx.names, "data_inputs": [ctx.v(b) for b in net.data_inputs],
            "labels": [ctx.v(b) for b in net.labels],
            "input_names": {b: ctx.v(b) for b in net.data_inputs + net.labels}}
