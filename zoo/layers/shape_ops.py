"""Layers that only move data: Dropout, Flatten, Reshape, Concat, Transpose, Slice, Squeeze,
Unsqueeze, Gather."""

import numpy as np

from .base import LayerError, LayerType, axis_of, register, size


@register
class Dropout(LayerType):
    type = "Dropout"
    param_field = "dropout_param"
    summary = "identity at inference and in verify"

    @staticmethod
    def check(p):
        if not 0.0 <= p.dropout_ratio < 1.0:
            raise LayerError(f"dropout_ratio must be in [0, 1), got {p.dropout_ratio}")

    @staticmethod
    def infer(p, shapes):
        return [shapes[0]]

    @staticmethod
    def forward(p, xs, w):
        return [xs[0]]


@register
class Flatten(LayerType):
    type = "Flatten"
    param_field = "flatten_param"
    summary = "dims from axis on into one (C order)"

    @staticmethod
    def infer(p, shapes):
        s = shapes[0]
        a = axis_of(p.axis, len(s))
        if a == 0:
            raise LayerError("Flatten cannot merge the batch axis (axis must be >= 1)")
        return [s[:a] + (size(s[a:]),)]

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        a = axis_of(p.axis, x.ndim)
        return [x.reshape(x.shape[:a] + (-1,))]


@register
class Reshape(LayerType):
    type = "Reshape"
    param_field = "reshape_param"
    summary = "reshape; 0 copies a size, -1 is inferred"

    @staticmethod
    def check(p):
        if not len(p.shape):
            raise LayerError("reshape_param.shape is required")
        if p.shape[0] != 0:
            raise LayerError("reshape_param.shape[0] must be 0: the batch axis is kept")
        if sum(1 for d in p.shape if d == -1) > 1 or any(d < -1 for d in p.shape):
            raise LayerError(f"reshape_param.shape {list(p.shape)}: sizes are > 0, 0 or one -1")

    @staticmethod
    def infer(p, shapes):
        s = shapes[0]
        out = []
        for i, d in enumerate(p.shape):
            if d == 0:
                if i >= len(s):
                    raise LayerError(f"reshape_param.shape[{i}] is 0 but the input has rank {len(s)}")
                out.append(s[i])
            else:
                out.append(int(d))
        known = size(tuple(d for d in out if d != -1))
        if -1 in out:
            if size(s) % known:
                raise LayerError(f"cannot reshape {s} to {list(p.shape)}")
            out[out.index(-1)] = size(s) // known
        if size(tuple(out)) != size(s):
            raise LayerError(f"cannot reshape {s} ({size(s)} elements) to {tuple(out)}")
        return [tuple(out)]

    @staticmethod
    def forward(p, xs, w):
        out = Reshape.infer(p, [xs[0].shape])[0]
        return [xs[0].reshape(out)]


@register
class Concat(LayerType):
    type = "Concat"
    param_field = "concat_param"
    n_bottoms = (1, None)
    summary = "concatenate along axis"

    @staticmethod
    def infer(p, shapes):
        rank = len(shapes[0])
        a = axis_of(p.axis, rank)
        for s in shapes[1:]:
            if len(s) != rank or any(x != y for i, (x, y) in enumerate(zip(s, shapes[0])) if i != a):
                raise LayerError(f"Concat along axis {a} of mismatched shapes {list(shapes)}")
        return [shapes[0][:a] + (sum(s[a] for s in shapes),) + shapes[0][a + 1:]]

    @staticmethod
    def forward(p, xs, w):
        return [np.concatenate(xs, axis=axis_of(p.axis, xs[0].ndim))]


def _axes(values, rank: int, what: str) -> list[int]:
    """Listed axes made non-negative; none twice, never the batch axis 0."""
    out = [axis_of(int(a), rank, what) for a in values]
    if len(set(out)) != len(out):
        raise LayerError(f"{what} {list(values)} names an axis twice")
    if 0 in out:
        raise LayerError(f"{what} {list(values)} includes the batch axis 0")
    return out


@register
class Transpose(LayerType):
    type = "Transpose"
    param_field = "transpose_param"
    summary = "permute axes (the batch axis stays first)"

    @staticmethod
    def check(p):
        order = list(p.order)
        if not order:
            raise LayerError("transpose_param.order is required")
        if sorted(order) != list(range(len(order))):
            raise LayerError(f"transpose_param.order {order} is not a permutation of "
                             f"0 .. {len(order) - 1}")
        if order[0] != 0:
            raise LayerError(f"transpose_param.order {order} must start with 0: the batch axis "
                             "stays first")

    @staticmethod
    def infer(p, shapes):
        s = shapes[0]
        if len(p.order) != len(s):
            raise LayerError(f"transpose_param.order {list(p.order)} has {len(p.order)} axes, "
                             f"the input {s} has {len(s)}")
        return [tuple(s[int(a)] for a in p.order)]

    @staticmethod
    def forward(p, xs, w):
        return [np.ascontiguousarray(xs[0].transpose([int(a) for a in p.order]))]


@register
class Slice(LayerType):
    type = "Slice"
    param_field = "slice_param"
    summary = "split along axis into parts of the given sizes (one top each)"

    @staticmethod
    def check(p):
        if not len(p.size):
            raise LayerError("slice_param.size is required: one size per top")
        if any(n <= 0 for n in p.size):
            raise LayerError(f"slice_param.size {list(p.size)}: every size must be > 0")

    @staticmethod
    def tops_for(p) -> int:
        return len(p.size)

    @staticmethod
    def infer(p, shapes):
        s = shapes[0]
        (a,) = _axes([p.axis], len(s), "slice_param.axis")
        if sum(p.size) != s[a]:
            raise LayerError(f"slice_param.size {list(p.size)} sums to {sum(p.size)}, but the "
                             f"input {s} has {s[a]} along axis {a}")
        return [s[:a] + (int(n),) + s[a + 1:] for n in p.size]

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        a = axis_of(p.axis, x.ndim)
        cuts = np.cumsum([int(n) for n in p.size])[:-1]
        return [np.ascontiguousarray(part) for part in np.split(x, cuts, axis=a)]


@register
class Squeeze(LayerType):
    type = "Squeeze"
    param_field = "squeeze_param"
    summary = "remove size-1 axes"

    @staticmethod
    def check(p):
        if not len(p.axis):
            raise LayerError("squeeze_param.axis is required")

    @staticmethod
    def infer(p, shapes):
        s = shapes[0]
        axes = _axes(p.axis, len(s), "squeeze_param.axis")
        for a in axes:
            if s[a] != 1:
                raise LayerError(f"Squeeze of axis {a} of shape {s}: its size is {s[a]}, not 1")
        return [tuple(d for i, d in enumerate(s) if i not in axes)]

    @staticmethod
    def forward(p, xs, w):
        return [xs[0].reshape(Squeeze.infer(p, [xs[0].shape])[0])]


@register
class Unsqueeze(LayerType):
    type = "Unsqueeze"
    param_field = "unsqueeze_param"
    summary = "insert size-1 axes (positions in the output)"

    @staticmethod
    def check(p):
        if not len(p.axis):
            raise LayerError("unsqueeze_param.axis is required")

    @staticmethod
    def infer(p, shapes):
        s = shapes[0]
        rank = len(s) + len(p.axis)
        axes = _axes(p.axis, rank, "unsqueeze_param.axis")
        rest = iter(s)
        return [tuple(1 if i in axes else next(rest) for i in range(rank))]

    @staticmethod
    def forward(p, xs, w):
        return [xs[0].reshape(Unsqueeze.infer(p, [xs[0].shape])[0])]


@register
class Gather(LayerType):
    type = "Gather"
    param_field = "gather_param"
    required = ("index",)
    summary = "select one index along axis (the axis is removed)"

    @staticmethod
    def infer(p, shapes):
        s = shapes[0]
        (a,) = _axes([p.axis], len(s), "gather_param.axis")
        if not -s[a] <= p.index < s[a]:
            raise LayerError(f"gather_param.index {p.index} is out of range for size {s[a]} "
                             f"along axis {a}")
        return [s[:a] + s[a + 1:]]

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        return [np.ascontiguousarray(np.take(x, int(p.index), axis=axis_of(p.axis, x.ndim)))]
