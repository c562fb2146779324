"""Softmax, LogSoftmax and the loss layers (SoftmaxWithLoss, EuclideanLoss)."""

import numpy as np

from .base import LayerError, LayerType, axis_of, register, size


def log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


@register
class Softmax(LayerType):
    type = "Softmax"
    param_field = "softmax_param"
    summary = "softmax along axis"

    @staticmethod
    def infer(p, shapes):
        axis_of(p.axis, len(shapes[0]))
        return [shapes[0]]

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return 3 * size(out[0])

    @staticmethod
    def forward(p, xs, w):
        return [np.exp(log_softmax(xs[0], axis_of(p.axis, xs[0].ndim)))]


@register
class LogSoftmax(Softmax):
    type = "LogSoftmax"
    summary = "log of softmax along axis"

    @staticmethod
    def forward(p, xs, w):
        return [log_softmax(xs[0], axis_of(p.axis, xs[0].ndim))]


@register
class SoftmaxWithLoss(LayerType):
    type = "SoftmaxWithLoss"
    param_field = "loss_param"
    n_bottoms = (2, 2)
    is_loss = True
    summary = "mean cross-entropy of softmax(logits) over every position (training only)"

    @staticmethod
    def infer(p, shapes):
        logits, labels = shapes
        if len(logits) not in (2, 3) or labels != logits[:-1]:
            raise LayerError(f"SoftmaxWithLoss takes logits (N, K) or (N, T, K) and labels of "
                             f"shape logits[:-1]; got {logits} and {labels}")
        return [()]

    @staticmethod
    def forward(p, xs, w):
        logits, labels = xs
        lp = log_softmax(logits, -1)
        picked = np.take_along_axis(lp, labels.astype(np.int64)[..., None], axis=-1)
        return [np.asarray(-picked.mean() * float(p.loss_weight))]


@register
class EuclideanLoss(LayerType):
    type = "EuclideanLoss"
    param_field = "loss_param"
    n_bottoms = (2, 2)
    is_loss = True
    summary = "sum((a - b)^2) / (2 N), Caffe's (training only)"

    @staticmethod
    def infer(p, shapes):
        if shapes[0] != shapes[1]:
            raise LayerError(f"EuclideanLoss of mismatched shapes {shapes[0]} and {shapes[1]}")
        return [()]

    @staticmethod
    def forward(p, xs, w):
        a, b = xs
        return [np.asarray(((a - b) ** 2).sum() / (2 * a.shape[0]) * float(p.loss_weight))]
