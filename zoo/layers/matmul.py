"""MatMul of two blobs, batched over every axis but the last two, times `scale` (no weights)."""

import numpy as np

from .base import LayerError, LayerType, register, size


def operand_shapes(p, a: tuple, b: tuple) -> tuple[tuple, tuple]:
    """The shapes after the stated transposes of the last two axes."""
    if p.transpose_a:
        a = a[:-2] + (a[-1], a[-2])
    if p.transpose_b:
        b = b[:-2] + (b[-1], b[-2])
    return a, b


@register
class MatMul(LayerType):
    type = "MatMul"
    param_field = "matmul_param"
    n_bottoms = (2, 2)
    summary = "batched matrix product of two blobs, times scale"

    @staticmethod
    def check(p):
        if p.scale == 0:
            raise LayerError("matmul_param.scale must not be 0")

    @staticmethod
    def infer(p, shapes):
        a, b = shapes
        if len(a) != len(b) or len(a) < 3:
            raise LayerError(f"MatMul takes two blobs of one rank >= 3 (N, ..., M, K) and "
                             f"(N, ..., K, P), got {a} and {b}")
        a, b = operand_shapes(p, a, b)
        if a[:-2] != b[:-2]:
            raise LayerError(f"MatMul of {a} and {b}: the batch axes {a[:-2]} and {b[:-2]} differ")
        if a[-1] != b[-2]:
            raise LayerError(f"MatMul of {a} and {b} (after transposes): inner sizes {a[-1]} "
                             f"and {b[-2]} differ")
        return [a[:-1] + (b[-1],)]

    @staticmethod
    def macs(p, shapes, out):
        a, _ = operand_shapes(p, *shapes)
        return size(out[0]) * a[-1]

    @staticmethod
    def forward(p, xs, w):
        a, b = xs
        if p.transpose_a:
            a = np.swapaxes(a, -1, -2)
        if p.transpose_b:
            b = np.swapaxes(b, -1, -2)
        y = a @ b
        return [y * float(p.scale) if p.scale != 1 else y]
