"""Elementwise activations: ReLU, Sigmoid, TanH, HardSwish, SiLU (no parameters); Clip,
LeakyReLU, ELU, HardSigmoid, GELU (parameters); PReLU (a learned slope)."""

import math

import numpy as np

from .. import spec_pb2
from .base import LayerError, LayerType, WeightSpec, register, size, uniform_range

# NumPy has no erf, and zoo does not need SciPy. Cephes' rational approximations (S. L.
# Moshier, public domain; ndtr.c, the ones SciPy's erf compiles), vectorised: within a few
# units in the last place of math.erf (tests/test_reference_erf.py), and some 50x faster than
# calling math.erf element by element, which made ViT's float64 GELU the slowest part of
# `zoo verify vit-b-16`.
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)


def _poly(x, coefficients):
    """Horner's rule, highest power first, in place on one array."""
    out = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        out *= x
        out += c
    return out


def erf(x):
    """erf of a float64 array (Cephes erf/erfc: |x| <= 1 by erf's own rational function,
    beyond by 1 - erfc, whose rational functions in |x| switch at 8); each piece is
    evaluated on its own elements only."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x).ravel()
    out = np.empty_like(a)
    small = a <= 1.0
    s = a[small]
    z = s * s
    out[small] = s * _poly(z, _ERF_T) / _poly(z, _ERF_U)
    rest = ~small & (a < 27.0)               # erfc(27) underflows: erf is exactly 1 beyond
    out[~small] = 1.0
    for part, (p, q) in ((rest & (a < 8.0), (_ERFC_P, _ERFC_Q)), (rest & (a >= 8.0), (_ERFC_R, _ERFC_S))):
        r = a[part]
        out[part] = 1.0 - np.exp(-r * r) * _poly(r, p) / _poly(r, q)
    out = np.copysign(out.reshape(x.shape), x)
    return np.where(np.isnan(x), x, out)     # NaN in, NaN out
TANH_GELU = spec_pb2.GELUParam.TANH
GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)   # the tanh approximation: tanh(s (x + c x^3))
GELU_TANH_CUBIC = 0.044715


def gelu_tanh_argument(x):
    """What the tanh approximation of GELU takes the tanh of (zoo/magnitude.py's rule too)."""
    return GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * x**3)


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
            return [0.5 * x * (1.0 + np.tanh(gelu_tanh_argument(x)))]
        return [0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))]
