"""Error bounds for the forward judge: how far a correct float32 engine may be from the
float64 reference, element by element, given the magnitude of the computation behind each
element (the rule and its measured margins: zoo/tolerances.py).

`bounds(net, weights, blobs, k)` walks the network beside the reference and carries, for
every blob, S >= 0 of the blob's shape, the scale of the rounding error a float32 engine
accumulates there; the allowed error is k * S. Per layer:

    S_out = inherited(S_in)  (+)  u * A_out          u = 2^-24 (float32; 2^-53 for float64)

A_out is the sum of the absolute values of the terms the layer adds up for that element
(|W|·|x| + |b| for a convolution or inner product): float32 accumulation in any order errs by
a multiple of u·A, never of u·|y|, which cancellation can make arbitrarily small (measured:
a 75-term convolution summed in order errs by up to 2.3 u·A over 131k outputs, the engines
by up to 4.6 u·A). inherited is how far the layer moves its inputs' errors. Rounding errors
of different inputs are independent and of either sign, so through a linear map they add in
quadrature, sqrt(W²·S_in²), and (+) is a quadrature sum too; adding |W|·S_in instead (every
error aligned with its weight's sign) is a bound no engine comes near, sqrt(fan-in) times
too loose per layer: on AlexNet-R it allowed 1e4 times the error engines make at the
output, looser than the old rtol 1e-4. Smooth elementwise maps use their slope on
[x - k S, x + k S], max pooling the largest S of the window, layers that only move data
the same move of S.

Rules are keyed by layer type (RULES, `@rule`). A type without one gets `default_rule`,
conservative for any type: the inherited part is measured on the layer's own float64 forward
(inputs moved by +E, -E and two random sign patterns of E, the largest change, doubled), and
its own rounding is k·u times the largest of |y|, the layer applied to |x| and |W| (the sum
of absolute terms for any sum of products) and the blob's largest |y|.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import spec_pb2
from .layers import base as LB
from .layers import activations as A

U = 2.0**-24     # float32's unit roundoff
U64 = 2.0**-53   # float64's: the bounds of `zoo verify --dtype float64`
DEFAULT_SAFETY = 2.0   # the default rule's measured inherited part, doubled

Rule = Callable[..., list]
RULES: dict[str, Rule] = {}


def rule(*types: str):
    """Register the bound rule of layer types: f(layer, xs, es, w, ys, k, u) -> [E per top]
    (u: the engine's unit roundoff, U or U64)."""
    def deco(f):
        for t in types:
            RULES[t] = f
        return f
    return deco


def bounds(net, weights: dict[str, np.ndarray], blobs: dict[str, np.ndarray],
           k: float, u: float = U) -> dict[str, np.ndarray]:
    """The allowed error k * S for every blob in `blobs` (the float64 reference's,
    zoo.reference.forward). u: the engine's unit roundoff, U for float32 engines, U64 for
    `zoo verify --dtype float64` (the same rules: each term's rounding scales with u)."""
    es: dict[str, np.ndarray] = {}
    for layer in net.layers:
        if not all(t in blobs for t in layer.tops):
            continue                            # a loss layer the reference did not run
        if layer.kind.is_input:
            x = blobs[layer.tops[0]]
            es[layer.tops[0]] = input_rounding(x, u)
            continue
        w = {ws.name: weights[f"{layer.name}.{ws.name}"].astype(np.float64) for ws in layer.weights}
        xs = [blobs[b] for b in layer.bottoms]
        fn = RULES.get(layer.type, default_rule)
        outs = fn(layer, xs, [es[b] for b in layer.bottoms], w, [blobs[t] for t in layer.tops], k, u)
        for t, e in zip(layer.tops, outs):
            es[t] = np.broadcast_to(np.asarray(e, dtype=np.float64), blobs[t].shape)
    return {t: _stored(k * es.pop(t), u) for t in list(es)}    # one blob's copy at a time


def _stored(bound: np.ndarray, u: float) -> np.ndarray:
    """A float32 engine's bound kept as float32, rounded up (half the memory of a network's
    blobs, ViT-B/16's: 0.5 GB; below float32's smallest normal the judge's flush allows
    anyway); float64's as it is."""
    if u < U:
        return bound
    return np.nextafter(bound.astype(np.float32), np.float32(np.inf))


def quadrature(*parts):
    return np.sqrt(sum(np.square(p) for p in parts))


def input_rounding(x: np.ndarray, u: float = U) -> np.ndarray:
    """An input is exact when the engine's dtype holds it (zoo's data and ids), else rounded
    once (float32: U; a float64 engine holds the float64 reference's inputs exactly)."""
    if x.dtype.kind in "iu" or u < U:
        return np.zeros(x.shape)
    return np.abs(x - x.astype(np.float32).astype(np.float64))


# --- linear maps: inherited |op|(E), own k u |op|(|x|) ---------------------------------------
def _abs_weights(w: dict, *names: str) -> dict:
    return {n: np.abs(w[n]) for n in names if n in w}


@rule("Convolution", "InnerProduct")
def weighted_sum(layer, xs, es, w, ys, k, u=U):
    # the layer itself, run with W² on S² (inherited) and with |W| on |x| (its own terms)
    fwd = layer.kind.forward
    inherited = fwd(layer.p, [np.square(es[0])], {"weight": np.square(w["weight"])})[0]
    terms = fwd(layer.p, [np.abs(xs[0])], _abs_weights(w, "weight", "bias"))[0]
    return [quadrature(np.sqrt(inherited), u * terms)]


@rule("Pooling")
def pooling(layer, xs, es, w, ys, k, u=U):
    if layer.p.pool == spec_pb2.PoolingParam.MAX:
        # |max(a) - max(b)| <= max |a - b|: max pooling of S (padding never wins a max)
        return [layer.kind.forward(layer.p, [es[0]], w)[0]]
    # the window's average of S (errors taken as aligned: a small, safe overestimate)
    return [layer.kind.forward(layer.p, [es[0] + u * np.abs(xs[0])], w)[0]]


@rule("Eltwise")
def eltwise(layer, xs, es, w, ys, k, u=U):
    # bottoms may broadcast (NumPy's rule): every term is taken at the output's shape
    op, E = layer.p.operation, spec_pb2.EltwiseParam
    xs, es = np.broadcast_arrays(*xs), np.broadcast_arrays(*es)
    if op in (E.SUM, E.SUB):
        coeff = ([abs(float(c)) for c in layer.p.coeff] or [1.0] * len(xs)) if op == E.SUM else [1.0, 1.0]
        terms = sum(c * np.abs(x) for c, x in zip(coeff, xs))
        return [quadrature(*(c * e for c, e in zip(coeff, es)), u * terms)]
    if op == E.MAX:
        return [np.max(np.stack(es), axis=0)]
    if op == E.DIV:
        # to first order: d(a/b) = da/|b| + |a/b| db/|b|; the quotient rounds once
        with np.errstate(divide="ignore", invalid="ignore"):
            return [(es[0] + np.abs(ys[0]) * es[1]) / np.abs(xs[1]) + u * np.abs(ys[0])]
    # PROD: d(prod) = sum_i E_i prod_{j != i} (|x_j| + E_j); each product rounds once
    total = np.zeros(ys[0].shape)
    for i, e in enumerate(es):
        others = [np.abs(x) + ej for j, (x, ej) in enumerate(zip(xs, es)) if j != i]
        total = total + e * np.prod(np.stack(others), axis=0)
    return [total + u * len(xs) * np.abs(ys[0])]


@rule("BatchNorm")
def batch_norm(layer, xs, es, w, ys, k, u=U):
    # inference: y = a x + (beta - a mean), a = gamma / sqrt(var + eps); engines fold a and
    # the shift in float32, so the terms are a x, a mean and beta
    x = xs[0]
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    a = 1.0 / np.sqrt(w["running_var"] + float(layer.p.eps))
    beta = np.zeros_like(a)
    if "gamma" in w:
        a, beta = a * w["gamma"], w["beta"]
    a, mean, beta = (np.abs(v).reshape(bshape) for v in (a, w["running_mean"], beta))
    return [quadrature(a * es[0], u * (a * (np.abs(x) + mean) + beta))]


# --- elementwise nonlinear maps: the slope over [x - E, x + E] --------------------------------
@rule("ReLU")
def relu(layer, xs, es, w, ys, k, u=U):
    return [es[0]]                               # 1-Lipschitz and exact


def _sigmoid_slope(z):
    s = 1.0 / (1.0 + np.exp(-z))
    return s * (1.0 - s)


def _nearest_to_zero(x, e):
    """min |t| over [x - e, x + e]: where the slope of sigmoid and tanh is largest."""
    return np.maximum(np.abs(x) - e, 0.0)


@rule("Sigmoid")
def sigmoid(layer, xs, es, w, ys, k, u=U):
    x, e, y = xs[0], es[0], ys[0]
    slope = _sigmoid_slope(_nearest_to_zero(x, k * e))
    # own: the function's rounding (a few ulps of y) and of its argument (u |x| times slope)
    return [slope * e + u * (np.abs(y) + slope * np.abs(x))]


@rule("TanH")
def tanh(layer, xs, es, w, ys, k, u=U):
    x, e, y = xs[0], es[0], ys[0]
    slope = _tanh_slope(x, k * e)
    return [slope * e + u * (np.abs(y) + slope * np.abs(x))]


@rule("GELU")
def gelu(layer, xs, es, w, ys, k, u=U):
    # y = x P(x), P = Phi (exact) or the tanh approximation's. Both slopes g' = P + x P' lie
    # in [-0.129, 1.129] and |g''| <= 2 phi(0) < 0.8 (the maximum, at 0, of phi(t)|2 - t^2|
    # and of the approximation's, checked to 1e-9 on a fine grid), so over [x - kE, x + kE]
    # the slope is at most |g'(x)| + 0.8 kE. Own: the products round (3 u |y|) and P, which
    # engines make from erf or tanh near +-1, errs by up to ~2 u absolute, times |x|
    # (measured: torch's float32 GELU errs by up to 1.44 u (3|y| + 2|x|); TensorFlow's 0.57)
    x, e, y = xs[0], es[0], ys[0]
    if layer.p.approximate == A.TANH_GELU:
        t = np.tanh(A.gelu_tanh_argument(x))
        p = 0.5 * (1.0 + t)
        dp = 0.5 * (1.0 - t * t) * A.GELU_TANH_SCALE * (1.0 + 3 * A.GELU_TANH_CUBIC * x * x)
    else:
        p = 0.5 * (1.0 + A.erf(x * math.sqrt(0.5)))
        dp = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    slope = np.abs(p + x * dp) + 0.8 * k * e
    return [slope * e + u * (3.0 * np.abs(y) + 2.0 * np.abs(x))]


@rule("LRN")
def lrn(layer, xs, es, w, ys, k, u=U):
    # y = x s^-b, s = c + a/n sum_window x^2. dy/dx_self = s^-b; dy/dx_j = -2 b a/n x x_j s^(-b-1)
    p, x, e, y = layer.p, xs[0], es[0], ys[0]
    n, r = int(p.local_size), (int(p.local_size) - 1) // 2
    a, b = float(p.alpha) / n, float(p.beta)
    s = float(p.k) + a * _window_sum(x * x, n, r)   # (S is small next to x: its slope at x)
    cross = _window_sum(np.abs(x) * e, n, r)
    inherited = s ** (-b) * e + 2 * b * a * np.abs(x) * s ** (-b - 1) * cross
    # own: the window's positive sum (n terms) moves s relatively by n u, y by b n u
    return [inherited + u * np.abs(y) * (2.0 + b * (n + 2))]


def _window_sum(v, n, r):
    vp = np.pad(v, ((0, 0), (r, r), (0, 0), (0, 0)))
    return np.lib.stride_tricks.sliding_window_view(vp, n, axis=1).sum(axis=-1)


@rule("Softmax")
def softmax(layer, xs, es, w, ys, k, u=U):
    # dy_i = y_i (dz_i - sum_j y_j dz_j): |dy_i| <= y_i (E_i + sum_j y_j E_j). Engines subtract
    # the max first: that rounds z - m by u |z - m|, an input error of the same kind
    axis = LB.axis_of(layer.p.axis, xs[0].ndim)
    z, y = xs[0], ys[0]
    ez = es[0] + u * np.abs(z - z.max(axis=axis, keepdims=True))
    return [y * (ez + (y * ez).sum(axis=axis, keepdims=True)) + u * y]


# --- layers that only move data: the same move applied to E -----------------------------------
@rule("Dropout", "Flatten", "Reshape", "Concat")
def moved(layer, xs, es, w, ys, k, u=U):
    return layer.kind.forward(layer.p, es, w)


@rule("Embedding")
def embedding(layer, xs, es, w, ys, k, u=U):
    return [np.zeros(ys[0].shape)]               # an exact lookup of float32 rows


@rule("LSTM")
def lstm(layer, xs, es, w, ys, k, u=U):
    """The recurrence with each quantity's S beside it (gates i, f, g, o; zero state): the
    gates' matrix products as weighted_sum, the gate functions and the cell update by their
    slopes (errors of c and h taken as aligned: safe)."""
    x, ex = xs[0], es[0]
    n, t, _ = x.shape
    hsz = int(layer.p.num_output)
    wih, whh, bias = w["weight_ih"], w["weight_hh"], w["bias"]
    h, c, eh, ec = (np.zeros((n, hsz)) for _ in range(4))
    out = np.empty((n, t, hsz))
    for step in range(t):
        xt, ext = x[:, step], ex[:, step]
        gates = xt @ wih.T + h @ whh.T + bias
        terms = np.abs(xt) @ np.abs(wih).T + np.abs(h) @ np.abs(whh).T + np.abs(bias)
        inherited = np.square(ext) @ np.square(wih).T + np.square(eh) @ np.square(whh).T
        zi, zf, zg, zo = np.split(gates, 4, axis=1)
        ei, ef, eg, eo = np.split(quadrature(np.sqrt(inherited), u * terms), 4, axis=1)
        si, sf, so = (1.0 / (1.0 + np.exp(-z)) for z in (zi, zf, zo))
        tg = np.tanh(zg)
        di, df, do = (_sigmoid_slope(_nearest_to_zero(z, k * e)) * e
                      + u * (s + _sigmoid_slope(z) * np.abs(z))
                      for z, e, s in ((zi, ei, si), (zf, ef, sf), (zo, eo, so)))
        dg = (_tanh_slope(zg, k * eg) * eg + u * (np.abs(tg) + np.abs(zg)))
        c_new = sf * c + si * tg
        ec = (sf * ec + np.abs(c) * df + si * dg + np.abs(tg) * di
              + u * (np.abs(sf * c) + np.abs(si * tg)))
        c = c_new
        tc = np.tanh(c)
        eh = np.abs(tc) * do + so * _tanh_slope(c, k * ec) * ec + u * (np.abs(so * tc) + np.abs(c))
        h = so * tc
        out[:, step] = eh
    return [out]


def _tanh_slope(x, e):
    return 1.0 - np.tanh(_nearest_to_zero(x, e)) ** 2


# --- any other type ---------------------------------------------------------------------------
def default_rule(layer, xs, es, w, ys, k, u=U):
    """Conservative for any type (see the module's docstring): measured, not derived."""
    rng = np.random.default_rng(0)
    floats = [i for i, x in enumerate(xs) if x.dtype.kind == "f"]
    signs = [1.0, -1.0, "random", "random"]
    inherited = [np.zeros(y.shape) for y in ys]
    for s in signs:
        moved_xs = list(xs)
        for i in floats:
            pattern = rng.choice([-1.0, 1.0], size=xs[i].shape) if s == "random" else s
            moved_xs[i] = xs[i] + pattern * es[i]
        for j, y in enumerate(_forward(layer, moved_xs, w, ys)):
            inherited[j] = np.maximum(inherited[j], np.abs(y - ys[j]))
    terms = _forward(layer, [np.abs(x) if x.dtype.kind == "f" else x for x in xs],
                     {n: np.abs(a) for n, a in w.items()}, ys)
    out = []
    for y, d, a in zip(ys, inherited, terms):
        own = np.maximum(np.maximum(np.abs(y), np.abs(a)), float(np.max(np.abs(y), initial=0.0)))
        out.append(DEFAULT_SAFETY * (d + u * own))
    return out


def _forward(layer, xs, w, ys) -> list[np.ndarray]:
    """The layer's float64 forward, non-finite or failed results read as no information
    (zeros): the default rule then rests on the blob-scale term."""
    try:
        with np.errstate(all="ignore"):
            got = [np.asarray(v, dtype=np.float64) for v in layer.kind.forward(layer.p, xs, w)]
    except Exception:   # noqa: BLE001 - a probe outside the layer's domain proves nothing
        return [np.zeros(y.shape) for y in ys]
    return [np.where(np.isfinite(g), g, 0.0) if g.shape == y.shape else np.zeros(y.shape)
            for g, y in zip(got, ys)]
