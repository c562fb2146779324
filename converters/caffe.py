"""Spec + weights -> Caffe's own files: deploy.prototxt, train_val.prototxt, solver.prototxt
and weights.caffemodel (a binary NetParameter with blobs).

Written with Caffe's protobuf schema (converters/caffe_proto/caffe.proto: BVLC Caffe's, as
shipped by brocolli-caffe; caffe_pb2.py is generated from it, see scripts/gen_protos.sh).
Explicit conversions:
  - Pooling: field 13 of PoolingParameter is `ceil_mode` (bool) in brocolli-caffe and in
    OpenCV's Caffe importer (BVLC master renamed it `round_mode`, an enum with FLOOR = 1);
    FLOOR is written as `ceil_mode: false`. Caffe's CEIL already has the rule that the last
    window starts inside the input or left padding. Caffe's AVE divisor counts padding
    (PADDED); the VALID divisor is not expressible where it matters (pad > 0 or CEIL).
  - BatchNorm is Caffe's BatchNorm (mean, variance, and a moving-average factor blob of 1.0;
    its three blobs have lr_mult 0) followed by a Scale layer (gamma, beta).
  - InnerProduct keeps its axis explicit (1, or 2 on sequences); a Flatten before it keeps
    Caffe's (c, h, w) order, which is the spec's: no permutation is needed.
  - LSTM is Caffe's LSTM layer: blobs W_xc (4H, C), b_c (4H), W_hc (4H, H) with gates
    i, f, o, g (the spec's i, f, g, o reordered), time-major input (T, N, C) and a `cont`
    input (0 at t = 0, 1 after) that starts every sequence from a zero state. BVLC Caffe has
    no transpose layer, so a network with sequences runs time-major throughout in Caffe:
    its (N, T) inputs are declared (T, N) and the runner transposes at the boundary.
  - Dropout and losses are Caffe's own layers (SoftmaxWithLoss over the last axis).
Python layers are never emitted. Names: every spec layer and blob keeps its name (protobuf's
text format escapes any string, and the runners address blobs by name); the layers and blobs
zoo adds (the LSTM `cont` input, BatchNorm's Scale layer and its intermediate blob) get
names no spec layer or blob has (CaffeNames).
"""

from __future__ import annotations

import numpy as np

from zoo.layers import convolution as CV
from zoo.layers import pooling as P
from zoo.layers import reduce as R

from zoo import spec_pb2

from .registry import Registry, UniqueNames, Unsupported

CONVERTERS = Registry("caffe")
DEPLOY, TRAIN_VAL, SOLVER, WEIGHTS = "deploy.prototxt", "train_val.prototxt", "solver.prototxt", "weights.caffemodel"
CONT = "zoo_cont"   # the LSTM `cont` input (and its layer), unless a spec name is that


class CaffeNames:
    """The names of what zoo adds to a Caffe net, the same in deploy and train_val: clear of
    every spec layer and blob name and of each other."""

    def __init__(self, net):
        layers = {l.name for l in net.layers}
        blobs = {t for l in net.layers for t in l.tops}
        self.cont = UniqueNames(str, reserved=layers | blobs).fresh(CONT)   # a layer and a blob
        self._layers = UniqueNames(str, reserved=layers | {self.cont})
        self._blobs = UniqueNames(str, reserved=blobs | {self.cont})
        for l in net.layers:
            if l.type == "BatchNorm" and l.p.scale_bias:
                self.scale_layer(l)
                self.bn_blob(l)

    def scale_layer(self, layer) -> str:
        return self._layers.name(layer.name, f"{layer.name}__scale")

    def bn_blob(self, layer) -> str:
        return self._blobs.name(layer.name, f"{layer.tops[0]}__bn")

    def extra_layer(self, layer, tag: str) -> str:
        """A layer zoo adds for `layer` (a composite's second step): LAYER__TAG."""
        return self._layers.name((layer.name, tag), f"{layer.name}__{tag}")

    def extra_blob(self, layer, tag: str) -> str:
        """A blob zoo adds for `layer` (an intermediate, or a Slice part no one reads)."""
        return self._blobs.name((layer.name, tag), f"{layer.tops[0]}__{tag}")



def pb2():
    from . import caffe_pb2
    return caffe_pb2


class Context:
    def __init__(self, net, weights, time_major: bool, names: CaffeNames):
        self.pb = pb2()
        self.net, self.weights, self.time_major, self.zoo_names = net, weights, time_major, names
        self.param = self.pb.NetParameter(name=net.name)
        self.model = self.pb.NetParameter(name=net.name)   # the .caffemodel: layers with blobs
        self.names = {}        # canonical key -> [caffe layer, blob index, transform]
        self.producer = {}     # blob -> the Caffe layer whose top it is
        self.train = False

    def layer(self, layer, type_: str, bottoms=None, tops=None, name=None):
        lp = self.param.layer.add()
        lp.name = name or layer.name
        lp.type = type_
        lp.bottom.extend(layer.bottoms if bottoms is None else bottoms)
        lp.top.extend(layer.tops if tops is None else tops)
        self.producer.update((t, lp.name) for t in lp.top)
        return lp

    def blobs(self, lname: str, arrays: list, keys: list):
        ml = self.model.layer.add()
        ml.name = lname
        for i, (a, k) in enumerate(zip(arrays, keys)):
            b = ml.blobs.add()
            b.shape.dim.extend(int(d) for d in np.shape(a))
            b.data.extend(np.asarray(a, dtype=np.float32).ravel().tolist())
            if k is not None:
                self.names[k[0]] = [lname, i, k[1]]

    def w(self, layer, key):
        return self.weights[f"{layer.name}.{key}"]

    def seq(self, layer) -> bool:
        """Is this layer's input a (time-major in Caffe) sequence blob?"""
        return self.time_major and len(layer.in_shapes[0]) == 3


def lstm_gates_to_caffe(a: np.ndarray) -> np.ndarray:
    i, f, g, o = np.split(a, 4, axis=0)
    return np.concatenate([i, f, o, g], axis=0)


def lstm_gates_from_caffe(a: np.ndarray) -> np.ndarray:
    i, f, o, g = np.split(a, 4, axis=0)
    return np.concatenate([i, f, g, o], axis=0)


TRANSFORMS = {"identity": lambda a: a, "lstm_gates": lstm_gates_from_caffe}


def reshape_to(shape) -> list:
    """The transform of a blob Caffe holds in another shape than the spec's (a Scale's
    (C,) for the spec's (C, 1, 1), a shared PReLU slope's () for (1,))."""
    return ["reshape", [int(d) for d in shape]]


def from_caffe(transform, a: np.ndarray) -> np.ndarray:
    """A Caffe blob back in the spec's layout: `transform` is a TRANSFORMS name or
    reshape_to(shape)."""
    if isinstance(transform, (list, tuple)) and transform and transform[0] == "reshape":
        return np.reshape(a, tuple(transform[1]))
    return TRANSFORMS[transform](a)


@CONVERTERS.register("Input")
def input_(ctx, layer):
    shape = list(layer.out_shapes[0])
    if ctx.time_major and len(shape) in (2, 3):
        shape[0], shape[1] = shape[1], shape[0]
    lp = ctx.layer(layer, "Input", bottoms=[])
    lp.input_param.shape.add().dim.extend(shape)


def _weight_and_bias(ctx, layer, bias_term: bool) -> None:
    """Blobs [weight, bias]: the spec's layouts are Caffe's for both layer types."""
    arrays, keys = [ctx.w(layer, "weight")], [(f"{layer.name}.weight", "identity")]
    if bias_term:
        arrays.append(ctx.w(layer, "bias"))
        keys.append((f"{layer.name}.bias", "identity"))
    ctx.blobs(layer.name, arrays, keys)


@CONVERTERS.register("InnerProduct")
def inner_product(ctx, layer):
    p = layer.p
    lp = ctx.layer(layer, "InnerProduct")
    lp.inner_product_param.num_output = int(p.num_output)
    lp.inner_product_param.bias_term = p.bias_term
    lp.inner_product_param.axis = len(layer.in_shapes[0]) - 1
    _weight_and_bias(ctx, layer, p.bias_term)


ASYMMETRIC_PADS = "Caffe pads symmetrically only (one pad_h for top and bottom, one pad_w for left and right)"


def asymmetric_pads(layer) -> bool:
    """Does this Convolution or Pooling pad top != bottom or left != right? (Caffe cannot.)"""
    if layer.type == "Pooling" and layer.p.global_pooling:
        return False
    w = CV.window(layer.p) if layer.type == "Convolution" else P.geometry(layer.p, layer.in_shapes[0])
    return w.pad_top != w.pad_bottom or w.pad_left != w.pad_right


def _window(layer):
    """The window of a Convolution or (non-global) Pooling, refused where Caffe cannot pad."""
    if asymmetric_pads(layer):
        raise Unsupported(f"caffe: layer {layer.name!r}: {ASYMMETRIC_PADS}")
    if layer.type == "Convolution":
        return CV.window(layer.p)
    return P.geometry(layer.p, layer.in_shapes[0])


@CONVERTERS.register("Convolution")
def convolution(ctx, layer):
    p = layer.p
    w = _window(layer)
    lp = ctx.layer(layer, "Convolution")
    cp = lp.convolution_param
    cp.num_output, cp.bias_term, cp.group = int(p.num_output), p.bias_term, int(p.group)
    if w.kh == w.kw and w.sh == w.sw and w.pad_top == w.pad_left:
        cp.kernel_size.append(w.kh)
        cp.stride.append(w.sh)
        cp.pad.append(w.pad_top)
    else:      # the per-axis fields, which both Caffe and OpenCV's importer read
        cp.kernel_h, cp.kernel_w = w.kh, w.kw
        cp.stride_h, cp.stride_w = w.sh, w.sw
        cp.pad_h, cp.pad_w = w.pad_top, w.pad_left
    cp.dilation.extend([w.dh] if w.dh == w.dw else [w.dh, w.dw])
    _weight_and_bias(ctx, layer, p.bias_term)


def ave_valid_divisor_differs(layer) -> bool:
    """VALID differs from Caffe's PADDED divisor where a window reaches padding or the ceil
    overhang (Caffe cannot count only the valid elements)."""
    p = layer.p
    if p.global_pooling or p.pool != P.AVE or p.avg_divisor != P.VALID:
        return False
    return max(P.geometry(p, layer.in_shapes[0]).pads) > 0 or p.round_mode == P.CEIL


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    p = layer.p
    lp = ctx.layer(layer, "Pooling")
    pp = lp.pooling_param
    pp.pool = ctx.pb.PoolingParameter.MAX if p.pool == P.MAX else ctx.pb.PoolingParameter.AVE
    if p.global_pooling:
        pp.global_pooling = True
        return
    if ave_valid_divisor_differs(layer):
        raise Unsupported(f"caffe: layer {layer.name!r}: Caffe's average pooling always counts "
                          "the padding (PADDED); the VALID divisor is not expressible")
    w = _window(layer)
    if w.kh == w.kw and w.sh == w.sw and w.pad_top == w.pad_left:
        pp.kernel_size, pp.stride, pp.pad = w.kh, w.sh, w.pad_top
    else:
        pp.kernel_h, pp.kernel_w = w.kh, w.kw
        pp.stride_h, pp.stride_w = w.sh, w.sw
        pp.pad_h, pp.pad_w = w.pad_top, w.pad_left
    pp.ceil_mode = p.round_mode == P.CEIL


@CONVERTERS.register("ReLU", "Sigmoid", "TanH")
def activation(ctx, layer):
    ctx.layer(layer, layer.type)


@CONVERTERS.register("LRN")
def lrn(ctx, layer):
    # Caffe divides alpha by local_size, as the spec does: alpha passes through
    p = layer.p
    lp = ctx.layer(layer, "LRN")
    lp.lrn_param.local_size, lp.lrn_param.alpha = int(p.local_size), float(p.alpha)
    lp.lrn_param.beta, lp.lrn_param.k = float(p.beta), float(p.k)


@CONVERTERS.register("Dropout")
def dropout(ctx, layer):
    ctx.layer(layer, "Dropout").dropout_param.dropout_ratio = float(layer.p.dropout_ratio)


def _axis(ctx, layer, axis: int) -> int:
    rank = len(layer.in_shapes[0])
    a = axis % rank
    if ctx.seq(layer) and a in (0, 1):
        a = 1 - a      # (N, T, ...) is (T, N, ...) in Caffe
    return a


@CONVERTERS.register("Softmax")
def softmax(ctx, layer):
    ctx.layer(layer, "Softmax").softmax_param.axis = _axis(ctx, layer, layer.p.axis)


@CONVERTERS.register("Flatten")
def flatten(ctx, layer):
    if ctx.seq(layer):
        raise Unsupported("caffe: Flatten of a sequence blob (time-major in Caffe)")
    axis = int(layer.p.axis) % len(layer.in_shapes[0])
    if _made_by_reshape(ctx, layer.bottoms[0]):
        # Caffe's Flatten backward re-points its bottom's gradient at its own, but a Reshape
        # shared that gradient with its own bottom when the net was set up: the gradient
        # would never reach the Reshape's input. A Reshape shares it the same way, safely.
        _reshape(ctx, layer, layer.bottoms[0], layer.tops[0], [0] * axis + [-1], layer.name)
        return
    ctx.layer(layer, "Flatten").flatten_param.axis = axis


def _made_by_reshape(ctx, blob: str) -> bool:
    return any(lp.type == "Reshape" and blob in lp.top for lp in ctx.param.layer)


@CONVERTERS.register("Reshape")
def reshape(ctx, layer):
    if ctx.time_major and len(layer.in_shapes[0]) in (2, 3):
        raise Unsupported("caffe: Reshape in a sequence network (time-major in Caffe)")
    ctx.layer(layer, "Reshape").reshape_param.shape.dim.extend(int(d) for d in layer.p.shape)


@CONVERTERS.register("Concat")
def concat(ctx, layer):
    ctx.layer(layer, "Concat").concat_param.axis = _axis(ctx, layer, layer.p.axis)


def eltwise_plan(layer):
    """How Caffe computes this Eltwise, or None where it cannot:
    ("eltwise",) for operands of one shape (SUB is SUM with coefficients 1, -1);
    ("Scale" | "Bias", full, part, k) for PROD or plain SUM of two operands where `part` is
    `full`'s shape on its first k axes and 1 after (squeeze-and-excitation's (N, C, 1, 1)
    gate): Caffe's Scale or Bias layer with a second bottom (axis 0) over `part` reshaped
    to its first k axes. Caffe's Eltwise has no DIV and does not broadcast otherwise."""
    E = spec_pb2.EltwiseParam
    op, shapes = layer.p.operation, [tuple(s) for s in layer.in_shapes]
    if all(s == shapes[0] for s in shapes):
        return ("eltwise",) if op != E.DIV else None
    plain_sum = op == E.SUM and all(c == 1 for c in layer.p.coeff)
    if len(shapes) != 2 or not (op == E.PROD or plain_sum):
        return None
    out = tuple(layer.out_shapes[0])
    for full, part in ((0, 1), (1, 0)):
        t = shapes[part]
        k = len(t)
        while k > 1 and t[k - 1] == 1:
            k -= 1
        if shapes[full] == out and t[:k] == out[:k]:
            return ("Scale" if op == E.PROD else "Bias", full, part, k)
    return None


def _time_major_refused(ctx, layer) -> None:
    if ctx.time_major:
        raise Unsupported(f"caffe: layer {layer.name!r} ({layer.type}): {TIME_MAJOR}")


TIME_MAJOR = "a network with LSTM or Embedding is time-major in Caffe"


def _reshape(ctx, layer, bottom: str, top: str, shape, name: str):
    """Caffe's Reshape to `shape`, the batch axis copied (dim 0) so any batch size runs."""
    lp = ctx.layer(layer, "Reshape", bottoms=[bottom], tops=[top], name=name)
    lp.reshape_param.shape.dim.extend([0] + [int(d) for d in shape[1:]])
    return lp


@CONVERTERS.register("Eltwise")
def eltwise(ctx, layer):
    E, CE = spec_pb2.EltwiseParam, ctx.pb.EltwiseParameter
    plan = eltwise_plan(layer)
    if plan is None:
        raise Unsupported(f"caffe: layer {layer.name!r}: Caffe's Eltwise has PROD, SUM and MAX "
                          "of equal shapes only (no DIV; broadcasting only as Scale or Bias "
                          "over leading axes)")
    if plan[0] == "eltwise":
        lp = ctx.layer(layer, "Eltwise")
        op = layer.p.operation
        lp.eltwise_param.operation = {E.PROD: CE.PROD, E.SUM: CE.SUM, E.MAX: CE.MAX,
                                      E.SUB: CE.SUM}[op]
        coeff = [1.0, -1.0] if op == E.SUB else [float(c) for c in layer.p.coeff]
        lp.eltwise_param.coeff.extend(coeff)
        return
    _time_major_refused(ctx, layer)
    kind, full, part, k = plan
    small = ctx.zoo_names.extra_blob(layer, "operand")
    _reshape(ctx, layer, layer.bottoms[part], small, layer.in_shapes[part][:k],
             ctx.zoo_names.extra_layer(layer, "operand"))
    lp = ctx.layer(layer, kind, bottoms=[layer.bottoms[full], small])
    getattr(lp, "scale_param" if kind == "Scale" else "bias_param").axis = 0


# --- activations -----------------------------------------------------------------------------
@CONVERTERS.register("LeakyReLU")
def leaky_relu(ctx, layer):
    ctx.layer(layer, "ReLU").relu_param.negative_slope = float(layer.p.negative_slope)


@CONVERTERS.register("ELU")
def elu(ctx, layer):
    ctx.layer(layer, "ELU").elu_param.alpha = float(layer.p.alpha)


@CONVERTERS.register("Clip")
def clip(ctx, layer):
    """Caffe's ReLU6 is min(max(x, 0), threshold): Clip(0, max)."""
    if layer.p.min != 0:
        raise Unsupported(f"caffe: layer {layer.name!r}: {CLIP_MIN}")
    ctx.layer(layer, "ReLU6").relu6_param.threshold = float(layer.p.max)


CLIP_MIN = "Caffe's ReLU6 clips below at 0 only (Caffe has no Clip layer)"


@CONVERTERS.register("PReLU")
def prelu(ctx, layer):
    shared = layer.p.channel_shared
    ctx.layer(layer, "PReLU").prelu_param.channel_shared = shared
    slope = ctx.w(layer, "slope")
    # Caffe holds a shared slope as a 0-D blob
    ctx.blobs(layer.name, [np.reshape(slope, ()) if shared else slope],
              [(f"{layer.name}.slope", reshape_to(np.shape(slope)) if shared else "identity")])


@CONVERTERS.register("SiLU")
def silu(ctx, layer):
    """x * sigmoid(x): Caffe has no Swish layer; its Sigmoid and Eltwise PROD, both native."""
    sig = ctx.zoo_names.extra_blob(layer, "sigmoid")
    ctx.layer(layer, "Sigmoid", tops=[sig], name=ctx.zoo_names.extra_layer(layer, "sigmoid"))
    ctx.layer(layer, "Eltwise", bottoms=[layer.bottoms[0], sig]).eltwise_param.operation = \
        ctx.pb.EltwiseParameter.PROD


@CONVERTERS.register("HardSigmoid", "HardSwish")
def hard_sigmoid_swish(ctx, layer):
    """Caffe's own HardSigmoid and HardSwish layers compute the forward pass, but their
    backward pass is empty (brocolli-caffe): the training net composes them from layers
    that have one, Power (alpha * x + beta) and ReLU6 (clip to [0, 1]), times x for HardSwish."""
    swish = layer.type == "HardSwish"
    alpha, beta = (1.0 / 6.0, 0.5) if swish else (float(layer.p.alpha), float(layer.p.beta))
    if not ctx.train:
        lp = ctx.layer(layer, layer.type)
        if not swish:
            lp.hardsigmoid_param.alpha, lp.hardsigmoid_param.beta = alpha, beta
        return
    lin = ctx.zoo_names.extra_blob(layer, "linear")
    pw = ctx.layer(layer, "Power", tops=[lin], name=ctx.zoo_names.extra_layer(layer, "linear"))
    pw.power_param.scale, pw.power_param.shift = alpha, beta
    gate = ctx.zoo_names.extra_blob(layer, "gate") if swish else layer.tops[0]
    name = ctx.zoo_names.extra_layer(layer, "gate") if swish else layer.name
    ctx.layer(layer, "ReLU6", bottoms=[lin], tops=[gate], name=name).relu6_param.threshold = 1.0
    if swish:
        ctx.layer(layer, "Eltwise", bottoms=[layer.bottoms[0], gate]).eltwise_param.operation = \
            ctx.pb.EltwiseParameter.PROD


# --- learned scale and bias ------------------------------------------------------------------
def learned_axes(layer):
    """(axis, num_axes, Caffe blob shape) of a Scale or Bias whose blob, aligned to the input's
    trailing axes, is the input's on a run of axes and 1 elsewhere; None where it broadcasts
    inside that run (Caffe's blob covers consecutive axes of the input exactly)."""
    s = [int(d) for d in layer.p.shape]
    x = [int(d) for d in layer.in_shapes[0]]
    start = len(x) - len(s)
    big = [j for j, d in enumerate(s) if d != 1]
    if not big:
        return 1, 0, ()
    j0, j1 = big[0], big[-1] + 1
    if s[j0:j1] != x[start + j0:start + j1]:
        return None
    return start + j0, j1 - j0, tuple(s[j0:j1])


@CONVERTERS.register("Scale", "Bias")
def scale_bias(ctx, layer):
    _time_major_refused(ctx, layer)
    axes = learned_axes(layer)
    if axes is None:
        raise Unsupported(f"caffe: layer {layer.name!r}: {BLOB_BROADCAST}")
    axis, num_axes, shape = axes
    lp = ctx.layer(layer, layer.type)
    sp = lp.scale_param if layer.type == "Scale" else lp.bias_param
    sp.axis, sp.num_axes = axis, num_axes
    keys = ["scale", "bias"] if layer.type == "Scale" and layer.p.bias_term else \
        ["scale"] if layer.type == "Scale" else ["bias"]
    if layer.type == "Scale":
        sp.bias_term = layer.p.bias_term
    spec_shape = tuple(int(d) for d in layer.p.shape)
    ctx.blobs(layer.name, [np.reshape(ctx.w(layer, k), shape) for k in keys],
              [(f"{layer.name}.{k}", reshape_to(spec_shape)) for k in keys])


BLOB_BROADCAST = ("Caffe's Scale and Bias blobs cover consecutive axes of the input exactly "
                  "(no size-1 axis between sizes)")


# --- reductions and shape operations ---------------------------------------------------------
def reduce_plan(layer):
    """("Pooling",) for MEAN or MAX over (H, W) of an (N, C, H, W) blob (global pooling, which
    OpenCV reads too); ("Reduction", axis) for SUM or MEAN over every axis from `axis` on
    (Caffe's Reduction reduces all trailing axes); None otherwise (MAX over other axes)."""
    x = layer.in_shapes[0]
    axes = R.reduce_axes(layer.p, len(x))
    op = layer.p.operation
    if len(x) == 4 and axes == [2, 3] and op in (R.MEAN, R.MAX):
        return ("Pooling",)
    if op in (R.SUM, R.MEAN) and axes == list(range(axes[0], len(x))):
        return ("Reduction", axes[0])
    return None


@CONVERTERS.register("Reduce")
def reduce_(ctx, layer):
    _time_major_refused(ctx, layer)
    plan = reduce_plan(layer)
    if plan is None:
        raise Unsupported(f"caffe: layer {layer.name!r}: {REDUCE_AXES}")
    out = layer.out_shapes[0]
    natural = (layer.in_shapes[0][:2] + (1, 1)) if plan[0] == "Pooling" else layer.in_shapes[0][:plan[1]]
    natural = tuple(natural)
    top = layer.tops[0] if natural == tuple(out) else ctx.zoo_names.extra_blob(layer, "reduced")
    if plan[0] == "Pooling":
        lp = ctx.layer(layer, "Pooling", tops=[top])
        lp.pooling_param.global_pooling = True
        lp.pooling_param.pool = ctx.pb.PoolingParameter.AVE if layer.p.operation == R.MEAN \
            else ctx.pb.PoolingParameter.MAX
    else:
        lp = ctx.layer(layer, "Reduction", tops=[top])
        RP = ctx.pb.ReductionParameter
        lp.reduction_param.operation = RP.MEAN if layer.p.operation == R.MEAN else RP.SUM
        lp.reduction_param.axis = plan[1]
    if top != layer.tops[0]:
        _reshape(ctx, layer, top, layer.tops[0], out, ctx.zoo_names.extra_layer(layer, "shape"))


REDUCE_AXES = ("Caffe's Reduction (SUM, MEAN) reduces every axis from one on; MAX only over "
               "(H, W) by global pooling")


@CONVERTERS.register("Transpose")
def transpose(ctx, layer):
    """Caffe's Permute (SSD's layer, in brocolli-caffe; BVLC master has none)."""
    _time_major_refused(ctx, layer)
    ctx.layer(layer, "Permute").permute_param.order.extend(int(o) for o in layer.p.order)


@CONVERTERS.register("Slice")
def slice_(ctx, layer):
    _time_major_refused(ctx, layer)
    lp = ctx.layer(layer, "Slice")
    lp.slice_param.axis = int(layer.p.axis) % len(layer.in_shapes[0])
    lp.slice_param.slice_point.extend(int(c) for c in np.cumsum([int(s) for s in layer.p.size])[:-1])


@CONVERTERS.register("Squeeze", "Unsqueeze")
def squeeze(ctx, layer):
    _time_major_refused(ctx, layer)
    _reshape(ctx, layer, layer.bottoms[0], layer.tops[0], layer.out_shapes[0], layer.name)


@CONVERTERS.register("Gather")
def gather(ctx, layer):
    """x[:, ..., i, ...]: Caffe's Slice around index i (the other parts go to blobs no one
    reads), then Reshape without that axis."""
    _time_major_refused(ctx, layer)
    x = layer.in_shapes[0]
    axis = int(layer.p.axis) % len(x)
    i = int(layer.p.index) % x[axis]
    part = ctx.zoo_names.extra_blob(layer, "part")
    tops = ([ctx.zoo_names.extra_blob(layer, "before")] if i > 0 else []) + [part] + \
        ([ctx.zoo_names.extra_blob(layer, "after")] if i + 1 < x[axis] else [])
    if len(tops) == 1:        # the axis has size 1: nothing to cut
        part = layer.bottoms[0]
    else:
        sp = ctx.layer(layer, "Slice", tops=tops, name=ctx.zoo_names.extra_layer(layer, "slice"))
        sp.slice_param.axis = axis
        sp.slice_param.slice_point.extend(p for p in (i, i + 1) if 0 < p < x[axis])
        if ctx.train:      # the parts no one reads: Caffe's Silence gives them a zero gradient
            ctx.layer(layer, "Silence", bottoms=[t for t in tops if t != part], tops=[],
                      name=ctx.zoo_names.extra_layer(layer, "unused"))
    _reshape(ctx, layer, part, layer.tops[0], layer.out_shapes[0], layer.name)


@CONVERTERS.register("BatchNorm")
def batch_norm(ctx, layer):
    p = layer.p
    bn_top = ctx.zoo_names.bn_blob(layer) if p.scale_bias else layer.tops[0]
    lp = ctx.layer(layer, "BatchNorm", tops=[bn_top])
    lp.batch_norm_param.eps = float(p.eps)
    for _ in range(3):
        lp.param.add().lr_mult = 0      # statistics are not learned by the solver
    # blobs: mean and variance times the moving-average factor, and the factor (1.0)
    ctx.blobs(layer.name, [ctx.w(layer, "running_mean"), ctx.w(layer, "running_var"), np.ones(1)],
              [(f"{layer.name}.running_mean", "identity"), (f"{layer.name}.running_var", "identity"), None])
    if p.scale_bias:
        name = ctx.zoo_names.scale_layer(layer)
        sp = ctx.layer(layer, "Scale", bottoms=[bn_top], tops=layer.tops, name=name)
        sp.scale_param.bias_term = True
        if len(layer.in_shapes[0]) == 2:
            sp.scale_param.axis = 1
        ctx.blobs(name, [ctx.w(layer, "gamma"), ctx.w(layer, "beta")],
                  [(f"{layer.name}.gamma", "identity"), (f"{layer.name}.beta", "identity")])


@CONVERTERS.register("Embedding")
def embedding(ctx, layer):
    lp = ctx.layer(layer, "Embed")
    lp.embed_param.num_output, lp.embed_param.input_dim = int(layer.p.num_output), int(layer.p.input_dim)
    lp.embed_param.bias_term = False
    ctx.blobs(layer.name, [ctx.w(layer, "weight")], [(f"{layer.name}.weight", "identity")])


@CONVERTERS.register("LSTM")
def lstm(ctx, layer):
    lp = ctx.layer(layer, "LSTM", bottoms=[layer.bottoms[0], ctx.zoo_names.cont])
    lp.recurrent_param.num_output = int(layer.p.num_output)
    ctx.blobs(layer.name, [lstm_gates_to_caffe(ctx.w(layer, "weight_ih")),
                           lstm_gates_to_caffe(ctx.w(layer, "bias")),
                           lstm_gates_to_caffe(ctx.w(layer, "weight_hh"))],
              [(f"{layer.name}.weight_ih", "lstm_gates"), (f"{layer.name}.bias", "lstm_gates"),
               (f"{layer.name}.weight_hh", "lstm_gates")])


@CONVERTERS.register("SoftmaxWithLoss")
def softmax_with_loss(ctx, layer):
    lp = ctx.layer(layer, "SoftmaxWithLoss")
    lp.softmax_param.axis = len(layer.in_shapes[0]) - 1   # classes on the last axis
    lp.loss_weight.append(float(layer.p.loss_weight))


@CONVERTERS.register("EuclideanLoss")
def euclidean_loss(ctx, layer):
    if ctx.time_major:
        raise Unsupported("caffe: EuclideanLoss in a sequence network")
    ctx.layer(layer, "EuclideanLoss").loss_weight.append(float(layer.p.loss_weight))


def _net(net, weights, train: bool, names: CaffeNames):
    time_major = any(l.type in ("LSTM", "Embedding") for l in net.layers)
    ctx = Context(net, weights, time_major, names)
    ctx.train = train
    layers = net.layers if train else net.deploy_layers
    if any(l.type == "LSTM" for l in layers):
        lp = ctx.param.layer.add(name=names.cont, type="Input")
        lp.top.append(names.cont)
        n, t = net.inputs[0].out_shapes[0][:2]
        lp.input_param.shape.add().dim.extend([t, n])
    for layer in layers:
        CONVERTERS.get(layer.type)(ctx, layer)
    return ctx


def check_split_names(param) -> None:
    """Caffe inserts a Split layer for every blob read more than once, naming the layer
    "BLOB_LAYER_I_split" and its outputs "BLOB_LAYER_I_split_K" (insert_splits.cpp); a spec
    name equal to one of those would be silently shared, so such a net is refused."""
    layers = {lp.name for lp in param.layer}
    blobs = {t for lp in param.layer for t in lp.top}
    readers: dict[str, int] = {}
    for lp in param.layer:
        for b in lp.bottom:
            readers[b] = readers.get(b, 0) + 1
    for lp in param.layer:
        for i, t in enumerate(lp.top):
            if readers.get(t, 0) < 2:
                continue
            split = f"{t}_{lp.name}_{i}_split"
            clash = [n for n in [split] if n in layers] + \
                    [f"{split}_{k}" for k in range(readers[t]) if f"{split}_{k}" in blobs]
            if clash:
                raise Unsupported(f"caffe: the name {clash[0]!r} is also the name Caffe gives "
                                  f"the split of blob {t!r}; rename it")


def build(net, weights, outdir, options=None) -> dict:
    from google.protobuf import text_format

    CONVERTERS.check(net.layers)
    names = CaffeNames(net)
    deploy = _net(net, weights, train=False, names=names)
    train = _net(net, weights, train=True, names=names)
    for ctx in (deploy, train):
        check_split_names(ctx.param)
    (outdir / DEPLOY).write_text(text_format.MessageToString(deploy.param))
    (outdir / TRAIN_VAL).write_text(text_format.MessageToString(train.param))
    t = net.train
    solver = deploy.pb.SolverParameter(net=TRAIN_VAL, base_lr=t.lr, momentum=t.momentum,
                                       weight_decay=t.weight_decay, lr_policy="fixed",
                                       max_iter=1000000, display=0, snapshot=0,
                                       solver_mode=deploy.pb.SolverParameter.CPU, type="SGD")
    (outdir / SOLVER).write_text(text_format.MessageToString(solver))
    (outdir / WEIGHTS).write_bytes(deploy.model.SerializeToString())
    # which blobs are time-major in Caffe (the runner transposes them at the boundary)
    tm = sorted(b for b, s in net.shapes.items() if deploy.time_major and len(s) in (2, 3))
    return {"files": [DEPLOY, TRAIN_VAL, SOLVER, WEIGHTS], "names": deploy.names,
            "time_major": tm, "cont": names.cont if any(l.type == "LSTM" for l in net.layers) else None,
            "losses": net.losses,
            # OpenCV's forward(names) takes layer names, not blob names: what to ask it for
            "blob_layers": {t: deploy.producer[t] for l in net.deploy_layers for t in l.tops}}
