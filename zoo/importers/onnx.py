"""`zoo import model.onnx`: an ONNX model -> a zoo spec + weights.

Safety first, before anything is interpreted: the file's size is checked before it is read;
protobuf parse errors (deep nesting included) are refusals; external data must name a
relative path inside the model's folder (no absolute path, no "..", no symbolic or hard
link), with offset and length inside that file, and only the keys ONNX defines.

Every node zoo interprets is then checked against its operator's schema at the model's opset
(input and output counts, required attributes, attribute types), names must be UTF-8, and
nodes of other domains are never taken for ONNX's. Then constant subgraphs (Constant, Shape of static shapes, Gather/Concat/Unsqueeze/... on
constants) are folded with ONNX's reference evaluator, and every remaining node is mapped
to a spec layer. Patterns that are one spec layer in several ONNX nodes are recognised:
Transpose(1,0,2) + LSTM + Squeeze + Transpose(1,0,2) (a batch-first LSTM), MatMul + Add (an
InnerProduct), Mul by a scalar into Sum (Eltwise coefficients), BatchNormalization followed
by a per-channel Mul/Add (folded into its scale and shift), and the explicit end padding zoo
writes for CEIL pooling; the modern exporters' forms are pattern rules in onnx_patterns.py.
A value whose batch axis is not first (torch's sequence-first attention: Transpose(1, 0, 2),
(T, N*H, d) and (T*N, D) reshapes) is kept as a view of a batch-first blob
(onnx_patterns.Moved) until it is batch-first again. Softmax before opset 13 (over all axes
from `axis` on) is spelled out as Reshape, Softmax, Reshape. Unsupported operators are listed
by name and count; nothing is written unless everything maps. The graph's output names
become the spec's blob names.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .. import spec_pb2
from ..errors import ImportRefused
from ..files import open_regular, read_at_most
from ..layers.pooling import pool_out
from .common import SpecBuilder, check_file, sanitize, write
from . import onnx_patterns as P
from .onnx_patterns import MAX_OPSET, RULES, Skip as _Skip, constant_operand, parameter, silu_from_mul

PP, EW = spec_pb2.PoolingParam, spec_pb2.EltwiseParam
EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
MAX_EXTERNAL_BYTES = 8 * 2**30
FOLDABLE = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Reshape",
            "Slice", "Mul", "Add", "Sub", "Div", "ConstantOfShape", "Range", "Expand", "Identity",
            "Transpose", "Floor", "Ceil", "Equal", "Where", "ReduceProd", "Size", "Pow", "Sqrt", "Mod"}


def _load(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    data = check_file(path)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as e:
        raise ImportRefused(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    _check_text(model, path)
    with _naming(path):
        _load_external(model, path.parent)
    return model


@contextlib.contextmanager
def _naming(path: Path):
    """Refusals from the steps that do not know the file's name get it in front."""
    try:
        yield
    except ImportRefused as e:
        raise ImportRefused(f"{path}: {e}") from None


def _check_text(model, path: Path) -> None:
    """Every name zoo reads is text: ONNX's string fields are not checked for UTF-8 when parsed,
    and protobuf returns the bytes of an invalid one."""
    g = model.graph
    tensors = list(g.initializer) + [a.t for n in g.node for a in n.attribute if a.HasField("t")]
    texts = [g.name, *(o.domain for o in model.opset_import),
             *(v.name for v in list(g.input) + list(g.output) + list(g.value_info)),
             *(t.name for t in tensors), *(x for t in tensors for e in t.external_data for x in (e.key, e.value))]
    for n in g.node:
        texts += [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ImportRefused(f"{path}: a name in the model is not valid UTF-8 text ({bytes(bad)[:40]!r})")


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
        refuse = lambda msg, t=t, loc=loc: ImportRefused(f"tensor {t.name!r}: external data {loc!r}: {msg}")  # noqa: E731
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
    # concrete batch: a symbolic first dimension of every input is the import batch
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) and not dims[0].dim_value:
            dims[0].dim_value = batch
    const = _initializers(model)
    inferred = _infer_shapes(model, const)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
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
SHAPE_DATA_ELEMENTS = 4096    # initializers shape inference sees with their values (shapes, axes)


def _initializers(model) -> dict[str, np.ndarray]:
    """The initializers as arrays. Each tensor's data is dropped from the model once it is an
    array, so the weights are held once (vit_b_16: 330 MB, not twice that)."""
    import onnx
    from onnx import numpy_helper

    const = {}
    known_types = onnx.helper.get_all_tensor_dtypes()
    for t in model.graph.initializer:
        if t.data_type not in known_types:
            raise ImportRefused(f"initializer {t.name!r}: data type {t.data_type} is not an ONNX tensor type")
        try:
            const[t.name] = numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:
            raise ImportRefused(f"initializer {t.name!r}: its data does not match its type and "
                                f"shape ({e})") from None
        for field in ("raw_data", "float_data", "double_data", "int32_data", "int64_data", "uint64_data"):
            t.ClearField(field)
    return const


def _infer_shapes(model, const: dict):
    """ONNX shape inference (with data propagation, for shapes computed in the graph) on a
    copy of the graph in which the large initializers are inputs of their type and shape:
    their values are never needed, and the copy stays small."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inputs = list(g.input)
    listed = {i.name for i in inputs}
    small = []
    for t in g.initializer:
        v = const[t.name]
        if v.size <= SHAPE_DATA_ELEMENTS:
            small.append(numpy_helper.from_array(v, t.name))
        elif t.name not in listed:
            inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(v.shape)))
    light = helper.make_model(helper.make_graph(list(g.node), g.name, inputs, list(g.output), small,
                                                value_info=list(g.value_info)),
                              opset_imports=list(model.opset_import), ir_version=max(model.ir_version, 4))
    try:
        return onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception:  # noqa: BLE001 - shapes are a help for folding, not a requirement
        return light


class _Budget:
    def __init__(self, limit: int):
        self.limit, self.left = limit, limit

    def spend(self, node, n: int) -> None:
        if n > self.left:
            raise ImportRefused(f"{node.op_type} node {_label(node)}: folding it would "
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
        raise ImportRefused(f"{node.op_type} node {_label(node)}: folded to more "
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
        if op in ("Mul", "Add", "Sub", "Div", "Equal", "Where", "Pow"):
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


def import_onnx(path: str | Path, out: str | Path, batch: int = 1, name: str | None = None,
                force: bool = False, loss: str | None = None):
    path = Path(path)
    model = _load(path)
    opset = _check_nodes(model, path)
    with _naming(path):
        const, nodes, shapes = _fold_constants(model, batch)
    b = SpecBuilder(name or model.graph.name or path.stem)
    m = _Mapper(b, const, nodes, shapes, model, opset)
    m.run()
    b.refuse_if_unsupported(str(path))
    m.name_outputs()
    return write(b, Path(out), path, force, loss=loss)


def _label(node) -> str:
    """How a node is named in messages: its name, else its first output."""
    if node.name or node.output:
        return repr(node.name or node.output[0])
    return "(unnamed, no outputs)"


def _check_nodes(model, path: Path) -> int:
    """The model's ONNX operator set version, after checking every node zoo interprets (folds
    or maps) against its operator's schema at that version: input and output counts, required
    inputs present, attribute names and types. The code after this can rely on them."""
    import onnx
    from onnx import checker

    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = opsets.get("ai.onnx")
    if opset is None or opset < 1:
        raise ImportRefused(f"{path}: the model names no ONNX operator set version (opset_import)")
    ctx = checker.C.CheckerContext()
    ctx.ir_version = model.ir_version if model.ir_version > 0 else onnx.IR_VERSION
    ctx.opset_imports = {("" if d == "ai.onnx" else d): v for d, v in opsets.items()}
    for node in model.graph.node:
        if not _is_onnx_domain(node) or not (node.op_type in FOLDABLE or node.op_type in RULES
                                             or hasattr(_Mapper, f"op_{node.op_type}")):
            continue                  # not interpreted: listed as unsupported by the mapper
        try:
            checker.check_node(node, ctx)
        except checker.ValidationError as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ImportRefused(f"{path}: {node.op_type} node {_label(node)}: not a valid {node.op_type} "
                                f"of opset {opset}: {msg}") from None
    return opset


def _is_onnx_domain(node) -> bool:
    return node.domain in ("", "ai.onnx")


class _Mapper:
    def __init__(self, b: SpecBuilder, const, nodes, shapes, model, opset: int):
        self.b, self.const, self.nodes, self.shapes, self.model = b, const, nodes, shapes, model
        self.opset = opset
        self.blob = {}          # ONNX value -> spec blob
        self.tm = {}            # ONNX value -> spec blob it is the (T, N, ...) transpose of
        self.lstm_y = {}        # LSTM Y output (T, 1, N, H) -> spec LSTM blob
        self.scaled = {}        # ONNX value -> (spec blob, coefficient) for Mul by a scalar
        self.bn = {}            # spec blob of a BatchNorm -> layer name (for Mul/Add folding)
        self.consumers = Counter(i for n in nodes for i in n.input)
        self.consumers.update(o.name for o in model.graph.output)
        self.readers = {}       # ONNX value -> the kept nodes that read it (pattern rules)
        for n in nodes:
            for i in dict.fromkeys(n.input):
                self.readers.setdefault(i, []).append(n)
        self.producers = {o: n for n in nodes for o in n.output}
        self.deferred = {}      # Sigmoid output -> its input, made a SiLU by the Mul reading it
        self.done = set()       # id() of nodes a pattern rule has mapped already
        self.batch, self.first_input = None, None    # for Parameter layers
        self.moved = {}         # ONNX value -> onnx_patterns.Moved: its batch axis is not first

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
            if self.first_input is None:
                self.batch, self.first_input = dims[0] if dims else None, name
        for node in self.nodes:
            if id(node) in self.done:
                continue
            fn = self._rule(node)
            if fn is None:
                self.b.unsupported[node.op_type if _is_onnx_domain(node) else f"{node.domain}.{node.op_type}"] += 1
                continue
            try:
                fn(node, _attrs(node))
            except _Skip as e:
                self.b.problems.append(f"{node.op_type} node {_label(node)}: {e}")
        for o in self.model.graph.output:
            if o.name in self.scaled and o.name not in self.blob:
                with contextlib.suppress(_Skip):
                    self._scale_layer(o.name)
            if o.name in self.moved and not self.b.unsupported and not self.b.problems:
                self.b.problems.append(f"output {o.name!r} has its batch axis moved (zoo's blobs are batch-first)")
            elif o.name not in self.blob and not self.b.unsupported and not self.b.problems:
                self.b.problems.append(f"output {o.name!r} is not computed by a supported layer")

    def name_outputs(self) -> None:
        """The graph's outputs keep their ONNX names: the layer that computes one is named
        after it (so its blob is; a layer's top is its name, as everywhere in zoo)."""
        renamed = {}
        for o in self.model.graph.output:
            blob, new = self.blob.get(o.name), sanitize(o.name)
            lp = next((l for l in self.b.spec.layer if l.name == blob and l.type != "Input"), None)
            if lp is None or blob in renamed or not new or new in self.b.used:
                continue
            self.b.used.add(new)
            renamed[blob] = lp.name = new
            for key in [k for k in self.b.weights if k.rsplit(".", 1)[0] == blob]:
                self.b.weights[f"{new}.{key.rsplit('.', 1)[1]}"] = self.b.weights.pop(key)
        for lp in self.b.spec.layer:
            lp.top[:] = [renamed.get(t, t) for t in lp.top]
            lp.bottom[:] = [renamed.get(t, t) for t in lp.bottom]

    # --- helpers ------------------------------------------------------------------------
    def _rule(self, node):
        """The function that maps this node: a pattern rule, else an op_ method; None if none."""
        if not _is_onnx_domain(node):
            return None
        r = RULES.get(node.op_type)
        if r is not None and r.opsets[0] <= self.opset <= r.opsets[1]:
            return lambda n, a: r.fn(self, n, a)
        return getattr(self, f"op_{node.op_type}", None)

    def consumers_of(self, value: str) -> list:
        return self.readers.get(value, [])

    def producer(self, value: str):
        return self.producers.get(value)

    def lstm_input(self, node) -> bool:
        return any(n.op_type == "LSTM" for n in self.consumers_of(node.output[0]))

    def x(self, name: str) -> str:
        if name in self.blob:
            return self.blob[name]
        if name in self.tm:
            raise _Skip("a (time, batch) transpose is only expressible around an LSTM")
        if name in self.moved:
            v = self.moved[name]
            raise _Skip(f"{name!r} (shape {list(v.shape)}) has its batch axis moved to axis {v.j}: only "
                        "Transpose, Reshape, Unsqueeze, Squeeze, Gather and products with constants "
                        "over the last axis may read it")
        if name in self.scaled:
            return self._scale_layer(name)
        if name in self.deferred:
            raise _Skip("a Sigmoid deferred for a SiLU is read elsewhere")
        raise _Skip(f"input {name!r} is not computed by a supported layer")

    def _scale_layer(self, name: str) -> str:
        """A product with a scalar read outside a Sum: a Scale layer of one value."""
        blob, k = self.scaled[name]
        shape = self.shapes.get(name)
        if not shape:
            raise _Skip("a product with a constant of a blob of unknown rank")
        node = self.producer(name)
        ln = self.b.unique(node.name or name)
        self.b.layer(ln, "Scale", [blob], scale_param={"shape": [1] * (len(shape) - 1)})
        self.b.weight(ln, "scale", np.full([1] * (len(shape) - 1), k))
        self.blob[name] = ln
        return ln

    def c(self, name: str):
        """The constant value `name` (None if it is not one); only real numbers are values a
        layer can take (not strings, complex numbers or objects)."""
        v = self.const.get(name)
        if v is not None and np.asarray(v).dtype.kind not in "biuf":
            raise _Skip(f"constant {name!r} is of type {np.asarray(v).dtype}, not a real number")
        return v

    def c_ints(self, name: str, what: str) -> list[int] | None:
        """A constant 1-D integer tensor (a shape, axes) as a list; None if not constant."""
        v = self.c(name)
        if v is None:
            return None
        v = np.asarray(v)
        if v.ndim != 1 or v.dtype.kind not in "iu":
            raise _Skip(f"{what} {name!r} is a {v.dtype} tensor of shape {list(v.shape)}, not a 1-D integer one")
        return [int(d) for d in v]

    def c_scalar(self, name: str, what: str) -> float | None:
        v = self.c(name)
        if v is None:
            return None
        if np.asarray(v).size != 1:
            raise _Skip(f"{what} {name!r} has {np.asarray(v).size} values, not 1")
        return float(np.asarray(v).reshape(()))

    def out(self, node, type_: str, bottoms: list[str], **params) -> str:
        name = self.b.unique(node.name or node.output[0])     # outputs: checked by _check_nodes
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
        if len(node.output) > 1 and node.output[1] and self.consumers[node.output[1]]:
            raise _Skip("Dropout whose mask is used (zoo's Dropout has no mask output)")
        ratio = a.get("ratio", 0.5)
        if len(node.input) > 1 and node.input[1] and self.c(node.input[1]) is not None:
            ratio = self.c_scalar(node.input[1], "ratio")
        self.out(node, "Dropout", [self.x(node.input[0])], dropout_param={"dropout_ratio": float(ratio)})

    def op_Relu(self, node, a):
        self.out(node, "ReLU", [self.x(node.input[0])])

    def op_Tanh(self, node, a):
        self.out(node, "TanH", [self.x(node.input[0])])

    def op_Softmax(self, node, a):
        if self.opset < 13:
            # before opset 13 Softmax normalises over all axes from `axis` on (default 1) at
            # once, as a 2-D (outer, inner) matrix: spelled out as Reshape, Softmax, Reshape
            shape = self.shapes.get(node.input[0]) or []
            axis = int(a.get("axis", 1)) % len(shape) if shape else None
            if axis != len(shape) - 1:
                self._softmax_2d(node, shape, axis)
                return
        self.out(node, "Softmax", [self.x(node.input[0])], softmax_param={"axis": int(a.get("axis", -1))})

    def _softmax_2d(self, node, shape, axis) -> None:
        if axis is None or None in shape:
            raise _Skip(f"Softmax of opset {self.opset} over the trailing axes of a tensor of unknown shape")
        if axis == 0:
            raise _Skip(f"Softmax of opset {self.opset} over every axis, the batch axis included")
        base = self.b.unique(node.name or node.output[0])
        flat = self.b.unique(f"{base}_2d")
        self.b.layer(flat, "Reshape", [self.x(node.input[0])],
                     reshape_param={"shape": [0, *shape[1:axis], int(np.prod(shape[axis:]))]})
        soft = self.b.unique(f"{base}_softmax")
        self.b.layer(soft, "Softmax", [flat], softmax_param={"axis": -1})
        self.b.layer(base, "Reshape", [soft], reshape_param={"shape": [0, *shape[1:]]})
        self.blob[node.output[0]] = base

    def op_LRN(self, node, a):
        self.out(node, "LRN", [self.x(node.input[0])], lrn_param={
            "local_size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)),
            "beta": float(a.get("beta", 0.75)), "k": float(a.get("bias", 1.0))})

    def op_Flatten(self, node, a):
        if int(a.get("axis", 1)) != 1:
            raise _Skip("Flatten with axis != 1 merges the batch axis")
        self.out(node, "Flatten", [self.x(node.input[0])], flatten_param={"axis": 1})

    def op_Reshape(self, node, a):
        shape = self.c_ints(node.input[1], "shape")
        if shape is None:
            raise _Skip("Reshape to a shape not known at import time")
        if a.get("allowzero", 0) and 0 in shape:
            raise _Skip("Reshape with allowzero")
        if node.input[0] in self.moved:
            P.moved_reshape(self, node, self.moved[node.input[0]], shape)
            return
        in_shape = self.shapes.get(node.input[0]) or []
        target = list(shape)
        whole = len(shape) == 1 and len(in_shape) > 1     # everything, batch included, in 1-D
        if not whole and shape and (shape[0] in (-1, 0) or
                                    shape[0] == (in_shape[0] if in_shape and in_shape[0] else self.batch)):
            shape[0] = 0      # keep the batch axis
        if whole or (shape and shape[0] != 0):
            src = P.view(self, node.input[0])
            if src is None:
                raise _Skip(f"Reshape to {target} changes the batch axis")
            P.moved_reshape(self, node, src, target)    # the batch moves (or merges): a view
            return
        rest = int(np.prod(in_shape[1:])) if len(in_shape) > 2 and None not in in_shape else None
        if len(in_shape) > 2 and shape[1:] in ([-1], [rest]):
            # torch.flatten(x, 1) and x.view(N, -1) export as Reshape: it is a Flatten
            self.out(node, "Flatten", [self.x(node.input[0])], flatten_param={"axis": 1})
            return
        self.out(node, "Reshape", [self.x(node.input[0])], reshape_param={"shape": shape})

    def op_Concat(self, node, a):
        bottoms = [self.x(i) if self.c(i) is None else parameter(self, node, self.c(i)) for i in node.input]
        self.out(node, "Concat", bottoms, concat_param={"axis": int(a["axis"])})

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
        if self._moved_operand(node, consts, "Bias"):
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
            self._check_channels(ch, blob)
            self.b.weights[f"{self.bn[blob]}.beta"] = (self.b.weights[f"{self.bn[blob]}.beta"] + ch).astype(np.float32)
            self.blob[node.output[0]] = blob
            self.bn[blob] = self.bn[blob]
            return
        constant_operand(self, node, k, "Bias")

    def op_Mul(self, node, a):
        consts = [self.c(i) for i in node.input]
        if consts[0] is None and consts[1] is None and silu_from_mul(self, node):
            return
        if consts[0] is None and consts[1] is None:
            self.out(node, "Eltwise", [self.x(i) for i in node.input], eltwise_param={"operation": EW.PROD})
            return
        if self._moved_operand(node, consts, "Scale"):
            return
        x_name = node.input[0] if consts[0] is None else node.input[1]
        k = np.asarray(consts[1] if consts[0] is None else consts[0])
        if k.size == 1 and x_name in self.blob:
            self.scaled[node.output[0]] = (self.blob[x_name], float(k.reshape(())))
            return
        blob = self.x(x_name)
        ch = self._per_channel(k, blob)
        if blob in self.bn and ch is not None and self.consumers[x_name] == 1:
            self._check_channels(ch, blob)
            ln = self.bn[blob]
            self.b.weights[f"{ln}.gamma"] = (self.b.weights[f"{ln}.gamma"] * ch).astype(np.float32)
            self.b.weights[f"{ln}.beta"] = (self.b.weights[f"{ln}.beta"] * ch).astype(np.float32)
            self.blob[node.output[0]] = blob
            return
        constant_operand(self, node, k, "Scale")

    def _check_channels(self, ch: np.ndarray, blob: str) -> None:
        c = self.b.weights[f"{self.bn[blob]}.gamma"].size
        if ch.size not in (1, c):
            raise _Skip(f"a per-channel constant of {ch.size} values after a BatchNorm of {c} channels")

    def layer_of(self, blob: str):
        """The spec layer whose first top is `blob`, or None."""
        try:
            return self._layer(blob)
        except KeyError:
            return None

    def _moved_operand(self, node, consts, kind: str) -> bool:
        """Add/Mul reading a value whose batch axis moved; True if handled."""
        ins = [i for i, k in zip(node.input, consts) if k is None]
        if not any(i in self.moved for i in ins):
            return False
        if len(ins) != 1:
            raise _Skip(f"{node.op_type} of two values, one with its batch axis moved")
        P.moved_constant_operand(self, node, self.moved[ins[0]], next(k for k in consts if k is not None), kind)
        return True

    def _layer(self, blob: str):
        for lp in self.b.spec.layer:
            if lp.top and lp.top[0] == blob:
                return lp
        raise KeyError(blob)

    def op_Gemm(self, node, a):
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise _Skip("Gemm with transA, alpha or beta")
        w = self.c(node.input[1])
        if w is None or np.ndim(w) != 2:
            raise _Skip("Gemm with a non-constant or non-2-D weight")
        w = w if a.get("transB", 0) else w.T
        bias = self.c(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is not None and (np.shape(bias)[-1:] not in ((), (1,), (w.shape[0],)) or
                                 np.size(bias) not in (1, w.shape[0])):
            raise _Skip(f"Gemm bias of shape {list(np.shape(bias))} is not one per output ({w.shape[0]})")
        if node.input[0] in self.moved:
            bias = None if bias is None else np.broadcast_to(np.reshape(bias, -1), (w.shape[0],))
            P.moved_product(self, node, self.moved[node.input[0]], w.T, bias)
            return
        name = self.out(node, "InnerProduct", [self.x(node.input[0])], inner_product_param={
            "num_output": int(w.shape[0]), "bias_term": bias is not None})
        self.b.weight(name, "weight", w)
        if bias is not None:
            self.b.weight(name, "bias", np.broadcast_to(np.reshape(bias, -1), (w.shape[0],)))

    def op_Conv(self, node, a):
        w = self.c(node.input[1])
        if w is None or w.ndim != 4:
            raise _Skip("Conv needs a constant 2-D kernel")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        strides, dil = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
        if (len(pads), len(strides), len(dil)) != (4, 2, 2):
            raise _Skip(f"Conv attributes of the wrong length for a 2-D kernel ({pads}, {strides}, {dil})")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise _Skip("Conv with automatic padding")
        bias = self.c(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        params = {"num_output": int(w.shape[0]), "group": int(a.get("group", 1)), "bias_term": bias is not None}
        params.update(conv_window(w.shape[2:], strides, dil, pads))
        name = self.out(node, "Convolution", [self.x(node.input[0])], convolution_param=params)
        self.b.weight(name, "weight", w)
        if bias is not None:
            self.b.weight(name, "bias", bias)

    def _pool(self, node, a, pool: int):
        k = list(a["kernel_shape"])
        s = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if (len(k), len(s), len(pads)) != (2, 2, 4):
            raise _Skip(f"pooling attributes of the wrong length for 2-D pooling ({k}, {s}, {pads})")
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
        if not a.get("spatial", 1) or a.get("training_mode", 0):
            raise _Skip("BatchNormalization per element (spatial 0) or in training mode")
        if len({np.size(v) for v in (scale, shift, mean, var)}) != 1 or any(np.ndim(v) != 1 for v in (scale, shift, mean, var)):
            raise _Skip(f"BatchNormalization parameters of shapes {[list(np.shape(v)) for v in (scale, shift, mean, var)]}")
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
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.c_ints(node.input[1], "axes")
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
        h = int(a.get("hidden_size", r.shape[-1] if r.ndim == 3 else 0))
        c_in = w.shape[-1] if w.ndim == 3 else 0
        if h <= 0 or w.shape != (1, 4 * h, c_in) or r.shape != (1, 4 * h, h) or \
                bias is not None and bias.shape != (1, 8 * h):
            raise _Skip(f"LSTM weights W {list(w.shape)}, R {list(r.shape)}, B "
                        f"{None if bias is None else list(bias.shape)} are not (1, 4H, C), (1, 4H, H), "
                        f"(1, 8H) for hidden_size {h}")
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


def conv_window(kernel, strides, dil, pads) -> dict:
    """ConvolutionParam's window fields: the one-number forms when square and symmetric (the
    spec every engine has always read), per-axis and per-side fields otherwise."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dil
    top, left, bottom, right = pads
    out = {"kernel_size": int(kh)} if kh == kw else {"kernel_h": int(kh), "kernel_w": int(kw)}
    out.update({"stride": int(sh)} if sh == sw else {"stride_h": int(sh), "stride_w": int(sw)})
    out.update({"dilation": int(dh)} if dh == dw else {"dilation_h": int(dh), "dilation_w": int(dw)})
    if len({top, left, bottom, right}) == 1:
        out["pad"] = int(top)
    elif top == bottom and left == right:
        out.update(pad_h=int(top), pad_w=int(left))
    else:
        out.update(pad_top=int(top), pad_bottom=int(bottom), pad_left=int(left), pad_right=int(right))
    return out


def coverage() -> dict[str, dict]:
    """What the ONNX importer maps: {ONNX op: {"zoo": zoo layer type(s), "opsets": (lo, hi)}},
    from the pattern rules and the mapper's operator methods (for the README's table)."""
    table = {op: {"zoo": LEGACY_TYPES.get(op, op), "opsets": (1, MAX_OPSET)}
             for op in (n[3:] for n in dir(_Mapper) if n.startswith("op_"))}
    table.update({r.op: {"zoo": r.zoo, "opsets": r.opsets} for r in RULES.values()})
    return dict(sorted(table.items()))


LEGACY_TYPES = {"Identity": "(the same blob)", "Relu": "ReLU", "Tanh": "TanH", "Gemm": "InnerProduct",
                "Conv": "Convolution", "MaxPool": "Pooling", "AveragePool": "Pooling",
                "GlobalAveragePool": "Pooling", "GlobalMaxPool": "Pooling", "BatchNormalization": "BatchNorm",
                "Add": "Eltwise | Bias | InnerProduct bias | BatchNorm shift",
                "Mul": "Eltwise | Scale | SiLU | Eltwise coefficient | BatchNorm scale",
                "Sum": "Eltwise", "Max": "Eltwise", "Gather": "Embedding", "Squeeze": "(LSTM direction axis)",
                "Reshape": "Reshape | Flatten | (a view with the batch axis elsewhere)",
                "Softmax": "Softmax | Reshape·Softmax·Reshape (opset < 13: over the trailing axes at once)",
                "Dropout": "Dropout (its mask unread)"}


def lstm_from_onnx(a: np.ndarray) -> np.ndarray:
    """ONNX stacks gates i, o, f, c; zoo i, f, g, o (g = ONNX's c)."""
    i, o, f, c = np.split(np.asarray(a), 4, axis=0)
    return np.concatenate([i, f, c, o], axis=0)
