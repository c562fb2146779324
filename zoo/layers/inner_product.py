"""InnerProduct: y = x W^T + b over the last axis of an (N, ..., C) blob.

Weights: weight (out, in), bias (out,).
"""


from .base import LayerError, LayerType, WeightSpec, lecun_uniform, positive, register, size, uniform


@register
class InnerProduct(LayerType):
    type = "InnerProduct"
    param_field = "inner_product_param"
    required = ("num_output",)
    summary = "fully connected over the last axis"

    @staticmethod
    def check(p):
        positive(p, "num_output")

    @staticmethod
    def infer(p, shapes):
        (s,) = shapes
        if p.HasField("axis") and p.axis not in (-1, len(s) - 1):
            raise LayerError(f"inner_product_param.axis {p.axis}: InnerProduct runs over the "
                             f"last axis only (-1 or {len(s) - 1} for shape {s}); add a "
                             "Transpose before it")
        if len(s) < 2 or (len(s) > 3 and not p.HasField("axis")):
            raise LayerError(f"InnerProduct takes a (N, C) or (N, T, C) blob, got shape {s}; "
                             "add a Flatten layer before it (or state axis: -1 to run over the "
                             "last axis of a blob of rank 4 or more)")
        return [s[:-1] + (int(p.num_output),)]

    @staticmethod
    def weights(p, shapes):
        c = shapes[0][-1]
        ws = [WeightSpec("weight", (int(p.num_output), c), lecun_uniform(c))]
        if p.bias_term:
            ws.append(WeightSpec("bias", (int(p.num_output),), uniform(0.1)))
        return ws

    @staticmethod
    def macs(p, shapes, out):
        return size(out[0]) * shapes[0][-1]

    @staticmethod
    def forward(p, xs, w):
        y = xs[0] @ w["weight"].T
        return [y + w["bias"] if "bias" in w else y]
