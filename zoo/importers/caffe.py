"""`zoo import net.prototxt [--weights net.caffemodel]`: a Caffe model -> a zoo spec + weights.

Reads Caffe's text and binary formats with Caffe's own schema (zoo.converters.caffe_pb2),
including the old V1 `layers` format. Caffe's in-place layers (top == bottom) become new
blobs named after the layer; BatchNorm + Scale become one BatchNorm; an InnerProduct on a
4-D blob gets an explicit Flatten; Caffe's pooling is CEIL unless `ceil_mode: false`, and its
average divisor counts padding (PADDED). `Python` layers are refused (they import and run
code). A train_val prototxt imports too: its TEST-phase data layer becomes Inputs of the
shapes it would feed (batch_size; crop_size or the stated image size; 3 colour channels unless
the layer says otherwise, which the notes state), its label top an INT64 label Input when a
loss reads it; Accuracy and Silence layers are dropped (noted); loss layers keep their
loss_weight (GoogLeNet's auxiliary heads: 0.3). Without a .caffemodel the weights are made
from a seed (the result's notes say so; bounded to MAX_SEEDED_BYTES). V1 layers are upgraded
to V2 messages as Caffe does; each layer's bottom and top counts are checked before it is
mapped.

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
from .common import SpecBuilder, check_file, check_net, write

MAX_PROTOTXT_BYTES = 16 * 2**20
MAX_BLOB_AXES = 32          # Caffe's kMaxBlobAxes (blob.hpp)
# memory seeded weights may take when no .caffemodel is given (float32 arrays, plus the float64
# draw of the largest): a few lines of prototxt must not demand gigabytes. zoo's largest
# network, fcn-s (118 M parameters), needs 868 MiB.
MAX_SEEDED_BYTES = 2**30
# V1 (`layers { type: CONVOLUTION }`) enum names -> today's type strings
V1_TYPES = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "POOLING": "Pooling",
            "RELU": "ReLU", "SIGMOID": "Sigmoid", "TANH": "TanH", "LRN": "LRN", "DROPOUT": "Dropout",
            "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "CONCAT": "Concat",
            "ELTWISE": "Eltwise", "FLATTEN": "Flatten", "SPLIT": "Split", "DATA": "Data",
            "EUCLIDEAN_LOSS": "EuclideanLoss", "ACCURACY": "Accuracy", "PYTHON": "Python",
            "MEMORY_DATA": "MemoryData", "IMAGE_DATA": "ImageData", "HDF5_DATA": "HDF5Data",
            "SILENCE": "Silence", "WINDOW_DATA": "WindowData", "DUMMY_DATA": "DummyData"}
DATA_TYPES = {"Data", "ImageData", "MemoryData", "HDF5Data", "WindowData", "DummyData"}
ZP = spec_pb2.PoolingParam
DROPPED = {"Accuracy", "Silence"}     # metrics and sinks: no part of the network's function
COLOR_CHANNELS = 3    # a Data layer's images come from its database: colour unless it says so
# (fewest, most) bottoms and tops of each layer type zoo maps, as Caffe's own layers check them
# (ExactNumBottomBlobs, MinTopBlobs, ...); None: no upper bound
ARITY = {
    "Input": ((0, 0), (1, None)), "Split": ((1, 1), (1, None)), "Concat": ((1, None), (1, 1)),
    "Eltwise": ((2, None), (1, 1)), "Scale": ((1, 2), (1, 1)),
    "LSTM": ((1, 3), (1, 1)),          # Caffe's takes 2 or 3; with 1, op_LSTM says what is missing
    "SoftmaxWithLoss": ((2, 2), (1, 2)), "EuclideanLoss": ((2, 2), (1, 1)),
    **{t: ((0, 0), (1, 2)) for t in DATA_TYPES},     # data (and label)
}
ONE_TO_ONE = ((1, 1), (1, 1))         # every other mapped type


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
    """(name, type, bottoms, tops, message) for V2 and V1 layers, TEST-phase view; V1 layers
    are upgraded to V2 messages first, so every layer has every V2 parameter field."""
    from ..converters import caffe_pb2
    items = []
    for lp in list(net.layer) + [_upgrade_v1(v1) for v1 in net.layers]:
        if any(r.HasField("phase") and r.phase == caffe_pb2.TRAIN for r in lp.include):
            continue
        items.append((lp.name, lp.type, list(lp.bottom), list(lp.top), lp))
    return items


def _upgrade_v1(v1):
    """A V1 `layers { type: CONVOLUTION }` as the V2 LayerParameter Caffe's own upgrade makes:
    the type as a string, and each parameter message V1 and V2 share copied over."""
    from ..converters import caffe_pb2
    t = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
    lp = caffe_pb2.LayerParameter(name=v1.name, type=V1_TYPES.get(t, t), bottom=v1.bottom, top=v1.top,
                                  include=v1.include, exclude=v1.exclude)
    v2_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for field, value in v1.ListFields():
        if field.name.endswith("_param") and field.name in v2_fields and \
                v2_fields[field.name].message_type is field.message_type:
            getattr(lp, field.name).CopyFrom(value)
    return lp


def import_caffe(prototxt: str | Path, out: str | Path, weights: str | Path | None = None, seed: int = 0,
                 name: str | None = None, force: bool = False, loss: str | None = None):
    """Import a Caffe model into folder OUT (see zoo.importers.import_model)."""
    from .. import weights as W

    prototxt = Path(prototxt)
    b = translate(prototxt, weights, name)
    if weights is None:    # no .caffemodel: seeded weights for the imported spec
        spec_net = check_net(b.spec, prototxt)
        _check_seeded_size(spec_net, prototxt)
        b.weights = W.make(spec_net, seed)
        b.notes.append(f"no .caffemodel given: {b.spec.name}.npz holds random weights made from seed "
                       f"{seed}, not trained values (--weights MODEL.caffemodel imports the model's own)")
    return write(b, Path(out), prototxt, force, loss=loss)


def translate(prototxt: str | Path, weights: str | Path | None = None, name: str | None = None) -> SpecBuilder:
    """The whole translation, nothing written: a SpecBuilder holding the spec (valid) and, with
    WEIGHTS, the .caffemodel's weights; refused as a whole otherwise. Tests read a model too
    big to seed weights for (VGG-16) through this."""
    prototxt = Path(prototxt)
    net = _read_net(prototxt)
    blobs = _read_weights(Path(weights)) if weights else None
    b = SpecBuilder(name or net.name or prototxt.stem)
    layers = _layers(net)
    lstms = [lp for _, type_, _, _, lp in layers if type_ == "LSTM"]
    m = _Mapper(b, blobs, time_major=bool(lstms), conts={lp.bottom[1] for lp in lstms if len(lp.bottom) > 1})
    m.inputs(net)
    m.run(layers)
    m.finish()
    b.refuse_if_unsupported(str(prototxt))
    check_net(b.spec, prototxt)
    return b


def _check_seeded_size(net, source: Path) -> None:
    sizes = [math.prod(ws.shape) for ws in net.weight_specs().values()] or [0]
    need = 4 * sum(sizes) + 8 * max(sizes)
    if need > MAX_SEEDED_BYTES:
        raise ImportRefused(f"{source}: no .caffemodel given, and seeded weights for its {sum(sizes):,} "
                            f"parameters would take {need / 2**30:.1f} GiB of memory, over the import "
                            f"limit of {MAX_SEEDED_BYTES / 2**30:g} GiB (give --weights MODEL.caffemodel)")


CONT = object()      # stands for an LSTM `cont` input (dropped, see the module docstring)


class _Mapper:
    def __init__(self, b: SpecBuilder, blobs, time_major: bool = False, conts: set[str] = frozenset()):
        self.b, self.blobs = b, blobs
        self.time_major, self.conts = time_major, conts
        self.cur: dict[str, str] = {}      # Caffe blob name -> current spec blob
        self.rank: dict[str, int] = {}     # spec blob -> rank (for InnerProduct/Flatten)
        self.bn_pending: dict[str, str] = {}   # spec blob of a BatchNorm without Scale yet -> layer
        self.labels: set[str] = set()      # label Inputs made from data layers (dropped if unused)
        self.dropped: list[str] = []       # Accuracy and Silence layers

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
        if len(shape) > MAX_BLOB_AXES:
            self.b.problems.append(f"input {name!r} has {len(shape)} axes; a Caffe blob has at most {MAX_BLOB_AXES}")
            return
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
                self.dropped.append(f"{name} ({type_})")
                continue
            fn = getattr(self, f"op_{type_}", None)
            if fn is None:
                if type_ in DATA_TYPES:
                    self.b.problems.append(f"layer {name!r} ({type_}): its data carries no shapes zoo can read; "
                                           "import a deploy prototxt (Input layer or input_dim)")
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
            if (why := _arity(type_, bottoms, tops)) is not None:
                self.b.problems.append(f"layer {name!r} ({type_}): {why}")
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

    def finish(self):
        """After the last layer: label Inputs no loss reads go (their Accuracy layers were
        dropped), and the notes say what was dropped."""
        used = {b_ for l in self.b.spec.layer for b_ in l.bottom}
        for label in sorted(self.labels - used):
            idx = next(i for i, l in enumerate(self.b.spec.layer) if l.top[0] == label)
            del self.b.spec.layer[idx]
            self.b.notes.append(f"label Input {label!r} left out: no loss reads it")
        if self.dropped:
            self.b.notes.append(f"dropped {len(self.dropped)} layer(s) that compute no part of the network's "
                                f"function (metrics, sinks): {', '.join(self.dropped)}")

    def _data_layer(self, name, tops, batch: int, chw: list[int], why: str):
        """A data layer becomes an Input of the shape it feeds, its label top an INT64 Input."""
        if batch <= 0 or min(chw) <= 0:
            raise _Skip(f"no shape zoo can read (batch {batch}, image {chw}); import a deploy prototxt")
        self._input(tops[0], [batch] + chw)
        if len(tops) > 1:
            if tops[1] in self.conts:
                raise _Skip(f"its label top {tops[1]!r} is an LSTM's `cont` input")
            self._input(tops[1], [batch])
            label = self.cur[tops[1]]
            next(l for l in self.b.spec.layer if l.top[0] == label).input_param.dtype = spec_pb2.InputParam.INT64
            self.labels.add(label)
        self.b.notes.append(f"data layer {name!r} became Input {tops[0]!r} of shape {[batch] + chw}"
                            + (f" and label Input {tops[1]!r} ({batch},)" if len(tops) > 1 else "") + f": {why}")

    def _channels(self, tp, color: bool = True) -> tuple[int, str]:
        if len(tp.mean_value) > 1:
            return len(tp.mean_value), f"{len(tp.mean_value)} channels (one mean_value each)"
        if tp.force_gray or not color:
            return 1, "1 channel (grey images)"
        return COLOR_CHANNELS, f"{COLOR_CHANNELS} channels assumed (colour images; the database holds them)"

    def op_Data(self, name, xs, tops, lp):
        tp, dp = lp.transform_param, lp.data_param
        crop = tp.crop_size or dp.crop_size           # data_param.crop_size: the V1 place
        if not crop:
            raise _Skip("no crop_size: the image size is only in the database; import a deploy prototxt")
        c, why = self._channels(tp)
        self._data_layer(name, tops, int(dp.batch_size), [c, crop, crop],
                         f"batch_size {dp.batch_size}, crop_size {crop}, {why}")

    def op_ImageData(self, name, xs, tops, lp):
        tp, ip = lp.transform_param, lp.image_data_param
        crop = tp.crop_size or ip.crop_size
        h, w = (crop, crop) if crop else (ip.new_height, ip.new_width)
        if not (h and w):
            raise _Skip("neither crop_size nor new_height/new_width: the image size is in the files")
        c, why = self._channels(tp, ip.is_color)
        self._data_layer(name, tops, int(ip.batch_size), [c, int(h), int(w)],
                         f"batch_size {ip.batch_size}, image {h}x{w}, {why}")

    def op_MemoryData(self, name, xs, tops, lp):
        p = lp.memory_data_param
        self._data_layer(name, tops, int(p.batch_size), [int(p.channels), int(p.height), int(p.width)],
                         "the shape memory_data_param states")

    def op_Input(self, name, xs, tops, lp):
        if not lp.input_param.shape:
            raise _Skip("no input_param shape")
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
        if ws and (p.num_output <= 0 or ws[0].size % p.num_output):
            raise _Skip(f"weight blob {list(ws[0].shape)} does not fit num_output {p.num_output}")
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
        if rank == 0:
            raise _Skip("an axis of a scalar (a loss)")
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
        if ws and ws[2].size != 1:
            raise _Skip(f"the scale-factor blob has {ws[2].size} values, not 1")
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
        if len(xs) > 1:
            raise _Skip("Scale by a second bottom (not learned parameters)")
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
        h = int(p.num_output)
        if ws and (ws[0].ndim != 2 or ws[0].shape[0] != 4 * h or ws[1].size != 4 * h or ws[2].shape != (4 * h, h)):
            raise _Skip(f"blobs {[list(w.shape) for w in ws[:3]]} are not W_xc (4H, C), b_c (4H), "
                        f"W_hc (4H, H) for H = {h}")
        if ws:      # W_xc (4H, C), b_c (4H), W_hc (4H, H)
            self.b.weight(spec, "weight_ih", lstm_gates_from_caffe(ws[0]))
            self.b.weight(spec, "bias", lstm_gates_from_caffe(ws[1].reshape(-1)))
            self.b.weight(spec, "weight_hh", lstm_gates_from_caffe(ws[2]))

    def op_SoftmaxWithLoss(self, name, xs, tops, lp):
        from ..converters import caffe_pb2
        lossp = lp.loss_param
        if lossp.HasField("ignore_label"):
            raise _Skip("ignore_label (zoo's loss averages over every position)")
        if lossp.normalization == caffe_pb2.LossParameter.NONE:
            raise _Skip("normalization NONE (a sum; zoo's loss is the mean)")
        if self._axis(xs[0], int(lp.softmax_param.axis)) != self.rank.get(xs[0], 2) - 1:
            raise _Skip("classes on an axis other than the last (zoo's SoftmaxWithLoss: the last)")
        if len(xs) == 2:    # Caffe feeds labels as floats; zoo's labels are INT64 class ids
            producer = next(l for l in self.b.spec.layer if l.top[0] == xs[1])
            if producer.type == "Input":
                producer.input_param.dtype = spec_pb2.InputParam.INT64
        self._out(name, "SoftmaxWithLoss", xs, tops, 0, **_loss_weight(lp))

    def op_EuclideanLoss(self, name, xs, tops, lp):
        self._out(name, "EuclideanLoss", xs, tops, 0, **_loss_weight(lp))


def _loss_weight(lp) -> dict:
    """loss_param for a Caffe loss layer's loss_weight (GoogLeNet's auxiliary heads: 0.3)."""
    if not lp.loss_weight or lp.loss_weight[0] == 1.0:
        return {}
    return {"loss_param": {"loss_weight": float(lp.loss_weight[0])}}


class _Skip(Exception):
    pass


def _arity(type_: str, bottoms: list[str], tops: list[str]) -> str | None:
    """Why the layer's bottom or top count is not one Caffe's layer takes, or None."""
    for what, have, (least, most) in zip(("bottom", "top"), (bottoms, tops), ARITY.get(type_, ONE_TO_ONE)):
        if len(have) < least or (most is not None and len(have) > most):
            want = f"{least}" if least == most else f"{least} or more" if most is None else f"{least} to {most}"
            return f"has {len(have)} {what}s, takes {want}"
    return None


# zoo layer types of the Caffe layers whose name differs, or whose import is more than a rename
ZOO_TYPES = {
    "Data": "Input (+ INT64 label Input)", "ImageData": "Input (+ INT64 label Input)",
    "MemoryData": "Input (+ INT64 label Input)", "Input": "Input",
    "Split": "(the same blob)", "Embed": "Embedding", "Scale": "BatchNorm scale and shift (after a BatchNorm)",
    "BatchNorm": "BatchNorm", "LSTM": "LSTM (batch-first; `cont` dropped)",
    "InnerProduct": "InnerProduct (+ Flatten on a 4-D input)",
}


def coverage() -> dict[str, dict]:
    """What the Caffe importer maps: {Caffe layer type: {"zoo": zoo layer type(s), "v1": the V1
    `layers` enum name or ""}}, from the mapper's operator methods and the dropped types (for
    the README's table, scripts/coverage.py)."""
    v1 = {t: n for n, t in V1_TYPES.items()}
    table = {t: {"zoo": ZOO_TYPES.get(t, t), "v1": v1.get(t, "")}
             for t in (n[3:] for n in dir(_Mapper) if n.startswith("op_"))}
    table.update({t: {"zoo": "(dropped; the notes say so)", "v1": v1.get(t, "")} for t in DROPPED})
    return dict(sorted(table.items()))


__all__ = ["coverage", "import_caffe", "translate"]
