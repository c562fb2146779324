"""Pattern rules of the ONNX importer for the operators modern exporters write
(torch.onnx.export, both the TorchScript and the torch.export-based exporter).

Each rule is one small function `rule(m, node, attrs)` registered in RULES under the ONNX
operator it starts from, with the zoo layer type it makes and the opsets it understands; `m`
is the importer's _Mapper (its helpers x, c, c_ints, out, shapes, consumers_of). A rule
raises Skip with the reason when the node is not a form zoo can express: the import is then
refused with that reason, nothing written. `coverage()` in onnx.py lists RULES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import spec_pb2

PP, RP, GP = spec_pb2.PoolingParam, spec_pb2.ReduceParam, spec_pb2.GELUParam
MAX_OPSET = 22


class Skip(Exception):
    """This node is not a form zoo can express; the message says why."""


@dataclass(frozen=True)
class Rule:
    op: str
    zoo: str              # the zoo layer type(s) it maps to
    opsets: tuple[int, int]
    fn: Callable


RULES: dict[str, Rule] = {}


def rule(op: str, zoo: str, opsets: tuple[int, int] = (1, MAX_OPSET)):
    def register(fn):
        RULES[op] = Rule(op, zoo, opsets, fn)
        return fn
    return register


def _axes(m, node, a, what="axes") -> list[int] | None:
    """Axes from the attribute (older opsets) or the second input (newer ones)."""
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(node.input) > 1 and node.input[1]:
        axes = m.c_ints(node.input[1], what)
        if axes is None:
            raise Skip(f"{node.op_type} with {what} not known at import time")
        return axes
    return None


def _rank(m, name: str) -> int:
    if name in m.moved:
        return len(m.moved[name].shape)
    shape = m.shapes.get(name)
    if not shape:
        raise Skip(f"the rank of {name!r} is not known at import time")
    return len(shape)


# --- activations -------------------------------------------------------------------------
@rule("Clip", "Clip | ReLU")
def clip(m, node, a):
    lo, hi = a.get("min"), a.get("max")
    if len(node.input) > 1 and node.input[1]:
        lo = m.c_scalar(node.input[1], "min")
        if lo is None:
            raise Skip("Clip with a minimum not known at import time")
    if len(node.input) > 2 and node.input[2]:
        hi = m.c_scalar(node.input[2], "max")
        if hi is None:
            raise Skip("Clip with a maximum not known at import time")
    if hi is None and lo == 0.0:
        m.out(node, "ReLU", [m.x(node.input[0])])
        return
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise Skip(f"Clip to [{lo}, {hi}] (zoo's Clip has two finite bounds)")
    m.out(node, "Clip", [m.x(node.input[0])], clip_param={"min": float(lo), "max": float(hi)})


@rule("HardSigmoid", "HardSigmoid")
def hard_sigmoid(m, node, a):
    m.out(node, "HardSigmoid", [m.x(node.input[0])], hard_sigmoid_param={
        "alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))})


@rule("HardSwish", "HardSwish", (14, MAX_OPSET))
def hard_swish(m, node, a):
    m.out(node, "HardSwish", [m.x(node.input[0])])


@rule("Sigmoid", "Sigmoid | SiLU (Sigmoid·Mul)")
def sigmoid(m, node, a):
    """x * sigmoid(x) (torch's SiLU as the exporters write it) is one SiLU layer, made by the
    Mul: the Sigmoid is deferred when that Mul is its only reader."""
    users = m.consumers_of(node.output[0])
    if len(users) == 1 and users[0].op_type == "Mul" and node.input[0] in users[0].input:
        m.deferred[node.output[0]] = node.input[0]
        return
    m.out(node, "Sigmoid", [m.x(node.input[0])])


def silu_from_mul(m, node) -> bool:
    """Mul(x, Sigmoid(x)) -> SiLU; True if it was one."""
    for i, j in ((0, 1), (1, 0)):
        if m.deferred.get(node.input[j]) == node.input[i]:
            m.out(node, "SiLU", [m.x(node.input[i])])
            return True
    return False


@rule("Gelu", "GELU", (20, MAX_OPSET))
def gelu(m, node, a):
    approx = a.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    m.out(node, "GELU", [m.x(node.input[0])],
          gelu_param={"approximate": GP.TANH if approx == "tanh" else GP.NONE})


@rule("Erf", "GELU (Div·Erf·Add·Mul·Mul)")
def erf_gelu(m, node, a):
    """The exact GELU before opset 20: 0.5 * x * (1 + erf(x / sqrt(2))), in the order the
    TorchScript exporter writes it: Div(x, 1.414..) Erf Add(1) Mul(x, .) Mul(0.5)."""
    div = m.producer(node.input[0])
    if div is None or div.op_type != "Div" or not np.isclose(m.c_scalar(div.input[1], "divisor") or 0, math.sqrt(2)):
        m.b.unsupported["Erf"] += 1              # an Erf of its own: counted with the unsupported
        return
    x = div.input[0]
    add = _only_user(m, node.output[0], "Add")
    one = m.c_scalar(next(i for i in add.input if i != node.output[0]), "addend")
    mul = _only_user(m, add.output[0], "Mul")
    half = _only_user(m, mul.output[0], "Mul")
    other = next(i for i in half.input if i != mul.output[0])
    if one != 1.0 or x not in mul.input or m.c_scalar(other, "factor") != 0.5 or \
            m.consumers_of(div.output[0]) != [node]:
        raise Skip("Erf other than in the exact GELU x * 0.5 * (1 + erf(x / sqrt(2)))")
    m.out(half, "GELU", [m.x(x)], gelu_param={"approximate": GP.NONE})
    for n in (add, mul, half):
        m.done.add(id(n))


def _only_user(m, value: str, op: str):
    users = m.consumers_of(value)
    if len(users) != 1 or users[0].op_type != op:
        raise Skip("Erf other than in the exact GELU x * 0.5 * (1 + erf(x / sqrt(2)))")
    return users[0]


# --- reductions and normalisation -----------------------------------------------------------
@rule("ReduceMean", "Pooling (global) | Reduce")
def reduce_mean(m, node, a):
    _reduce(m, node, a, RP.MEAN)


@rule("ReduceSum", "Reduce")
def reduce_sum(m, node, a):
    _reduce(m, node, a, RP.SUM)


@rule("ReduceMax", "Reduce")
def reduce_max(m, node, a):
    _reduce(m, node, a, RP.MAX)


def _reduce(m, node, a, op):
    rank = _rank(m, node.input[0])
    axes = _axes(m, node, a)
    if not axes:
        raise Skip(f"{node.op_type} over every axis (the batch axis included)")
    axes = sorted(v % rank for v in axes)
    if 0 in axes:
        raise Skip(f"{node.op_type} over the batch axis")
    keep = bool(a.get("keepdims", 1))
    if op == RP.MEAN and rank == 4 and axes == [2, 3] and keep:     # global average pooling
        m.out(node, "Pooling", [m.x(node.input[0])], pooling_param={"pool": PP.AVE, "global_pooling": True})
        return
    m.out(node, "Reduce", [m.x(node.input[0])], reduce_param={"operation": op, "axis": axes, "keepdims": keep})


@rule("LayerNormalization", "LayerNorm", (17, MAX_OPSET))
def layer_norm(m, node, a):
    scale = m.c(node.input[1])
    bias = m.c(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or (len(node.input) > 2 and node.input[2] and bias is None):
        raise Skip("LayerNormalization with a scale or bias not known at import time")
    if any(o for o in node.output[1:]):
        raise Skip("LayerNormalization whose mean or inverse deviation is used")
    rank = _rank(m, node.input[0])
    axis = int(a.get("axis", -1)) % rank
    if axis == 0:
        raise Skip("LayerNormalization over the batch axis")
    want = tuple(m.shapes[node.input[0]][axis:])
    bias = np.zeros(want, np.float32) if bias is None else bias
    try:
        scale, bias = np.broadcast_to(scale, want), np.broadcast_to(bias, want)
    except ValueError:
        raise Skip(f"LayerNormalization scale/bias of shapes {list(np.shape(scale))}, "
                   f"{list(np.shape(bias))} for normalised shape {list(want)}") from None
    name = m.out(node, "LayerNorm", [m.x(node.input[0])], layer_norm_param={
        "axis": axis - rank, "eps": float(a.get("epsilon", 1e-5))})
    m.b.weight(name, "gamma", scale)
    m.b.weight(name, "beta", bias)


# --- shape operations -----------------------------------------------------------------------
@rule("Transpose", "Transpose | (a view with the batch axis elsewhere)")
def transpose(m, node, a):
    perm = [int(v) for v in a.get("perm", [])]
    if perm == [1, 0, 2] and (node.input[0] in m.tm or m.lstm_input(node)):
        m.op_Transpose(node, a)                 # around a batch-first LSTM
        return
    if not perm:
        perm = list(range(_rank(m, node.input[0])))[::-1]
    if perm[0] != 0 or node.input[0] in m.moved:
        src = view(m, node.input[0])
        if src is None:
            raise Skip(f"Transpose {perm} moves the batch axis of a value of unknown shape")
        moved_transpose(m, node, src, perm)   # a view with the batch elsewhere
        return
    m.out(node, "Transpose", [m.x(node.input[0])], transpose_param={"order": perm})


@rule("Split", "Slice")
def split(m, node, a):
    rank = _rank(m, node.input[0])
    axis = int(a.get("axis", 0)) % rank
    dim = m.shapes[node.input[0]][axis]
    sizes = [int(v) for v in a["split"]] if "split" in a else None
    if sizes is None and len(node.input) > 1 and node.input[1]:
        sizes = m.c_ints(node.input[1], "split")
        if sizes is None:
            raise Skip("Split with sizes not known at import time")
    if sizes is None:
        parts = int(a.get("num_outputs", len(node.output)))
        if not dim or parts <= 0:
            raise Skip("Split into parts of a size not known at import time")
        step = -(-dim // parts)
        sizes = [min(step, dim - i * step) for i in range(parts)]
    if axis == 0:
        raise Skip("Split along the batch axis")
    _slice_layer(m, node, node.input[0], axis, sizes, list(node.output))


def _slice_layer(m, node, src: str, axis: int, sizes: list[int], outputs: list[str]) -> None:
    if len(sizes) != len(outputs) or any(s <= 0 for s in sizes):
        raise Skip(f"a split into sizes {sizes} for {len(outputs)} outputs")
    name = m.b.unique(node.name or outputs[0])
    tops = [name] + [m.b.unique(f"{name}_{i}") for i in range(1, len(outputs))]
    lp = m.b.layer(name, "Slice", [m.x(src)], slice_param={"axis": axis, "size": sizes})
    lp.top[:] = tops
    for o, t in zip(outputs, tops):
        if o:
            m.blob[o] = t


@rule("Slice", "Slice (sibling Slices that tile an axis)", (10, MAX_OPSET))
def slice_(m, node, a):
    """Slices of one input along one axis, step 1, that together tile it (torch.chunk as the
    TorchScript exporter writes it) are one Slice layer with a top per part."""
    if node.output[0] in m.blob:
        return                                     # made with an earlier sibling
    src, rank = node.input[0], _rank(m, node.input[0])
    parts = []
    for n in m.consumers_of(src):
        if n.op_type == "Slice":
            parts.append((*_slice_range(m, n, rank), n))
    axes = {p[0] for p in parts}
    if len(axes) != 1:
        raise Skip("Slices of one input along several axes")
    axis = axes.pop()
    if axis == 0:
        raise Skip("Slice along the batch axis")
    dim = m.shapes[src][axis]
    parts.sort(key=lambda p: p[1])
    ends = [0] + [p[2] for p in parts]
    if any(p[1] != e for p, e in zip(parts, ends)) or ends[-1] != dim:
        raise Skip(f"Slices of {src!r} along axis {axis} that do not tile it "
                   "(zoo's Slice splits an axis into consecutive parts)")
    _slice_layer(m, node, src, axis, [p[2] - p[1] for p in parts], [p[3].output[0] for p in parts])


def _slice_range(m, node, rank: int) -> tuple[int, int, int]:
    vals = [m.c_ints(i, "Slice input") if i else None for i in list(node.input[1:5]) + [""] * 4][:4]
    starts, ends, axes, steps = vals
    if starts is None or ends is None or len(starts) != 1:
        raise Skip("Slice of one axis with starts and ends known at import time")
    if steps is not None and steps != [1]:
        raise Skip(f"Slice with steps {steps}")
    axis = (axes or [0])[0] % rank
    dim = m.shapes[node.input[0]][axis]
    if dim is None:
        raise Skip("Slice of an axis whose size is not known at import time")
    s, e = (min(max(v + dim if v < 0 else v, 0), dim) for v in (starts[0], ends[0]))
    return axis, s, e


@rule("Squeeze", "Squeeze")
def squeeze(m, node, a):
    axes = _axes(m, node, a)
    if node.input[0] in m.lstm_y:
        m.op_Squeeze(node, a)
        return
    if node.input[0] in m.moved:
        moved_squeeze(m, node, m.moved[node.input[0]], axes)
        return
    rank = _rank(m, node.input[0])
    if axes is None:
        axes = [i for i, d in enumerate(m.shapes[node.input[0]]) if d == 1]
    axes = sorted(v % rank for v in axes)
    if not axes or 0 in axes:
        raise Skip("Squeeze of the batch axis or of no axis")
    m.out(node, "Squeeze", [m.x(node.input[0])], squeeze_param={"axis": axes})


@rule("Unsqueeze", "Unsqueeze")
def unsqueeze(m, node, a):
    axes = _axes(m, node, a)
    if not axes:
        raise Skip("Unsqueeze with no axes")
    rank = _rank(m, node.input[0]) + len(axes)
    axes = sorted(v % rank for v in axes)
    if node.input[0] in m.moved or 0 in axes:
        src = view(m, node.input[0])
        if src is not None:
            moved_unsqueeze(m, node, src, axes)        # the batch moves right: a view
            return
        raise Skip("Unsqueeze before the batch axis")
    m.out(node, "Unsqueeze", [m.x(node.input[0])], unsqueeze_param={"axis": axes})


@rule("Gather", "Gather | Embedding | Reshape (as_strided of a whole tensor)")
def gather(m, node, a):
    if m.c(node.input[0]) is not None:
        m.op_Gather(node, a)                 # rows of a constant table: an embedding
        return
    idx = m.c(node.input[1])
    if _gather_is_reshape(m, node, idx):
        return
    if idx is None or np.ndim(idx) != 0:
        raise Skip("Gather of a single index known at import time (x[:, i])")
    axis = int(a.get("axis", 0)) % _rank(m, node.input[0])
    if node.input[0] in m.moved:
        moved_gather(m, node, m.moved[node.input[0]], axis, int(idx))
        return
    if axis == 0:
        raise Skip("Gather along the batch axis")
    m.out(node, "Gather", [m.x(node.input[0])], gather_param={"axis": axis, "index": int(idx)})


def _gather_is_reshape(m, node, idx) -> bool:
    """torch.export writes a strided view (as_strided) of a whole tensor as Reshape(x, [-1])
    then Gather(indices); indices 0, 1, 2, ... in order make it a plain reshape to their shape."""
    src = view(m, node.input[0])
    if idx is None or src is None or len(src.shape) != 1 or np.ndim(idx) == 0:
        return False
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu" or idx.size != src.shape[0] or \
            not np.array_equal(idx.reshape(-1), np.arange(idx.size)):
        return False
    moved_reshape(m, node, src, list(idx.shape))
    return True


# --- products -------------------------------------------------------------------------------
@rule("MatMul", "InnerProduct | MatMul")
def matmul(m, node, a):
    w = m.c(node.input[1])
    if w is not None:
        if w.ndim != 2:
            raise Skip("MatMul by a constant that is not 2-D")
        if node.input[0] in m.moved:
            moved_product(m, node, m.moved[node.input[0]], w)
            return
        rank = _rank(m, node.input[0])
        params = {"num_output": int(w.shape[1]), "bias_term": False}
        if rank >= 4:
            params["axis"] = -1
        name = m.out(node, "InnerProduct", [m.x(node.input[0])], inner_product_param=params)
        transposed_weight(m, name, w)
        return
    if m.c(node.input[0]) is not None:
        raise Skip("MatMul of a constant by a blob")
    ra, rb = _rank(m, node.input[0]), _rank(m, node.input[1])
    if ra != rb or ra < 3:
        raise Skip(f"MatMul of ranks {ra} and {rb} (zoo's: one rank >= 3, no broadcasting)")
    m.out(node, "MatMul", [m.x(node.input[0]), m.x(node.input[1])], matmul_param={})


def transposed_weight(m, layer: str, w) -> None:
    """An InnerProduct's (out, in) weight from a MatMul's (in, out) constant, kept as a
    transposed view: np.savez writes it in C order without a copy, so a transformer's weights
    are not held twice while importing (vit_b_16: 85 M of its 86.6 M parameters)."""
    w = np.asarray(w)
    m.b.weights[f"{layer}.weight"] = (w if w.dtype == np.float32 else w.astype(np.float32)).T


def constant_operand(m, node, k, kind: str) -> None:
    """Add/Mul of a blob and a constant that broadcasts over the batch: a Bias or Scale layer
    with the constant's shape (rank - 1 axes; sizes the input's or 1)."""
    x_name = next(i for i in node.input if m.c(i) is None)
    shape = m.shapes.get(x_name)
    if not shape:
        raise Skip(f"{node.op_type} of a constant and a blob of unknown rank")
    k = np.asarray(k, dtype=np.float64)
    if k.ndim > len(shape):
        raise Skip(f"{node.op_type} by a constant of higher rank than the blob")
    k = k.reshape((1,) * (len(shape) - k.ndim) + k.shape)
    # a size the shape inference left unknown is checked when the spec is (Net, before writing)
    if k.shape[0] != 1 or any(d not in (1, s) and s is not None for d, s in zip(k.shape[1:], shape[1:])):
        raise Skip(f"{node.op_type} by a constant of shape {list(k.shape)} for a blob of shape {shape}")
    value = k[0]
    if kind == "Scale":
        name = m.out(node, "Scale", [m.x(x_name)], scale_param={"shape": list(value.shape) or [1]})
        m.b.weight(name, "scale", value.reshape(list(value.shape) or [1]))
    else:
        name = m.out(node, "Bias", [m.x(x_name)], bias_param={"shape": list(value.shape) or [1]})
        m.b.weight(name, "bias", value.reshape(list(value.shape) or [1]))


def parameter(m, node, value) -> str:
    """A constant with the batch axis (an expanded class token, folded): a Parameter layer,
    repeated over the batch, when every sample's value is the same."""
    v = np.asarray(value)
    if v.ndim < 2 or v.shape[0] != m.batch or not np.all(v == v[:1]):
        raise Skip(f"a constant of shape {list(v.shape)} used as a blob (not one value repeated "
                   "over the batch)")
    name = m.b.unique(f"{node.name or node.output[0]}_param")
    m.b.layer(name, "Parameter", [m.first_input], parameter_param={"shape": list(v.shape[1:])})
    m.b.weight(name, "value", v[0])
    return name


EW = spec_pb2.EltwiseParam


@rule("Div", "Eltwise DIV | Scale | (GELU's x / sqrt(2))")
def div(m, node, a):
    users = m.consumers_of(node.output[0])
    if len(users) == 1 and users[0].op_type == "Erf" and m.c(node.input[0]) is None:
        return                                    # read by the Erf GELU rule
    k = m.c(node.input[1])
    if k is not None and m.c(node.input[0]) is None:
        constant_operand(m, node, 1.0 / np.asarray(k, dtype=np.float64), "Scale")
        return
    m.out(node, "Eltwise", [m.x(node.input[0]), m.x(node.input[1])], eltwise_param={"operation": EW.DIV})


@rule("Sub", "Eltwise SUB")
def sub(m, node, a):
    m.out(node, "Eltwise", [m.x(node.input[0]), m.x(node.input[1])], eltwise_param={"operation": EW.SUB})


# --- values whose batch axis is not axis 0 ----------------------------------------------------
# torch's nn.MultiheadAttention, as the TorchScript exporter writes it, works sequence-first:
# Transpose(1, 0, 2), per-head reshapes that merge the batch with the heads ((T, N*H, d)) or
# with the tokens ((T*N, D)), and back. zoo's blobs are batch-first, so such an ONNX value is
# kept as a view of a batch-first blob: `Moved` says where its batch is, and only operators
# that act on other axes (Transpose, Reshape, Unsqueeze/Squeeze, Gather, a product with a
# constant over the last axis) may read it; anything else is refused with the reason.
@dataclass(frozen=True)
class Moved:
    """An ONNX value of `shape` whose axis j has size a*N*k, the batch (N) between a and k
    (a outer); its spec blob is that value with axis j split into (a, N, k) and N moved to
    the front (a and k left out when 1)."""
    blob: str
    shape: tuple[int, ...]
    j: int
    a: int = 1
    k: int = 1

    def labels(self) -> list:
        """The blob's axes after the batch, named by the value's axes ("a", "k": j's parts)."""
        out = []
        for i in range(len(self.shape)):
            out += ([p for p, n in (("a", self.a), ("k", self.k)) if n > 1] if i == self.j else [i])
        return out

    def blob_dims(self) -> list[int]:
        size = {"a": self.a, "k": self.k}
        return [size[lb] if isinstance(lb, str) else self.shape[lb] for lb in self.labels()]


def view(m, name: str) -> Moved | None:
    """The value as a Moved view (a batch-first blob is one with j = 0), or None if it is
    neither a spec blob of known shape nor a moved one."""
    if name in m.moved:
        return m.moved[name]
    shape = m.shapes.get(name)
    if name in m.blob and shape and None not in shape and shape[0] == m.batch:
        return Moved(m.blob[name], tuple(shape), 0)
    return None


def put(m, node, src: Moved, shape, j: int, a: int = 1, k: int = 1, reshape_ok: bool = True) -> None:
    """The node's output is the view (shape, j, a, k) of src's data: a spec Reshape when the
    blob's sizes change, none when only the bookkeeping does."""
    dst = Moved(src.blob, tuple(int(d) for d in shape), j, a, k)
    if dst.blob_dims() != src.blob_dims():
        if not reshape_ok:
            raise Skip("a view of a moved batch axis that is not a reshape")
        name = m.out(node, "Reshape", [src.blob], reshape_param={"shape": [0] + dst.blob_dims()})
        dst = Moved(name, dst.shape, j, a, k)
    _store(m, node.output[0], dst)


def _store(m, value: str, v: Moved) -> None:
    if v.j == 0 and v.a == 1 and v.k == 1:
        m.blob[value] = v.blob            # batch-first again: an ordinary blob
        m.moved.pop(value, None)
    else:
        m.moved[value] = v


def moved_transpose(m, node, src: Moved, perm: list[int]) -> None:
    if sorted(perm) != list(range(len(src.shape))):
        raise Skip(f"Transpose {perm} of a value of shape {list(src.shape)}")
    shape = [src.shape[p] for p in perm]
    j = perm.index(src.j)
    dst = Moved(src.blob, tuple(shape), j, src.a, src.k)
    have = src.labels()                  # the blob's axes, named by the input's axes
    want = [lb if isinstance(lb, str) else perm[lb] for lb in dst.labels()]
    order = [0] + [1 + have.index(lb) for lb in want]
    if order != sorted(order):
        name = m.out(node, "Transpose", [src.blob], transpose_param={"order": order})
        dst = Moved(name, dst.shape, j, src.a, src.k)
    _store(m, node.output[0], dst)


def moved_reshape(m, node, src: Moved, target: list[int]) -> None:
    """A Reshape of a view: where the batch lands in the target shape is read from the sizes
    (the product of the sizes before it and after it is kept). In a graph exported at batch
    1 that can be ambiguous; zoo then prefers the batch as an axis of its own, then outer in
    an axis (torch's N*H), then inner (torch's T*N), and never in the last axis, which
    per-sample products act on."""
    shape = _resolve_shape(src.shape, target, node)
    n = m.batch
    if not n:
        raise Skip("a Reshape that moves the batch axis in a model without a batch-first input")
    pre = math.prod(src.shape[:src.j]) * src.a
    post = src.k * math.prod(src.shape[src.j + 1:])
    best = None
    for j in range(len(shape)):
        before = math.prod(shape[:j])
        if pre % before:
            continue
        a = pre // before
        if shape[j] % (a * n) or (shape[j] // (a * n)) * math.prod(shape[j + 1:]) != post:
            continue
        k = shape[j] // (a * n)
        last = j == len(shape) - 1
        score = 0 if a == k == 1 else (1 if a == 1 else 2) + (2 if last else 0)
        if best is None or score < best[0]:
            best = (score, j, a, k)
    if best is None:
        raise Skip(f"Reshape of {list(src.shape)} to {shape} mixes the batch axis with others")
    put(m, node, src, shape, *best[1:])


def _resolve_shape(in_shape, target: list[int], node) -> list[int]:
    """ONNX Reshape's target with 0 (copy the size) and -1 (infer) resolved."""
    if any(d == 0 for d in target[len(in_shape):]) or sum(1 for d in target if d == -1) > 1:
        raise Skip(f"Reshape of {list(in_shape)} to {target}")
    out = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    total = math.prod(in_shape)
    if -1 in out:
        rest = math.prod(d for d in out if d != -1)
        if rest <= 0 or total % rest:
            raise Skip(f"Reshape of {list(in_shape)} to {target}")
        out[out.index(-1)] = total // rest
    if math.prod(out) != total or any(d <= 0 for d in out):
        raise Skip(f"Reshape of {list(in_shape)} to {target}")
    return out


def moved_unsqueeze(m, node, src: Moved, axes: list[int]) -> None:
    rank = len(src.shape) + len(axes)
    axes = sorted(v % rank for v in axes)
    if len(set(axes)) != len(axes):
        raise Skip(f"Unsqueeze with repeated axes {axes}")
    shape, it, j = [], iter(range(len(src.shape))), None
    for p in range(rank):
        if p in axes:
            shape.append(1)
        else:
            i = next(it)
            shape.append(src.shape[i])
            j = p if i == src.j else j
    put(m, node, src, shape, j, src.a, src.k)


def moved_squeeze(m, node, src: Moved, axes: list[int] | None) -> None:
    rank = len(src.shape)
    axes = sorted(v % rank for v in axes) if axes else [i for i, d in enumerate(src.shape) if d == 1 and i != src.j]
    if src.j in axes:
        raise Skip("Squeeze of the batch axis")
    if any(src.shape[v] != 1 for v in axes):
        raise Skip(f"Squeeze of axes {axes} of shape {list(src.shape)}: not all of size 1")
    shape = [d for i, d in enumerate(src.shape) if i not in axes]
    put(m, node, src, shape, src.j - sum(1 for v in axes if v < src.j), src.a, src.k)


def moved_gather(m, node, src: Moved, axis: int, index: int) -> None:
    if axis == src.j:
        raise Skip("Gather along the batch axis")
    name = m.out(node, "Gather", [src.blob], gather_param={
        "axis": 1 + src.labels().index(axis), "index": index})
    shape = src.shape[:axis] + src.shape[axis + 1:]
    _store(m, node.output[0], Moved(name, tuple(shape), src.j - (axis < src.j), src.a, src.k))


def moved_product(m, node, src: Moved, w: np.ndarray, bias=None) -> None:
    """x @ W (MatMul or Gemm by a constant) of a view whose batch is not in its last axis: an
    InnerProduct over the blob's last axis, which is the value's."""
    if src.j == len(src.shape) - 1:
        raise Skip("a product over an axis that holds the batch")
    if w.shape[0] != src.shape[-1]:
        raise Skip(f"a product of shape {list(src.shape)} by a constant of shape {list(w.shape)}")
    name = m.out(node, "InnerProduct", [src.blob], inner_product_param={
        "num_output": int(w.shape[1]), "bias_term": bias is not None, "axis": -1})
    transposed_weight(m, name, w)
    if bias is not None:
        m.b.weight(name, "bias", bias)
    _store(m, node.output[0], Moved(name, src.shape[:-1] + (int(w.shape[1]),), src.j, src.a, src.k))


def moved_constant_operand(m, node, src: Moved, k, kind: str) -> None:
    """Add/Mul of a view and a constant that varies along the last axis only: a Bias or Scale
    over the blob's last axis (a MatMul's bias is folded into its InnerProduct)."""
    k = np.asarray(k, dtype=np.float64)
    d = src.shape[-1]
    if k.ndim > len(src.shape) or any(s != 1 for s in k.shape[:-1]) or (k.ndim and k.shape[-1] not in (1, d)):
        raise Skip(f"{node.op_type} of a moved-batch value and a constant of shape {list(k.shape)}")
    if src.j == len(src.shape) - 1 and k.size > 1:
        raise Skip(f"{node.op_type} by a constant along an axis that holds the batch")
    lp = m.layer_of(src.blob)
    xin = node.input[0] if m.c(node.input[0]) is None else node.input[1]
    made_by_product = getattr(m.producer(xin), "op_type", None) in ("MatMul", "Gemm")   # not a view of it
    if kind == "Bias" and made_by_product and lp is not None and lp.type == "InnerProduct" and \
            not lp.inner_product_param.bias_term and m.consumers[xin] == 1 and k.size == d:
        lp.inner_product_param.bias_term = True
        m.b.weight(lp.name, "bias", k.reshape(-1))
        _store(m, node.output[0], src)
        return
    rank = len(src.blob_dims())
    shape = [1] * (rank - 1) + [int(k.shape[-1]) if k.ndim else 1]
    key, field = ("bias", "bias_param") if kind == "Bias" else ("scale", "scale_param")
    name = m.out(node, kind, [src.blob], **{field: {"shape": shape}})
    m.b.weight(name, key, k.reshape(shape))
    _store(m, node.output[0], Moved(name, src.shape, src.j, src.a, src.k))
