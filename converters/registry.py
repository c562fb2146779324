"""A per-engine registry of layer converters, keyed by the spec's layer type.

    CONVERTERS = Registry("onnx")

    @CONVERTERS.register("ReLU", "Sigmoid")
    def activation(ctx, layer): ...

A duplicate registration is an error; asking for a missing type raises an error that names
the engine, the type and the types it has. `UniqueNames` gives every spec string its own
engine-acceptable name (the converters' one rule for names, see its docstring).
"""

from __future__ import annotations

from typing import Callable

from zoo.errors import Unsupported

__all__ = ["Registry", "UniqueNames", "Unsupported"]


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


class UniqueNames:
    """Names an engine accepts, one per spec string, never shared.

    Spec strings (layer and blob names) may hold any character; engines want identifiers or
    restricted names, and sanitising alone is not injective ("fc.1" and "fc_1" both give
    "fc_1"). `name(key, text)` returns the sanitised text, suffixed ("_2", "_3", ...) until
    it is unused, and the same answer for the same key every time; `fresh(text)` is a name
    for something the converter adds itself. `reserved` names are never handed out, and a
    name is also taken with each of its `shadows` suffixes (MXNet calls an op's output
    "NAME_output", so an op name takes that one too).
    """

    def __init__(self, sanitize: Callable[[str], str], reserved=(), shadows=()):
        self._sanitize = sanitize
        self._taken: set[str] = set(reserved)
        self._shadows = tuple(shadows)
        self._of: dict = {}

    def name(self, key, text: str | None = None) -> str:
        if key not in self._of:
            self._of[key] = self.fresh(key if text is None else text)
        return self._of[key]

    def fresh(self, text: str) -> str:
        base = self._sanitize(text)
        candidate, n = base, 1
        while self._clashes(candidate):
            n += 1
            candidate = f"{base}_{n}"
        self._taken.update([candidate, *(candidate + s for s in self._shadows)])
        return candidate

    def named(self) -> dict:
        """{key: name} for every key named so far."""
        return dict(self._of)

    def reserve(self, *names: str) -> None:
        self._taken.update(names)

    def _clashes(self, name: str) -> bool:
        return any(n in self._taken for n in (name, *(name + s for s in self._shadows)))
