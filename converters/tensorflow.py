"""Spec + weights -> a native Keras 3 model (TensorFlow backend) computing in NHWC.

TensorFlow's CPU kernels take NHWC only for convolution and pooling, so 4-D blobs live in
NHWC inside the model while its inputs and outputs keep the spec's layout (NCHW): a Permute
at each image input, and one before each 4-D output. A layer that names axes (Softmax,
LogSoftmax, Reduce, Slice, LayerNorm, PReLU's channel, Transpose) maps the spec's NCHW axes
to NHWC (`nhwc_axis`); Eltwise broadcasts NHWC maps (size-1 axes move with their axis).
Every conversion is explicit:
  - Convolution kernels OIHW -> HWIO (DepthwiseConv2D's (kh, kw, C, m) when group equals
    the channels); padding is ZeroPadding2D per side + "valid", never SAME. Keras refuses
    stride > 1 with dilation > 1: that is the stride-1 dilated convolution, subsampled.
  - Dense kernels are (in, out); an InnerProduct after a Flatten of an NHWC map gets its rows
    permuted from the spec's (c, h, w) order to (h, w, c), so no transpose is in the graph.
  - Pooling: padding per side (-inf for MAX) plus the bottom/right overhang CEIL needs, then
    "valid" pooling; the AVE divisor is applied as a constant map (PADDED or VALID).
  - LRN: a fixed 1x1 convolution sums the n-channel window of x^2 with weights alpha/n
    (TensorFlow's own LRN would take depth_radius = (n-1)/2 and alpha/n; zoo needs no custom
    op), then y = x * (k + that)^-beta.
  - LSTM: Keras's gate order i, f, c, o is the spec's i, f, g, o; kernel (in, 4u) = W_ih^T,
    recurrent kernel W_hh^T, one bias; unit_forget_bias off (no forget bias is added).
  - BatchNorm: the spec's epsilon (Keras defaults to 1e-3); LayerNorm likewise.
  - Scale, Bias, Parameter: a learned blob is a bias-free Dense layer on a column of ones
    (no custom layer: safe mode would refuse one).
  - Loss layers: model.keras is the inference model; train.keras has the same layers, the
    labels as further inputs and the spec's loss layers, summed, as its one output (Keras's
    sparse cross-entropy from logits, averaged; Caffe's Euclidean sum / 2N), so a runner's
    training step is generic.
options {"dtype": "float64"} builds every layer, input and constant in float64 (exact
mode: verify against the float64 reference at ~1e-9).
Every Keras layer carries the spec layer's name, made a unique Keras name (`kname`, then
UniqueNames: "fc.1" and "fc 1" get "fc.1" and "fc_1", a second "fc_1" gets "fc_1_2"; the
manifest records which is which); a layer that ends in an op gets an Identity layer with
that name, so any blob can be exposed. Both models are saved as .keras files (load with
safe_mode=True: no Lambda, no custom objects); the inference model is also exported as a
SavedModel.
"""
from __future__ import annotations

import math
import re

import numpy as np

from zoo.layers import convolution as C
from zoo.layers import pooling as P

from zoo import spec_pb2

from zoo.errors import UsageError

from .registry import Registry, UniqueNames

CONVERTERS = Registry("tensorflow")
FORMAT = 2   # what the built files mean; 2: train.keras holds the loss, options {"dtype"}
MODEL_FILE = "model.keras"
TRAIN_MODEL_FILE = "train.keras"   # the same layers, labels as inputs, the loss as output
SAVED_MODEL_DIR = "saved_model"

NCHW_TO_NHWC = (2, 3, 1)   # keras Permute dims (batch excluded, 1-based)
NHWC_TO_NCHW = (3, 1, 2)
AXIS_NCHW_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}


MAX_NAME = 100
# the keras.ops this converter calls on symbolic tensors: Keras names those nodes itself
# ("pad", "pad_1", ...), and a layer of the same name would make the model invalid
KERAS_OP_NAMES = re.compile(r"(pad|multiply|square|power|add|subtract|divide|maximum|mean|sum|max|"
                            r"take|split|ones_like|matmul|log_softmax|clip|gelu|erf|tanh|"
                            r"sparse_categorical_crossentropy)(_[0-9]+)?\Z")


def kname(name: str) -> str:
    """A Keras (and TensorFlow scope) name made from a spec string: ASCII letters, digits,
    '_', '.', '-', starting with a letter; not yet unique (Context.names makes it so)."""
    s = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:MAX_NAME]
    s = s if s[:1].isalpha() else "x" + s
    return s + "_" if KERAS_OP_NAMES.match(s) else s


# --- weight layouts: spec (canonical) <-> Keras -------------------------------------------
def dense_to_keras(w: np.ndarray, flat_chw: list | None) -> np.ndarray:
    """(out, in) -> (in, out); rows of a Flatten-of-NHWC input reordered (c,h,w) -> (h,w,c)."""
    if flat_chw:
        c, h, wd = flat_chw
        w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    return np.ascontiguousarray(w.T)


def dense_from_keras(k: np.ndarray, flat_chw: list | None) -> np.ndarray:
    w = k.T
    if flat_chw:
        c, h, wd = flat_chw
        w = w.reshape(w.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
    return np.ascontiguousarray(w)


def lstm_gates_to_keras(a: np.ndarray) -> np.ndarray:
    """The spec stacks gates i, f, g, o; Keras i, f, c, o (c = the spec's g): the same order.
    Kept as a function so the mapping is explicit and its test can break it."""
    return a


def lrn_window_weight(alpha: float, n: int) -> float:
    """The spec's (and Caffe's) alpha is divided by local_size; TensorFlow's own LRN would
    take depth_radius = (n - 1) / 2 and alpha / n. zoo's 1x1 window sum carries alpha / n."""
    return alpha / n


def conv_to_keras(w):
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))     # OIHW -> HWIO


def conv_from_keras(k):
    return np.ascontiguousarray(k.transpose(3, 2, 0, 1))


def depthwise_to_keras(w, multiplier):
    """(C*m, 1, kh, kw) -> Keras's depthwise kernel (kh, kw, C, m): output channel c*m + j
    reads input channel c, in both."""
    o, _, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(o // multiplier, multiplier, kh, kw).transpose(2, 3, 0, 1))


def depthwise_from_keras(k, multiplier):
    kh, kw, c, m = k.shape
    return np.ascontiguousarray(k.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw))


TRANSFORMS = {
    "identity": (lambda a, arg: a, lambda a, arg: a),
    "depthwise": (depthwise_to_keras, depthwise_from_keras),
    # arg [keras shape, spec shape]: the same values in another shape (a Dense kernel row, ...)
    "reshape": (lambda a, arg: a.reshape(arg[0]), lambda a, arg: np.ascontiguousarray(a.reshape(arg[1]))),
    # arg: the axis order of the Keras array, in the spec array's axes
    "permute": (lambda a, arg: np.ascontiguousarray(a.transpose(arg)),
                lambda a, arg: np.ascontiguousarray(a.transpose(np.argsort(arg)))),
    "dense": (dense_to_keras, dense_from_keras),
    "conv": (lambda a, arg: conv_to_keras(a), lambda a, arg: conv_from_keras(a)),
    "transpose": (lambda a, arg: np.ascontiguousarray(a.T), lambda a, arg: np.ascontiguousarray(a.T)),
}


class Context:
    """Tracks each blob's Keras tensor and its layout tag:
    "plain" (the spec's layout), "nhwc" (a 4-D map stored NHWC) or "flat" (a 2-D Flatten of
    an NHWC map: features in (h, w, c) order; self.flat[blob] = [C, H, W])."""

    def __init__(self, net, weights, dtype: str = "float32"):
        import keras
        self.keras, self.net, self.weights, self.dtype = keras, net, weights, dtype
        self.inputs, self.label_inputs, self.losses = [], [], []
        self.t, self.tag, self.flat = {}, {}, {}
        self.assign = []        # (keras layer name, index, canonical key, transform, arg)
        self.pending = {}       # keras layer name -> list of arrays to set after build
        self.layer_of = {}      # blob -> keras layer name whose output it is
        self.names = UniqueNames(kname)
        for layer in net.layers:    # spec layers first: they get the plainest names
            self.layer_name(layer)

    def layer_name(self, layer) -> str:
        """The Keras name of a spec layer (an Input layer is named after its blob)."""
        return self.names.name(layer.name, layer.tops[0] if layer.kind.is_input else layer.name)

    def fresh(self, base: str) -> str:
        """A name for a Keras layer zoo adds (a permute, a padding, ...)."""
        return self.names.fresh(base)

    def put(self, blob: str, tensor, tag: str, layer_name: str, flat=None):
        self.t[blob], self.tag[blob], self.layer_of[blob] = tensor, tag, layer_name
        if flat:
            self.flat[blob] = flat

    def weight(self, layer, key: str) -> np.ndarray:
        return self.weights[f"{layer.name}.{key}"]

    def plain(self, blob: str):
        """The blob in the spec's layout."""
        x, tag = self.t[blob], self.tag[blob]
        L = self.keras.layers
        if tag == "nhwc":
            return L.Permute(NHWC_TO_NCHW, name=self.fresh(f"{blob}_to_nchw"))(x)
        if tag == "flat":
            c, h, w = self.flat[blob]
            x = L.Reshape((h, w, c), name=self.fresh(f"{blob}_unflat"))(x)
            x = L.Permute(NHWC_TO_NCHW, name=self.fresh(f"{blob}_to_nchw"))(x)
            return L.Reshape((c * h * w,), name=self.fresh(f"{blob}_flat_chw"))(x)
        return x

    def nhwc(self, blob: str):
        """A 4-D blob in NHWC."""
        if self.tag[blob] == "nhwc":
            return self.t[blob]
        return self.keras.layers.Permute(NCHW_TO_NHWC, name=self.fresh(f"{blob}_to_nhwc"))(self.plain(blob))

    def set_weights(self, layer_name: str, arrays: list, keys: list):
        """keys: for each array, (canonical key, transform, arg) or None (a fixed array)."""
        self.pending[layer_name] = arrays
        for i, k in enumerate(keys):
            if k is not None:
                self.assign.append({"layer": layer_name, "index": i, "key": k[0], "transform": k[1], "arg": k[2]})


@CONVERTERS.register("Input")
def input_(ctx, layer, into=None):
    dtype = "int64" if layer.p.dtype == spec_pb2.InputParam.INT64 else ctx.dtype
    name = ctx.layer_name(layer)
    x = ctx.keras.Input(shape=layer.out_shapes[0][1:], dtype=dtype, name=name)
    (ctx.inputs if into is None else into).append(x)
    ctx.put(layer.tops[0], x, "plain", name)


@CONVERTERS.register("InnerProduct")
def inner_product(ctx, layer):
    b = layer.bottoms[0]
    flat = ctx.flat.get(b) if ctx.tag[b] == "flat" else None
    x = ctx.t[b] if flat else ctx.plain(b)
    name = ctx.layer_name(layer)
    y = ctx.keras.layers.Dense(int(layer.p.num_output), use_bias=layer.p.bias_term, name=name)(x)
    arrays = [dense_to_keras(ctx.weight(layer, "weight"), flat)]
    keys = [(f"{layer.name}.weight", "dense", flat)]
    if layer.p.bias_term:
        arrays.append(ctx.weight(layer, "bias"))
        keys.append((f"{layer.name}.bias", "identity", None))
    ctx.set_weights(name, arrays, keys)
    ctx.put(layer.tops[0], y, "plain", name)


@CONVERTERS.register("Convolution")
def convolution(ctx, layer):
    p, L, g = layer.p, ctx.keras.layers, C.window(layer.p)
    x = pad2d(ctx, ctx.nhwc(layer.bottoms[0]), g.pads, 0.0, f"{layer.name}_pad")
    c_in = layer.in_shapes[0][1]
    # Keras refuses stride > 1 with dilation > 1: the dilated convolution at stride 1, then
    # every (sh, sw)-th position (a 1x1 max pooling at that stride: a plain subsampling)
    both = (g.sh > 1 or g.sw > 1) and (g.dh > 1 or g.dw > 1)
    strides = (1, 1) if both else (g.sh, g.sw)
    name = ctx.layer_name(layer)
    conv_name = ctx.fresh(f"{layer.name}_dense") if both else name
    common = dict(strides=strides, padding="valid", dilation_rate=(g.dh, g.dw), use_bias=p.bias_term,
                  name=conv_name)
    w = ctx.weight(layer, "weight")
    if int(p.group) == c_in and c_in > 1:
        m = int(p.num_output) // c_in
        y = L.DepthwiseConv2D((g.kh, g.kw), depth_multiplier=m, **common)(x)
        arrays, keys = [depthwise_to_keras(w, m)], [(f"{layer.name}.weight", "depthwise", m)]
    else:
        y = L.Conv2D(int(p.num_output), (g.kh, g.kw), groups=int(p.group), **common)(x)
        arrays, keys = [conv_to_keras(w)], [(f"{layer.name}.weight", "conv", None)]
    if p.bias_term:
        arrays.append(ctx.weight(layer, "bias"))
        keys.append((f"{layer.name}.bias", "identity", None))
    ctx.set_weights(conv_name, arrays, keys)
    if both:
        y = L.MaxPooling2D(1, (g.sh, g.sw), padding="valid", name=name)(y)
    ctx.put(layer.tops[0], y, "nhwc", name)


def pad2d(ctx, x, pads, fill: float, base: str):
    """NHWC x padded (top, bottom, left, right) with `fill`."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    if fill == 0.0:
        return ctx.keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=ctx.fresh(base))(x)
    return ctx.keras.ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=fill)


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    p, L, ops = layer.p, ctx.keras.layers, ctx.keras.ops
    x = ctx.nhwc(layer.bottoms[0])
    name = ctx.layer_name(layer)
    if p.global_pooling:
        cls = L.GlobalMaxPooling2D if p.pool == P.MAX else L.GlobalAveragePooling2D
        ctx.put(layer.tops[0], cls(keepdims=True, name=name)(x), "nhwc", name)
        return
    _, _, h, w = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shapes[0]
    g = P.geometry(p, layer.in_shapes[0])
    # the spec's pads, plus the bottom/right overhang that makes "valid" pooling give (oh, ow)
    eh, ew = P.end_padding(p, h, w, oh, ow)
    pads = (g.pad_top, g.pad_bottom + eh, g.pad_left, g.pad_right + ew)
    x = pad2d(ctx, x, pads, -np.inf if p.pool == P.MAX else 0.0, f"{layer.name}_pad")
    k, s = (g.kh, g.kw), (g.sh, g.sw)
    if p.pool == P.MAX:
        y = L.MaxPooling2D(k, s, padding="valid", name=name)(x)
        ctx.put(layer.tops[0], y, "nhwc", name)
        return
    div = P.divisor_map(p, h, w, oh, ow)
    if np.all(div == g.kh * g.kw):
        y = L.AveragePooling2D(k, s, padding="valid", name=name)(x)
    else:
        y = L.AveragePooling2D(k, s, padding="valid", name=ctx.fresh(f"{layer.name}_mean"))(x)
        y = ops.multiply(y, (g.kh * g.kw / div)[None, :, :, None].astype(ctx.dtype))
        y = L.Identity(name=name)(y)
    ctx.put(layer.tops[0], y, "nhwc", name)


@CONVERTERS.register("ReLU", "Sigmoid", "TanH")
def activation(ctx, layer):
    act = {"ReLU": "relu", "Sigmoid": "sigmoid", "TanH": "tanh"}[layer.type]
    b = layer.bottoms[0]
    name = ctx.layer_name(layer)
    y = ctx.keras.layers.Activation(act, name=name)(ctx.t[b])
    ctx.put(layer.tops[0], y, ctx.tag[b], name, ctx.flat.get(b))


@CONVERTERS.register("LRN")
def lrn(ctx, layer):
    import keras
    p, L, ops = layer.p, ctx.keras.layers, keras.ops
    x = ctx.nhwc(layer.bottoms[0])
    c = layer.in_shapes[0][1]
    n, r = int(p.local_size), (int(p.local_size) - 1) // 2
    idx = np.arange(c)
    # band[c', c] = alpha/n where |c - c'| <= r: a 1x1 conv sums the window, scaled
    band = (np.abs(idx[:, None] - idx[None, :]) <= r) * lrn_window_weight(p.alpha, n)
    sumsq = L.Conv2D(c, 1, use_bias=True, trainable=False, name=ctx.fresh(f"{layer.name}_window"))
    s = sumsq(ops.square(x))
    ctx.set_weights(sumsq.name, [band[None, None], np.full(c, p.k)], [None, None])
    y = L.Identity(name=ctx.layer_name(layer))(ops.multiply(x, ops.power(s, -float(p.beta))))
    ctx.put(layer.tops[0], y, "nhwc", ctx.layer_name(layer))


@CONVERTERS.register("Dropout")
def dropout(ctx, layer):
    b = layer.bottoms[0]
    name = ctx.layer_name(layer)
    y = ctx.keras.layers.Dropout(float(layer.p.dropout_ratio), name=name)(ctx.t[b])
    ctx.put(layer.tops[0], y, ctx.tag[b], name, ctx.flat.get(b))


@CONVERTERS.register("Softmax")
def softmax(ctx, layer):
    b = layer.bottoms[0]
    rank = len(layer.in_shapes[0])
    axis = layer.p.axis % rank
    name = ctx.layer_name(layer)
    if ctx.tag[b] == "nhwc":
        y = ctx.keras.layers.Softmax(axis=AXIS_NCHW_TO_NHWC[axis], name=name)(ctx.t[b])
        ctx.put(layer.tops[0], y, "nhwc", name)
    elif ctx.tag[b] == "flat" and axis == 1:   # over all features: any order will do
        ctx.put(layer.tops[0], ctx.keras.layers.Softmax(axis=1, name=name)(ctx.t[b]), "flat", name, ctx.flat[b])
    else:
        ctx.put(layer.tops[0], ctx.keras.layers.Softmax(axis=axis, name=name)(ctx.plain(b)), "plain", name)


@CONVERTERS.register("Flatten")
def flatten(ctx, layer):
    b = layer.bottoms[0]
    rank = len(layer.in_shapes[0])
    axis = layer.p.axis % rank
    name = ctx.layer_name(layer)
    if ctx.tag[b] == "nhwc" and axis == 1:
        # keep NHWC order (h, w, c); the next InnerProduct permutes its rows to match
        y = ctx.keras.layers.Flatten(name=name)(ctx.t[b])
        ctx.put(layer.tops[0], y, "flat", name, list(layer.in_shapes[0][1:]))
        return
    out = layer.out_shapes[0][1:]
    ctx.put(layer.tops[0], ctx.keras.layers.Reshape(out, name=name)(ctx.plain(b)), "plain", name)


@CONVERTERS.register("Reshape")
def reshape(ctx, layer):
    name = ctx.layer_name(layer)
    y = ctx.keras.layers.Reshape(layer.out_shapes[0][1:], name=name)(ctx.plain(layer.bottoms[0]))
    ctx.put(layer.tops[0], y, "plain", name)


@CONVERTERS.register("Concat")
def concat(ctx, layer):
    rank = len(layer.in_shapes[0])
    axis = layer.p.axis % rank
    name = ctx.layer_name(layer)
    if rank == 4:
        xs = [ctx.nhwc(b) for b in layer.bottoms]
        y = ctx.keras.layers.Concatenate(axis=AXIS_NCHW_TO_NHWC[axis], name=name)(xs)
        ctx.put(layer.tops[0], y, "nhwc", name)
    else:
        y = ctx.keras.layers.Concatenate(axis=axis, name=name)([ctx.plain(b) for b in layer.bottoms])
        ctx.put(layer.tops[0], y, "plain", name)


@CONVERTERS.register("Eltwise")
def eltwise(ctx, layer):
    """Bottoms in one layout (broadcast as NumPy does: a 4-D map's size-1 axes stay size 1
    in NHWC), then Keras's merge layers, which broadcast."""
    L, ops, E = ctx.keras.layers, ctx.keras.ops, spec_pb2.EltwiseParam
    tags = {ctx.tag[b] for b in layer.bottoms}
    same = len(tags) == 1 and (tags != {"flat"} or len({str(ctx.flat[b]) for b in layer.bottoms}) == 1)
    if same:
        xs, tag, flat = [ctx.t[b] for b in layer.bottoms], tags.pop(), ctx.flat.get(layer.bottoms[0])
    elif len(layer.out_shapes[0]) == 4:
        xs, tag, flat = [ctx.nhwc(b) for b in layer.bottoms], "nhwc", None
    else:
        xs, tag, flat = [ctx.plain(b) for b in layer.bottoms], "plain", None
    name, op = ctx.layer_name(layer), layer.p.operation
    if op == E.SUM:
        coeff = list(layer.p.coeff) or [1.0] * len(xs)
        xs = [x if c == 1.0 else L.Rescaling(float(c), name=ctx.fresh(f"{layer.name}_coeff"))(x)
              for c, x in zip(coeff, xs)]
        y = L.Add(name=name)(xs)
    elif op == E.PROD:
        y = L.Multiply(name=name)(xs)
    elif op == E.MAX:
        y = L.Maximum(name=name)(xs)
    elif op == E.SUB:
        y = L.Subtract(name=name)(xs)
    else:
        y = L.Identity(name=name)(ops.divide(xs[0], xs[1]))
    ctx.put(layer.tops[0], y, tag, name, flat)


@CONVERTERS.register("BatchNorm")
def batch_norm(ctx, layer):
    p = layer.p
    b = layer.bottoms[0]
    x = ctx.nhwc(b) if len(layer.in_shapes[0]) == 4 else ctx.plain(b)
    name = ctx.layer_name(layer)
    bn = ctx.keras.layers.BatchNormalization(axis=-1, epsilon=float(p.eps), momentum=0.9,
                                             center=p.scale_bias, scale=p.scale_bias, name=name)
    y = bn(x)
    arrays, keys = [], []
    for key in (["gamma", "beta"] if p.scale_bias else []) + ["running_mean", "running_var"]:
        arrays.append(ctx.weight(layer, key))
        keys.append((f"{layer.name}.{key}", "identity", None))
    ctx.set_weights(name, arrays, keys)
    ctx.put(layer.tops[0], y, "nhwc" if len(layer.in_shapes[0]) == 4 else "plain", name)


@CONVERTERS.register("Embedding")
def embedding(ctx, layer):
    name = ctx.layer_name(layer)
    y = ctx.keras.layers.Embedding(int(layer.p.input_dim), int(layer.p.num_output), name=name)(
        ctx.plain(layer.bottoms[0]))
    ctx.set_weights(name, [ctx.weight(layer, "weight")], [(f"{layer.name}.weight", "identity", None)])
    ctx.put(layer.tops[0], y, "plain", name)


@CONVERTERS.register("LSTM")
def lstm(ctx, layer):
    name = ctx.layer_name(layer)
    cell = ctx.keras.layers.LSTM(int(layer.p.num_output), return_sequences=True, activation="tanh",
                                 recurrent_activation="sigmoid", unit_forget_bias=False, name=name)
    y = cell(ctx.plain(layer.bottoms[0]))
    ctx.set_weights(name, [lstm_gates_to_keras(ctx.weight(layer, "weight_ih")).T,
                           lstm_gates_to_keras(ctx.weight(layer, "weight_hh")).T,
                           lstm_gates_to_keras(ctx.weight(layer, "bias"))],
                    [(f"{layer.name}.weight_ih", "transpose", None),
                     (f"{layer.name}.weight_hh", "transpose", None),
                     (f"{layer.name}.bias", "identity", None)])
    ctx.put(layer.tops[0], y, "plain", name)


# --- the 2017+ vocabulary -----------------------------------------------------------------
def nhwc_axis(axis: int) -> int:
    """Where an axis of an NCHW blob lives in its NHWC tensor."""
    return AXIS_NCHW_TO_NHWC[axis]


def stored(ctx, blob: str):
    """(tensor, tag, axis map) of a blob as it is kept: a 4-D map stays NHWC (its axes are
    mapped), anything else is taken in the spec's layout."""
    if ctx.tag[blob] == "nhwc":
        return ctx.t[blob], "nhwc", nhwc_axis
    return ctx.plain(blob), "plain", (lambda a: a)


def same_layout(ctx, layer, y, tag, name):
    """Put an elementwise result: it keeps its bottom's layout (and Flatten order)."""
    ctx.put(layer.tops[0], y, tag, name, ctx.flat.get(layer.bottoms[0]) if tag == "flat" else None)


@CONVERTERS.register("Clip", "LeakyReLU", "ELU", "HardSigmoid", "HardSwish", "SiLU", "GELU")
def elementwise(ctx, layer):
    """Elementwise activations: any layout will do. Native Keras layers where one computes
    the spec's function, else the keras.ops function of it."""
    L, ops, p = ctx.keras.layers, ctx.keras.ops, layer.p
    b = layer.bottoms[0]
    x, tag, name = ctx.t[b], ctx.tag[b], ctx.layer_name(layer)
    if layer.type == "Clip":
        y = _clip(ctx, x, float(p.min), float(p.max), name)
    elif layer.type == "LeakyReLU":
        y = L.LeakyReLU(negative_slope=float(p.negative_slope), name=name)(x)
    elif layer.type == "ELU":
        y = L.ELU(alpha=float(p.alpha), name=name)(x)
    elif layer.type == "HardSigmoid":   # Clip(alpha x + beta, 0, 1), with Clip's gradient
        y = L.Rescaling(float(p.alpha), float(p.beta), name=ctx.fresh(f"{layer.name}_affine"))(x)
        y = _clip(ctx, y, 0.0, 1.0, name)
    elif layer.type == "HardSwish":
        y = L.Activation("hard_silu", name=name)(x)
    elif layer.type == "SiLU":
        y = L.Activation("silu", name=name)(x)
    else:
        y = L.Identity(name=name)(gelu(ctx, x, p.approximate == spec_pb2.GELUParam.TANH))
    same_layout(ctx, layer, y, tag, name)


def _clip(ctx, x, lo: float, hi: float, name: str):
    """min(max(x, lo), hi) with the spec's gradient, 1 strictly between lo and hi and 0 at
    the kinks (tests/test_kinks.py): tf.nn.relu6 (Keras's ReLU at max 6) has exactly that;
    clip_by_value passes the gradient at x == lo and x == hi, and ReLU(max_value=1) at 1."""
    L, ops = ctx.keras.layers, ctx.keras.ops
    if (lo, hi) == (0.0, 6.0):
        return L.ReLU(max_value=6.0, name=name)(x)
    inside = ops.logical_and(ops.greater(x, lo), ops.less(x, hi))
    return L.Identity(name=name)(ops.where(inside, x, ops.stop_gradient(ops.clip(x, lo, hi))))


def gelu(ctx, x, tanh: bool):
    """Keras's (tf.nn's) fused GELU in float32; in float64 the formula from keras.ops,
    since TensorFlow's GELU kernel is accurate to about 5e-9 only (float32's rounding is
    6e-8, so a float32 build loses nothing)."""
    ops = ctx.keras.ops
    if ctx.dtype == "float32":
        return ops.gelu(x, approximate=tanh)
    if tanh:
        inner = ops.multiply(ops.add(x, ops.multiply(ops.power(x, 3), 0.044715)), math.sqrt(2.0 / math.pi))
        phi = ops.add(ops.tanh(inner), 1.0)
    else:
        phi = ops.add(ops.erf(ops.multiply(x, 1.0 / math.sqrt(2.0))), 1.0)
    return ops.multiply(ops.multiply(x, phi), 0.5)


@CONVERTERS.register("PReLU")
def prelu(ctx, layer):
    """Keras's PReLU: the slope varies along the axes not in shared_axes (Keras numbers
    them from 1 = the first after the batch)."""
    x, tag, axis_map = stored(ctx, layer.bottoms[0])
    rank = len(layer.in_shapes[0])
    channel = axis_map(1)
    shared = list(range(1, rank)) if layer.p.channel_shared else [a for a in range(1, rank) if a != channel]
    name = ctx.layer_name(layer)
    y = ctx.keras.layers.PReLU(shared_axes=shared or None, name=name)(x)
    slope = ctx.weight(layer, "slope")
    kshape = [1 if a in shared else int(slope.size) for a in range(1, rank)]
    ctx.set_weights(name, [slope.reshape(kshape)], [(f"{layer.name}.slope", "reshape", [kshape, list(slope.shape)])])
    ctx.put(layer.tops[0], y, tag, name)


@CONVERTERS.register("LogSoftmax")
def log_softmax(ctx, layer):
    x, tag, axis_map = stored(ctx, layer.bottoms[0])
    axis = axis_map(layer.p.axis % len(layer.in_shapes[0]))
    name = ctx.layer_name(layer)
    y = ctx.keras.layers.Identity(name=name)(ctx.keras.ops.log_softmax(x, axis=axis))
    ctx.put(layer.tops[0], y, tag, name)


def learned(ctx, layer, key: str, anchor):
    """A learned blob of the spec's shape S as an (N,) + S tensor, in the spec's layout: a
    bias-free Dense layer on a column of ones whose kernel (1, prod S) is the blob (x 1.0 is
    exact, and its gradient is the batch sum, as for a broadcast blob)."""
    L, ops = ctx.keras.layers, ctx.keras.ops
    value = ctx.weight(layer, key)
    ones = ops.ones_like(ops.take(L.Flatten(name=ctx.fresh(f"{layer.name}_{key}_src"))(anchor), [0], axis=1))
    dname = ctx.fresh(f"{layer.name}_{key}")
    v = L.Dense(int(value.size), use_bias=False, name=dname)(ones)
    ctx.set_weights(dname, [value.reshape(1, -1)], [(f"{layer.name}.{key}", "reshape", [[1, int(value.size)], list(value.shape)])])
    return L.Reshape(value.shape, name=ctx.fresh(f"{layer.name}_{key}_shape"))(v)


def like(ctx, blob_tensor, tag: str, base: str):
    """A learned (N, C, H, W) tensor in the layout `tag` of the 4-D map it meets."""
    if tag != "nhwc":
        return blob_tensor
    return ctx.keras.layers.Permute(NCHW_TO_NHWC, name=ctx.fresh(base))(blob_tensor)


@CONVERTERS.register("Scale", "Bias")
def scale_bias(ctx, layer):
    L = ctx.keras.layers
    x, tag, _ = stored(ctx, layer.bottoms[0])
    name = ctx.layer_name(layer)
    keys = (["scale"] + (["bias"] if layer.p.bias_term else [])) if layer.type == "Scale" else ["bias"]
    terms = {k: like(ctx, learned(ctx, layer, k, x), tag, f"{layer.name}_{k}_nhwc") for k in keys}
    y = x
    if "scale" in terms:
        y = L.Multiply(name=name if len(keys) == 1 else ctx.fresh(f"{layer.name}_scale_mul"))([y, terms["scale"]])
    if "bias" in terms:
        y = L.Add(name=name)([y, terms["bias"]])
    ctx.put(layer.tops[0], y, tag, name)


@CONVERTERS.register("Parameter")
def parameter(ctx, layer):
    name = ctx.layer_name(layer)
    v = learned(ctx, layer, "value", ctx.t[layer.bottoms[0]])
    ctx.put(layer.tops[0], ctx.keras.layers.Identity(name=name)(v), "plain", name)


@CONVERTERS.register("Reduce")
def reduce(ctx, layer):
    """MEAN/SUM/MAX over axes; a 4-D map is reduced in NHWC (kept dims stay NHWC; without
    keepdims the rest is put back in the spec's axis order)."""
    from zoo.layers.reduce import MAX, MEAN, reduce_axes
    ops, L = ctx.keras.ops, ctx.keras.layers
    x, tag, axis_map = stored(ctx, layer.bottoms[0])
    axes = [axis_map(a) for a in reduce_axes(layer.p, len(layer.in_shapes[0]))]
    fn = {MEAN: ops.mean, MAX: ops.max}.get(layer.p.operation, ops.sum)
    name = ctx.layer_name(layer)
    keep = bool(layer.p.keepdims) or tag == "nhwc"
    y = fn(x, axis=axes, keepdims=keep)
    if tag == "nhwc" and not layer.p.keepdims:
        y = L.Permute(NHWC_TO_NCHW, name=ctx.fresh(f"{layer.name}_to_nchw"))(y)
        y = L.Reshape(layer.out_shapes[0][1:], name=name)(y)
        tag = "plain"
    else:
        y = L.Identity(name=name)(y)
    ctx.put(layer.tops[0], y, tag, name)


def permutation(order, in_tag: str, out_tag: str) -> list[int]:
    """The axes of the stored input that make the stored output: output axis i (stored) is
    spec axis T[i] of the output = spec axis order[T[i]] of the input, kept at S^-1 of it."""
    t = [0, 2, 3, 1] if out_tag == "nhwc" else list(range(len(order)))
    s_inv = nhwc_axis if in_tag == "nhwc" else (lambda a: a)
    return [s_inv(order[i]) for i in t]


@CONVERTERS.register("Transpose")
def transpose(ctx, layer):
    """A 4-D result is kept in whichever layout needs no data movement when one does (NCHW
    -> NHWC of an NHWC map is free), else in NHWC; other ranks in the spec's layout."""
    L = ctx.keras.layers
    x, in_tag, _ = stored(ctx, layer.bottoms[0])
    order = [int(a) for a in layer.p.order]
    outs = ["plain", "nhwc"] if len(order) == 4 else ["plain"]
    perms = {t: permutation(order, in_tag, t) for t in outs}
    ident = [t for t in outs if perms[t] == sorted(perms[t])]
    out_tag = ident[0] if ident else outs[-1]
    perm, name = perms[out_tag], ctx.layer_name(layer)
    if perm == sorted(perm):
        y = L.Identity(name=name)(x)
    else:
        y = L.Permute(tuple(perm[1:]), name=name)(x)
    ctx.put(layer.tops[0], y, out_tag, name)


@CONVERTERS.register("Slice")
def slice_(ctx, layer):
    x, tag, axis_map = stored(ctx, layer.bottoms[0])
    axis = axis_map(layer.p.axis % len(layer.in_shapes[0]))
    cuts = [int(c) for c in np.cumsum([int(n) for n in layer.p.size])[:-1]]
    parts = ctx.keras.ops.split(x, cuts, axis=axis)
    for i, (top, part) in enumerate(zip(layer.tops, parts)):
        name = ctx.layer_name(layer) if i == 0 else ctx.fresh(f"{layer.name}.{top}")
        ctx.put(top, ctx.keras.layers.Identity(name=name)(part), tag, name)


@CONVERTERS.register("Squeeze", "Unsqueeze")
def squeeze(ctx, layer):
    """Only size-1 axes come or go: a Reshape of the blob in the spec's layout."""
    name = ctx.layer_name(layer)
    y = ctx.keras.layers.Reshape(layer.out_shapes[0][1:], name=name)(ctx.plain(layer.bottoms[0]))
    ctx.put(layer.tops[0], y, "plain", name)


@CONVERTERS.register("Gather")
def gather(ctx, layer):
    s = layer.in_shapes[0]
    axis = layer.p.axis % len(s)
    index = int(layer.p.index) % s[axis]
    name = ctx.layer_name(layer)
    y = ctx.keras.ops.take(ctx.plain(layer.bottoms[0]), index, axis=axis)
    ctx.put(layer.tops[0], ctx.keras.layers.Identity(name=name)(y), "plain", name)


@CONVERTERS.register("LayerNorm")
def layer_norm(ctx, layer):
    """Keras's LayerNormalization over the mapped trailing axes; gamma and beta (shape
    in[axis:], spec order) are transposed to the order of those axes in the stored tensor."""
    from zoo.layers.layer_norm import first_axis
    p = layer.p
    x, tag, axis_map = stored(ctx, layer.bottoms[0])
    rank = len(layer.in_shapes[0])
    spec_axes = list(range(first_axis(p, rank), rank))
    keras_axes = sorted(axis_map(a) for a in spec_axes)
    # Keras's gamma axis j is stored axis keras_axes[j] = spec axis spec_axes[order[j]]
    order = [spec_axes.index(next(a for a in spec_axes if axis_map(a) == k)) for k in keras_axes]
    name = ctx.layer_name(layer)
    ln = ctx.keras.layers.LayerNormalization(axis=keras_axes, epsilon=float(p.eps), center=p.scale_bias,
                                             scale=p.scale_bias, name=name)
    y = ln(x)
    if p.scale_bias:
        ctx.set_weights(name, [ctx.weight(layer, k).transpose(order) for k in ("gamma", "beta")],
                        [(f"{layer.name}.{k}", "permute", order) for k in ("gamma", "beta")])
    ctx.put(layer.tops[0], y, tag, name)


@CONVERTERS.register("MatMul")
def matmul(ctx, layer):
    """Over the spec's last two axes: both blobs in the spec's layout."""
    L, p = ctx.keras.layers, layer.p
    rank = len(layer.in_shapes[0])
    swap = tuple(range(1, rank - 2)) + (rank - 1, rank - 2)
    a, b = (ctx.plain(x) for x in layer.bottoms)
    if p.transpose_a:
        a = L.Permute(swap, name=ctx.fresh(f"{layer.name}_ta"))(a)
    if p.transpose_b:
        b = L.Permute(swap, name=ctx.fresh(f"{layer.name}_tb"))(b)
    y = ctx.keras.ops.matmul(a, b)
    name = ctx.layer_name(layer)
    y = L.Identity(name=name)(y) if p.scale == 1 else L.Rescaling(float(p.scale), name=name)(y)
    ctx.put(layer.tops[0], y, "plain", name)


@CONVERTERS.register("SoftmaxWithLoss")
def softmax_with_loss(ctx, layer):
    """Mean cross-entropy over every position of (N, K) or (N, T, K) logits (zoo/layers/
    softmax_loss.py): Keras's sparse categorical cross-entropy from logits, averaged."""
    ops = ctx.keras.ops
    logits, labels = ctx.plain(layer.bottoms[0]), ctx.t[layer.bottoms[1]]
    ce = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    ctx.losses.append(weighted(ops, ops.mean(ce), layer.p.loss_weight))


@CONVERTERS.register("EuclideanLoss")
def euclidean_loss(ctx, layer):
    """Caffe's sum((a - b)^2) / (2 N): the per-sample sums, averaged over the batch, halved
    (the batch size is not known when the model is built)."""
    ops = ctx.keras.ops
    a, b = (ctx.plain(x) for x in layer.bottoms)
    sq = ops.square(ops.subtract(a, b))
    axes = tuple(range(1, len(layer.in_shapes[0])))
    per_sample = ops.sum(sq, axis=axes) if axes else sq
    ctx.losses.append(weighted(ops, ops.mean(per_sample), 0.5 * layer.p.loss_weight))


def weighted(ops, loss, weight: float):
    return loss if weight == 1.0 else ops.multiply(loss, float(weight))


def training_model(ctx, net):
    """The training model: the inference model's layers, the labels as further inputs, and
    the spec's loss layers summed into one scalar output (the loss a training step
    minimises). None for a network without loss layers."""
    if not net.loss_layers:
        return None
    keras = ctx.keras
    by_top = {l.tops[0]: l for l in net.inputs}
    for blob in net.labels:
        CONVERTERS.get("Input")(ctx, by_top[blob], ctx.label_inputs)
    ctx.losses = []
    for layer in net.loss_layers:
        CONVERTERS.get(layer.type)(ctx, layer)
    total = ctx.losses[0]
    for term in ctx.losses[1:]:
        total = keras.ops.add(total, term)
    return keras.Model(ctx.inputs + ctx.label_inputs, total, name=kname(net.name) + "_train")


def make_model(net, weights, dtype: str = "float32"):
    """(inference model, training model or None, meta). Every layer is created under the
    dtype policy `dtype`, which the saved files record per layer."""
    import keras

    CONVERTERS.check(net.layers)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        ctx = Context(net, weights, dtype)
        for layer in net.deploy_layers:
            CONVERTERS.get(layer.type)(ctx, layer)
        model, heads = inference_model(ctx, net)
        blob_layers = dict(ctx.layer_of)    # the blobs model.keras has (labels are not)
        train = training_model(ctx, net)
    finally:
        keras.config.set_dtype_policy(previous)
    for lname, arrays in ctx.pending.items():
        model.get_layer(lname).set_weights([np.asarray(a, dtype=dtype) for a in arrays])
    meta = {"heads": heads, "blob_layers": blob_layers, "tags": ctx.tag, "flat": ctx.flat,
            "assign": ctx.assign, "dtype": dtype,
            "inputs": [l.tops[0] for l in net.deploy_layers if l.kind.is_input],
            "labels": list(net.labels) if train is not None else []}
    return model, train, meta


def inference_model(ctx, net):
    """Outputs: the network's outputs, then the loss layers' non-label bottoms, all in the
    spec's layout, each behind an Identity layer "out__BLOB" (`heads`, in order)."""
    labels = set(net.labels)
    heads = list(net.outputs)
    for l in net.loss_layers:
        heads += [b for b in l.bottoms if b not in labels and b not in heads]
    outputs = [ctx.keras.layers.Identity(name=ctx.fresh(f"out__{blob}"))(ctx.plain(blob)) for blob in heads]
    return ctx.keras.Model(ctx.inputs, outputs, name=kname(net.name)), heads


DTYPES = ("float32", "float64")


def build_dtype(options: dict | None) -> str:
    dtype = (options or {}).get("dtype", "float32")
    if dtype not in DTYPES:
        raise UsageError(f"tensorflow: dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return dtype


def _zero_initializers(keras, model) -> None:
    """Zeros as every layer's saved initializer: `load_model` first initialises each variable
    from its layer's config, then overwrites it with the saved values, and drawing ViT's
    86 M random numbers for nothing was a tenth of a TensorFlow child's time in a verify."""
    zeros = keras.initializers.Zeros()
    for layer in model._flatten_layers(include_self=False):
        for attr, value in list(vars(layer).items()):
            if attr.endswith("_initializer") and isinstance(value, keras.initializers.Initializer):
                setattr(layer, attr, zeros)


def build(net, weights, outdir, options=None) -> dict:
    import keras
    import tensorflow as tf

    model, train, meta = make_model(net, weights, build_dtype(options))
    for m in (model, train):
        if m is not None:
            _zero_initializers(keras, m)
    model.save(str(outdir / MODEL_FILE))
    files = [MODEL_FILE, SAVED_MODEL_DIR]
    if train is not None:
        train.save(str(outdir / TRAIN_MODEL_FILE))
        files.append(TRAIN_MODEL_FILE)
    model.export(str(outdir / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
    return {"files": files, "keras": keras.__version__, "tensorflow": tf.__version__, **meta}
