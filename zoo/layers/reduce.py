"""Reduce: MEAN, SUM or MAX over a list of axes (never the batch axis), keepdims or not."""

import numpy as np

from .. import spec_pb2
from .base import LayerError, LayerType, register, size
from .shape_ops import _axes

_R = spec_pb2.ReduceParam
SUM, MEAN, MAX = _R.SUM, _R.MEAN, _R.MAX


def reduce_axes(p, rank: int) -> list[int]:
    return sorted(_axes(p.axis, rank, "reduce_param.axis"))


@register
class Reduce(LayerType):
    type = "Reduce"
    param_field = "reduce_param"
    summary = "mean / sum / max over axes"

    @staticmethod
    def check(p):
        if p.operation not in (SUM, MEAN, MAX):
            raise LayerError("reduce_param.operation is required: SUM, MEAN or MAX")
        if not len(p.axis):
            raise LayerError("reduce_param.axis is required: the axes to reduce")

    @staticmethod
    def infer(p, shapes):
        s = shapes[0]
        axes = reduce_axes(p, len(s))
        if p.keepdims:
            return [tuple(1 if i in axes else d for i, d in enumerate(s))]
        return [tuple(d for i, d in enumerate(s) if i not in axes)]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return size(shapes[0])

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        axes = tuple(reduce_axes(p, x.ndim))
        fn = {SUM: np.sum, MEAN: np.mean, MAX: np.max}[p.operation]
        return [fn(x, axis=axes, keepdims=bool(p.keepdims))]
