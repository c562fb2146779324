"""Elementwise activations: ReLU, Sigmoid, TanH (no parameters)."""

import numpy as np

from .base import LayerType, register, size


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
