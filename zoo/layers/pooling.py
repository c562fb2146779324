"""Pooling (MAX or AVE; per-axis kernel and stride, per-side padding; stated rounding and
divisor).

See PoolingParam in specs/zoo.proto for the output-size rules and the divisor choices.
`geometry(p, shape)` is the one place the window (global pooling resolved) is read.
"""

import math

import numpy as np

from .. import spec_pb2
from .base import LayerError, LayerType, register, size
from .geometry import Window, geometry_fields_set, resolve

_P = spec_pb2.PoolingParam
MAX, AVE = _P.MAX, _P.AVE
FLOOR, CEIL = _P.FLOOR, _P.CEIL
PADDED, VALID = _P.PADDED, _P.VALID


def pool_out_sides(h: int, k: int, s: int, before: int, after: int, ceil: bool) -> int:
    """Output size along one axis (Caffe's rule for CEIL, which PyTorch shares)."""
    if not ceil:
        return (h + before + after - k) // s + 1
    out = math.ceil((h + before + after - k) / s) + 1
    if (before > 0 or after > 0) and (out - 1) * s >= h + before:
        out -= 1   # the last window must start inside the input or its top/left padding
    return out


def pool_out(h: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Output size along one axis with pad p on both sides."""
    return pool_out_sides(h, k, s, p, p, ceil)


def geometry(p, shape) -> Window:
    """The window for this (N, C, H, W) input shape, global pooling resolved."""
    if p.global_pooling:
        return Window(int(shape[2]), int(shape[3]))
    return resolve(p, dilation=False)


def out_hw(p, shape) -> tuple[int, int]:
    g, ceil = geometry(p, shape), p.round_mode == CEIL and not p.global_pooling
    return (pool_out_sides(shape[2], g.kh, g.sh, g.pad_top, g.pad_bottom, ceil),
            pool_out_sides(shape[3], g.kw, g.sw, g.pad_left, g.pad_right, ceil))


def window(p, shape) -> tuple[int, int, int, bool]:
    """(kernel, stride, pad, ceil) of a square, symmetric window (the 2016 form), global
    pooling resolved; a LayerError for any other window (read `geometry` instead)."""
    g = geometry(p, shape)
    if not (g.square and g.symmetric):
        raise LayerError("this pooling window is not square and symmetric")
    return g.kh, g.sh, g.pad_top, p.round_mode == CEIL and not p.global_pooling


def _counts(length: int, out_len: int, k: int, s: int, before: int, after: int, rule: int):
    lo, hi = (0, length) if rule == VALID else (-before, length + after)
    starts = np.arange(out_len) * s - before
    return np.minimum(starts + k, hi) - np.maximum(starts, lo)


def divisor_map(p, h: int, w: int, oh: int, ow: int, rule: int | None = None) -> np.ndarray:
    """(oh, ow) window sizes counted by `rule` (default: the layer's avg_divisor): PADDED
    clips each window to [-pad_top, H + pad_bottom), VALID to [0, H) (W likewise). Neither
    counts the CEIL overhang."""
    g = geometry(p, (0, 0, h, w))
    rule = p.avg_divisor if rule is None else rule
    return np.outer(_counts(h, oh, g.kh, g.sh, g.pad_top, g.pad_bottom, rule),
                    _counts(w, ow, g.kw, g.sw, g.pad_left, g.pad_right, rule)).astype(np.float64)


def end_padding(p, h: int, w: int, oh: int, ow: int) -> tuple[int, int]:
    """Extra bottom/right padding, beyond pad_bottom/pad_right, that makes FLOOR pooling give
    (oh, ow): the CEIL overhang, as an explicit pad (0 for FLOOR)."""
    g = geometry(p, (0, 0, h, w))
    return (max((oh - 1) * g.sh + g.kh - h - g.pad_top - g.pad_bottom, 0),
            max((ow - 1) * g.sw + g.kw - w - g.pad_left - g.pad_right, 0))


@register
class Pooling(LayerType):
    type = "Pooling"
    param_field = "pooling_param"
    summary = "max / average pooling, explicit rounding and divisor"

    @staticmethod
    def check(p):
        if p.global_pooling:
            stated = [f for f in geometry_fields_set(p) if f.startswith("kernel")
                      or (f.startswith("stride") and getattr(p, f) != 1)
                      or (f.startswith("pad") and getattr(p, f) != 0)]
            if stated:
                raise LayerError("global_pooling takes no kernel_size, stride or pad "
                                 f"(got {', '.join(stated)})")
            return
        if not geometry_fields_set(p) or not any(f.startswith("kernel") for f in geometry_fields_set(p)):
            raise LayerError("pooling_param.kernel_size is required (or kernel_h and kernel_w, "
                             "or global_pooling: true)")
        g = resolve(p, dilation=False)
        if not p.HasField("round_mode") or p.round_mode == 0:
            raise LayerError("pooling_param.round_mode is required: FLOOR or CEIL")
        if not (g.pad_top < g.kh and g.pad_bottom < g.kh and g.pad_left < g.kw and g.pad_right < g.kw):
            raise LayerError(f"each pad must be smaller than the kernel along its axis, got pads "
                             f"(top, bottom, left, right) {g.pads} for kernel {g.kh}x{g.kw}")
        if p.pool == AVE and (max(g.pads) > 0 or p.round_mode == CEIL) and p.avg_divisor == 0:
            raise LayerError("pooling_param.avg_divisor is required for AVE pooling with pad "
                             "or CEIL rounding: PADDED or VALID")

    @staticmethod
    def infer(p, shapes):
        (s,) = shapes
        if len(s) != 4:
            raise LayerError(f"Pooling takes an (N, C, H, W) blob, got shape {s}")
        if p.global_pooling:
            if s[2] != s[3]:
                raise LayerError(f"global pooling needs a square map, got {s[2]}x{s[3]}; "
                                 "a Reduce (MEAN or MAX over axes [2, 3]) takes any map")
            return [(s[0], s[1], 1, 1)]
        g = geometry(p, s)
        ph, pw = s[2] + g.pad_top + g.pad_bottom, s[3] + g.pad_left + g.pad_right
        if g.kh > ph or g.kw > pw:
            raise LayerError(f"kernel {g.kh}x{g.kw} is larger than the padded input {ph}x{pw}")
        return [(s[0], s[1]) + out_hw(p, s)]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        g = geometry(p, shapes[0])
        return size(out[0]) * g.kh * g.kw

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        n, c, h, wd = x.shape
        g = geometry(p, x.shape)
        oh, ow = out_hw(p, x.shape)
        # pad top/left as stated, bottom/right far enough for every window (CEIL overhang too)
        rh = (oh - 1) * g.sh + g.kh - h - g.pad_top
        rw = (ow - 1) * g.sw + g.kw - wd - g.pad_left
        fill = -np.inf if p.pool == MAX else 0.0
        xp = np.pad(x, ((0, 0), (0, 0), (g.pad_top, max(rh, 0)), (g.pad_left, max(rw, 0))),
                    constant_values=fill)
        win = np.lib.stride_tricks.sliding_window_view(xp, (g.kh, g.kw), axis=(2, 3))
        win = win[:, :, ::g.sh, ::g.sw][:, :, :oh, :ow]
        if p.pool == MAX:
            return [win.max(axis=(4, 5))]
        if p.global_pooling:
            return [win.mean(axis=(4, 5))]
        return [win.sum(axis=(4, 5)) / divisor_map(p, h, wd, oh, ow)]
