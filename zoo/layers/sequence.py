"""Sequence layers: Embedding and LSTM (batch first)."""

import numpy as np

from .base import LayerError, LayerType, WeightSpec, positive, register, size, uniform


@register
class Embedding(LayerType):
    type = "Embedding"
    param_field = "embedding_param"
    required = ("input_dim", "num_output")
    summary = "int64 ids (N, T) -> vectors (N, T, D)"

    @staticmethod
    def check(p):
        positive(p, "input_dim", "num_output")

    @staticmethod
    def infer(p, shapes):
        return [shapes[0] + (int(p.num_output),)]

    @staticmethod
    def weights(p, shapes):
        return [WeightSpec("weight", (int(p.input_dim), int(p.num_output)), uniform(1.0))]

    @staticmethod
    def forward(p, xs, w):
        ids = xs[0].astype(np.int64)
        if ids.min() < 0 or ids.max() >= p.input_dim:
            raise ValueError(f"token id out of range [0, {p.input_dim})")
        return [w["weight"][ids]]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@register
class LSTM(LayerType):
    type = "LSTM"
    param_field = "lstm_param"
    required = ("num_output",)
    summary = "LSTM, gates i, f, g, o, one bias, zero initial state"

    @staticmethod
    def check(p):
        positive(p, "num_output")

    @staticmethod
    def infer(p, shapes):
        if len(shapes[0]) != 3:
            raise LayerError(f"LSTM takes an (N, T, C) blob, got shape {shapes[0]}")
        return [shapes[0][:2] + (int(p.num_output),)]

    @staticmethod
    def weights(p, shapes):
        h, c = int(p.num_output), shapes[0][2]
        # uniform +-0.1: the survey's TensorFlow PTB script
        return [WeightSpec("weight_ih", (4 * h, c), uniform(0.1)),
                WeightSpec("weight_hh", (4 * h, h), uniform(0.1)),
                WeightSpec("bias", (4 * h,), uniform(0.1))]

    @staticmethod
    def macs(p, shapes, out):
        n, t, c = shapes[0]
        h = p.num_output
        return n * t * 4 * h * (c + h)

    @staticmethod
    def elementwise_flops(p, shapes, out):
        return size(out[0]) * 10

    @staticmethod
    def forward(p, xs, w):
        x = xs[0]
        n, t, _ = x.shape
        hsz = int(p.num_output)
        h = np.zeros((n, hsz))
        c = np.zeros((n, hsz))
        xw = x @ w["weight_ih"].T + w["bias"]
        out = np.empty((n, t, hsz))
        for step in range(t):
            gates = xw[:, step] + h @ w["weight_hh"].T
            i, f, g, o = np.split(gates, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            out[:, step] = h
        return [out]
