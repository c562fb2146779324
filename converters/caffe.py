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

from zoo.layers import pooling as P

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


@CONVERTERS.register("Convolution")
def convolution(ctx, layer):
    p = layer.p
    lp = ctx.layer(layer, "Convolution")
    cp = lp.convolution_param
    cp.num_output, cp.bias_term, cp.group = int(p.num_output), p.bias_term, int(p.group)
    cp.kernel_size.append(int(p.kernel_size))
    cp.stride.append(int(p.stride))
    cp.pad.append(int(p.pad))
    cp.dilation.append(int(p.dilation))
    _weight_and_bias(ctx, layer, p.bias_term)


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    p = layer.p
    lp = ctx.layer(layer, "Pooling")
    pp = lp.pooling_param
    pp.pool = ctx.pb.PoolingParameter.MAX if p.pool == P.MAX else ctx.pb.PoolingParameter.AVE
    if p.global_pooling:
        pp.global_pooling = True
        return
    if p.pool == P.AVE and p.avg_divisor == P.VALID and (p.pad > 0 or p.round_mode == P.CEIL):
        raise Unsupported(f"caffe: layer {layer.name!r}: Caffe's average pooling always counts "
                          "the padding (PADDED); the VALID divisor is not expressible")
    pp.kernel_size, pp.stride, pp.pad = int(p.kernel_size), int(p.stride), int(p.pad)
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
    ctx.layer(layer, "Flatten").flatten_param.axis = int(layer.p.axis) % len(layer.in_shapes[0])


@CONVERTERS.register("Reshape")
def reshape(ctx, layer):
    if ctx.time_major and len(layer.in_shapes[0]) in (2, 3):
        raise Unsupported("caffe: Reshape in a sequence network (time-major in Caffe)")
    ctx.layer(layer, "Reshape").reshape_param.shape.dim.extend(int(d) for d in layer.p.shape)


@CONVERTERS.register("Concat")
def concat(ctx, layer):
    ctx.layer(layer, "Concat").concat_param.axis = _axis(ctx, layer, layer.p.axis)


@CONVERTERS.register("Eltwise")
def eltwise(ctx, layer):
    lp = ctx.layer(layer, "Eltwise")
    E, CE = spec_pb2.EltwiseParam, ctx.pb.EltwiseParameter
    lp.eltwise_param.operation = {E.PROD: CE.PROD, E.SUM: CE.SUM, E.MAX: CE.MAX}[layer.p.operation]
    lp.eltwise_param.coeff.extend(float(c) for c in layer.p.coeff)


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
