"""Eltwise: SUM (with optional coefficients), PROD or MAX of same-shaped bottoms."""

import numpy as np

from .. import spec_pb2
from .base import LayerError, LayerType, register, size

PROD, SUM, MAX = spec_pb2.EltwiseParam.PROD, spec_pb2.EltwiseParam.SUM, spec_pb2.EltwiseParam.MAX


@register
class Eltwise(LayerType):
    type = "Eltwise"
    param_field = "eltwise_param"
    n_bottoms = (2, None)
    summary = "elementwise sum (with coefficients), product or max"

    @staticmethod
    def check(p):
        if len(p.coeff) and p.operation != SUM:
            raise LayerError("eltwise_param.coeff applies to SUM only")

    @staticmethod
    def infer(p, shapes):
        if any(s != shapes[0] for s in shapes):
            raise LayerError(f"Eltwise of mismatched shapes {list(shapes)}")
        if len(p.coeff) not in (0, len(shapes)):
            raise LayerError(f"eltwise_param.coeff has {len(p.coeff)} values for "
                             f"{len(shapes)} bottoms")
        return [shapes[0]]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return size(out[0]) * (len(shapes) - 1)

    @staticmethod
    def forward(p, xs, w):
        if p.operation == SUM:
            coeff = list(p.coeff) or [1.0] * len(xs)
            return [sum(float(c) * x for c, x in zip(coeff, xs))]
        if p.operation == PROD:
            return [np.prod(np.stack(xs), axis=0)]
        return [np.max(np.stack(xs), axis=0)]
