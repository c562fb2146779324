"""Spec + weights -> an MXNet 1.9.1 model: NAME-symbol.json (inference: the network's outputs)
+ NAME-0000.params (load: mx.gluon.SymbolBlock.imports), and, for a spec with loss layers,
NAME-train-symbol.json: the same graph and parameters with the spec's loss layers as MXNet
loss heads (inputs: data, then labels; output: MakeLoss of the summed, weighted losses), so
a runner's training step is only load, feed, backward, step.

options {"dtype": "float64"} builds the model in float64 (parameters, constants, and the
inputs the runner declares); the default is float32.

Explicit conversions:
  - Pooling: CEIL is pooling_convention="full"; MXNet's "full" lacks Caffe's rule that the
    last window start inside the input or its left padding, so where that rule removes a
    window the extra row/column is sliced off (the other windows are the same). AVE
    count_include_pad=True is the PADDED divisor (MXNet clips the window to [-pad, H+pad)
    as Caffe does), False is VALID.
  - LRN: MXNet divides alpha by nsize, as the spec does: alpha passes through.
  - BatchNorm: fix_gamma=False (MXNet's default True would ignore gamma) and the spec's eps.
  - LSTM: the fused RNN op; its flat parameter vector is [W_ih, W_hh, b_ih, b_hh] with gates
    i, f, c, o (the spec's i, f, g, o). b_ih is the spec's one bias and b_hh a constant zero
    (not a parameter), so training keeps one bias.
  - Token ids and labels are float32 (float64) in MXNet (Embedding takes float indices).
  - SoftmaxWithLoss: -loss_weight * mean(pick(log_softmax(logits), labels)) over every
    position of (N, K) or (N, T, K) logits (softmax_cross_entropy clips probabilities at
    1e-8); EuclideanLoss: loss_weight * sum((a - b)^2) / (2 N), N read from the blob's shape
    when the graph runs (a build runs at any batch size). Their sum is the MakeLoss head.
  - Convolution and Pooling with unequal pads on an axis's two sides (MXNet pads both
    alike): an explicit pad op first (0; -inf for MAX), and for AVE a constant map that
    turns the kh*kw divisor into the spec's (PADDED or VALID).
  - Scale, Bias, Eltwise with broadcasting: MXNet's broadcast_* ops (trailing axes aligned).
  - log_softmax (LogSoftmax, SoftmaxWithLoss) with temperature=1, which keeps it on MXNet's
    own kernel: its float32 oneDNN one is off by 1.4e-6 absolute, and a saturated softmax got
    a spurious gradient (`exact_log_softmax`).
  - LayerNorm over several trailing axes: merged into one for MXNet's one-axis LayerNorm.
  - PReLU: where(x >= 0, x, slope * x); MXNet's prelu has a wrong gamma gradient in graphs.
  - LRN is float32 only in MXNet 1.9.1: a float64 build refuses it. In float64, LeakyReLU
    and exact GELU are written from exact ops (MXNet's LeakyReLU forms compute in float32
    inside); MXNet's erf gradient is float32-accurate (~3e-8), so a float64 exact GELU takes
    erf's value with an exact-gradient construction (`_erf_exact_gradient`).
Each spec layer's last op is named after its top blob, so every blob is in
symbol.get_internals() as "SYMBOL_output", SYMBOL being meta["symbols"][blob]: `sname` of the
blob made unique over every symbol name of the graph (UniqueNames: "fc.1" and "fc_1" both
sanitise to "fc_1"; the second becomes "fc_1_2"), so no two blobs or weights share a name.
"""

from __future__ import annotations

import math
import re

import numpy as np

from zoo.layers import convolution as C
from zoo.layers import layer_norm as LN
from zoo.layers import pooling as P
from zoo.layers import reduce as R
from zoo.layers.base import axis_of

from zoo import spec_pb2

from .registry import Registry, UniqueNames, Unsupported

CONVERTERS = Registry("mxnet")


def import_mxnet():
    """MXNet 1.9.1 uses numpy.bool, which numpy >= 1.24 removed: restore it here, in the
    MXNet child process only, never globally."""
    if "bool" not in np.__dict__:
        np.bool = bool
    import mxnet as mx
    return mx


MAX_NAME = 100


def sname(name: str) -> str:
    """An MXNet symbol name made from a spec string: ASCII letters, digits and '_', starting
    with a letter; not yet unique (Context.names makes it so)."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)[:MAX_NAME]
    return s if s[:1].isalpha() else "x" + s


DTYPES = ("float32", "float64")


def dtype_of(options: dict | None) -> str:
    dtype = (options or {}).get("dtype", "float32")
    if dtype not in DTYPES:
        raise Unsupported(f"mxnet builds in {' or '.join(DTYPES)}, not {dtype!r}")
    return dtype


class Context:
    def __init__(self, mx, net, weights, dtype="float32"):
        self.mx, self.sym, self.net, self.weights = mx, mx.sym, net, weights
        self.dtype = dtype
        self.s = {}            # blob -> symbol
        self.params = {}       # symbol variable name -> array (arg params)
        self.aux = {}          # aux states (BatchNorm running stats)
        self.weight_names = {}  # canonical key -> variable name
        self.frozen = []       # variables that are constants, not parameters
        # one namespace for variables and ops; an op's name also takes NAME_output
        self.names = UniqueNames(sname, shadows=["_output"])
        for layer in net.layers:    # blobs first: they get the plainest names
            for t in layer.tops:
                self.blob_name(t)

    def blob_name(self, blob: str) -> str:
        return self.names.name(("blob", blob), blob)

    def fresh(self, base: str) -> str:
        """A name for a symbol zoo adds (an intermediate op, a constant)."""
        return self.names.fresh(base)

    def var(self, layer, key: str, array=None, aux=False, canonical=True):
        name = self.names.name(("weight", layer.name, key), f"{layer.name}_{key}")
        value = self.weights[f"{layer.name}.{key}"] if array is None else array
        (self.aux if aux else self.params)[name] = np.asarray(value, dtype=self.dtype)
        if canonical:
            self.weight_names[f"{layer.name}.{key}"] = name
        else:
            self.frozen.append(name)
        return self.sym.var(name)

    def out_name(self, layer) -> str:
        return self.blob_name(layer.tops[0])


@CONVERTERS.register("Input")
def input_(ctx, layer):
    ctx.s[layer.tops[0]] = ctx.sym.var(ctx.blob_name(layer.tops[0]))


@CONVERTERS.register("InnerProduct")
def inner_product(ctx, layer):
    p = layer.p
    kw = {"bias": ctx.var(layer, "bias")} if p.bias_term else {}
    ctx.s[layer.tops[0]] = ctx.sym.FullyConnected(
        ctx.s[layer.bottoms[0]], weight=ctx.var(layer, "weight"), num_hidden=int(p.num_output),
        no_bias=not p.bias_term, flatten=False, name=ctx.out_name(layer), **kw)


@CONVERTERS.register("Convolution")
def convolution(ctx, layer):
    """Per-axis kernel, stride and dilation natively; unequal pads on the two sides of an
    axis (MXNet pads both alike) as an explicit zero pad first."""
    p, g, name = layer.p, C.window(layer.p), ctx.out_name(layer)
    x, pad = ctx.s[layer.bottoms[0]], (g.pad_top, g.pad_left)
    if g.pad_top != g.pad_bottom or g.pad_left != g.pad_right:
        x = ctx.sym.pad(x, mode="constant", constant_value=0.0, pad_width=(0, 0, 0, 0) + g.pads,
                        name=ctx.fresh(f"{name}_pad"))
        pad = (0, 0)
    kw = {"bias": ctx.var(layer, "bias")} if p.bias_term else {}
    ctx.s[layer.tops[0]] = ctx.sym.Convolution(
        x, weight=ctx.var(layer, "weight"), kernel=(g.kh, g.kw), stride=(g.sh, g.sw), pad=pad,
        dilate=(g.dh, g.dw), num_group=int(p.group), num_filter=int(p.num_output),
        no_bias=not p.bias_term, name=name, **kw)


def mxnet_full_size(h: int, k: int, s: int, pad: int) -> int:
    return 1 + int(np.ceil((h + 2 * pad - k) / s))


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    p, x = layer.p, ctx.s[layer.bottoms[0]]
    pool_type = "max" if p.pool == P.MAX else "avg"
    name = ctx.out_name(layer)
    if p.global_pooling and p.pool == P.AVE:
        # A mean, not Pooling(global_pool): with oneDNN, the (N, C, 1, 1) gradient of a global
        # Pooling comes back in a blocked layout (acdB16b) that oneDNN's own pooling and
        # BatchNorm backward kernels do not take, so both fall to their reference kernels:
        # ResNet-56's training step took 746 ms with Pooling, 423 ms with the mean (README).
        ctx.s[layer.tops[0]] = ctx.sym.mean(x, axis=(2, 3), keepdims=True, name=name)
        return
    if p.global_pooling:    # MAX stays Pooling: MXNet's max reduction sends the gradient to
        # every tied maximum (a channel of zeros after ReLU), Pooling to one, as other engines
        ctx.s[layer.tops[0]] = ctx.sym.Pooling(x, kernel=(1, 1), global_pool=True,
                                               pool_type=pool_type, name=name)
        return
    g = P.geometry(p, layer.in_shapes[0])
    if g.pad_top != g.pad_bottom or g.pad_left != g.pad_right:
        ctx.s[layer.tops[0]] = asymmetric_pooling(ctx, layer, g)
        return
    ceil = p.round_mode == P.CEIL
    kw = {"count_include_pad": p.avg_divisor != P.VALID} if p.pool == P.AVE else {}
    _, _, h, w = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shapes[0]
    full = ((mxnet_full_size(h, g.kh, g.sh, g.pad_top), mxnet_full_size(w, g.kw, g.sw, g.pad_left))
            if ceil else (oh, ow))
    sliced = full != (oh, ow)
    y = ctx.sym.Pooling(x, kernel=(g.kh, g.kw), stride=(g.sh, g.sw), pad=(g.pad_top, g.pad_left),
                        pool_type=pool_type, pooling_convention="full" if ceil else "valid",
                        name=ctx.fresh(f"{name}_full") if sliced else name, **kw)
    if sliced:   # drop the window that starts in the right padding (Caffe's rule)
        y = ctx.sym.slice(y, begin=(None, None, 0, 0), end=(None, None, oh, ow), name=name)
    ctx.s[layer.tops[0]] = y


def asymmetric_pooling(ctx, layer, g):
    """Unequal pads on an axis's two sides (MXNet's Pooling pads both alike): pad explicitly
    (-inf for MAX, 0 for AVE) as far as the last window reaches, pool without padding, and
    for AVE rescale each window from kh*kw to its divisor (a constant map)."""
    p, name, sym = layer.p, ctx.out_name(layer), ctx.sym
    _, _, h, w = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shapes[0]
    bottom = max((oh - 1) * g.sh + g.kh - h - g.pad_top, 0)
    right = max((ow - 1) * g.sw + g.kw - w - g.pad_left, 0)
    is_max = p.pool == P.MAX
    x = sym.pad(ctx.s[layer.bottoms[0]], mode="constant", constant_value=-np.inf if is_max else 0.0,
                pad_width=(0, 0, 0, 0, g.pad_top, bottom, g.pad_left, right), name=ctx.fresh(f"{name}_pad"))
    rescale = None if is_max else g.kh * g.kw / P.divisor_map(p, h, w, oh, ow)
    plain = rescale is None or np.all(rescale == 1.0)
    y = sym.Pooling(x, kernel=(g.kh, g.kw), stride=(g.sh, g.sw), pad=(0, 0),
                    pool_type="max" if is_max else "avg", pooling_convention="valid",
                    count_include_pad=True, name=name if plain else ctx.fresh(f"{name}_pool"))
    if plain:
        return y
    divisor = ctx.var(layer, "divisor_rescale", rescale[None, None], canonical=False)
    return sym.broadcast_mul(y, divisor, name=name)


@CONVERTERS.register("ReLU", "Sigmoid", "TanH")
def activation(ctx, layer):
    act = {"ReLU": "relu", "Sigmoid": "sigmoid", "TanH": "tanh"}[layer.type]
    ctx.s[layer.tops[0]] = ctx.sym.Activation(ctx.s[layer.bottoms[0]], act_type=act,
                                              name=ctx.out_name(layer))


@CONVERTERS.register("LRN")
def lrn(ctx, layer):
    p = layer.p
    if ctx.dtype != "float32":
        raise Unsupported(f"layer {layer.name!r} (LRN): MXNet 1.9.1's LRN computes in float32 only")
    ctx.s[layer.tops[0]] = ctx.sym.LRN(ctx.s[layer.bottoms[0]], nsize=int(p.local_size),
                                       alpha=float(p.alpha), beta=float(p.beta), knorm=float(p.k),
                                       name=ctx.out_name(layer))


@CONVERTERS.register("Dropout")
def dropout(ctx, layer):
    ctx.s[layer.tops[0]] = ctx.sym.Dropout(ctx.s[layer.bottoms[0]], p=float(layer.p.dropout_ratio),
                                           name=ctx.out_name(layer))


@CONVERTERS.register("Softmax")
def softmax(ctx, layer):
    ctx.s[layer.tops[0]] = ctx.sym.softmax(ctx.s[layer.bottoms[0]], axis=int(layer.p.axis),
                                           name=ctx.out_name(layer))


@CONVERTERS.register("Flatten")
def flatten(ctx, layer):
    axis = layer.p.axis % len(layer.in_shapes[0])
    ctx.s[layer.tops[0]] = ctx.sym.reshape(ctx.s[layer.bottoms[0]], shape=(0,) * axis + (-1,),
                                           name=ctx.out_name(layer))


@CONVERTERS.register("Reshape")
def reshape(ctx, layer):
    # MXNet's reshape codes 0 (copy) and -1 (infer) mean what the spec's do
    ctx.s[layer.tops[0]] = ctx.sym.reshape(ctx.s[layer.bottoms[0]], shape=tuple(int(d) for d in layer.p.shape),
                                           name=ctx.out_name(layer))


@CONVERTERS.register("Concat")
def concat(ctx, layer):
    ctx.s[layer.tops[0]] = ctx.sym.concat(*[ctx.s[b] for b in layer.bottoms], dim=int(layer.p.axis),
                                          name=ctx.out_name(layer))


@CONVERTERS.register("Eltwise")
def eltwise(ctx, layer):
    """Bottoms of one shape: add_n / elemwise ops; bottoms that broadcast (NumPy's rule, same
    rank): MXNet's broadcast_* ops."""
    xs, op, name = [ctx.s[b] for b in layer.bottoms], layer.p.operation, ctx.out_name(layer)
    E, sym = spec_pb2.EltwiseParam, ctx.sym
    broadcast = any(s != layer.out_shapes[0] for s in layer.in_shapes)
    if op == E.SUM:
        coeff = list(layer.p.coeff) or [1.0] * len(xs)
        # every op is named by zoo: MXNet's automatic names ("_mulscalar0") could be a blob's
        xs = [x if c == 1.0 else sym._internal._mul_scalar(x, scalar=float(c), name=ctx.fresh(f"{name}_coeff"))
              for c, x in zip(coeff, xs)]
        if not broadcast:
            ctx.s[layer.tops[0]] = sym.add_n(*xs, name=name)
            return
    fn = {E.SUM: sym.broadcast_add, E.MAX: sym.broadcast_maximum,
          E.PROD: sym.broadcast_mul if broadcast else sym.elemwise_mul,
          E.SUB: sym.broadcast_sub if broadcast else sym.elemwise_sub,
          E.DIV: sym.broadcast_div if broadcast else sym.elemwise_div}[op]
    y = xs[0]
    for i, x in enumerate(xs[1:], start=1):
        y = fn(y, x, name=name if i == len(xs) - 1 else ctx.fresh(f"{name}_{i}"))
    ctx.s[layer.tops[0]] = y


@CONVERTERS.register("BatchNorm")
def batch_norm(ctx, layer):
    p = layer.p
    c = layer.in_shapes[0][1]
    if p.scale_bias:
        gamma, beta = ctx.var(layer, "gamma"), ctx.var(layer, "beta")
    else:   # no scale and shift: constants 1 and 0, not parameters
        gamma = ctx.var(layer, "gamma", np.ones(c), canonical=False)
        beta = ctx.var(layer, "beta", np.zeros(c), canonical=False)
    ctx.s[layer.tops[0]] = ctx.sym.BatchNorm(
        ctx.s[layer.bottoms[0]], gamma=gamma, beta=beta,
        moving_mean=ctx.var(layer, "running_mean", aux=True),
        moving_var=ctx.var(layer, "running_var", aux=True),
        eps=float(p.eps), fix_gamma=False, momentum=0.9, axis=1, name=ctx.out_name(layer))


@CONVERTERS.register("Embedding")
def embedding(ctx, layer):
    p = layer.p
    ctx.s[layer.tops[0]] = ctx.sym.Embedding(ctx.s[layer.bottoms[0]], weight=ctx.var(layer, "weight"),
                                             input_dim=int(p.input_dim), output_dim=int(p.num_output),
                                             dtype=ctx.dtype, name=ctx.out_name(layer))


@CONVERTERS.register("LSTM")
def lstm(ctx, layer):
    sym, h, n, fresh = ctx.sym, int(layer.p.num_output), layer.name, ctx.fresh
    flat = [sym.reshape(ctx.var(layer, "weight_ih"), shape=(-1,), name=fresh(f"{n}_weight_ih_flat")),
            sym.reshape(ctx.var(layer, "weight_hh"), shape=(-1,), name=fresh(f"{n}_weight_hh_flat")),
            ctx.var(layer, "bias"),
            sym.zeros((4 * h,), dtype=ctx.dtype, name=fresh(f"{n}_bias_hh_zero"))]
    params = sym.concat(*flat, dim=0, name=fresh(f"{n}_params"))
    state = sym.zeros((1, 0, h), dtype=ctx.dtype, name=fresh(f"{n}_state0"))    # batch 0: inferred from the data
    tnc = sym.transpose(ctx.s[layer.bottoms[0]], axes=(1, 0, 2), name=fresh(f"{n}_tnc"))
    y = sym.RNN(tnc, params, state, state, state_size=h, num_layers=1, mode="lstm",
                name=fresh(f"{n}_rnn"))
    ctx.s[layer.tops[0]] = sym.transpose(y, axes=(1, 0, 2), name=ctx.out_name(layer))


# --- issue 14's vocabulary -----------------------------------------------------------------
# float64 builds: MXNet 1.9.1's LeakyReLU computes its 'leaky' and 'gelu' forms in float32
# internally (errors ~1e-8 on float64 data), so a float64 build writes those two from exact
# float64 ops (where, erf); float32 builds use the native op.

def exact(ctx) -> bool:
    return ctx.dtype == "float64"


def negative_part_scaled(ctx, x, slope, name: str):
    """where(x >= 0, x, slope * x), slope a number or a symbol broadcast against x."""
    sym = ctx.sym
    scaled = (sym._internal._mul_scalar(x, scalar=slope, name=ctx.fresh(f"{name}_scaled"))
              if isinstance(slope, float) else sym.broadcast_mul(x, slope, name=ctx.fresh(f"{name}_scaled")))
    positive = sym._internal._greater_equal_scalar(x, scalar=0.0, name=ctx.fresh(f"{name}_positive"))
    return sym.where(positive, x, scaled, name=name)


@CONVERTERS.register("Clip")
def clip(ctx, layer):
    """MXNet's clip passes the gradient at x == min and x == max; the spec's Clip passes it
    strictly between them only (as PyTorch's ReLU6 and every ReLU at 0), which matters where
    a value sits exactly on a kink (a zero bias on zero inputs): where(min < x < max, x,
    BlockGrad(clip(x))), the same values (tests/test_kinks.py)."""
    sym, x, name, fresh = ctx.sym, ctx.s[layer.bottoms[0]], ctx.out_name(layer), ctx.fresh
    lo, hi = float(layer.p.min), float(layer.p.max)
    clipped = sym.BlockGrad(sym.clip(x, a_min=lo, a_max=hi, name=fresh(f"{name}_clip")),
                            name=fresh(f"{name}_clip_value"))
    inside = sym.elemwise_mul(sym._internal._greater_scalar(x, scalar=lo, name=fresh(f"{name}_above_min")),
                              sym._internal._lesser_scalar(x, scalar=hi, name=fresh(f"{name}_below_max")),
                              name=fresh(f"{name}_inside"))
    ctx.s[layer.tops[0]] = sym.where(inside, x, clipped, name=name)


@CONVERTERS.register("LeakyReLU")
def leaky_relu(ctx, layer):
    x, slope, name = ctx.s[layer.bottoms[0]], float(layer.p.negative_slope), ctx.out_name(layer)
    ctx.s[layer.tops[0]] = (negative_part_scaled(ctx, x, slope, name) if exact(ctx) else
                            ctx.sym.LeakyReLU(x, act_type="leaky", slope=slope, name=name))


@CONVERTERS.register("PReLU")
def prelu(ctx, layer):
    """where(x >= 0, x, slope * x), the slope along axis 1. Not LeakyReLU(act_type='prelu'):
    inside a graph (a SymbolBlock) MXNet 1.9.1 returns a wrong gamma gradient for it (a
    conv -> prelu -> sum(square) graph: 11.06 where the true value is 49.47; the same op
    called imperatively is right), with or without MKLDNN."""
    x, name = ctx.s[layer.bottoms[0]], ctx.out_name(layer)
    rank = len(layer.in_shapes[0])
    along_c = ctx.sym.reshape(ctx.var(layer, "slope"), shape=(1, -1) + (1,) * (rank - 2),
                              name=ctx.fresh(f"{name}_slope"))
    ctx.s[layer.tops[0]] = negative_part_scaled(ctx, x, along_c, name)


@CONVERTERS.register("ELU")
def elu(ctx, layer):
    ctx.s[layer.tops[0]] = ctx.sym.LeakyReLU(ctx.s[layer.bottoms[0]], act_type="elu",
                                             slope=float(layer.p.alpha), name=ctx.out_name(layer))


@CONVERTERS.register("HardSigmoid")
def hard_sigmoid(ctx, layer):
    ctx.s[layer.tops[0]] = ctx.sym.hard_sigmoid(ctx.s[layer.bottoms[0]], alpha=float(layer.p.alpha),
                                                beta=float(layer.p.beta), name=ctx.out_name(layer))


@CONVERTERS.register("HardSwish")
def hard_swish(ctx, layer):
    """x * clip(x + 3, 0, 6) / 6 (hard_sigmoid's alpha 1/6 would be rounded to float32)."""
    sym, x, name, fresh = ctx.sym, ctx.s[layer.bottoms[0]], ctx.out_name(layer), ctx.fresh
    gate = sym.clip(sym._internal._plus_scalar(x, scalar=3.0, name=fresh(f"{name}_shift")),
                    a_min=0.0, a_max=6.0, name=fresh(f"{name}_clip"))
    y = sym.elemwise_mul(x, gate, name=fresh(f"{name}_product"))
    ctx.s[layer.tops[0]] = sym._internal._div_scalar(y, scalar=6.0, name=name)


@CONVERTERS.register("SiLU")
def silu(ctx, layer):
    x, name = ctx.s[layer.bottoms[0]], ctx.out_name(layer)
    ctx.s[layer.tops[0]] = ctx.sym.elemwise_mul(x, ctx.sym.sigmoid(x, name=ctx.fresh(f"{name}_gate")),
                                                name=name)


@CONVERTERS.register("GELU")
def gelu(ctx, layer):
    """Exact GELU: LeakyReLU(act_type='gelu') (erf form); float64 and the tanh form: from
    erf / tanh (MXNet has no tanh-form GELU op)."""
    sym, x, name, fresh = ctx.sym, ctx.s[layer.bottoms[0]], ctx.out_name(layer), ctx.fresh
    tanh_form = layer.p.approximate == spec_pb2.GELUParam.TANH
    if not tanh_form and not exact(ctx):
        ctx.s[layer.tops[0]] = sym.LeakyReLU(x, act_type="gelu", name=name)
        return
    if tanh_form:   # tanh(sqrt(2 / pi) * (x + 0.044715 x^3))
        cube = sym._internal._power_scalar(x, scalar=3.0, name=fresh(f"{name}_cube"))
        inner = sym.elemwise_add(x, sym._internal._mul_scalar(cube, scalar=0.044715, name=fresh(f"{name}_cubic")),
                                 name=fresh(f"{name}_inner"))
        phi = sym.tanh(sym._internal._mul_scalar(inner, scalar=math.sqrt(2.0 / math.pi), name=fresh(f"{name}_arg")),
                       name=fresh(f"{name}_tanh"))
    else:           # erf(x / sqrt(2)), its gradient exact in float64 (see _erf_exact_gradient)
        phi = _erf_exact_gradient(ctx, sym._internal._div_scalar(x, scalar=math.sqrt(2.0),
                                                                 name=fresh(f"{name}_arg")), name)
    half = sym._internal._mul_scalar(sym._internal._plus_scalar(phi, scalar=1.0, name=fresh(f"{name}_one_plus")),
                                     scalar=0.5, name=fresh(f"{name}_cdf"))
    ctx.s[layer.tops[0]] = sym.elemwise_mul(x, half, name=name)


def _erf_exact_gradient(ctx, z, name: str):
    """erf(z) whose gradient is 2/sqrt(pi) exp(-z^2) computed in the model's float type:
    MXNet 1.9.1's erf backward is float32-accurate (~3e-8 relative) even in a float64
    graph, which moved ViT-B/16's float64 training step 16x past the 1e-9 update tolerance.
    The value is erf's own; the gradient flows through slope * (z - BlockGrad(z)), which is
    0 in the forward pass and has derivative `slope` (itself held constant)."""
    sym, fresh = ctx.sym, ctx.fresh
    value = sym.BlockGrad(sym.erf(z, name=fresh(f"{name}_erf")), name=fresh(f"{name}_erf_value"))
    gauss = sym.exp(sym.negative(sym.square(z, name=fresh(f"{name}_z2")), name=fresh(f"{name}_neg_z2")),
                    name=fresh(f"{name}_gauss"))
    slope = sym.BlockGrad(sym._internal._mul_scalar(gauss, scalar=2.0 / math.sqrt(math.pi),
                                                    name=fresh(f"{name}_erf_slope")),
                          name=fresh(f"{name}_erf_slope_const"))
    zero = sym.elemwise_sub(z, sym.BlockGrad(z, name=fresh(f"{name}_z_const")), name=fresh(f"{name}_zero"))
    return sym.elemwise_add(value, sym.elemwise_mul(slope, zero, name=fresh(f"{name}_erf_tangent")),
                            name=fresh(f"{name}_erf_exact"))


def exact_log_softmax(ctx, x, axis: int, name: str):
    """MXNet's log_softmax on its own CPU kernel, not oneDNN's: in float32, along the last
    axis of a rank 1-4 blob and without a temperature, MXNet 1.9.1 runs oneDNN's logsoftmax
    primitive (SupportMKLDNNLogSoftmax, src/operator/nn/mkldnn/mkldnn_log_softmax.cc), whose
    log(sum) is off by ~1.4e-6 absolute: log_softmax([0]) is +1.43e-6, not 0. Harmless while
    the softmax is spread, but a saturated one (a label's log-probability 0) then gets a loss
    of -1.43e-6 and a logit gradient of 1.43e-6 where the true one is 0, times the features
    in the weights' gradient: imported ResNet-50 and Inception-v3, whose logits saturate
    after one SGD step, failed their second step by 1.6x and 58x. An explicit temperature
    of 1 is outside what that check accepts, so MXNet's own kernel runs: (x - max) -
    log(sum(exp(x - max))), the temperature's division skipped at 1 (softmax-inl.h): at
    saturation the label's log-probability is exactly 0, and so is the backward's
    ograd - exp(out) * sum(ograd), as in PyTorch's float32 and the float64 oracle. It costs
    ~1.7x oneDNN's op (forward and backward of lstm-32's (4096, 10000) logits: ~0.5 s more
    on 2 cores); a (N, 1000) classifier head's share is negligible."""
    return ctx.sym.log_softmax(x, axis=axis, temperature=1.0, name=name)


@CONVERTERS.register("LogSoftmax")
def log_softmax(ctx, layer):
    ctx.s[layer.tops[0]] = exact_log_softmax(ctx, ctx.s[layer.bottoms[0]], int(layer.p.axis),
                                             ctx.out_name(layer))


@CONVERTERS.register("Scale")
def scale(ctx, layer):
    """The learned blob (the input's shape without the batch axis, or 1s) broadcast as NumPy
    does: MXNet's broadcast ops align the trailing axes."""
    sym, x, name = ctx.sym, ctx.s[layer.bottoms[0]], ctx.out_name(layer)
    if layer.p.bias_term:
        y = sym.broadcast_mul(x, ctx.var(layer, "scale"), name=ctx.fresh(f"{name}_scaled"))
        ctx.s[layer.tops[0]] = sym.broadcast_add(y, ctx.var(layer, "bias"), name=name)
    else:
        ctx.s[layer.tops[0]] = sym.broadcast_mul(x, ctx.var(layer, "scale"), name=name)


@CONVERTERS.register("Bias")
def bias(ctx, layer):
    ctx.s[layer.tops[0]] = ctx.sym.broadcast_add(ctx.s[layer.bottoms[0]], ctx.var(layer, "bias"),
                                                 name=ctx.out_name(layer))


@CONVERTERS.register("Parameter")
def parameter(ctx, layer):
    """The learned blob repeated over the batch of the bottom (read when the graph runs)."""
    name = ctx.out_name(layer)
    one = ctx.sym.expand_dims(ctx.var(layer, "value"), axis=0, name=ctx.fresh(f"{name}_one"))
    ctx.s[layer.tops[0]] = ctx.sym.broadcast_like(one, ctx.s[layer.bottoms[0]], lhs_axes=(0,),
                                                  rhs_axes=(0,), name=name)


@CONVERTERS.register("Reduce")
def reduce_(ctx, layer):
    p = layer.p
    fn = {R.SUM: ctx.sym.sum, R.MEAN: ctx.sym.mean, R.MAX: ctx.sym.max}[p.operation]
    axes = tuple(R.reduce_axes(p, len(layer.in_shapes[0])))
    ctx.s[layer.tops[0]] = fn(ctx.s[layer.bottoms[0]], axis=axes, keepdims=bool(p.keepdims),
                              name=ctx.out_name(layer))


@CONVERTERS.register("Transpose")
def transpose(ctx, layer):
    ctx.s[layer.tops[0]] = ctx.sym.transpose(ctx.s[layer.bottoms[0]], axes=tuple(int(a) for a in layer.p.order),
                                             name=ctx.out_name(layer))


@CONVERTERS.register("Slice")
def slice_(ctx, layer):
    x, rank = ctx.s[layer.bottoms[0]], len(layer.in_shapes[0])
    axis, begin = axis_of(layer.p.axis, rank), 0
    for top, size in zip(layer.tops, layer.p.size):
        ctx.s[top] = ctx.sym.slice_axis(x, axis=axis, begin=begin, end=begin + int(size),
                                        name=ctx.blob_name(top))
        begin += int(size)


@CONVERTERS.register("Squeeze", "Unsqueeze")
def squeeze(ctx, layer):
    """A reshape to the inferred shape, the batch axis copied (0): any batch size runs."""
    ctx.s[layer.tops[0]] = ctx.sym.reshape(ctx.s[layer.bottoms[0]], shape=(0,) + tuple(layer.out_shapes[0][1:]),
                                           name=ctx.out_name(layer))


@CONVERTERS.register("Gather")
def gather(ctx, layer):
    shape = layer.in_shapes[0]
    axis = axis_of(layer.p.axis, len(shape))
    index = int(layer.p.index) % shape[axis]
    name = ctx.out_name(layer)
    one = ctx.sym.slice_axis(ctx.s[layer.bottoms[0]], axis=axis, begin=index, end=index + 1,
                             name=ctx.fresh(f"{name}_slice"))
    ctx.s[layer.tops[0]] = ctx.sym.squeeze(one, axis=axis, name=name)


@CONVERTERS.register("LayerNorm")
def layer_norm(ctx, layer):
    """MXNet's LayerNorm normalises one axis: the trailing axes from `axis` on are merged
    into one (and gamma/beta flattened) when there are several, then split again."""
    p, shape, name = layer.p, layer.in_shapes[0], ctx.out_name(layer)
    axis = LN.first_axis(p, len(shape))
    trailing = tuple(shape[axis:])
    if p.scale_bias:
        gamma, beta = ctx.var(layer, "gamma"), ctx.var(layer, "beta")
    else:   # constants 1 and 0, not parameters
        gamma = ctx.var(layer, "gamma", np.ones(trailing), canonical=False)
        beta = ctx.var(layer, "beta", np.zeros(trailing), canonical=False)
    x = ctx.s[layer.bottoms[0]]
    if len(trailing) == 1:
        ctx.s[layer.tops[0]] = ctx.sym.LayerNorm(x, gamma, beta, axis=-1, eps=float(p.eps), name=name)
        return
    merged = ctx.sym.reshape(x, shape=(0,) * axis + (-1,), name=ctx.fresh(f"{name}_merged"))
    flat = [ctx.sym.reshape(v, shape=(-1,), name=ctx.fresh(f"{name}_{k}_flat"))
            for k, v in (("gamma", gamma), ("beta", beta))]
    y = ctx.sym.LayerNorm(merged, *flat, axis=-1, eps=float(p.eps), name=ctx.fresh(f"{name}_norm"))
    ctx.s[layer.tops[0]] = ctx.sym.reshape(y, shape=(0,) + tuple(shape[1:]), name=name)


@CONVERTERS.register("MatMul")
def matmul(ctx, layer):
    p, name = layer.p, ctx.out_name(layer)
    a, b = (ctx.s[x] for x in layer.bottoms)
    scaled = float(p.scale) != 1.0
    y = ctx.sym.batch_dot(a, b, transpose_a=bool(p.transpose_a), transpose_b=bool(p.transpose_b),
                          name=ctx.fresh(f"{name}_product") if scaled else name)
    ctx.s[layer.tops[0]] = (ctx.sym._internal._mul_scalar(y, scalar=float(p.scale), name=name)
                            if scaled else y)


def runtime_count(ctx, count_sym, name: str):
    """A count read from a blob's shape when the graph runs, as a constant of the model's
    dtype: a build is run at any batch size, so no batch size is written into the graph."""
    return ctx.sym.BlockGrad(ctx.sym.cast(count_sym, dtype=ctx.dtype, name=ctx.fresh(f"{name}_cast")),
                             name=ctx.fresh(name))


@CONVERTERS.register("SoftmaxWithLoss")
def softmax_with_loss(ctx, layer):
    """Mean cross-entropy over every position of (N, K) or (N, T, K) logits: -mean(pick(
    log_softmax)), log_softmax as `exact_log_softmax` (oneDNN's float32 one is off by 1.4e-6).
    Not softmax_cross_entropy: it clips each probability at 1e-8, so a row's loss never
    exceeds 18.42 (its gradient is unclipped, the reported loss is wrong)."""
    sym, n = ctx.sym, layer.name
    logp = exact_log_softmax(ctx, ctx.s[layer.bottoms[0]], -1, ctx.fresh(f"{n}_log_softmax"))
    picked = sym.pick(logp, ctx.s[layer.bottoms[1]], axis=-1, name=ctx.fresh(f"{n}_picked"))
    mean = sym.mean(picked, name=ctx.fresh(f"{n}_mean"))
    ctx.s[layer.tops[0]] = sym._internal._mul_scalar(mean, scalar=-float(layer.p.loss_weight),
                                                     name=ctx.out_name(layer))


@CONVERTERS.register("EuclideanLoss")
def euclidean_loss(ctx, layer):
    """Caffe's: sum((a - b)^2) / (2 N)."""
    sym, n = ctx.sym, layer.name
    a = ctx.s[layer.bottoms[0]]
    diff = sym.elemwise_sub(a, ctx.s[layer.bottoms[1]], name=ctx.fresh(f"{n}_diff"))
    total = sym.sum(sym.square(diff, name=ctx.fresh(f"{n}_square")), name=ctx.fresh(f"{n}_sum"))
    batch = sym.slice_axis(sym.shape_array(a, name=ctx.fresh(f"{n}_shape")), axis=0, begin=0, end=1,
                           name=ctx.fresh(f"{n}_batch_size"))
    half = sym.elemwise_div(total, runtime_count(ctx, batch, f"{n}_batch"), name=ctx.fresh(f"{n}_per_sample"))
    ctx.s[layer.tops[0]] = sym._internal._mul_scalar(half, scalar=float(layer.p.loss_weight) / 2,
                                                     name=ctx.out_name(layer))


def training_symbol(ctx, net):
    """MakeLoss of the summed loss layers: the training graph's one output."""
    losses = [ctx.s[t] for t in net.losses]
    total = losses[0] if len(losses) == 1 else ctx.sym.add_n(*losses, name=ctx.fresh("loss_total"))
    return ctx.sym.MakeLoss(total, name=ctx.fresh("training_loss"))


def heads(net) -> list[str]:
    """The inference symbol's outputs: the network's outputs, then the loss layers'
    predictions (as before the loss moved into NAME-train-symbol.json: same outputs)."""
    out = list(net.outputs)
    for l in net.loss_layers:
        out += [b for b in l.bottoms if b not in net.labels and b not in out]
    return out


def build(net, weights, outdir, options=None) -> dict:
    dtype = dtype_of(options)
    mx = import_mxnet()
    CONVERTERS.check(net.layers)
    ctx = Context(mx, net, weights, dtype)
    for layer in net.layers:      # the training graph; the inference graph is part of it
        CONVERTERS.get(layer.type)(ctx, layer)
    hs = heads(net)
    prefix = sname(net.name)
    files = [f"{prefix}-symbol.json", f"{prefix}-0000.params"]
    deploy = ctx.sym.Group([ctx.s[b] for b in hs]) if len(hs) > 1 else ctx.s[hs[0]]
    deploy.save(str(outdir / files[0]))
    mx.nd.save(str(outdir / files[1]),
               {**{f"arg:{k}": mx.nd.array(v, dtype=dtype) for k, v in ctx.params.items()},
                **{f"aux:{k}": mx.nd.array(v, dtype=dtype) for k, v in ctx.aux.items()}})
    train = None
    if net.loss_layers:
        train = f"{prefix}-train-symbol.json"
        training_symbol(ctx, net).save(str(outdir / train))
        files.append(train)
    inputs = [l.tops[0] for l in net.deploy_layers if l.kind.is_input]
    return {"files": files, "prefix": prefix, "dtype": dtype,
            "inputs": [ctx.blob_name(i) for i in inputs], "input_blobs": inputs,
            "train_symbol": train, "label_inputs": [ctx.blob_name(b) for b in net.labels],
            "label_blobs": list(net.labels),
            "heads": hs, "names": ctx.weight_names, "frozen": ctx.frozen,
            "symbols": {b: ctx.blob_name(b) for l in net.deploy_layers for b in l.tops},
            "mxnet": mx.__version__}
