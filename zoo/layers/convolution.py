"""Convolution (NCHW, per-axis kernel, stride and dilation, per-side zero padding, groups:
dense, grouped or depthwise).

Weights: weight (O, C/group, kh, kw), bias (O,). The forms a size may be stated in are
resolved by geometry.resolve; `window(p)` is the one place converters read them from.
"""

import numpy as np

from .base import LayerError, LayerType, WeightSpec, lecun_uniform, positive, register, size, uniform
from .geometry import Window, resolve


def conv_out(h: int, k: int, s: int, p: int, d: int) -> int:
    """Output size along one axis with pad p on both sides."""
    return conv_out_sides(h, k, s, p, p, d)


def conv_out_sides(h: int, k: int, s: int, before: int, after: int, d: int) -> int:
    return (h + before + after - d * (k - 1) - 1) // s + 1


def window(p) -> Window:
    """The layer's window: kernel, stride, dilation per axis, pad per side."""
    return resolve(p, dilation=True)


@register
class Convolution(LayerType):
    type = "Convolution"
    param_field = "convolution_param"
    required = ("num_output",)
    summary = "2-D convolution, NCHW"

    @staticmethod
    def check(p):
        positive(p, "num_output", "group")
        window(p)
        if p.num_output % p.group:
            raise LayerError(f"num_output {p.num_output} is not divisible by group {p.group}")

    @staticmethod
    def infer(p, shapes):
        (s,) = shapes
        if len(s) != 4:
            raise LayerError(f"Convolution takes an (N, C, H, W) blob, got shape {s}")
        n, c, h, w = s
        if c % p.group:
            raise LayerError(f"input channels {c} are not divisible by group {p.group}")
        g = window(p)
        ph, pw = h + g.pad_top + g.pad_bottom, w + g.pad_left + g.pad_right
        if g.span_h > ph or g.span_w > pw:
            raise LayerError(f"kernel {g.kh}x{g.kw} (span {g.span_h}x{g.span_w}) is larger than "
                             f"the padded input {ph}x{pw}")
        return [(n, int(p.num_output),
                 conv_out_sides(h, g.kh, g.sh, g.pad_top, g.pad_bottom, g.dh),
                 conv_out_sides(w, g.kw, g.sw, g.pad_left, g.pad_right, g.dw))]

    @staticmethod
    def weights(p, shapes):
        g = window(p)
        c = shapes[0][1] // p.group
        ws = [WeightSpec("weight", (int(p.num_output), c, g.kh, g.kw), lecun_uniform(c * g.kh * g.kw))]
        if p.bias_term:
            ws.append(WeightSpec("bias", (int(p.num_output),), uniform(0.1)))
        return ws

    @staticmethod
    def macs(p, shapes, out):
        g = window(p)
        return size(out[0]) * (shapes[0][1] // p.group) * g.kh * g.kw

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        g = window(p)
        groups = int(p.group)
        x = np.pad(x, ((0, 0), (0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right)))
        # windows: (N, C, OH, OW, kh, kw), dilation by striding inside each window
        win = np.lib.stride_tricks.sliding_window_view(x, (g.span_h, g.span_w), axis=(2, 3))
        win = win[:, :, ::g.sh, ::g.sw, ::g.dh, ::g.dw]
        weight = w["weight"]
        n, c, oh, ow = win.shape[:4]
        o, cg = weight.shape[0], weight.shape[1]
        # one batched matrix product over the groups: (N, G, OH*OW, Cg*kh*kw) @ (G, Cg*kh*kw, O/G)
        cols = win.reshape(n, groups, cg, oh, ow, g.kh, g.kw).transpose(0, 1, 3, 4, 2, 5, 6)
        cols = cols.reshape(n, groups, oh * ow, cg * g.kh * g.kw)
        kern = weight.reshape(groups, o // groups, cg * g.kh * g.kw).transpose(0, 2, 1)
        y = (cols @ kern).transpose(0, 1, 3, 2).reshape(n, o, oh, ow)
        if "bias" in w:
            y = y + w["bias"][None, :, None, None]
        return [np.ascontiguousarray(y)]
