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
from zoo.layers import convolution as C
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
    "zero_grad", "training_loss", "channels_last"}
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


def _pair(a: int, b: int) -> str:
    """One int when both axes agree (nn.Conv2d(.., 3, ..)), else the (h, w) tuple."""
    return str(a) if a == b else f"({a}, {b})"


def _pad_explicitly(ctx, x: str, sides: tuple[int, int, int, int], fill: str = "") -> str:
    """F.pad of `x` by (top, bottom, left, right) into a new local; returns its name."""
    top, bottom, left, right = sides
    padded = ctx.temp(f"{x}_pad")
    ctx.fwd.append(f"{padded} = F.pad({x}, ({left}, {right}, {top}, {bottom}){fill})")
    return padded


@CONVERTERS.register("Convolution")
def convolution(ctx, layer):
    p, a, x = layer.p, ctx.attr(layer), ctx.v(layer.bottoms[0])
    g = C.window(p)
    padding = _pair(g.pad_top, g.pad_left)
    if g.pad_top != g.pad_bottom or g.pad_left != g.pad_right:
        # nn.Conv2d pads symmetrically: asymmetric sides are padded (with zeros) beforehand
        x, padding = _pad_explicitly(ctx, x, g.pads), "0"
    ctx.init.append(f"self.{a} = nn.Conv2d({layer.in_shapes[0][1]}, {p.num_output}, "
                    f"{_pair(g.kh, g.kw)}, stride={_pair(g.sh, g.sw)}, padding={padding}, "
                    f"dilation={_pair(g.dh, g.dw)}, groups={p.group}, bias={p.bias_term})")
    ctx.param(layer, "weight", "weight")
    if p.bias_term:
        ctx.param(layer, "bias", "bias")
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x})")


def _torch_pool_out(h: int, k: int, s: int, pad: int, ceil: bool) -> int:
    """PyTorch's pooled size along one axis (its CEIL rule drops a last window that starts
    at or beyond H + pad, even with pad 0, where the spec keeps it)."""
    if not ceil:
        return (h + 2 * pad - k) // s + 1
    out = -(-(h + 2 * pad - k) // s) + 1
    return out - 1 if (out - 1) * s >= h + pad else out


def _native_pool_padding(layer, g, ceil: bool) -> tuple[int, int] | None:
    """(pad_h, pad_w) when nn.MaxPool2d / nn.AvgPool2d computes the layer as stated:
    symmetric pads each <= kernel/2 and the spec's output size; else None."""
    if g.pad_top != g.pad_bottom or g.pad_left != g.pad_right:
        return None
    if 2 * g.pad_top > g.kh or 2 * g.pad_left > g.kw:
        return None
    _, _, h, w = layer.in_shapes[0]
    got = (_torch_pool_out(h, g.kh, g.sh, g.pad_top, ceil), _torch_pool_out(w, g.kw, g.sw, g.pad_left, ceil))
    return (g.pad_top, g.pad_left) if got == tuple(layer.out_shapes[0][2:]) else None


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    p, a, x = layer.p, ctx.attr(layer), ctx.v(layer.bottoms[0])
    if p.global_pooling:
        if p.pool == P.MAX:
            ctx.init.append(f"self.{a} = nn.AdaptiveMaxPool2d(1)")
        elif _channels_last(ctx.net):
            # avg_pool2d over the whole image, not AdaptiveAvgPool2d(1): that one is a mean,
            # whose backward hands the convolution before it an NCHW gradient to copy into
            # channels-last (benchmarks/depthwise.py); avg_pool2d's keeps the input's order
            ctx.init.append(f"self.{a} = nn.AvgPool2d({_pair(*layer.in_shapes[0][2:])})")
        else:
            ctx.init.append(f"self.{a} = nn.AdaptiveAvgPool2d(1)")
        ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x})")
        return
    g, ceil = P.geometry(p, layer.in_shapes[0]), p.round_mode == P.CEIL
    kernel, stride = _pair(g.kh, g.kw), _pair(g.sh, g.sw)
    native = _native_pool_padding(layer, g, ceil)
    if native is not None:
        pad = _pair(*native)
        if p.pool == P.MAX:
            ctx.init.append(f"self.{a} = nn.MaxPool2d({kernel}, stride={stride}, padding={pad}, "
                            f"ceil_mode={ceil})")
        else:
            include = p.avg_divisor != P.VALID   # PADDED: padding counts (Caffe's divisor)
            ctx.init.append(f"self.{a} = nn.AvgPool2d({kernel}, stride={stride}, padding={pad}, "
                            f"ceil_mode={ceil}, count_include_pad={include})")
        ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x})")
        return
    _explicit_pooling(ctx, layer, g, x, a, kernel, stride)


def _explicit_pooling(ctx, layer, g, x, a, kernel, stride):
    """Pads PyTorch's pools do not take (asymmetric, > kernel/2, or a CEIL size its rule
    gives otherwise): every pad, and the CEIL overhang, padded beforehand; then an unpadded
    FLOOR pool. MAX pads with -inf; AVE sums each window and divides by the stated
    divisor, a constant (oh, ow) map kept as a buffer."""
    p = layer.p
    _, _, h, w = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shapes[0]
    eh, ew = P.end_padding(p, h, w, oh, ow)
    sides = (g.pad_top, g.pad_bottom + eh, g.pad_left, g.pad_right + ew)
    if p.pool == P.MAX:
        x = _pad_explicitly(ctx, x, sides, ", value=float('-inf')")
        ctx.init.append(f"self.{a} = nn.MaxPool2d({kernel}, stride={stride})")
        ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x})")
        return
    x = _pad_explicitly(ctx, x, sides)
    divisor = P.divisor_map(p, h, w, oh, ow)
    if np.all(divisor == g.kh * g.kw):
        ctx.init.append(f"self.{a} = nn.AvgPool2d({kernel}, stride={stride})")
        ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x})")
        return
    # window sums (divisor_override=1) over the stated divisor: whole numbers, exact in any
    # float type, so the float64 oracle stays the reference
    buf = ctx.attrs.fresh(f"{a}_divisor")
    ctx.init.append(f"self.{a} = nn.AvgPool2d({kernel}, stride={stride}, divisor_override=1)")
    ctx.init.append(f"self.register_buffer({buf!r}, torch.empty({oh}, {ow}))   "
                    "# the stated divisor per output position")
    ctx.state[buf] = divisor.astype(np.float32)
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({x}) / self.{buf}")


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
    x, shape = ctx.v(layer.bottoms[0]), layer.in_shapes[0]
    if _channels_last(ctx.net) and len(shape) == 4 and layer.p.axis == 1 and tuple(shape[2:]) == (1, 1):
        # (N, C, 1, 1) -> (N, C) read as (N, 1, 1, C): the same values, but the gradient
        # flows back channels-last (strides (C, 1, C, C)), so the pooling before it keeps
        # its fast channels-last backward; torch.flatten's gradient view is NCHW-strided
        ctx.fwd.append(f"{ctx.out(layer)} = {x}.permute(0, 2, 3, 1).flatten(1)")
        return
    ctx.fwd.append(f"{ctx.out(layer)} = torch.flatten({x}, {layer.p.axis})")


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
    elif op == spec_pb2.EltwiseParam.SUB:
        expr = f"{xs[0]} - {xs[1]}"
    elif op == spec_pb2.EltwiseParam.DIV:
        expr = f"{xs[0]} / {xs[1]}"
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


# --- issue 14: today's vocabulary ------------------------------------------------------------
def _module(ctx, layer, init: str) -> None:
    """A layer that is one nn module applied to its one bottom."""
    a = ctx.attr(layer)
    ctx.init.append(f"self.{a} = {init}")
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}({ctx.v(layer.bottoms[0])})")


@CONVERTERS.register("Clip")
def clip(ctx, layer):
    lo, hi = float(layer.p.min), float(layer.p.max)
    _module(ctx, layer, "nn.ReLU6()" if (lo, hi) == (0.0, 6.0) else f"nn.Hardtanh({num(lo)}, {num(hi)})")


@CONVERTERS.register("LeakyReLU")
def leaky_relu(ctx, layer):
    _module(ctx, layer, f"nn.LeakyReLU({num(layer.p.negative_slope)})")


@CONVERTERS.register("PReLU")
def prelu(ctx, layer):
    # nn.PReLU's weight is the spec's slope, (C,) on axis 1 or (1,) shared
    c = 1 if layer.p.channel_shared else layer.in_shapes[0][1]
    _module(ctx, layer, f"nn.PReLU({c})")
    ctx.param(layer, "slope", "weight")


@CONVERTERS.register("ELU")
def elu(ctx, layer):
    _module(ctx, layer, f"nn.ELU({num(layer.p.alpha)})")


@CONVERTERS.register("HardSigmoid")
def hard_sigmoid(ctx, layer):
    # Always the spec's own constants: nn.Hardsigmoid computes x/6 with the exact 1/6, which
    # the spec's float alpha (0.16666667) is not; a float64 build (the training oracle) would
    # then differ from the reference by ~5e-9 of the output. F.hardtanh rather than clamp:
    # the spec's gradient is 0 at both kinks, clamp's passes there (tests/test_kinks.py)
    alpha, beta = float(layer.p.alpha), float(layer.p.beta)
    x = ctx.v(layer.bottoms[0])
    ctx.fwd.append(f"{ctx.out(layer)} = F.hardtanh({num(alpha)} * {x} + {num(beta)}, 0.0, 1.0)   # hard sigmoid")


@CONVERTERS.register("HardSwish", "SiLU")
def hard_swish_silu(ctx, layer):
    _module(ctx, layer, {"HardSwish": "nn.Hardswish()", "SiLU": "nn.SiLU()"}[layer.type])


@CONVERTERS.register("GELU")
def gelu(ctx, layer):
    approximate = "tanh" if layer.p.approximate == spec_pb2.GELUParam.TANH else "none"
    _module(ctx, layer, f"nn.GELU(approximate={approximate!r})")


@CONVERTERS.register("LogSoftmax")
def log_softmax(ctx, layer):
    ctx.fwd.append(f"{ctx.out(layer)} = torch.log_softmax({ctx.v(layer.bottoms[0])}, dim={layer.p.axis})")


def _learned(ctx, layer, keys: list[str], shape) -> str:
    """Learned blobs as an nn.ParameterDict: their state_dict names are "ATTR.KEY", the
    canonical weight names ("scale", "bias", "value")."""
    a = ctx.attr(layer)
    dims = ", ".join(str(int(d)) for d in shape)
    entries = ", ".join(f"{k!r}: nn.Parameter(torch.empty({dims}))" for k in keys)
    ctx.init.append(f"self.{a} = nn.ParameterDict({{{entries}}})")
    for k in keys:
        ctx.param(layer, k, k)
    return a


@CONVERTERS.register("Scale")
def scale(ctx, layer):
    p = layer.p
    keys = ["scale", "bias"] if p.bias_term else ["scale"]
    a, x = _learned(ctx, layer, keys, p.shape), ctx.v(layer.bottoms[0])
    expr = f"{x} * self.{a}['scale']" + (f" + self.{a}['bias']" if p.bias_term else "")
    ctx.fwd.append(f"{ctx.out(layer)} = {expr}")


@CONVERTERS.register("Bias")
def bias(ctx, layer):
    a, x = _learned(ctx, layer, ["bias"], layer.p.shape), ctx.v(layer.bottoms[0])
    ctx.fwd.append(f"{ctx.out(layer)} = {x} + self.{a}['bias']")


@CONVERTERS.register("Parameter")
def parameter(ctx, layer):
    shape = [int(d) for d in layer.p.shape]
    a, x = _learned(ctx, layer, ["value"], shape), ctx.v(layer.bottoms[0])
    dims = ", ".join(str(d) for d in shape)
    ctx.fwd.append(f"{ctx.out(layer)} = self.{a}['value'].expand({x}.shape[0], {dims})")


def _axes(values, rank: int) -> tuple[int, ...]:
    """Spec axes (negative counts from the end) as non-negative dims, sorted."""
    return tuple(sorted(int(v) % rank for v in values))


def _dims(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else str(axes)


@CONVERTERS.register("Reduce")
def reduce(ctx, layer):
    p = layer.p
    fn = {spec_pb2.ReduceParam.SUM: "torch.sum", spec_pb2.ReduceParam.MEAN: "torch.mean",
          spec_pb2.ReduceParam.MAX: "torch.amax"}[p.operation]
    dims = _dims(_axes(p.axis, len(layer.in_shapes[0])))
    ctx.fwd.append(f"{ctx.out(layer)} = {fn}({ctx.v(layer.bottoms[0])}, dim={dims}, "
                   f"keepdim={bool(p.keepdims)})")


@CONVERTERS.register("Transpose")
def transpose(ctx, layer):
    order = ", ".join(str(int(a)) for a in layer.p.order)
    ctx.fwd.append(f"{ctx.out(layer)} = {ctx.v(layer.bottoms[0])}.permute({order})")


@CONVERTERS.register("Slice")
def slice_(ctx, layer):
    p = layer.p
    axis = int(p.axis) % len(layer.in_shapes[0])
    tops = ", ".join(ctx.v(t) for t in layer.tops) + ("," if len(layer.tops) == 1 else "")
    sizes = ", ".join(str(int(n)) for n in p.size)
    ctx.fwd.append(f"{tops} = torch.split({ctx.v(layer.bottoms[0])}, [{sizes}], dim={axis})")


@CONVERTERS.register("Squeeze")
def squeeze(ctx, layer):
    dims = _dims(_axes(layer.p.axis, len(layer.in_shapes[0])))
    ctx.fwd.append(f"{ctx.out(layer)} = {ctx.v(layer.bottoms[0])}.squeeze({dims})")


@CONVERTERS.register("Unsqueeze")
def unsqueeze(ctx, layer):
    # positions in the output: inserted in increasing order, each lands where stated
    axes = _axes(layer.p.axis, len(layer.out_shapes[0]))
    ctx.fwd.append(f"{ctx.out(layer)} = {ctx.v(layer.bottoms[0])}"
                   + "".join(f".unsqueeze({a})" for a in axes))


@CONVERTERS.register("Gather")
def gather(ctx, layer):
    p = layer.p
    axis = int(p.axis) % len(layer.in_shapes[0])
    index = int(p.index) % layer.in_shapes[0][axis]
    ctx.fwd.append(f"{ctx.out(layer)} = {ctx.v(layer.bottoms[0])}.select({axis}, {index})")


@CONVERTERS.register("LayerNorm")
def layer_norm(ctx, layer):
    p, s = layer.p, layer.in_shapes[0]
    shape = tuple(s[int(p.axis) % len(s):])
    _module(ctx, layer, f"nn.LayerNorm({list(shape)}, eps={num(p.eps)}, "
                        f"elementwise_affine={bool(p.scale_bias)})")
    if p.scale_bias:
        ctx.param(layer, "gamma", "weight")
        ctx.param(layer, "beta", "bias")


@CONVERTERS.register("MatMul")
def matmul(ctx, layer):
    p = layer.p
    a, b = (ctx.v(x) for x in layer.bottoms)
    a = f"{a}.transpose(-2, -1)" if p.transpose_a else a
    b = f"{b}.transpose(-2, -1)" if p.transpose_b else b
    scale = "" if p.scale == 1 else f" * {num(p.scale)}"
    ctx.fwd.append(f"{ctx.out(layer)} = torch.matmul({a}, {b}){scale}")


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
    # Networks with 2-D convolutions run channels-last (NHWC memory order; the tensors keep
    # their NCHW shape and indexing, so nothing else changes): oneDNN's convolution and
    # PyTorch's max pooling have their fast CPU kernels there: NCHW max pooling alone took
    # a fifth of AlexNet-R's training step (benchmarks/channels_last.py, figures in the README).
    cl = _channels_last(net)
    cl_inputs = [ctx.v(b) for b in net.data_inputs if len(net.shapes[b]) == 4 and net.dtypes.get(b) != spec_pb2.InputParam.INT64]
    to_cl = ["if self.channels_last:"] + [f"    {v} = {v}.contiguous(memory_format=torch.channels_last)"
                                           for v in cl_inputs] if cl and cl_inputs else []
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
        f"    channels_last = {cl}    # memory order of weights and images (set before construction)",
        "",
        "    def __init__(self):",
        "        super().__init__()",
        *[ind + l for l in ctx.init],
        "        if self.channels_last:",
        "            self.to(memory_format=torch.channels_last)",
        "",
        f"    def forward(self, {data_args}, return_all: bool = False):",
        *[ind + l for l in to_cl],
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


def _channels_last(net) -> bool:
    return any(l.type == "Convolution" and len(l.in_shapes[0]) == 4 for l in net.layers)


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
            "input_names": {b: ctx.v(b) for b in net.data_inputs + net.labels},
            "modules": ctx.attrs.named()}      # spec layer -> its module's attribute
