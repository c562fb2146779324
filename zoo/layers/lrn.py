"""LRN across channels: y = x * (k + alpha/n * sum over the n-channel window of x^2)^-beta."""

import numpy as np

from .base import LayerError, LayerType, positive, register, size


@register
class LRN(LayerType):
    type = "LRN"
    param_field = "lrn_param"
    summary = "local response normalisation across channels (Caffe's)"

    @staticmethod
    def check(p):
        positive(p, "local_size")
        if p.local_size % 2 == 0:
            raise LayerError(f"local_size must be odd, got {p.local_size}")

    @staticmethod
    def infer(p, shapes):
        if len(shapes[0]) != 4:
            raise LayerError(f"LRN takes an (N, C, H, W) blob, got shape {shapes[0]}")
        return [shapes[0]]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return size(out[0]) * (p.local_size + 4)

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        n, r = int(p.local_size), (int(p.local_size) - 1) // 2
        sq = np.pad(x * x, ((0, 0), (r, r), (0, 0), (0, 0)))
        win = np.lib.stride_tricks.sliding_window_view(sq, n, axis=1).sum(axis=-1)
        return [x * (float(p.k) + float(p.alpha) / n * win) ** (-float(p.beta))]
