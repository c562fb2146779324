"""Seeded inputs for verify and bench: the same batch for every engine.

Float inputs are N(0, 1); float labels (EuclideanLoss) too. int64 inputs are drawn
uniformly from [0, K): K is the Embedding's input_dim for token ids and the number of
classes (the logits' last size) for SoftmaxWithLoss labels.
"""

from __future__ import annotations

import zlib

import numpy as np


def int_range(net, blob: str) -> int:
    for layer in net.layers:
        if blob in layer.bottoms:
            if layer.type == "Embedding":
                return int(layer.p.input_dim)
            if layer.type == "SoftmaxWithLoss" and layer.bottoms[1] == blob:
                return int(net.shapes[layer.bottoms[0]][-1])
    return 2


def make(net, seed: int = 0, include_labels: bool = True) -> dict[str, np.ndarray]:
    out = {}
    for layer in net.inputs:
        name = layer.tops[0]
        if not include_labels and name in net.labels:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), 1])
        shape = layer.out_shapes[0]
        if layer.p.dtype == 1:   # INT64
            out[name] = rng.integers(0, int_range(net, name), size=shape, dtype=np.int64)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out
