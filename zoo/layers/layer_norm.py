"""LayerNorm over the trailing axes from `axis` on, per sample; the same in training.

Weights (when scale_bias): gamma, beta, each of shape in.shape[axis:].
"""

import numpy as np

from .base import LayerError, LayerType, WeightSpec, axis_of, register, size, uniform, uniform_range


def first_axis(p, rank: int) -> int:
    a = axis_of(p.axis, rank, "layer_norm_param.axis")
    if a == 0:
        raise LayerError("layer_norm_param.axis must not be the batch axis 0")
    return a


@register
class LayerNorm(LayerType):
    type = "LayerNorm"
    param_field = "layer_norm_param"
    summary = "layer normalisation over trailing axes, scale and shift"

    @staticmethod
    def check(p):
        if p.eps <= 0:
            raise LayerError(f"eps must be > 0, got {p.eps}")

    @staticmethod
    def infer(p, shapes):
        first_axis(p, len(shapes[0]))
        return [shapes[0]]

    @staticmethod
    def weights(p, shapes):
        if not p.scale_bias:
            return []
        shape = shapes[0][first_axis(p, len(shapes[0])):]
        return [WeightSpec("gamma", shape, uniform_range(0.5, 1.5)),
                WeightSpec("beta", shape, uniform(0.1))]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return 5 * size(out[0])

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        axes = tuple(range(first_axis(p, x.ndim), x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)     # biased
        y = (x - mean) / np.sqrt(var + float(p.eps))
        if p.scale_bias:
            y = y * w["gamma"] + w["beta"]
        return [y]
