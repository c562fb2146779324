"""Layer types: importing this package registers every one of them (see base.py)."""

from . import (activations, batch_norm, convolution, eltwise, inner_product, input,  # noqa: F401
               layer_norm, learned, lrn, matmul, pooling, reduce, sequence, shape_ops,
               softmax_loss)
from .base import REGISTRY, LayerError, LayerType, Shape, WeightSpec, get

__all__ = ["REGISTRY", "LayerError", "LayerType", "Shape", "WeightSpec", "get"]
