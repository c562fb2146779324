"""`zoo import model.onnx`: an ONNX model -> a zoo spec + weights.

Safety first, before anything is interpreted: the file's size is checked before it is read;
protobuf parse errors (deep nesting included) are refusals; external data must name a
relative path inside the model's folder (no absolute path, no "..", no symbolic or hard
link), with offset and length inside that file, and only the keys ONNX defines.

Then constant subgraphs (Constant, Shape of static shapes, Gather/Concat/Unsqueeze/... on
constants) are folded with ONNX's reference evaluator, and every remaining node is mapped
to a spec layer. Patterns that are one spec layer in several ONNX nodes are recognised:
Transpose(1,0,2) + LSTM + Squeeze + Transpose(1,0,2) (a batch-first LSTM), MatMul + Add (an
InnerProduct), Mul by a scalar into Sum (Eltwise coefficients), BatchNormalization followed
by a per-channel Mul/Add (folded into its scale and shift), and the explicit end padding zoo
writes for CEIL pooling. Unsupported operators are listed by name and count; nothing is
written unless everything maps.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .. import spec_pb2
from ..errors import ImportRefused
from ..files import open_regular, read_at_most
from ..layers.pooling import pool_out
from .common import SpecBuilder, check_file

PP, EW = spec_pb2.PoolingParam, spec_pb2.EltwiseParam
EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
MAX_EXTERNAL_BYTES = 8 * 2**30
FOLDABLE = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Reshape",
            "Slice", "Mul", "Add", "Sub", "Div", "ConstantOfShape", "Range", "Expand", "Identity",
            "Transpose", "Floor", "Ceil", "Equal", "Where", "ReduceProd", "Size"}


def _load(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    data = check_file(path)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as e:
        raise ImportRefused(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    _load_external(model, path.parent)
    return model


def _load_external(model, base: Path) -> None:
    from onnx import TensorProto
    base_real = base.resolve()
    total = 0
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    for t in tensors:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        unknown = set(info) - EXTERNAL_KEYS
        if unknown:
            raise ImportRefused(f"tensor {t.name!r}: unknown external-data keys {sorted(unknown)}")
        loc = info.get("location", "")
        p = Path(loc)
        if not loc or p.is_absolute() or ".." in p.parts:
            raise ImportRefused(f"tensor {t.name!r}: external data location {loc!r} must be a relative "
                                "path inside the model's folder")
        full = base / p
        try:
            full.lstat()
        except OSError:
            raise ImportRefused(f"tensor {t.name!r}: external data file {loc!r} does not exist") from None
        if full.is_symlink() or any(q.is_symlink() for q in full.parents if base in q.parents or q == base):
            raise ImportRefused(f"tensor {t.name!r}: external data {loc!r} goes through a symbolic link")
        if base_real not in full.resolve().parents:
            raise ImportRefused(f"tensor {t.name!r}: external data {loc!r} is outside the model's folder")
        refuse = lambda msg: ImportRefused(f"tensor {t.name!r}: external data {loc!r}: {msg}")  # noqa: E731
        with open_regular(full, refuse, follow_symlinks=False) as f:     # no FIFO, no device
            st = os.fstat(f.fileno())
            if st.st_nlink > 1:
                raise ImportRefused(f"tensor {t.name!r}: external data {loc!r} is a hard link")
            offset, length = _extent(t.name, info, st.st_size, loc)
            total += length
            if total > MAX_EXTERNAL_BYTES:
                raise ImportRefused(f"external data over the limit of {MAX_EXTERNAL_BYTES} bytes")
            f.seek(offset)
            t.raw_data = read_at_most(f, length)
        if len(t.raw_data) != length:
            raise ImportRefused(f"tensor {t.name!r}: external data {loc!r} changed while read")
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]


def _extent(name: str, info: dict, size: int, loc: str) -> tuple[int, int]:
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", size - offset))
    except ValueError:
        raise ImportRefused(f"tensor {name!r}: external data offset/length are not integers") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise ImportRefused(f"tensor {name!r}: external data [{offset}, {offset + length}) is outside "
                            f"{loc!r} ({size} bytes)")
    return offset, length


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _fold_constants(model, batch: int):
    """Values known at import time: initializers, Constant nodes, and whatever folds.

    Only what a kept (mapped) node or a graph output reads is folded, and each folded
    output's size is computed from its inputs before the evaluator allocates it: the total
    stays within FOLD_FLOOR_ELEMENTS or twice the model's own weights, whichever is more."""
    import onnx
    from onnx import numpy_helper

    # concrete batch: a symbolic first dimension of every input is the import batch
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) and not dims[0].dim_value:
            dims[0].dim_value = batch
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shapes are a help for folding, not a requirement
        inferred = model
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    const = {}
    for t in model.graph.initializer:
        try:
            const[t.name] = numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:
            raise ImportRefused(f"initializer {t.name!r}: its data does not match its type and "
                                f"shape ({e})") from None
    budget = _Budget(max(FOLD_FLOOR_ELEMENTS, 2 * sum(v.size for v in const.values())))
    nodes = list(model.graph.node)
    plan = _fold_plan(nodes, set(const), shapes)
    used = _used_by_kept(nodes, plan, {o.name for o in model.graph.output})
    remaining = []
    for i, node in enumerate(nodes):
        if plan[i] == "keep":
            remaining.append(node)
        elif i not in used:
            continue                   # a constant nothing kept reads: never computed
        elif plan[i] == "shape":
            a = _attrs(node)
            s = np.array(shapes[node.input[0]], dtype=np.int64)[a.get("start", 0):a.get("end", None)]
            const[node.output[0]] = s
        elif not (all(x in const for x in node.input if x) and _fold(node, const, budget, model)):
            remaining.append(node)
    return const, remaining, shapes


FOLD_FLOOR_ELEMENTS = 2**24   # constants any model may fold (shapes, small tables), weights or not


class _Budget:
    def __init__(self, limit: int):
        self.limit, self.left = limit, limit

    def spend(self, node, n: int) -> None:
        if n > self.left:
            raise ImportRefused(f"{node.op_type} node {node.name or node.output[0]!r}: folding it would "
                                f"make {n} elements, over the limit of {self.limit} for constants "
                                "(twice the model's weights, at least 2**24)")
        self.left -= n


def _fold_plan(nodes, known: set[str], shapes: dict) -> list[str]:
    """Per node: "shape" (a Shape of a static shape), "fold" (a foldable op of values known
    at import time) or "keep" (mapped to a layer)."""
    plan = []
    for node in nodes:
        if node.op_type == "Shape" and shapes.get(node.input[0]) and None not in shapes[node.input[0]]:
            plan.append("shape")
        elif node.op_type in FOLDABLE and all(i in known for i in node.input if i):
            plan.append("fold")
        else:
            plan.append("keep")
            continue
        known.update(node.output)
    return plan


def _used_by_kept(nodes, plan: list[str], outputs: set[str]) -> set[int]:
    """Indices of the folding nodes whose values kept nodes or graph outputs read."""
    producer = {o: i for i, n in enumerate(nodes) if plan[i] != "keep" for o in n.output}
    wanted = set(outputs) | {x for i, n in enumerate(nodes) if plan[i] == "keep" for x in n.input}
    stack = [producer[v] for v in wanted if v in producer]
    used = set()
    while stack:
        i = stack.pop()
        if i not in used:
            used.add(i)
            stack += [producer[x] for x in nodes[i].input if x in producer]
    return used


def _fold(node, const: dict, budget: _Budget, model) -> bool:
    """Evaluate one node on constants, its output size bounded first; False if it cannot."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    n = _fold_size(node, const)
    if n is None:
        return False               # size not known beforehand: not folded (mapped or refused)
    budget.spend(node, n)
    try:
        ref = ReferenceEvaluator(onnx.helper.make_model(
            onnx.helper.make_graph([node], "fold", [], [onnx.helper.make_tensor_value_info(o, 0, None)
                                                       for o in node.output],
                                   [numpy_helper.from_array(const[i], i) for i in node.input if i]),
            opset_imports=model.opset_import))
        values = [np.asarray(v) for v in ref.run(None, {})]
    except Exception:  # noqa: BLE001 - not foldable after all: map it instead
        return False
    if sum(v.size for v in values) > n:
        raise ImportRefused(f"{node.op_type} node {node.name or node.output[0]!r}: folded to more "
                            f"elements than its inputs allow")
    const.update(zip(node.output, values))
    return True


def _fold_size(node, const: dict) -> int | None:
    """Elements of the node's outputs (an upper bound), from its constant inputs' values and
    shapes, before anything is allocated; None if it cannot be told."""
    xs = [const[i] for i in node.input if i]
    a = _attrs(node)
    op = node.op_type
    try:
        if op == "Constant":
            t = a.get("value")
            if t is not None:
                return math.prod(t.dims)
            if any(k in a for k in ("value_float", "value_int", "value_string")):
                return 1
            v = next((a[k] for k in ("value_floats", "value_ints", "value_strings") if k in a), None)
            return len(v) if v is not None else None     # sparse_value: not folded
        if op == "ConstantOfShape":
            dims = [int(d) for d in xs[0].reshape(-1)]
            return math.prod(dims) if all(d >= 0 for d in dims) else None
        if op == "Expand":
            out = _broadcast(xs[0].shape, [int(d) for d in xs[1].reshape(-1)])
            return None if out is None else math.prod(out)
        if op == "Range":
            start, limit, delta = (float(np.asarray(x).reshape(())) for x in xs)
            steps = (limit - start) / delta if delta else math.inf
            return max(math.ceil(steps), 0) if math.isfinite(steps) else None
        if op in ("Mul", "Add", "Sub", "Div", "Equal", "Where"):
            out = _broadcast(*(x.shape for x in xs))
            return None if out is None else math.prod(out)
        if op == "Gather":
            data, idx = xs
            axis = int(a.get("axis", 0)) % max(data.ndim, 1)
            return idx.size * math.prod(data.shape[:axis] + data.shape[axis + 1:])
    except (ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError):
        return None
    return sum(x.size for x in xs) + 64   # moves or reduces its inputs; Shape/Size are small


def _broadcast(*shapes) -> list[int] | None:
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(int(d) for d in s) for s in shapes]):
        big = {d for d in dims if d != 1}
        if len(big) > 1 or any(d < 0 for d in big):
            return None
        out.append(big.pop() if big else 1)
    return out


def import_onnx(path: str | Path, out: str | Path, batch: int = 1):
    from .. import net as N
    from .common import write

    path = Path(path)
    model = _load(path)
    const, nodes, shapes = _fold_constants(model, batch)
    b = SpecBuilder(model.graph.name or path.stem)
    _Mapper(b, const, nodes, shapes, model).run()
    b.refuse_if_unsupported(str(path))
    return write(b, Path(out), lambda spec: N.Net(spec))


class _Mapper:
    def __init__(self, b: SpecBuilder, const, nodes, shapes, model):
        self.b, self.const, self.nodes, self.shapes, self.model = b, const, nodes, shapes, model
        self.blob = {}          # ONNX value -> spec blob
        self.tm = {}            # ONNX value -> spec blob it is the (T, N, ...) transpose of
        self.lstm_y = {}        # LSTM Y output (T, 1, N, H) -> spec LSTM blob
        self.scaled = {}        # ONNX value -> (spec blob, coefficient) for Mul by a scalar
        self.bn = {}            # spec blob of a BatchNorm -> layer name (for Mul/Add folding)
        self.consumers = Counter(i for n in nodes for i in n.input)
        self.consumers.update(o.name for o in model.graph.output)

    def run(self):
        from onnx import TensorProto
        init = {t.name for t in self.model.graph.initializer}
        for inp in self.model.graph.input:
            if inp.name in init:
                continue
            tt = inp.type.tensor_type
            dims = [d.dim_value for d in tt.shape.dim]
            if any(d <= 0 for d in dims):
                self.b.problems.append(f"input {inp.name!r} has a dynamic size besides the batch")
                continue
            name = self.b.unique(inp.name)
            lp = self.b.layer(name, "Input", [], input_param={"shape": dims})
            if tt.elem_type in (TensorProto.INT32, TensorProto.INT64):
                lp.input_param.dtype = spec_pb2.InputParam.INT64
            self.blob[inp.name] = name
        for node in self.nodes:
            fn = getattr(self, f"op_{node.op_type}", None)
            if fn is None:
                self.b.unsupported[node.op_type] += 1
                continue
            try:
                fn(node, _attrs(node))
            except _Skip as e:
                self.b.problems.append(f"{node.op_type} node {node.name or node.output[0]!r}: {e}")
        for o in self.model.graph.output:
            if o.name not in self.blob and not self.b.unsupported and not self.b.problems:
                self.b.problems.append(f"output {o.name!r} is not computed by a supported layer")

    # --- helpers ------------------------------------------------------------------------
    def x(self, name: str) -> str:
        if name in self.blob:
            return self.blob[name]
        if name in self.tm:
            raise _Skip("a (time, batch) transpose is only expressible around an LSTM")
        if name in self.scaled:
            raise _Skip("a product with a constant is only expressible inside a Sum")
        raise _Skip(f"input {name!r} is not computed by a supported layer")

    def c(self, name: str):
        return self.const.get(name)

    def out(self, node, type_: str, bottoms: list[str], **params) -> str:
        name = self.b.unique(node.name or node.output[0])
        self.b.layer(name, type_, bottoms, **params)
        self.blob[node.output[0]] = name
        return name

    # --- operators --------------------------------------------------------------------------
    def op_Identity(self, node, a):
        src = node.input[0]
        for table in (self.blob, self.tm, self.scaled):
            if src in table:
                table[node.output[0]] = table[src]
                return
        raise _Skip("Identity of an unsupported value")

    def op_Dropout(self, node, a):
        ratio = a.get("ratio", 0.5)
        if len(node.input) > 1 and node.input[1] and self.c(node.input[1]) is not None:
            ratio = float(self.c(node.input[1]))
        self.out(node, "Dropout", [self.x(node.input[0])], dropout_param={"dropout_ratio": float(ratio)})

    def op_Relu(self, node, a):
        self.out(node, "ReLU", [self.x(node.input[0])])

    def op_Sigmoid(self, node, a):
        self.out(node, "Sigmoid", [self.x(node.input[0])])

    def op_Tanh(self, node, a):
        self.out(node, "TanH", [self.x(node.input[0])])

    def op_Softmax(self, node, a):
        self.out(node, "Softmax", [self.x(node.input[0])], softmax_param={"axis": int(a.get("axis", -1))})

    def op_LRN(self, node, a):
        self.out(node, "LRN", [self.x(node.input[0])], lrn_param={
            "local_size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)),
            "beta": float(a.get("beta", 0.75)), "k": float(a.get("bias", 1.0))})

    def op_Flatten(self, node, a):
        if int(a.get("axis", 1)) != 1:
            raise _Skip("Flatten with axis != 1 merges the batch axis")
        self.out(node, "Flatten", [self.x(node.input[0])], flatten_param={"axis": 1})

    def op_Reshape(self, node, a):
        shape = self.c(node.input[1])
        if shape is None:
            raise _Skip("Reshape to a shape not known at import time")
        shape = [int(v) for v in shape]
        if a.get("allowzero", 0) and 0 in shape:
            raise _Skip("Reshape with allowzero")
        in_shape = self.shapes.get(node.input[0]) or []
        if shape and in_shape and shape[0] in (in_shape[0], -1, 0):
            shape[0] = 0      # keep the batch axis
        if shape and shape[0] != 0:
            raise _Skip(f"Reshape to {shape} changes the batch axis")
        rest = int(np.prod(in_shape[1:])) if len(in_shape) > 2 and None not in in_shape else None
        if len(in_shape) > 2 and shape[1:] in ([-1], [rest]):
            # torch.flatten(x, 1) and x.view(N, -1) export as Reshape: it is a Flatten
            self.out(node, "Flatten", [self.x(node.input[0])], flatten_param={"axis": 1})
            return
        self.out(node, "Reshape", [self.x(node.input[0])], reshape_param={"shape": shape})

    def op_Concat(self, node, a):
        self.out(node, "Concat", [self.x(i) for i in node.input], concat_param={"axis": int(a["axis"])})

    def op_Max(self, node, a):
        self.out(node, "Eltwise", [self.x(i) for i in node.input], eltwise_param={"operation": EW.MAX})

    def op_Sum(self, node, a):
        terms = []
        for i in node.input:
            if i in self.scaled:
                terms.append(self.scaled[i])
            else:
                terms.append((self.x(i), 1.0))
        params = {"operation": EW.SUM}
        if any(c != 1.0 for _, c in terms):
            params["coeff"] = [float(c) for _, c in terms]
        self.out(node, "Eltwise", [t for t, _ in terms], eltwise_param=params)

    def _per_channel(self, value, blob_name) -> np.ndarray | None:
        v = np.asarray(value)
        if v.ndim in (3, 4) and v.size == v.shape[-3] and v.shape[-1] == v.shape[-2] == 1:
            return v.reshape(-1)
        return None

    def op_Add(self, node, a):
        consts = [self.c(i) for i in node.input]
        if consts[0] is None and consts[1] is None:
            self.op_Sum(node, a)
            return
        x_name = node.input[0] if consts[0] is None else node.input[1]
        k = consts[1] if consts[0] is None else consts[0]
        blob = self.x(x_name)
        # MatMul + Add(bias): an InnerProduct with a bias (the MatMul made it without)
        if blob in self.b.used and self._layer(blob).type == "InnerProduct" and \
                not self._layer(blob).inner_product_param.bias_term and k.ndim == 1 and \
                self.consumers[x_name] == 1:
            lp = self._layer(blob)
            lp.inner_product_param.bias_term = True
            self.b.weight(lp.name, "bias", k)
            self.blob[node.output[0]] = blob
            return
        ch = self._per_channel(k, blob)
        if blob in self.bn and ch is not None and self.consumers[x_name] == 1:
            self.b.weights[f"{self.bn[blob]}.beta"] = (self.b.weights[f"{self.bn[blob]}.beta"] + ch).astype(np.float32)
            self.blob[node.output[0]] = blob
            self.bn[blob] = self.bn[blob]
            return
        raise _Skip("Add of a constant that is neither an InnerProduct bias nor a BatchNorm shift")

    def op_Mul(self, node, a):
        consts = [self.c(i) for i in node.input]
        if consts[0] is None and consts[1] is None:
            self.out(node, "Eltwise", [self.x(i) for i in node.input], eltwise_param={"operation": EW.PROD})
            return
        x_name = node.input[0] if consts[0] is None else node.input[1]
        k = np.asarray(consts[1] if consts[0] is None else consts[0])
        if k.size == 1 and x_name in self.blob:
            self.scaled[node.output[0]] = (self.blob[x_name], float(k.reshape(())))
            return
        blob = self.x(x_name)
        ch = self._per_channel(k, blob)
        if blob in self.bn and ch is not None and self.consumers[x_name] == 1:
            ln = self.bn[blob]
            self.b.weights[f"{ln}.gamma"] = (self.b.weights[f"{ln}.gamma"] * ch).astype(np.float32)
            self.b.weights[f"{ln}.beta"] = (self.b.weights[f"{ln}.beta"] * ch).astype(np.float32)
            self.blob[node.output[0]] = blob
            return
        raise _Skip("Mul by a constant that is neither a scalar in a Sum nor a BatchNorm scale")

    def _layer(self, blob: str):
        for lp in self.b.spec.layer:
            if lp.top and lp.top[0] == blob:
                return lp
        raise KeyError(blob)

    def op_Gemm(self, node, a):
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise _Skip("Gemm with transA, alpha or beta")
        w = self.c(node.input[1])
        if w is None:
            raise _Skip("Gemm with a non-constant weight")
        w = w if a.get("transB", 0) else w.T
        bias = self.c(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        name = self.out(node, "InnerProduct", [self.x(node.input[0])], inner_product_param={
            "num_output": int(w.shape[0]), "bias_term": bias is not None})
        self.b.weight(name, "weight", w)
        if bias is not None:
            self.b.weight(name, "bias", np.broadcast_to(bias, (w.shape[0],)))

    def op_MatMul(self, node, a):
        w = self.c(node.input[1])
        if w is None or w.ndim != 2:
            raise _Skip("MatMul with a non-constant or non-2-D right operand")
        name = self.out(node, "InnerProduct", [self.x(node.input[0])], inner_product_param={
            "num_output": int(w.shape[1]), "bias_term": False})
        self.b.weight(name, "weight", w.T)

    def op_Conv(self, node, a):
        w = self.c(node.input[1])
        if w is None or w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise _Skip("Conv needs a constant square 2-D kernel")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        strides, dil = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
        if len(set(pads)) != 1 or strides[0] != strides[1] or dil[0] != dil[1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise _Skip(f"Conv with asymmetric or automatic padding, or unequal strides ({pads}, {strides})")
        bias = self.c(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        name = self.out(node, "Convolution", [self.x(node.input[0])], convolution_param={
            "num_output": int(w.shape[0]), "kernel_size": int(w.shape[2]), "stride": int(strides[0]),
            "pad": int(pads[0]), "dilation": int(dil[0]), "group": int(a.get("group", 1)),
            "bias_term": bias is not None})
        self.b.weight(name, "weight", w)
        if bias is not None:
            self.b.weight(name, "bias", bias)

    def _pool(self, node, a, pool: int):
        k = list(a["kernel_shape"])
        s = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if k[0] != k[1] or s[0] != s[1] or a.get("dilations", [1, 1]) != [1, 1]:
            raise _Skip("pooling with a non-square kernel, unequal strides or dilation")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise _Skip("pooling with automatic padding")
        pad = pads[0]
        if pads[0] != pads[1] or pads[2] != pads[3] or pads[2] < pad:
            raise _Skip(f"pooling with asymmetric padding {pads}")
        ceil = bool(a.get("ceil_mode", 0))
        in_shape = self.shapes.get(node.input[0]) or []
        if pads[2] > pad:
            # zoo writes CEIL as FLOOR with the overhang as explicit end padding: recognise it
            if ceil or len(in_shape) != 4 or None in in_shape:
                raise _Skip(f"pooling with asymmetric padding {pads}")
            h, w = in_shape[2], in_shape[3]
            fl = (pool_out(h + pads[2] - pad, k[0], s[0], pad, False), pool_out(w + pads[3] - pad, k[0], s[0], pad, False))
            ce = (pool_out(h, k[0], s[0], pad, True), pool_out(w, k[0], s[0], pad, True))
            if fl != ce or (pool == PP.AVE and a.get("count_include_pad", 0)):
                raise _Skip(f"pooling with asymmetric padding {pads}")
            ceil = True
        params = {"pool": pool, "kernel_size": int(k[0]), "stride": int(s[0]), "pad": int(pad),
                  "round_mode": PP.CEIL if ceil else PP.FLOOR}
        if pool == PP.AVE and (pad > 0 or ceil):     # otherwise every window is whole: no divisor rule
            params["avg_divisor"] = PP.PADDED if a.get("count_include_pad", 0) else PP.VALID
        self.out(node, "Pooling", [self.x(node.input[0])], pooling_param=params)

    def op_MaxPool(self, node, a):
        if len(node.output) > 1 and node.output[1]:
            raise _Skip("MaxPool with indices")
        self._pool(node, a, PP.MAX)

    def op_AveragePool(self, node, a):
        self._pool(node, a, PP.AVE)

    def op_GlobalAveragePool(self, node, a):
        self.out(node, "Pooling", [self.x(node.input[0])], pooling_param={"pool": PP.AVE, "global_pooling": True})

    def op_GlobalMaxPool(self, node, a):
        self.out(node, "Pooling", [self.x(node.input[0])], pooling_param={"pool": PP.MAX, "global_pooling": True})

    def op_BatchNormalization(self, node, a):
        scale, shift, mean, var = (self.c(i) for i in node.input[1:5])
        if any(v is None for v in (scale, shift, mean, var)):
            raise _Skip("BatchNormalization with non-constant parameters")
        name = self.out(node, "BatchNorm", [self.x(node.input[0])],
                        batch_norm_param={"eps": float(a.get("epsilon", 1e-5))})
        for key, v in (("gamma", scale), ("beta", shift), ("running_mean", mean), ("running_var", var)):
            self.b.weight(name, key, v)
        self.bn[self.blob[node.output[0]]] = name

    def op_Gather(self, node, a):
        table = self.c(node.input[0])
        if table is None or int(a.get("axis", 0)) != 0 or table.ndim != 2:
            raise _Skip("Gather other than rows of a constant 2-D table (an embedding)")
        name = self.out(node, "Embedding", [self.x(node.input[1])], embedding_param={
            "input_dim": int(table.shape[0]), "num_output": int(table.shape[1])})
        self.b.weight(name, "weight", table)

    def op_Transpose(self, node, a):
        perm = list(a.get("perm", []))
        src = node.input[0]
        if perm == [1, 0, 2]:
            if src in self.tm:                       # back to batch-first
                self.blob[node.output[0]] = self.tm[src]
                return
            if src in self.blob:
                self.tm[node.output[0]] = self.blob[src]
                return
        raise _Skip(f"Transpose {perm} is not expressible (only around an LSTM)")

    def op_Squeeze(self, node, a):
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = [int(v) for v in self.c(node.input[1])]
        if node.input[0] in self.lstm_y and list(axes or []) == [1]:
            self.tm[node.output[0]] = self.lstm_y[node.input[0]]
            return
        raise _Skip("Squeeze other than of an LSTM's direction axis")

    def op_LSTM(self, node, a):
        if node.input[0] not in self.tm:
            raise _Skip("LSTM whose input is not a batch-first blob transposed to (T, N, C)")
        if a.get("direction", b"forward") not in (b"forward", "forward") or a.get("layout", 0) or \
                a.get("activations") or a.get("clip") or a.get("input_forget", 0):
            raise _Skip("LSTM other than forward, default activations, layout 0")
        w, r = self.c(node.input[1]), self.c(node.input[2])
        bias = self.c(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        for i in (5, 6):   # initial_h, initial_c must be absent or zero
            if len(node.input) > i and node.input[i]:
                v = self.c(node.input[i])
                if v is None or np.any(v != 0):
                    raise _Skip("LSTM with a non-zero initial state")
        if len(node.input) > 4 and node.input[4]:
            raise _Skip("LSTM with sequence_lens")
        if w is None or r is None:
            raise _Skip("LSTM with non-constant weights")
        h = int(a["hidden_size"])
        name = self.b.unique(node.name or node.output[0])
        self.b.layer(name, "LSTM", [self.tm[node.input[0]]], lstm_param={"num_output": h})
        b = np.zeros(8 * h, np.float32) if bias is None else bias.reshape(-1)
        self.b.weight(name, "weight_ih", lstm_from_onnx(w[0]))
        self.b.weight(name, "weight_hh", lstm_from_onnx(r[0]))
        self.b.weight(name, "bias", lstm_from_onnx(b[:4 * h] + b[4 * h:]))
        self.lstm_y[node.output[0]] = name
        for o in node.output[1:]:
            if o and self.consumers[o]:
                raise _Skip("LSTM whose final states are used")


class _Skip(Exception):
    pass


def lstm_from_onnx(a: np.ndarray) -> np.ndarray:
    """ONNX stacks gates i, o, f, c; zoo i, f, g, o (g = ONNX's c)."""
    i, o, f, c = np.split(np.asarray(a), 4, axis=0)
    return np.concatenate([i, f, c, o], axis=0)
