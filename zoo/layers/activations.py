"""Elementwise activations: ReLU, Sigmoid, TanH, HardSwish, SiLU (no parameters); Clip,
LeakyReLU, ELU, HardSigmoid, GELU (parameters); PReLU (a learned slope)."""

import math

import numpy as np

from .. import spec_pb2
from .base import LayerError, LayerType, WeightSpec, register, size, uniform_range

_erf = np.frompyfunc(math.erf, 1, 1)   # NumPy has no erf (and zoo does not need SciPy)
TANH_GELU = spec_pb2.GELUParam.TANH


def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow warnings for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def hard_sigmoid(x, alpha: float, beta: float):
    return np.clip(alpha * x + beta, 0.0, 1.0)


class _Elementwise(LayerType):
    @staticmethod
    def infer(p, shapes):
        return [shapes[0]]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return size(out[0])


@register
class ReLU(_Elementwise):
    type = "ReLU"
    summary = "max(x, 0)"

    @staticmethod
    def forward(p, xs, w):
        return [np.maximum(xs[0], 0.0)]


@register
class Sigmoid(_Elementwise):
    type = "Sigmoid"
    summary = "1 / (1 + exp(-x))"

    @staticmethod
    def forward(p, xs, w):
        return [1.0 / (1.0 + np.exp(-xs[0]))]


@register
class TanH(_Elementwise):
    type = "TanH"
    summary = "tanh(x)"

    @staticmethod
    def forward(p, xs, w):
        return [np.tanh(xs[0])]


@register
class Clip(_Elementwise):
    type = "Clip"
    param_field = "clip_param"
    required = ("min", "max")
    summary = "min(max(x, min), max); ReLU6 is Clip(0, 6)"

    @staticmethod
    def check(p):
        if p.min > p.max:
            raise LayerError(f"clip_param.min {p.min} is larger than max {p.max}")

    @staticmethod
    def forward(p, xs, w):
        return [np.clip(xs[0], float(p.min), float(p.max))]


@register
class LeakyReLU(_Elementwise):
    type = "LeakyReLU"
    param_field = "leaky_relu_param"
    summary = "x if x >= 0 else negative_slope * x"

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        return [np.where(x >= 0, x, float(p.negative_slope) * x)]


@register
class PReLU(_Elementwise):
    type = "PReLU"
    param_field = "prelu_param"
    summary = "x if x >= 0 else slope * x, slope learned per channel (axis 1) or shared"

    @staticmethod
    def infer(p, shapes):
        if len(shapes[0]) < 2:
            raise LayerError(f"PReLU takes an (N, C, ...) blob, got shape {shapes[0]}")
        return [shapes[0]]

    @staticmethod
    def weights(p, shapes):
        c = 1 if p.channel_shared else shapes[0][1]
        # around PyTorch's 0.25, varied per channel so that a channel mix-up is caught
        return [WeightSpec("slope", (c,), uniform_range(0.05, 0.45))]

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        slope = w["slope"].reshape((1, -1) + (1,) * (x.ndim - 2))
        return [np.where(x >= 0, x, slope * x)]


@register
class ELU(_Elementwise):
    type = "ELU"
    param_field = "elu_param"
    summary = "x if x > 0 else alpha * (exp(x) - 1)"

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        return [np.where(x > 0, x, float(p.alpha) * np.expm1(np.minimum(x, 0.0)))]


@register
class HardSigmoid(_Elementwise):
    type = "HardSigmoid"
    param_field = "hard_sigmoid_param"
    summary = "max(0, min(1, alpha * x + beta)); ONNX's defaults 0.2, 0.5"

    @staticmethod
    def forward(p, xs, w):
        return [hard_sigmoid(xs[0], float(p.alpha), float(p.beta))]


@register
class HardSwish(_Elementwise):
    type = "HardSwish"
    summary = "x * min(max(x + 3, 0), 6) / 6"

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        return [x * np.clip(x + 3.0, 0.0, 6.0) / 6.0]


@register
class SiLU(_Elementwise):
    type = "SiLU"
    summary = "x * sigmoid(x) (Swish)"

    @staticmethod
    def forward(p, xs, w):
        return [xs[0] * sigmoid(xs[0])]


@register
class GELU(_Elementwise):
    type = "GELU"
    param_field = "gelu_param"
    summary = "x * Phi(x): exact (erf) or the tanh approximation"

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        if p.approximate == TANH_GELU:
            return [0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))]
        return [0.5 * x * (1.0 + np.asarray(_erf(x / math.sqrt(2.0)), dtype=np.float64))]
