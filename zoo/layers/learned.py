"""Layers around one learned blob of a stated shape: Scale (y = x * scale [+ bias]), Bias
(y = x + bias) and Parameter (the blob itself, repeated over the batch).

Scale's and Bias's blob leaves out the batch axis and broadcasts (NumPy's rule) against the
input without it: per channel on NCHW is [C, 1, 1], ViT's position embedding [T, D].
"""

import numpy as np

from .base import LayerError, LayerType, WeightSpec, register, size, uniform, uniform_range


def _blob_shape(p, field: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in p.shape)
    if not shape:
        raise LayerError(f"{field}.shape is required")
    if any(d <= 0 for d in shape):
        raise LayerError(f"{field}.shape {list(shape)}: every size must be > 0")
    return shape


def _check_broadcast(field: str, blob: tuple, s: tuple) -> None:
    if len(blob) != len(s) - 1:
        raise LayerError(f"{field}.shape {list(blob)} has {len(blob)} axes; the input {s} "
                         f"without its batch axis has {len(s) - 1}")
    for axis, (b, x) in enumerate(zip(blob, s[1:]), start=1):
        if b not in (1, x):
            raise LayerError(f"{field}.shape {list(blob)} does not broadcast against the "
                             f"input {s}: size {b} along axis {axis} must be {x} or 1")


@register
class Scale(LayerType):
    type = "Scale"
    param_field = "scale_param"
    summary = "x * learned scale (+ learned bias), broadcast"

    @staticmethod
    def check(p):
        _blob_shape(p, "scale_param")

    @staticmethod
    def infer(p, shapes):
        _check_broadcast("scale_param", _blob_shape(p, "scale_param"), shapes[0])
        return [shapes[0]]

    @staticmethod
    def weights(p, shapes):
        shape = _blob_shape(p, "scale_param")
        ws = [WeightSpec("scale", shape, uniform_range(0.5, 1.5))]
        if p.bias_term:
            ws.append(WeightSpec("bias", shape, uniform(0.1)))
        return ws

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return size(out[0]) * (2 if p.bias_term else 1)

    @staticmethod
    def forward(p, xs, w):
        y = xs[0] * w["scale"][None]
        return [y + w["bias"][None] if "bias" in w else y]


@register
class Bias(LayerType):
    type = "Bias"
    param_field = "bias_param"
    summary = "x + learned bias, broadcast"

    @staticmethod
    def check(p):
        _blob_shape(p, "bias_param")

    @staticmethod
    def infer(p, shapes):
        _check_broadcast("bias_param", _blob_shape(p, "bias_param"), shapes[0])
        return [shapes[0]]

    @staticmethod
    def weights(p, shapes):
        return [WeightSpec("bias", _blob_shape(p, "bias_param"), uniform(0.1))]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return size(out[0])

    @staticmethod
    def forward(p, xs, w):
        return [xs[0] + w["bias"][None]]


@register
class Parameter(LayerType):
    type = "Parameter"
    param_field = "parameter_param"
    summary = "a learned blob repeated over the batch of its bottom"

    @staticmethod
    def check(p):
        _blob_shape(p, "parameter_param")

    @staticmethod
    def infer(p, shapes):
        return [(shapes[0][0],) + _blob_shape(p, "parameter_param")]

    @staticmethod
    def weights(p, shapes):
        return [WeightSpec("value", _blob_shape(p, "parameter_param"), uniform(0.1))]

    @staticmethod
    def forward(p, xs, w):
        v = w["value"]
        return [np.broadcast_to(v[None], (xs[0].shape[0],) + v.shape).copy()]
