"""`zoo import net.prototxt [--weights net.caffemodel]`: a Caffe model -> a zoo spec + weights.

Reads Caffe's text and binary formats with Caffe's own schema (zoo.converters.caffe_pb2),
including the old V1 `layers` format. Caffe's in-place layers (top == bottom) become new
blobs named after the layer; BatchNorm + Scale become one BatchNorm; an InnerProduct on a
4-D blob gets an explicit Flatten; Caffe's pooling is CEIL unless `ceil_mode: false`, and its
average divisor counts padding (PADDED). `Python` layers are refused (they import and run
code). Data layers carry no shapes: give a deploy prototxt (Input layer or `input_dim`).
Without a .caffemodel the weights are made from a seed.

Sequences: Caffe's LSTM is time-major (blobs (T, N, ...)) with a second input `cont` that
is 0 where a sequence starts and 1 where it goes on; zoo's are batch-first from a zero
state. A network with an LSTM is therefore imported as time-major throughout: its rank-2
and rank-3 inputs become (N, T, ...), axes 0 and 1 swap in Concat/Softmax, and the `cont`
input is dropped, which means taking each column as one sequence from t = 0 (cont = 0 at
t = 0 and 1 after, as zoo's own Caffe files feed it); a net whose `cont` is computed
inside it is refused. LSTM blobs W_xc, b_c, W_hc have gates i, f, o, g (zoo: i, f, g, o).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import spec_pb2
from ..errors import ImportRefused
from .common import SpecBuilder, check_file, write

MAX_PROTOTXT_BYTES = 16 * 2**20
# V1 (`layers { type: CONVOLUTION }`) enum names -> today's type strings
V1_TYPES = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "POOLING": "Pooling",
            "RELU": "ReLU", "SIGMOID": "Sigmoid", "TANH": "TanH", "LRN": "LRN", "DROPOUT": "Dropout",
            "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "CONCAT": "Concat",
            "ELTWISE": "Eltwise", "FLATTEN": "Flatten", "SPLIT": "Split", "DATA": "Data",
            "EUCLIDEAN_LOSS": "EuclideanLoss", "ACCURACY": "Accuracy", "PYTHON": "Python",
            "MEMORY_DATA": "MemoryData", "IMAGE_DATA": "ImageData", "HDF5_DATA": "HDF5Data"}
DATA_TYPES = {"Data", "ImageData", "MemoryData", "HDF5Data", "WindowData", "DummyData"}
ZP = spec_pb2.PoolingParam
DROPPED = {"Accuracy", "Silence"}     # metrics and sinks: no part of the network's function


def _read_net(path: Path):
    from google.protobuf import text_format

    from ..converters import caffe_pb2
    text = check_file(path, MAX_PROTOTXT_BYTES).decode("utf-8", errors="replace")
    from ..spec import _scan_prototxt   # refuses absurd nesting before protobuf recurses
    from ..errors import SpecError
    try:
        _scan_prototxt(text, str(path))
    except SpecError as e:
        raise ImportRefused(str(e)) from None
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=False)
    except (text_format.ParseError, RecursionError) as e:
        raise ImportRefused(f"{path}: not a Caffe prototxt: {e}") from None
    return net


def _read_weights(path: Path) -> dict[str, list[np.ndarray]]:
    from google.protobuf.message import DecodeError

    from ..converters import caffe_pb2
    data = check_file(path)
    model = caffe_pb2.NetParameter()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError) as e:
        raise ImportRefused(f"{path}: not a .caffemodel ({e})") from None
    out = {}
    for layer in list(model.layer) + list(model.layers):
        blobs = []
        for b in layer.blobs:
            shape = list(b.shape.dim) or [d for d in (b.num, b.channels, b.height, b.width)]
            if any(d < 0 for d in shape):
                raise ImportRefused(f"{path}: layer {layer.name!r}: blob shape {shape} has a negative size")
            data = np.asarray(b.data if len(b.data) else b.double_data, dtype=np.float32)
            if data.size != math.prod(shape):     # Python integers: int64 products wrap
                raise ImportRefused(f"{path}: layer {layer.name!r}: blob of {data.size} values for shape {shape}")
            blobs.append(data.reshape(shape))
        if blobs:
            out[layer.name] = blobs
    return out


def _layers(net):
    """(name, type, bottoms, tops, message) for V2 and V1 layers, TEST-phase view."""
    from ..converters import caffe_pb2
    items = []
    for lp in net.layer:
        if any(r.HasField("phase") and r.phase == caffe_pb2.TRAIN for r in lp.include):
            continue
        items.append((lp.name, lp.type, list(lp.bottom), list(lp.top), lp))
    for lp in net.layers:
        t = caffe_pb2.V1LayerParameter.LayerType.Name(lp.type)
        if any(r.HasField("phase") and r.phase == caffe_pb2.TRAIN for r in lp.include):
            continue
        items.append((lp.name, V1_TYPES.get(t, t), list(lp.bottom), list(lp.top), lp))
    return items


def import_caffe(prototxt: str | Path, out: str | Path, weights: str | Path | None = None, seed: int = 0):
    from .. import net as N
    from .. import weights as W

    prototxt = Path(prototxt)
    net = _read_net(prototxt)
    blobs = _read_weights(Path(weights)) if weights else None
    b = SpecBuilder(net.name or prototxt.stem)
    layers = _layers(net)
    lstms = [lp for _, type_, _, _, lp in layers if type_ == "LSTM"]
    m = _Mapper(b, blobs, time_major=bool(lstms), conts={lp.bottom[1] for lp in lstms if len(lp.bottom) > 1})
    m.inputs(net)
    m.run(layers)
    b.refuse_if_unsupported(str(prototxt))
    if blobs is None:    # no .caffemodel: seeded weights for the imported spec
        spec_net = N.Net(b.spec)
        b.weights = W.make(spec_net, seed)
    return write(b, Path(out), lambda spec: N.Net(spec))


CONT = object()      # stands for an LSTM `cont` input (dropped, see the module docstring)


class _Mapper:
    def __init__(self, b: SpecBuilder, blobs, time_major: bool = False, conts: set[str] = frozenset()):
        self.b, self.blobs = b, blobs
        self.time_major, self.conts = time_major, conts
        self.cur: dict[str, str] = {}      # Caffe blob name -> current spec blob
        self.rank: dict[str, int] = {}     # spec blob -> rank (for InnerProduct/Flatten)
        self.bn_pending: dict[str, str] = {}   # spec blob of a BatchNorm without Scale yet -> layer

    def inputs(self, net):
        # deploy style: `input: "data"` with input_shape or input_dim
        dims = list(net.input_dim)
        for i, name in enumerate(net.input):
            if i < len(net.input_shape):
                shape = list(net.input_shape[i].dim)
            elif dims:
                shape = dims[4 * i:4 * i + 4]
            else:
                self.b.problems.append(f"input {name!r} has no shape")
                continue
            self._input(name, shape)

    def _input(self, name: str, shape: list[int]):
        if name in self.conts:
            self.cur[name] = CONT
            return
        if self.time_major and len(shape) in (2, 3):
            shape = [shape[1], shape[0]] + shape[2:]      # (T, N, ...) -> (N, T, ...)
        spec_name = self.b.unique(name)
        self.b.layer(spec_name, "Input", [], input_param={"shape": [int(d) for d in shape]})
        self.cur[name] = spec_name
        self.rank[spec_name] = len(shape)

    def w(self, layer: str, n: int) -> list[np.ndarray] | None:
        if self.blobs is None:
            return None
        got = self.blobs.get(layer)
        if got is None or len(got) < n:
            self.b.problems.append(f"layer {layer!r}: the .caffemodel has {0 if got is None else len(got)} blobs, "
                                   f"{n} needed")
            return None
        return got

    def run(self, layers):
        for name, type_, bottoms, tops, lp in layers:
            if type_ == "Python":
                raise ImportRefused(f"layer {name!r}: type 'Python' imports and runs code; refused")
            if type_ in DROPPED:
                continue
            fn = getattr(self, f"op_{type_}", None)
            if fn is None:
                if type_ in DATA_TYPES:
                    self.b.problems.append(f"layer {name!r} ({type_}): data layers carry no shapes; import a "
                                           "deploy prototxt (Input layer or input_dim)")
                else:
                    self.b.unsupported[type_] += 1
                continue
            try:
                xs = [self.cur[b_] for b_ in bottoms]
            except KeyError as e:
                self.b.problems.append(f"layer {name!r}: bottom {e.args[0]!r} is not produced")
                continue
            if type_ != "LSTM" and CONT in xs:
                self.b.problems.append(f"layer {name!r}: uses an LSTM's `cont` input, which zoo drops")
                continue
            try:
                fn(name, xs, tops, lp)
            except _Skip as e:
                self.b.problems.append(f"layer {name!r} ({type_}): {e}")

    def _out(self, name: str, type_: str, xs: list[str], tops: list[str], rank: int, **params) -> str:
        spec_name = self.b.unique(name)
        self.b.layer(spec_name, type_, xs, **params)
        self.cur[tops[0]] = spec_name       # in-place layers: the Caffe name now means this blob
        self.rank[spec_name] = rank
        return spec_name

    def op_Input(self, name, xs, tops, lp):
        for i, t in enumerate(tops):
            shape = lp.input_param.shape[min(i, len(lp.input_param.shape) - 1)].dim
            self._input(t, list(shape))

    def op_Convolution(self, name, xs, tops, lp):
        p = lp.convolution_param
        k = list(p.kernel_size) or [p.kernel_h]
        if p.kernel_h and p.kernel_w and p.kernel_h != p.kernel_w or len(set(k)) > 1:
            raise _Skip("non-square kernel")
        s = (list(p.stride) or [p.stride_h or 1])[0]
        pad = (list(p.pad) or [p.pad_h or 0])[0]
        d = (list(p.dilation) or [1])[0]
        spec = self._out(name, "Convolution", xs, tops, 4, convolution_param={
            "num_output": int(p.num_output), "kernel_size": int(k[0]), "stride": int(s), "pad": int(pad),
            "dilation": int(d), "group": int(p.group), "bias_term": bool(p.bias_term)})
        ws = self.w(name, 2 if p.bias_term else 1)
        if ws:
            self.b.weight(spec, "weight", ws[0])
            if p.bias_term:
                self.b.weight(spec, "bias", ws[1].reshape(-1))

    def op_InnerProduct(self, name, xs, tops, lp):
        p = lp.inner_product_param
        x = xs[0]
        if p.transpose:
            raise _Skip("transpose: true")
        rank = self.rank.get(x, 2)
        if rank > 2 and p.axis == 1:    # Caffe flattens (c, h, w) itself
            x = self._out(f"{name}_flatten", "Flatten", [x], [f"{name}__flat"], 2, flatten_param={"axis": 1})
        elif rank == 3 and p.axis == 2:
            pass                        # per time step: zoo's InnerProduct is over the last axis
        elif rank > 2:
            raise _Skip(f"InnerProduct over axis {p.axis} of a rank-{rank} blob")
        spec = self._out(name, "InnerProduct", [x], tops, 3 if rank == 3 and p.axis == 2 else 2,
                         inner_product_param={
            "num_output": int(p.num_output), "bias_term": bool(p.bias_term)})
        ws = self.w(name, 2 if p.bias_term else 1)
        if ws:
            self.b.weight(spec, "weight", ws[0].reshape(int(p.num_output), -1))
            if p.bias_term:
                self.b.weight(spec, "bias", ws[1].reshape(-1))

    def op_Pooling(self, name, xs, tops, lp):
        from ..converters import caffe_pb2
        p = lp.pooling_param
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
        if method not in ("MAX", "AVE"):
            raise _Skip(f"{method} pooling")
        pool = ZP.PoolMethod.Value(method)
        if p.global_pooling:
            self._out(name, "Pooling", xs, tops, 4, pooling_param={"pool": pool, "global_pooling": True})
            return
        k = p.kernel_size or p.kernel_h
        if p.kernel_h and p.kernel_w and p.kernel_h != p.kernel_w:
            raise _Skip("non-square kernel")
        params = {"pool": pool, "kernel_size": int(k), "stride": int(p.stride or p.stride_h or 1),
                  "pad": int(p.pad or p.pad_h), "round_mode": ZP.CEIL if p.ceil_mode else ZP.FLOOR}
        if pool == ZP.AVE and (params["pad"] > 0 or p.ceil_mode):
            params["avg_divisor"] = ZP.PADDED   # Caffe counts the padding (only then does it matter)
        self._out(name, "Pooling", xs, tops, 4, pooling_param=params)

    def op_ReLU(self, name, xs, tops, lp):
        if lp.relu_param.negative_slope:
            raise _Skip("leaky ReLU (negative_slope)")
        self._out(name, "ReLU", xs, tops, self.rank.get(xs[0], 4))

    def op_Sigmoid(self, name, xs, tops, lp):
        self._out(name, "Sigmoid", xs, tops, self.rank.get(xs[0], 4))

    def op_TanH(self, name, xs, tops, lp):
        self._out(name, "TanH", xs, tops, self.rank.get(xs[0], 4))

    def op_LRN(self, name, xs, tops, lp):
        p = lp.lrn_param
        from ..converters import caffe_pb2
        if p.norm_region != caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            raise _Skip("WITHIN_CHANNEL LRN")
        self._out(name, "LRN", xs, tops, 4, lrn_param={"local_size": int(p.local_size), "alpha": float(p.alpha),
                                                       "beta": float(p.beta), "k": float(p.k)})

    def op_Dropout(self, name, xs, tops, lp):
        self._out(name, "Dropout", xs, tops, self.rank.get(xs[0], 2),
                  dropout_param={"dropout_ratio": float(lp.dropout_param.dropout_ratio)})

    def _axis(self, x: str, axis: int) -> int:
        """A Caffe axis in zoo's batch-first order (axes 0 and 1 swap in time-major nets)."""
        rank = self.rank.get(x, 4)
        axis = axis % rank
        return (1 - axis) if self.time_major and rank in (2, 3) and axis < 2 else axis

    def op_Softmax(self, name, xs, tops, lp):
        self._out(name, "Softmax", xs, tops, self.rank.get(xs[0], 2),
                  softmax_param={"axis": self._axis(xs[0], int(lp.softmax_param.axis))})

    def op_Flatten(self, name, xs, tops, lp):
        if lp.flatten_param.end_axis != -1:
            raise _Skip("Flatten with end_axis")
        self._out(name, "Flatten", xs, tops, int(lp.flatten_param.axis) + 1,
                  flatten_param={"axis": int(lp.flatten_param.axis)})

    def op_Reshape(self, name, xs, tops, lp):
        shape = [int(d) for d in lp.reshape_param.shape.dim]
        if lp.reshape_param.axis != 0 or lp.reshape_param.num_axes != -1:
            raise _Skip("Reshape with axis or num_axes")
        self._out(name, "Reshape", xs, tops, len(shape), reshape_param={"shape": shape})

    def op_Concat(self, name, xs, tops, lp):
        p = lp.concat_param
        axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim
        self._out(name, "Concat", xs, tops, self.rank.get(xs[0], 4),
                  concat_param={"axis": self._axis(xs[0], int(axis))})

    def op_Eltwise(self, name, xs, tops, lp):
        p = lp.eltwise_param
        from ..converters import caffe_pb2
        op = caffe_pb2.EltwiseParameter.EltwiseOp.Name(p.operation)
        params = {"operation": spec_pb2.EltwiseParam.EltwiseOp.Value(op)}   # same names
        if len(p.coeff):
            params["coeff"] = [float(c) for c in p.coeff]
        self._out(name, "Eltwise", xs, tops, self.rank.get(xs[0], 4), eltwise_param=params)

    def op_Split(self, name, xs, tops, lp):
        for t in tops:
            self.cur[t] = xs[0]

    def op_BatchNorm(self, name, xs, tops, lp):
        spec = self._out(name, "BatchNorm", xs, tops, self.rank.get(xs[0], 4),
                         batch_norm_param={"eps": float(lp.batch_norm_param.eps), "scale_bias": False})
        ws = self.w(name, 3)
        c = None
        if ws:
            factor = float(ws[2].reshape(-1)[0])
            factor = 1.0 / factor if factor != 0 else 0.0
            self.b.weight(spec, "running_mean", ws[0].reshape(-1) * factor)
            self.b.weight(spec, "running_var", ws[1].reshape(-1) * factor)
            c = ws[0].size
        self.bn_pending[spec] = c

    def op_Scale(self, name, xs, tops, lp):
        x = xs[0]
        if x not in self.bn_pending:
            raise _Skip("Scale that does not follow a BatchNorm")
        if not lp.scale_param.bias_term:
            raise _Skip("Scale without bias after BatchNorm")
        bn = next(l for l in self.b.spec.layer if l.top[0] == x)
        bn.batch_norm_param.scale_bias = True
        ws = self.w(name, 2)
        if ws:
            self.b.weight(bn.name, "gamma", ws[0].reshape(-1))
            self.b.weight(bn.name, "beta", ws[1].reshape(-1))
        del self.bn_pending[x]
        self.cur[tops[0]] = x

    def op_Embed(self, name, xs, tops, lp):
        p = lp.embed_param
        if p.bias_term:
            raise _Skip("Embed with a bias")
        producer = next(l for l in self.b.spec.layer if l.top[0] == xs[0])
        if producer.type == "Input":
            producer.input_param.dtype = spec_pb2.InputParam.INT64     # token ids
        spec = self._out(name, "Embedding", xs, tops, 3, embedding_param={
            "input_dim": int(p.input_dim), "num_output": int(p.num_output)})
        ws = self.w(name, 1)
        if ws:
            self.b.weight(spec, "weight", ws[0])

    def op_LSTM(self, name, xs, tops, lp):
        from ..converters.caffe import lstm_gates_from_caffe
        p = lp.recurrent_param
        if len(xs) != 2 or xs[1] is not CONT:
            raise _Skip("LSTM without a `cont` network input (or with a static input)")
        if p.expose_hidden:
            raise _Skip("LSTM with expose_hidden (carried state)")
        if self.rank.get(xs[0]) != 3:
            raise _Skip("LSTM input is not (T, N, C)")
        spec = self._out(name, "LSTM", xs[:1], tops, 3, lstm_param={"num_output": int(p.num_output)})
        ws = self.w(name, 3)
        if ws:      # W_xc (4H, C), b_c (4H), W_hc (4H, H)
            self.b.weight(spec, "weight_ih", lstm_gates_from_caffe(ws[0]))
            self.b.weight(spec, "bias", lstm_gates_from_caffe(ws[1].reshape(-1)))
            self.b.weight(spec, "weight_hh", lstm_gates_from_caffe(ws[2]))

    def op_SoftmaxWithLoss(self, name, xs, tops, lp):
        if len(xs) == 2:    # Caffe feeds labels as floats; zoo's labels are INT64 class ids
            producer = next(l for l in self.b.spec.layer if l.top[0] == xs[1])
            if producer.type == "Input":
                producer.input_param.dtype = spec_pb2.InputParam.INT64
        self._out(name, "SoftmaxWithLoss", xs, tops, 0)

    def op_EuclideanLoss(self, name, xs, tops, lp):
        self._out(name, "EuclideanLoss", xs, tops, 0)


class _Skip(Exception):
    pass


__all__ = ["import_caffe"]
