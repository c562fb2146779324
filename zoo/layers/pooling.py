"""Pooling (MAX or AVE, square windows, symmetric padding, stated rounding and divisor).

See PoolingParam in specs/zoo.proto for the output-size rules and the divisor choices.
"""

import math

import numpy as np

from .. import spec_pb2
from .base import LayerError, LayerType, positive, register, size

_P = spec_pb2.PoolingParam
MAX, AVE = _P.MAX, _P.AVE
FLOOR, CEIL = _P.FLOOR, _P.CEIL
PADDED, VALID = _P.PADDED, _P.VALID


def pool_out(h: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Output size along one axis (Caffe's rule for CEIL, which PyTorch shares)."""
    if not ceil:
        return (h + 2 * p - k) // s + 1
    out = math.ceil((h + 2 * p - k) / s) + 1
    if p > 0 and (out - 1) * s >= h + p:
        out -= 1   # the last window must start inside the input or its left padding
    return out


def divisor_map(p, h: int, w: int, oh: int, ow: int, rule: int | None = None) -> np.ndarray:
    """(oh, ow) window sizes counted by `rule` (default: the layer's avg_divisor): PADDED
    clips each window to [-pad, H + pad), VALID to [0, H). Neither counts the CEIL overhang."""
    k, s, pad = int(p.kernel_size), int(p.stride), int(p.pad)
    rule = p.avg_divisor if rule is None else rule

    def counts(length, out_len):
        lo, hi = (0, length) if rule == VALID else (-pad, length + pad)
        starts = np.arange(out_len) * s - pad
        return np.minimum(starts + k, hi) - np.maximum(starts, lo)

    return np.outer(counts(h, oh), counts(w, ow)).astype(np.float64)


def end_padding(p, h: int, w: int, oh: int, ow: int) -> tuple[int, int]:
    """Extra bottom/right padding that makes FLOOR pooling with `pad` give (oh, ow): the
    CEIL overhang, as an explicit pad (0 for FLOOR)."""
    k, s, pad = int(p.kernel_size), int(p.stride), int(p.pad)
    return max((oh - 1) * s + k - h - 2 * pad, 0), max((ow - 1) * s + k - w - 2 * pad, 0)


def window(p, shape) -> tuple[int, int, int, bool]:
    """(kernel, stride, pad, ceil) for this input shape, global pooling resolved."""
    if p.global_pooling:
        return shape[2], 1, 0, False
    return int(p.kernel_size), int(p.stride), int(p.pad), p.round_mode == CEIL


@register
class Pooling(LayerType):
    type = "Pooling"
    param_field = "pooling_param"
    summary = "max / average pooling, explicit rounding and divisor"

    @staticmethod
    def check(p):
        if p.global_pooling:
            if p.HasField("kernel_size") or p.pad or p.stride != 1:
                raise LayerError("global_pooling takes no kernel_size, stride or pad")
            return
        if not p.HasField("kernel_size"):
            raise LayerError("pooling_param.kernel_size is required (or global_pooling: true)")
        positive(p, "kernel_size", "stride")
        if not p.HasField("round_mode") or p.round_mode == 0:
            raise LayerError("pooling_param.round_mode is required: FLOOR or CEIL")
        if not 0 <= p.pad < p.kernel_size:
            raise LayerError(f"pad must be in [0, kernel_size), got {p.pad}")
        if p.pool == AVE and (p.pad > 0 or p.round_mode == CEIL) and p.avg_divisor == 0:
            raise LayerError("pooling_param.avg_divisor is required for AVE pooling with pad "
                             "or CEIL rounding: PADDED or VALID")

    @staticmethod
    def infer(p, shapes):
        (s,) = shapes
        if len(s) != 4:
            raise LayerError(f"Pooling takes an (N, C, H, W) blob, got shape {s}")
        if p.global_pooling:
            if s[2] != s[3]:
                raise LayerError(f"global pooling needs a square map, got {s[2]}x{s[3]}")
            return [(s[0], s[1], 1, 1)]
        k, st, pd, ceil = window(p, s)
        if k > min(s[2], s[3]) + 2 * pd:
            raise LayerError(f"kernel {k} is larger than the padded input "
                             f"{s[2] + 2 * pd}x{s[3] + 2 * pd}")
        return [(s[0], s[1], pool_out(s[2], k, st, pd, ceil), pool_out(s[3], k, st, pd, ceil))]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        k = shapes[0][2] if p.global_pooling else p.kernel_size
        return size(out[0]) * k * k

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        n, c, h, wd = x.shape
        k, s, pd, ceil = window(p, x.shape)
        oh, ow = pool_out(h, k, s, pd, ceil), pool_out(wd, k, s, pd, ceil)
        # pad left by pd, right far enough for every window (the CEIL overhang included)
        rh, rw = (oh - 1) * s + k - h - pd, (ow - 1) * s + k - wd - pd
        fill = -np.inf if p.pool == MAX else 0.0
        xp = np.pad(x, ((0, 0), (0, 0), (pd, max(rh, 0)), (pd, max(rw, 0))), constant_values=fill)
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
        win = win[:, :, ::s, ::s][:, :, :oh, :ow]
        if p.pool == MAX:
            return [win.max(axis=(4, 5))]
        if p.global_pooling:
            return [win.mean(axis=(4, 5))]
        return [win.sum(axis=(4, 5)) / divisor_map(p, h, wd, oh, ow)]
