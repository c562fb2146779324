"""Input: a network input (data, labels or token ids)."""

from .base import LayerError, LayerType, register


@register
class Input(LayerType):
    type = "Input"
    param_field = "input_param"
    n_bottoms = (0, 0)
    is_input = True
    summary = "network input; shape[0] is the batch"

    @staticmethod
    def check(p):
        if not len(p.shape):
            raise LayerError("input_param.shape is required")
        if any(s <= 0 for s in p.shape):
            raise LayerError(f"input_param.shape must be positive, got {list(p.shape)}")

    @staticmethod
    def infer(p, shapes):
        return [tuple(int(s) for s in p.shape)]
