"""BatchNorm over channels (axis 1) with scale and shift; running statistics at inference.

Weights: gamma, beta (params, when scale_bias), running_mean, running_var (buffers); (C,).
"""

import numpy as np

from .base import LayerError, LayerType, WeightSpec, register, size, uniform, uniform_range


@register
class BatchNorm(LayerType):
    type = "BatchNorm"
    param_field = "batch_norm_param"
    summary = "batch normalisation, scale and shift"

    @staticmethod
    def check(p):
        if p.eps <= 0:
            raise LayerError(f"eps must be > 0, got {p.eps}")

    @staticmethod
    def infer(p, shapes):
        if len(shapes[0]) not in (2, 4):
            raise LayerError(f"BatchNorm takes (N, C) or (N, C, H, W), got shape {shapes[0]}")
        return [shapes[0]]

    @staticmethod
    def weights(p, shapes):
        c = (shapes[0][1],)
        ws = []
        if p.scale_bias:
            ws += [WeightSpec("gamma", c, uniform_range(0.5, 1.5)), WeightSpec("beta", c, uniform(0.1))]
        return ws + [WeightSpec("running_mean", c, uniform(0.1), "buffer"),
                     WeightSpec("running_var", c, uniform_range(0.5, 1.5), "buffer")]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return 2 * size(out[0])

    @staticmethod
    def forward(p, xs, w):
        return [_normalise(p, xs[0], w["running_mean"], w["running_var"], w)]

    @classmethod
    def forward_train(cls, p, xs, w):
        x = xs[0]
        axes = (0,) + tuple(range(2, x.ndim))
        return [_normalise(p, x, x.mean(axis=axes), x.var(axis=axes), w)]   # biased variance


def _normalise(p, x, mean, var, w):
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + float(p.eps))
    if p.scale_bias:
        y = y * w["gamma"].reshape(bshape) + w["beta"].reshape(bshape)
    return y
