"""A per-engine registry of layer converters, keyed by the spec's layer type.

    CONVERTERS = Registry("onnx")

    @CONVERTERS.register("ReLU", "Sigmoid")
    def activation(ctx, layer): ...

A duplicate registration is an error; asking for a missing type raises an error that names
the engine, the type and the types it has.
"""

from __future__ import annotations

from typing import Callable

from zoo.errors import Unsupported

__all__ = ["Registry", "Unsupported"]


class Registry:
    def __init__(self, engine: str):
        self.engine = engine
        self._fns: dict[str, Callable] = {}

    def register(self, *types: str):
        def deco(fn):
            for t in types:
                if t in self._fns:
                    raise RuntimeError(f"{self.engine}: converter for {t} registered twice")
                self._fns[t] = fn
            return fn
        return deco

    def get(self, layer_type: str) -> Callable:
        try:
            return self._fns[layer_type]
        except KeyError:
            raise Unsupported(f"{self.engine} has no converter for layer type {layer_type!r} "
                              f"(it has: {', '.join(sorted(self._fns))})") from None

    def types(self) -> list[str]:
        return list(self._fns)

    def check(self, layers) -> None:
        """Raise Unsupported naming every layer type among `layers` this engine lacks."""
        missing = sorted({l.type for l in layers if l.type not in self._fns})
        if missing:
            raise Unsupported(f"{self.engine} cannot express layer type(s) {', '.join(missing)}")
