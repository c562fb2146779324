"""Eltwise: SUM (with optional coefficients), PROD, MAX, SUB or DIV of bottoms of one rank,
broadcast as NumPy does (each size the output's or 1), the batch axis never broadcast."""

import numpy as np

from .. import spec_pb2
from .base import LayerError, LayerType, register, size

_E = spec_pb2.EltwiseParam
PROD, SUM, MAX, SUB, DIV = _E.PROD, _E.SUM, _E.MAX, _E.SUB, _E.DIV
TWO_BOTTOMS = {SUB: "SUB", DIV: "DIV"}


def broadcast_shape(shapes: list[tuple]) -> tuple:
    """The common shape of same-rank shapes whose sizes are equal or 1 per axis, the batch
    axis equal; a LayerError naming the first axis that does not fit."""
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise LayerError(f"Eltwise of different ranks {list(shapes)}: add a Reshape or "
                         "Unsqueeze so every bottom has the same rank")
    out = []
    for axis in range(rank):
        sizes = {s[axis] for s in shapes}
        big = max(sizes)
        if axis == 0 and len(sizes) > 1:
            raise LayerError(f"Eltwise of different batch sizes {list(shapes)}: the batch axis "
                             "is never broadcast")
        if sizes - {1, big}:
            raise LayerError(f"Eltwise of shapes {list(shapes)}: sizes {sorted(sizes)} along "
                             f"axis {axis} do not broadcast (each must be {big} or 1)")
        out.append(big)
    return tuple(out)


@register
class Eltwise(LayerType):
    type = "Eltwise"
    param_field = "eltwise_param"
    n_bottoms = (2, None)
    summary = "elementwise sum (with coefficients), product, max, difference or quotient, broadcast"

    @staticmethod
    def check(p):
        if len(p.coeff) and p.operation != SUM:
            raise LayerError("eltwise_param.coeff applies to SUM only")

    @staticmethod
    def infer(p, shapes):
        if p.operation in TWO_BOTTOMS and len(shapes) != 2:
            raise LayerError(f"Eltwise {TWO_BOTTOMS[p.operation]} takes exactly 2 bottoms, "
                             f"got {len(shapes)}")
        if len(p.coeff) not in (0, len(shapes)):
            raise LayerError(f"eltwise_param.coeff has {len(p.coeff)} values for "
                             f"{len(shapes)} bottoms")
        return [broadcast_shape(shapes)]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return size(out[0]) * (len(shapes) - 1)

    @staticmethod
    def forward(p, xs, w):
        out = np.broadcast_shapes(*(x.shape for x in xs))
        if p.operation == SUM:
            coeff = list(p.coeff) or [1.0] * len(xs)
            return [np.broadcast_to(sum(float(c) * x for c, x in zip(coeff, xs)), out).copy()]
        if p.operation == PROD:
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return [np.broadcast_to(y, out).copy()]
        if p.operation == MAX:
            y = xs[0]
            for x in xs[1:]:
                y = np.maximum(y, x)
            return [np.broadcast_to(y, out).copy()]
        if p.operation == SUB:
            return [xs[0] - xs[1]]
        return [xs[0] / xs[1]]
