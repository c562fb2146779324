"""Convolution (NCHW, square kernel, symmetric zero padding, dilation, groups).

Weights: weight (O, C/group, k, k), bias (O,).
"""

import numpy as np

from .base import LayerError, LayerType, WeightSpec, lecun_uniform, positive, register, size, uniform


def conv_out(h: int, k: int, s: int, p: int, d: int) -> int:
    return (h + 2 * p - d * (k - 1) - 1) // s + 1


@register
class Convolution(LayerType):
    type = "Convolution"
    param_field = "convolution_param"
    required = ("num_output", "kernel_size")
    summary = "2-D convolution, NCHW"

    @staticmethod
    def check(p):
        positive(p, "num_output", "kernel_size", "stride", "dilation", "group")
        if p.pad < 0:
            raise LayerError(f"pad must be >= 0, got {p.pad}")
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
        span = p.dilation * (p.kernel_size - 1) + 1
        if span > min(h, w) + 2 * p.pad:
            raise LayerError(f"kernel {p.kernel_size} (span {span}) is larger than the padded "
                             f"input {h + 2 * p.pad}x{w + 2 * p.pad}")
        k, st, pd, d = p.kernel_size, p.stride, p.pad, p.dilation
        return [(n, int(p.num_output), conv_out(h, k, st, pd, d), conv_out(w, k, st, pd, d))]

    @staticmethod
    def weights(p, shapes):
        c = shapes[0][1] // p.group
        fan_in = c * p.kernel_size**2
        ws = [WeightSpec("weight", (int(p.num_output), c, int(p.kernel_size), int(p.kernel_size)),
                         lecun_uniform(fan_in))]
        if p.bias_term:
            ws.append(WeightSpec("bias", (int(p.num_output),), uniform(0.1)))
        return ws

    @staticmethod
    def macs(p, shapes, out):
        return size(out[0]) * (shapes[0][1] // p.group) * p.kernel_size**2

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        k, s, pd, d, g = (int(p.kernel_size), int(p.stride), int(p.pad), int(p.dilation),
                          int(p.group))
        x = np.pad(x, ((0, 0), (0, 0), (pd, pd), (pd, pd)))
        span = d * (k - 1) + 1
        # windows: (N, C, OH, OW, k, k), dilation by striding inside each window
        win = np.lib.stride_tricks.sliding_window_view(x, (span, span), axis=(2, 3))
        win = win[:, :, ::s, ::s, ::d, ::d]
        weight = w["weight"]
        o, cg = weight.shape[0], weight.shape[1]
        og = o // g
        ys = [np.tensordot(win[:, i * cg:(i + 1) * cg], weight[i * og:(i + 1) * og],
                           axes=([1, 4, 5], [1, 2, 3])) for i in range(g)]
        y = np.concatenate(ys, axis=-1).transpose(0, 3, 1, 2)   # (N, O, OH, OW)
        if "bias" in w:
            y = y + w["bias"][None, :, None, None]
        return [np.ascontiguousarray(y)]
