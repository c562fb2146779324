"""Spec + weights -> an ONNX model (inference graph), checked and shape-inferred.

Every blob of the spec keeps its name in the graph (a layer that takes several ONNX nodes
names its intermediate values "LAYER/..."), so the runner can expose any blob; what zoo adds
is named so that it never takes a blob's name (see Context). The batch
axis is symbolic ("N"). Loss layers are left out: the ONNX engine verifies forward only.
"""

from __future__ import annotations

import numpy as np

from zoo.layers import convolution as C
from zoo.layers import pooling as P

from zoo import spec_pb2

from .registry import Registry, UniqueNames, Unsupported

CONVERTERS = Registry("onnx")
DEFAULT_OPSET = 21
MODEL_FILE = "model.onnx"


class Context:
    """Names: every spec blob is the ONNX value of the same name (the runner feeds and reads
    blobs by name). Everything zoo adds, weights ("LAYER.weight") and intermediate values
    ("LAYER/..."), gets a name no blob has and no other addition has (UniqueNames), and
    every node a unique name: spec strings are arbitrary, so "fc.weight" may well be a
    blob's name too."""

    def __init__(self, net, weights):
        from onnx import helper
        self.net, self.weights, self.helper = net, weights, helper
        self.nodes, self.initializers = [], []
        blobs = {t for l in net.layers for t in l.tops}
        if "" in blobs:
            raise Unsupported("onnx: a blob named '' (ONNX reads an empty name as 'no input')")
        self.values = UniqueNames(str, reserved=blobs)
        self.node_names = UniqueNames(str)
        for layer in net.layers:      # each layer's main node is named after the layer
            self.node_names.name((layer.name, ""), layer.name)

    def node(self, op: str, inputs: list[str], outputs: list[str], layer, part: str = "", **attrs):
        """A node of `layer`: named after it, or "LAYER/part" for its other nodes."""
        name = self.node_names.name((layer.name, part), f"{layer.name}/{part}" if part else layer.name)
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=name, **attrs))

    def tmp(self, layer, part: str) -> str:
        """An intermediate value of `layer`, "LAYER/part" unless that name is taken."""
        return self.values.fresh(f"{layer.name}/{part}")

    def const(self, name: str, array: np.ndarray) -> str:
        """An initializer named `name` unless taken; returns the name it got."""
        from onnx import numpy_helper
        name = self.values.fresh(name)
        # np.asarray, not ascontiguousarray: that makes a scalar (Gather's index) 1-D
        self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def weight(self, layer, key: str) -> np.ndarray:
        return self.weights[f"{layer.name}.{key}"]


@CONVERTERS.register("Input")
def input_(ctx, layer):
    pass   # graph inputs are made in build()


@CONVERTERS.register("InnerProduct")
def inner_product(ctx, layer):
    w = ctx.weight(layer, "weight")   # (out, in)
    x, y = layer.bottoms[0], layer.tops[0]
    if len(layer.in_shapes[0]) == 2:
        names = [x, ctx.const(f"{layer.name}.weight", w)]
        if layer.p.bias_term:
            names.append(ctx.const(f"{layer.name}.bias", ctx.weight(layer, "bias")))
        ctx.node("Gemm", names, [y], layer, transB=1)
        return
    # (N, T, C): MatMul over the last axis, then the bias
    wt = ctx.const(f"{layer.name}.weight_t", np.ascontiguousarray(w.T))
    if not layer.p.bias_term:
        ctx.node("MatMul", [x, wt], [y], layer)
        return
    mm = ctx.tmp(layer, "matmul")
    ctx.node("MatMul", [x, wt], [mm], layer, "matmul")
    ctx.node("Add", [mm, ctx.const(f"{layer.name}.bias", ctx.weight(layer, "bias"))], [y], layer)


@CONVERTERS.register("Convolution")
def convolution(ctx, layer):
    p = layer.p
    g = C.window(p)
    ins = [layer.bottoms[0], ctx.const(f"{layer.name}.weight", ctx.weight(layer, "weight"))]
    if p.bias_term:
        ins.append(ctx.const(f"{layer.name}.bias", ctx.weight(layer, "bias")))
    ctx.node("Conv", ins, layer.tops, layer, kernel_shape=[g.kh, g.kw], strides=[g.sh, g.sw],
             pads=[g.pad_top, g.pad_left, g.pad_bottom, g.pad_right], dilations=[g.dh, g.dw],
             group=p.group)


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    p = layer.p
    if p.global_pooling:
        op = "GlobalMaxPool" if p.pool == P.MAX else "GlobalAveragePool"
        ctx.node(op, layer.bottoms, layer.tops, layer)
        return
    # CEIL is written as FLOOR with the overhang as explicit end padding: ONNX's ceil_mode
    # output size lacks Caffe's rule (the last window starts inside the input or left pad)
    _, _, h, w = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shapes[0]
    g = P.geometry(p, layer.in_shapes[0])
    eh, ew = P.end_padding(p, h, w, oh, ow)
    attrs = dict(kernel_shape=[g.kh, g.kw], strides=[g.sh, g.sw],
                 pads=[g.pad_top, g.pad_left, g.pad_bottom + eh, g.pad_right + ew], ceil_mode=0)
    if p.pool == P.MAX:
        ctx.node("MaxPool", layer.bottoms, layer.tops, layer, **attrs)
    elif p.avg_divisor != P.VALID and (eh or ew):
        # PADDED must not count the overhang: average over the input only, then rescale
        # by (input positions / PADDED positions) per window, a constant map
        scale = P.divisor_map(p, h, w, oh, ow, P.VALID) / P.divisor_map(p, h, w, oh, ow, P.PADDED)
        mean = ctx.tmp(layer, "valid_mean")
        ctx.node("AveragePool", layer.bottoms, [mean], layer, "mean", count_include_pad=0, **attrs)
        k = ctx.const(f"{layer.name}/divisor", scale[None, None].astype(np.float32))
        ctx.node("Mul", [mean, k], layer.tops, layer)
    else:
        # PADDED counts the padding (count_include_pad=1); VALID only the input
        ctx.node("AveragePool", layer.bottoms, layer.tops, layer,
                 count_include_pad=int(p.avg_divisor != P.VALID), **attrs)


@CONVERTERS.register("ReLU", "Sigmoid", "TanH")
def activation(ctx, layer):
    op = {"ReLU": "Relu", "Sigmoid": "Sigmoid", "TanH": "Tanh"}[layer.type]
    ctx.node(op, layer.bottoms, layer.tops, layer)


@CONVERTERS.register("LRN")
def lrn(ctx, layer):
    # ONNX LRN divides alpha by size, as the spec does: alpha passes through unchanged
    p = layer.p
    ctx.node("LRN", layer.bottoms, layer.tops, layer, size=p.local_size, alpha=p.alpha,
             beta=p.beta, bias=p.k)


@CONVERTERS.register("Dropout")
def dropout(ctx, layer):
    ctx.node("Identity", layer.bottoms, layer.tops, layer)


@CONVERTERS.register("Softmax")
def softmax(ctx, layer):
    ctx.node("Softmax", layer.bottoms, layer.tops, layer, axis=layer.p.axis)


def _reshape(ctx, layer, shape: list[int]):
    s = ctx.const(f"{layer.name}/shape", np.array(shape, dtype=np.int64))
    ctx.node("Reshape", [layer.bottoms[0], s], layer.tops, layer)


@CONVERTERS.register("Flatten")
def flatten(ctx, layer):
    rank = len(layer.in_shapes[0])
    axis = layer.p.axis % rank
    _reshape(ctx, layer, [0] * axis + [-1])   # keeps the leading axes, as the spec's Flatten


@CONVERTERS.register("Reshape")
def reshape(ctx, layer):
    _reshape(ctx, layer, list(layer.p.shape))   # ONNX Reshape: 0 copies, -1 infers, as Caffe


@CONVERTERS.register("Concat")
def concat(ctx, layer):
    ctx.node("Concat", layer.bottoms, layer.tops, layer, axis=layer.p.axis)


@CONVERTERS.register("Eltwise")
def eltwise(ctx, layer):
    p = layer.p
    if p.operation == spec_pb2.EltwiseParam.PROD:
        acc = layer.bottoms[0]
        for i, b in enumerate(layer.bottoms[1:], start=1):
            last = i == len(layer.bottoms) - 1
            out = layer.tops[0] if last else ctx.tmp(layer, str(i))
            ctx.node("Mul", [acc, b], [out], layer, "" if last else str(i))
            acc = out
        return
    if p.operation == spec_pb2.EltwiseParam.MAX:
        ctx.node("Max", layer.bottoms, layer.tops, layer)
        return
    if p.operation in (spec_pb2.EltwiseParam.SUB, spec_pb2.EltwiseParam.DIV):
        op = "Sub" if p.operation == spec_pb2.EltwiseParam.SUB else "Div"
        ctx.node(op, layer.bottoms, layer.tops, layer)    # ONNX broadcasts as NumPy does
        return
    terms = list(layer.bottoms)
    if len(p.coeff) and any(c != 1.0 for c in p.coeff):
        terms = []
        for i, (b, c) in enumerate(zip(layer.bottoms, p.coeff)):
            k = ctx.const(f"{layer.name}/coeff{i}", np.array(c, dtype=np.float32))
            term = ctx.tmp(layer, f"term{i}")
            ctx.node("Mul", [b, k], [term], layer, f"term{i}")
            terms.append(term)
    ctx.node("Sum", terms, layer.tops, layer)


@CONVERTERS.register("BatchNorm")
def batch_norm(ctx, layer):
    c = layer.in_shapes[0][1]
    if layer.p.scale_bias:
        scale, shift = ctx.weight(layer, "gamma"), ctx.weight(layer, "beta")
    else:
        scale, shift = np.ones(c, np.float32), np.zeros(c, np.float32)
    ins = [layer.bottoms[0], ctx.const(f"{layer.name}.gamma", scale),
           ctx.const(f"{layer.name}.beta", shift),
           ctx.const(f"{layer.name}.running_mean", ctx.weight(layer, "running_mean")),
           ctx.const(f"{layer.name}.running_var", ctx.weight(layer, "running_var"))]
    ctx.node("BatchNormalization", ins, layer.tops, layer, epsilon=layer.p.eps)


@CONVERTERS.register("Embedding")
def embedding(ctx, layer):
    w = ctx.const(f"{layer.name}.weight", ctx.weight(layer, "weight"))
    ctx.node("Gather", [w, layer.bottoms[0]], layer.tops, layer, axis=0)


def lstm_gates_to_onnx(a: np.ndarray) -> np.ndarray:
    """zoo stacks gates i, f, g, o; ONNX stacks i, o, f, c (c = zoo's g)."""
    i, f, g, o = np.split(a, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


@CONVERTERS.register("LSTM")
def lstm(ctx, layer):
    h = int(layer.p.num_output)
    n = layer.name
    w = lstm_gates_to_onnx(ctx.weight(layer, "weight_ih"))[None]
    r = lstm_gates_to_onnx(ctx.weight(layer, "weight_hh"))[None]
    # B = [Wb, Rb]: the spec's one bias, then zeros
    b = np.concatenate([lstm_gates_to_onnx(ctx.weight(layer, "bias")), np.zeros(4 * h, np.float32)])[None]
    tnc, y, tnh = ctx.tmp(layer, "tnc"), ctx.tmp(layer, "y"), ctx.tmp(layer, "y_tnh")
    ctx.node("Transpose", layer.bottoms, [tnc], layer, "to_time_major", perm=[1, 0, 2])
    ctx.node("LSTM", [tnc, ctx.const(f"{n}.W", w), ctx.const(f"{n}.R", r),
                      ctx.const(f"{n}.B", b)], [y], layer, "lstm", hidden_size=h)
    ctx.node("Squeeze", [y, ctx.const(f"{n}/axis1", np.array([1], np.int64))], [tnh], layer, "squeeze")
    ctx.node("Transpose", [tnh], layer.tops, layer, perm=[1, 0, 2])


# --- issue 14: today's vocabulary ------------------------------------------------------------
def _f32(x: float) -> np.ndarray:
    return np.array(x, dtype=np.float32)


def _axes(values, rank: int) -> np.ndarray:
    """Spec axes (negative counts from the end) as a non-negative int64 axes input."""
    return np.array(sorted(int(v) % rank for v in values), dtype=np.int64)


@CONVERTERS.register("Clip")
def clip(ctx, layer):
    lo = ctx.const(f"{layer.name}/min", _f32(layer.p.min))
    hi = ctx.const(f"{layer.name}/max", _f32(layer.p.max))
    ctx.node("Clip", [layer.bottoms[0], lo, hi], layer.tops, layer)


@CONVERTERS.register("LeakyReLU")
def leaky_relu(ctx, layer):
    ctx.node("LeakyRelu", layer.bottoms, layer.tops, layer, alpha=layer.p.negative_slope)


@CONVERTERS.register("PReLU")
def prelu(ctx, layer):
    # ONNX broadcasts the slope from the right: per channel on (N, C, ...) is (C, 1, ...)
    slope = ctx.weight(layer, "slope")
    rank = len(layer.in_shapes[0])
    if not layer.p.channel_shared:
        slope = slope.reshape((-1,) + (1,) * (rank - 2))
    ctx.node("PRelu", [layer.bottoms[0], ctx.const(f"{layer.name}.slope", slope)], layer.tops, layer)


@CONVERTERS.register("ELU")
def elu(ctx, layer):
    ctx.node("Elu", layer.bottoms, layer.tops, layer, alpha=layer.p.alpha)


@CONVERTERS.register("HardSigmoid")
def hard_sigmoid(ctx, layer):
    ctx.node("HardSigmoid", layer.bottoms, layer.tops, layer, alpha=layer.p.alpha, beta=layer.p.beta)


@CONVERTERS.register("HardSwish")
def hard_swish(ctx, layer):
    ctx.node("HardSwish", layer.bottoms, layer.tops, layer)


@CONVERTERS.register("SiLU")
def silu(ctx, layer):
    # opset 21 has no Swish: x * Sigmoid(x) (ONNX Runtime fuses the pair)
    s = ctx.tmp(layer, "sigmoid")
    ctx.node("Sigmoid", layer.bottoms, [s], layer, "sigmoid")
    ctx.node("Mul", [layer.bottoms[0], s], layer.tops, layer)


@CONVERTERS.register("GELU")
def gelu(ctx, layer):
    approximate = "tanh" if layer.p.approximate == spec_pb2.GELUParam.TANH else "none"
    ctx.node("Gelu", layer.bottoms, layer.tops, layer, approximate=approximate)


@CONVERTERS.register("LogSoftmax")
def log_softmax(ctx, layer):
    ctx.node("LogSoftmax", layer.bottoms, layer.tops, layer, axis=layer.p.axis)


@CONVERTERS.register("Scale")
def scale(ctx, layer):
    x, (y,) = layer.bottoms[0], layer.tops
    s = ctx.const(f"{layer.name}.scale", ctx.weight(layer, "scale"))
    if not layer.p.bias_term:
        ctx.node("Mul", [x, s], [y], layer)
        return
    scaled = ctx.tmp(layer, "scaled")
    ctx.node("Mul", [x, s], [scaled], layer, "scale")
    ctx.node("Add", [scaled, ctx.const(f"{layer.name}.bias", ctx.weight(layer, "bias"))], [y], layer)


@CONVERTERS.register("Bias")
def bias(ctx, layer):
    b = ctx.const(f"{layer.name}.bias", ctx.weight(layer, "bias"))
    ctx.node("Add", [layer.bottoms[0], b], layer.tops, layer)


@CONVERTERS.register("Parameter")
def parameter(ctx, layer):
    # Expand value[None] to (N,) + shape, N read from the bottom's shape
    value = ctx.weight(layer, "value")
    n, shape = ctx.tmp(layer, "batch"), ctx.tmp(layer, "shape")
    ctx.node("Shape", layer.bottoms, [n], layer, "batch", start=0, end=1)
    ctx.node("Concat", [n, ctx.const(f"{layer.name}/value_shape", np.array(value.shape, np.int64))],
             [shape], layer, "shape", axis=0)
    ctx.node("Expand", [ctx.const(f"{layer.name}.value", value[None]), shape], layer.tops, layer)


@CONVERTERS.register("Reduce")
def reduce(ctx, layer):
    p = layer.p
    op = {spec_pb2.ReduceParam.SUM: "ReduceSum", spec_pb2.ReduceParam.MEAN: "ReduceMean",
          spec_pb2.ReduceParam.MAX: "ReduceMax"}[p.operation]
    axes = ctx.const(f"{layer.name}/axes", _axes(p.axis, len(layer.in_shapes[0])))
    ctx.node(op, [layer.bottoms[0], axes], layer.tops, layer, keepdims=int(p.keepdims))


@CONVERTERS.register("Transpose")
def transpose(ctx, layer):
    ctx.node("Transpose", layer.bottoms, layer.tops, layer, perm=[int(a) for a in layer.p.order])


@CONVERTERS.register("Slice")
def slice_(ctx, layer):
    p = layer.p
    sizes = ctx.const(f"{layer.name}/sizes", np.array([int(n) for n in p.size], np.int64))
    ctx.node("Split", [layer.bottoms[0], sizes], layer.tops, layer,
             axis=int(p.axis) % len(layer.in_shapes[0]))


@CONVERTERS.register("Squeeze")
def squeeze(ctx, layer):
    axes = ctx.const(f"{layer.name}/axes", _axes(layer.p.axis, len(layer.in_shapes[0])))
    ctx.node("Squeeze", [layer.bottoms[0], axes], layer.tops, layer)


@CONVERTERS.register("Unsqueeze")
def unsqueeze(ctx, layer):
    # ONNX's axes are positions in the output, as the spec's
    axes = ctx.const(f"{layer.name}/axes", _axes(layer.p.axis, len(layer.out_shapes[0])))
    ctx.node("Unsqueeze", [layer.bottoms[0], axes], layer.tops, layer)


@CONVERTERS.register("Gather")
def gather(ctx, layer):
    # a scalar index removes the axis, as the spec's Gather
    p = layer.p
    index = ctx.const(f"{layer.name}/index", np.array(int(p.index), np.int64))
    ctx.node("Gather", [layer.bottoms[0], index], layer.tops, layer,
             axis=int(p.axis) % len(layer.in_shapes[0]))


@CONVERTERS.register("LayerNorm")
def layer_norm(ctx, layer):
    p, s = layer.p, layer.in_shapes[0]
    axis = int(p.axis) % len(s)
    if p.scale_bias:
        gamma, beta = ctx.weight(layer, "gamma"), ctx.weight(layer, "beta")
    else:
        gamma, beta = np.ones(s[axis:], np.float32), np.zeros(s[axis:], np.float32)
    ins = [layer.bottoms[0], ctx.const(f"{layer.name}.gamma", gamma), ctx.const(f"{layer.name}.beta", beta)]
    ctx.node("LayerNormalization", ins, layer.tops, layer, axis=axis, epsilon=p.eps)


@CONVERTERS.register("MatMul")
def matmul(ctx, layer):
    p = layer.p
    ins = list(layer.bottoms)
    rank = len(layer.in_shapes[0])
    swap = list(range(rank - 2)) + [rank - 1, rank - 2]
    for i, (flag, part) in enumerate(((p.transpose_a, "a_t"), (p.transpose_b, "b_t"))):
        if flag:
            t = ctx.tmp(layer, part)
            ctx.node("Transpose", [ins[i]], [t], layer, part, perm=swap)
            ins[i] = t
    if p.scale == 1:
        ctx.node("MatMul", ins, layer.tops, layer)
        return
    product = ctx.tmp(layer, "matmul")
    ctx.node("MatMul", ins, [product], layer, "matmul")
    ctx.node("Mul", [product, ctx.const(f"{layer.name}/scale", _f32(p.scale))], layer.tops, layer)


def make_model(net, weights, opset: int = DEFAULT_OPSET):
    import onnx
    from onnx import TensorProto, helper

    ctx = Context(net, weights)
    CONVERTERS.check(net.deploy_layers)   # loss layers are not exported
    for layer in net.deploy_layers:
        CONVERTERS.get(layer.type)(ctx, layer)

    def value_info(blob, elem=TensorProto.FLOAT):
        shape = ["N", *net.shapes[blob][1:]]
        return helper.make_tensor_value_info(blob, elem, shape)

    inputs = [value_info(l.tops[0], TensorProto.INT64 if l.p.dtype == spec_pb2.InputParam.INT64 else TensorProto.FLOAT)
              for l in net.deploy_layers if l.kind.is_input]
    outputs = [value_info(o) for o in net.outputs]
    graph = helper.make_graph(ctx.nodes, net.name, inputs, outputs, ctx.initializers)
    model = helper.make_model(graph, producer_name="zoo", opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    return model


def check_shapes(model, net) -> None:
    """ONNX's strict shape inference must give zoo's shape for every blob."""
    import onnx
    # data_prop: the batch size flows through Shape -> Concat -> Expand (Parameter)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                 data_prop=True)
    seen = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        seen[vi.name] = dims
    for layer in net.deploy_layers:
        for t in layer.tops:
            if layer.kind.is_input:
                continue
            want = ["N", *net.shapes[t][1:]]
            got = seen.get(t)
            if got is not None and [str(d) for d in got] != [str(d) for d in want]:
                raise AssertionError(f"layer {layer.name!r}: ONNX infers {got} for blob {t!r}, "
                                     f"zoo {want}")
            if got is None:
                raise AssertionError(f"layer {layer.name!r}: ONNX inferred no shape for {t!r}")


def build(net, weights, outdir, options=None) -> dict:
    import onnx

    opset = int((options or {}).get("opset", DEFAULT_OPSET))
    model = make_model(net, weights, opset)
    onnx.checker.check_model(model, full_check=True)
    check_shapes(model, net)
    onnx.save_model(model, str(outdir / MODEL_FILE))
    return {"files": [MODEL_FILE], "opset": opset, "onnx": onnx.__version__,
            "inputs": [l.tops[0] for l in net.deploy_layers if l.kind.is_input],
            "outputs": net.outputs}
