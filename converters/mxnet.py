"""Spec + weights -> an MXNet 1.9.1 model: a hybridized Gluon SymbolBlock exported as
NAME-symbol.json + NAME-0000.params (load: mx.gluon.SymbolBlock.imports).

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
  - Token ids and labels are float32 in MXNet (Embedding takes float indices).
Each spec layer's last op is named after its top blob, so every blob is in
symbol.get_internals() as "SYMBOL_output", SYMBOL being meta["symbols"][blob]: `sname` of the
blob made unique over every symbol name of the graph (UniqueNames: "fc.1" and "fc_1" both
sanitise to "fc_1"; the second becomes "fc_1_2"), so no two blobs or weights share a name.
"""

from __future__ import annotations

import re

import numpy as np

from zoo.layers import pooling as P

from zoo import spec_pb2

from .registry import Registry, UniqueNames

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


class Context:
    def __init__(self, mx, net, weights):
        self.mx, self.sym, self.net, self.weights = mx, mx.sym, net, weights
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
        (self.aux if aux else self.params)[name] = np.asarray(value, dtype=np.float32)
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
    p = layer.p
    kw = {"bias": ctx.var(layer, "bias")} if p.bias_term else {}
    k = int(p.kernel_size)
    ctx.s[layer.tops[0]] = ctx.sym.Convolution(
        ctx.s[layer.bottoms[0]], weight=ctx.var(layer, "weight"), kernel=(k, k),
        stride=(int(p.stride),) * 2, pad=(int(p.pad),) * 2, dilate=(int(p.dilation),) * 2,
        num_group=int(p.group), num_filter=int(p.num_output), no_bias=not p.bias_term,
        name=ctx.out_name(layer), **kw)


def mxnet_full_size(h: int, k: int, s: int, pad: int) -> int:
    return 1 + int(np.ceil((h + 2 * pad - k) / s))


@CONVERTERS.register("Pooling")
def pooling(ctx, layer):
    p, x = layer.p, ctx.s[layer.bottoms[0]]
    pool_type = "max" if p.pool == P.MAX else "avg"
    name = ctx.out_name(layer)
    if p.global_pooling:
        ctx.s[layer.tops[0]] = ctx.sym.Pooling(x, kernel=(1, 1), global_pool=True,
                                               pool_type=pool_type, name=name)
        return
    k, s, pad = int(p.kernel_size), int(p.stride), int(p.pad)
    ceil = p.round_mode == P.CEIL
    kw = {"count_include_pad": p.avg_divisor != P.VALID} if p.pool == P.AVE else {}
    _, _, h, w = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shapes[0]
    full = (mxnet_full_size(h, k, s, pad), mxnet_full_size(w, k, s, pad)) if ceil else (oh, ow)
    sliced = full != (oh, ow)
    y = ctx.sym.Pooling(x, kernel=(k, k), stride=(s, s), pad=(pad, pad), pool_type=pool_type,
                        pooling_convention="full" if ceil else "valid",
                        name=ctx.fresh(f"{name}_full") if sliced else name, **kw)
    if sliced:   # drop the window that starts in the right padding (Caffe's rule)
        y = ctx.sym.slice(y, begin=(None, None, 0, 0), end=(None, None, oh, ow), name=name)
    ctx.s[layer.tops[0]] = y


@CONVERTERS.register("ReLU", "Sigmoid", "TanH")
def activation(ctx, layer):
    act = {"ReLU": "relu", "Sigmoid": "sigmoid", "TanH": "tanh"}[layer.type]
    ctx.s[layer.tops[0]] = ctx.sym.Activation(ctx.s[layer.bottoms[0]], act_type=act,
                                              name=ctx.out_name(layer))


@CONVERTERS.register("LRN")
def lrn(ctx, layer):
    p = layer.p
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
    xs, op, name = [ctx.s[b] for b in layer.bottoms], layer.p.operation, ctx.out_name(layer)
    if op == spec_pb2.EltwiseParam.SUM:
        coeff = list(layer.p.coeff) or [1.0] * len(xs)
        # every op is named by zoo: MXNet's automatic names ("_mulscalar0") could be a blob's
        xs = [x if c == 1.0 else ctx.sym._internal._mul_scalar(x, scalar=float(c),
                                                               name=ctx.fresh(f"{name}_coeff"))
              for c, x in zip(coeff, xs)]
        y = ctx.sym.add_n(*xs, name=name)
    else:
        fn = ctx.sym.elemwise_mul if op == spec_pb2.EltwiseParam.PROD else ctx.sym.broadcast_maximum
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
                                             name=ctx.out_name(layer))


@CONVERTERS.register("LSTM")
def lstm(ctx, layer):
    sym, h, n, fresh = ctx.sym, int(layer.p.num_output), layer.name, ctx.fresh
    flat = [sym.reshape(ctx.var(layer, "weight_ih"), shape=(-1,), name=fresh(f"{n}_weight_ih_flat")),
            sym.reshape(ctx.var(layer, "weight_hh"), shape=(-1,), name=fresh(f"{n}_weight_hh_flat")),
            ctx.var(layer, "bias"),
            sym.zeros((4 * h,), name=fresh(f"{n}_bias_hh_zero"))]
    params = sym.concat(*flat, dim=0, name=fresh(f"{n}_params"))
    state = sym.zeros((1, 0, h), name=fresh(f"{n}_state0"))    # batch 0: inferred from the data
    tnc = sym.transpose(ctx.s[layer.bottoms[0]], axes=(1, 0, 2), name=fresh(f"{n}_tnc"))
    y = sym.RNN(tnc, params, state, state, state_size=h, num_layers=1, mode="lstm",
                name=fresh(f"{n}_rnn"))
    ctx.s[layer.tops[0]] = sym.transpose(y, axes=(1, 0, 2), name=ctx.out_name(layer))


@CONVERTERS.register("SoftmaxWithLoss", "EuclideanLoss")
def loss(ctx, layer):
    pass   # computed by the runner from the model's outputs (zoo.runners.mxnet)


def heads(net) -> list[str]:
    """The exported outputs: the network's outputs, then the loss layers' predictions."""
    out = list(net.outputs)
    for l in net.loss_layers:
        out += [b for b in l.bottoms if b not in net.labels and b not in out]
    return out


def build(net, weights, outdir, options=None) -> dict:
    mx = import_mxnet()
    CONVERTERS.check(net.layers)
    ctx = Context(mx, net, weights)
    for layer in net.deploy_layers:
        CONVERTERS.get(layer.type)(ctx, layer)
    hs = heads(net)
    inputs = [l.tops[0] for l in net.deploy_layers if l.kind.is_input]
    out = ctx.sym.Group([ctx.s[b] for b in hs]) if len(hs) > 1 else ctx.s[hs[0]]
    block = mx.gluon.SymbolBlock(out, [ctx.sym.var(ctx.blob_name(i)) for i in inputs])
    pd = block.collect_params()
    for name, value in {**ctx.params, **ctx.aux}.items():
        pd[name]._load_init(mx.nd.array(value), mx.cpu())
    block.hybridize()
    block(*[mx.nd.zeros((1,) + tuple(net.shapes[i][1:])) for i in inputs])   # export needs a pass
    prefix = str(outdir / sname(net.name))
    block.export(prefix, epoch=0)
    return {"files": [f"{sname(net.name)}-symbol.json", f"{sname(net.name)}-0000.params"],
            "prefix": sname(net.name), "inputs": [ctx.blob_name(i) for i in inputs],
            "input_blobs": inputs, "heads": hs, "names": ctx.weight_names, "frozen": ctx.frozen,
            "symbols": {b: ctx.blob_name(b) for l in net.deploy_layers for b in l.tops},
            "mxnet": mx.__version__}
