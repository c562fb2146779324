"""The float64 NumPy reference: what a spec means. Every engine is compared with it.

`forward(net, weights, inputs)` runs every layer's `forward` (zoo/layers/*.py) in float64
and returns every blob, the loss layers' too when their labels are given. `bounds` gives,
beside every blob, the error a correct float32 (or, with dtype="float64", float64) engine
may have there (zoo/magnitude.py).
"""

from __future__ import annotations

import numpy as np


def forward(net, weights: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
            with_loss: bool | None = None, train: bool = False) -> dict[str, np.ndarray]:
    """train=True: the forward pass of a training step (BatchNorm on batch statistics)."""
    if with_loss is None:
        with_loss = all(label in inputs for label in net.labels)
    blobs: dict[str, np.ndarray] = {}
    for layer in net.layers if with_loss else net.deploy_layers:
        if layer.kind.is_input:
            x = inputs[layer.tops[0]]
            blobs[layer.tops[0]] = x if x.dtype.kind in "iu" else x.astype(np.float64)
            continue
        w = {ws.name: weights[f"{layer.name}.{ws.name}"].astype(np.float64) for ws in layer.weights}
        fn = layer.kind.forward_train if train else layer.kind.forward
        ys = fn(layer.p, [blobs[b] for b in layer.bottoms], w)
        for t, y in zip(layer.tops, ys):
            blobs[t] = np.asarray(y, dtype=np.float64)
    return blobs


def bounds(net, weights: dict[str, np.ndarray], blobs: dict[str, np.ndarray],
           k: float | None = None, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The forward judge's allowed error for every blob of `blobs` (from `forward` on the same
    net, weights and inputs): k * u times the magnitude of the computation, propagated
    through the layers (zoo/magnitude.py; k: zoo/tolerances.py's ROUNDING_K; u: the unit
    roundoff of the engine's dtype, 2^-24 for float32, 2^-53 for float64)."""
    from . import magnitude
    from . import tolerances as T
    return magnitude.bounds(net, weights, blobs, T.ROUNDING_K if k is None else k,
                            T.unit_roundoff(dtype))
