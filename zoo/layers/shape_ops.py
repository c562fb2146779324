"""Layers that only move data: Dropout, Flatten, Reshape, Concat."""

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
