"""Spec + weights -> a native Keras 3 model (TensorFlow backend) computing in NHWC.

TensorFlow's CPU kernels take NHWC only for convolution and pooling, so 4-D blobs live in
NHWC inside the model while its inputs and outputs keep the spec's layout (NCHW): a Permute
at each image input, and one before each 4-D output. Every conversion is explicit:
  - Convolution kernels OIHW -> HWIO; padding is ZeroPadding2D(pad) + "valid", never SAME.
  - Dense kernels are (in, out); an InnerProduct after a Flatten of an NHWC map gets its rows
    permuted from the spec's (c, h, w) order to (h, w, c), so no transpose is in the graph.
  - Pooling: symmetric padding (-inf for MAX) plus the extra right padding CEIL needs, then
    "valid" pooling; the AVE divisor is applied as a constant map (PADDED or VALID).
  - LRN: a fixed 1x1 convolution sums the n-channel window of x^2 with weights alpha/n
    (TensorFlow's own LRN would take depth_radius = (n-1)/2 and alpha/n; zoo needs no custom
    op), then y = x * (k + that)^-beta.
  - LSTM: Keras's gate order i, f, c, o is the spec's i, f, g, o; kernel (in, 4u) = W_ih^T,
    recurrent kernel W_hh^T, one bias; unit_forget_bias off (no forget bias is added).
  - BatchNorm: the spec's epsilon (Keras defaults to 1e-3).
Every Keras layer carries the spec layer's name, made a unique Keras name (`kname`, then
UniqueNames: "fc.1" and "fc 1" get "fc.1" and "fc_1", a second "fc_1" gets "fc_1_2"; the
manifest records which is which); a layer that ends in an op gets an Identity layer with
that name, so any blob can be exposed. The model is saved as model.keras (load
with safe_mode=True: no Lambda, no custom objects) and exported as a SavedModel.
"""

from __future__ import annotations

import re

import numpy as np

from zoo.layers import pooling as P

from zoo import spec_pb2

from .registry import Registry, UniqueNames, Unsupported

CONVERTERS = Registry("tensorflow")
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"

NCHW_TO_NHWC = (2, 3, 1)   # keras Permute dims (batch excluded, 1-based)
NHWC_TO_NCHW = (3, 1, 2)
AXIS_NCHW_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}


MAX_NAME = 100
# the keras.ops this converter calls on symbolic tensors: Keras names those nodes itself
# ("pad", "pad_1", ...), and a layer of the same name would make the model invalid
KERAS_OP_NAMES = re.compile(r"(pad|multiply|square|power)(_[0-9]+)?\Z")


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


TRANSFORMS = {
    "identity": (lambda a, arg: a, lambda a, arg: a),
    "dense": (dense_to_keras, dense_from_keras),
    "conv": (lambda a, arg: conv_to_keras(a), lambda a, arg: conv_from_keras(a)),
    "transpose": (lambda a, arg: np.ascontiguousarray(a.T), lambda a, arg: np.ascontiguousarray(a.T)),
}


class Context:
    """Tracks each blob's Keras tensor and its layout tag:
    "plain" (the spec's layout), "nhwc" (a 4-D map stored NHWC) or "flat" (a 2-D Flatten of
    an NHWC map: features in (h, w, c) order; self.flat[blob] = [C, H, W])."""

    def __init__(self, net, weights):
        import keras
        self.keras, self.net, self.weights = keras, net, weights
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
def input_(ctx, layer):
    dtype = "int64" if layer.p.dtype == spec_pb2.InputParam.INT64 else "float32"
    name = ctx.layer_name(layer)
    x = ctx.keras.Input(shape=layer.out_shapes[0][1:], dtype=dtype, name=name)
    ctx.inputs.append(x)
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
    p, L = layer.p, ctx.keras.layers
    if p.stride > 1 and p.dilation > 1:
        raise Unsupported(f"tensorflow: layer {layer.name!r}: Keras Conv2D takes stride > 1 or "
                          "dilation > 1, not both")
    x = ctx.nhwc(layer.bottoms[0])
    if p.pad:
        x = L.ZeroPadding2D(int(p.pad), name=ctx.fresh(f"{layer.name}_pad"))(x)
    name = ctx.layer_name(layer)
    y = L.Conv2D(int(p.num_output), int(p.kernel_size), strides=int(p.stride), padding="valid",
                 dilation_rate=int(p.dilation), groups=int(p.group), use_bias=p.bias_term,
                 name=name)(x)
    arrays = [conv_to_keras(ctx.weight(layer, "weight"))]
    keys = [(f"{layer.name}.weight", "conv", None)]
    if p.bias_term:
        arrays.append(ctx.weight(layer, "bias"))
        keys.append((f"{layer.name}.bias", "identity", None))
    ctx.set_weights(name, arrays, keys)
    ctx.put(layer.tops[0], y, "nhwc", name)


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    import keras
    p, L, ops = layer.p, ctx.keras.layers, keras.ops
    x = ctx.nhwc(layer.bottoms[0])
    name = ctx.layer_name(layer)
    if p.global_pooling:
        cls = L.GlobalMaxPooling2D if p.pool == P.MAX else L.GlobalAveragePooling2D
        ctx.put(layer.tops[0], cls(keepdims=True, name=name)(x), "nhwc", name)
        return
    _, _, h, w = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shapes[0]
    k, s, pad = int(p.kernel_size), int(p.stride), int(p.pad)
    # left/top: the spec's pad; right/bottom: whatever makes "valid" pooling give (oh, ow)
    rh, rw = (oh - 1) * s + k - h - pad, (ow - 1) * s + k - w - pad
    fill = -np.inf if p.pool == P.MAX else 0.0
    if pad or rh > 0 or rw > 0:
        x = ops.pad(x, [[0, 0], [pad, max(rh, 0)], [pad, max(rw, 0)], [0, 0]], constant_values=fill)
    if p.pool == P.MAX:
        y = L.MaxPooling2D(k, s, padding="valid", name=name)(x)
        ctx.put(layer.tops[0], y, "nhwc", name)
        return
    div = P.divisor_map(p, h, w, oh, ow)
    if np.all(div == k * k):
        y = L.AveragePooling2D(k, s, padding="valid", name=name)(x)
    else:
        y = L.AveragePooling2D(k, s, padding="valid", name=ctx.fresh(f"{layer.name}_mean"))(x)
        y = ops.multiply(y, (k * k / div)[None, :, :, None].astype(np.float32))
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
    band = (np.abs(idx[:, None] - idx[None, :]) <= r).astype(np.float32) * np.float32(lrn_window_weight(p.alpha, n))
    sumsq = L.Conv2D(c, 1, use_bias=True, trainable=False, name=ctx.fresh(f"{layer.name}_window"))
    s = sumsq(ops.square(x))
    ctx.set_weights(sumsq.name, [band[None, None], np.full(c, p.k, np.float32)], [None, None])
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
    L = ctx.keras.layers
    tags = {ctx.tag[b] for b in layer.bottoms}
    same = len(tags) == 1 and (tags != {"flat"} or len({str(ctx.flat[b]) for b in layer.bottoms}) == 1)
    if same:
        xs, tag, flat = [ctx.t[b] for b in layer.bottoms], tags.pop(), ctx.flat.get(layer.bottoms[0])
    else:
        xs, tag, flat = [ctx.plain(b) for b in layer.bottoms], "plain", None
    name, op = ctx.layer_name(layer), layer.p.operation
    if op == spec_pb2.EltwiseParam.SUM:
        coeff = list(layer.p.coeff) or [1.0] * len(xs)
        xs = [x if c == 1.0 else L.Rescaling(float(c), name=ctx.fresh(f"{layer.name}_coeff"))(x)
              for c, x in zip(coeff, xs)]
        y = L.Add(name=name)(xs)
    elif op == spec_pb2.EltwiseParam.PROD:
        y = L.Multiply(name=name)(xs)
    else:
        y = L.Maximum(name=name)(xs)
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


@CONVERTERS.register("SoftmaxWithLoss", "EuclideanLoss")
def loss(ctx, layer):
    pass   # computed by the runner from the model's outputs (zoo.runners.tensorflow)


def make_model(net, weights):
    import keras

    CONVERTERS.check(net.layers)
    ctx = Context(net, weights)
    ctx.inputs = []
    labels = set(net.labels)
    for layer in net.deploy_layers:
        CONVERTERS.get(layer.type)(ctx, layer)
    # outputs: the network's outputs, then the loss layers' non-label bottoms, all in the
    # spec's layout, each behind an Identity layer "out__BLOB" (the runner takes them in order)
    heads = list(net.outputs)
    for l in net.loss_layers:
        heads += [b for b in l.bottoms if b not in labels and b not in heads]
    outputs = []
    for blob in heads:
        x = ctx.plain(blob)
        outputs.append(keras.layers.Identity(name=ctx.fresh(f"out__{blob}"))(x))
    model = keras.Model(ctx.inputs, outputs, name=kname(net.name))
    for lname, arrays in ctx.pending.items():
        layer = model.get_layer(lname)
        layer.set_weights([np.asarray(a, dtype=np.float32) for a in arrays])
    meta = {"heads": heads, "blob_layers": ctx.layer_of, "tags": ctx.tag, "flat": ctx.flat,
            "assign": ctx.assign,
            "inputs": [l.tops[0] for l in net.deploy_layers if l.kind.is_input]}
    return model, meta


def build(net, weights, outdir, options=None) -> dict:
    import keras
    import tensorflow as tf

    model, meta = make_model(net, weights)
    model.save(str(outdir / MODEL_FILE))
    model.export(str(outdir / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
    return {"files": [MODEL_FILE, SAVED_MODEL_DIR], "keras": keras.__version__,
            "tensorflow": tf.__version__, **meta}
