"""The toy engine's converter: its native files are the spec and weights.npz that every
build already holds, so it only says which layer types it takes: all but LSTM (a gap its
registry shows, as a real engine's does)."""

from __future__ import annotations

from zoo.converters.registry import Registry
from zoo.layers import REGISTRY

CONVERTERS = Registry("numpy")


def _reference_layer(ctx, layer):
    """Nothing to convert: the runner computes each layer with zoo's reference."""


CONVERTERS.register(*(t for t in REGISTRY if t != "LSTM"))(_reference_layer)


def build(net, weights, outdir, options=None) -> dict:
    CONVERTERS.check(net.deploy_layers)      # inference only: the losses are left out
    return {"files": []}
