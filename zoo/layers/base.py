"""The layer-type registry: one small module per layer type, engine-free.

Each module in this package defines one `LayerType` subclass, decorated with `@register`,
that knows everything zoo itself needs about the type: which parameter message it takes,
which fields are required, its output shapes, its weights (names, shapes, initialisers,
canonical layouts), its multiply-accumulate count, and its float64 NumPy forward (the
reference every engine is compared with). Engines keep their own per-type code in
converters/; nothing here imports an engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

Shape = tuple[int, ...]


class LayerError(Exception):
    """A problem with one layer; the validator adds file, line and layer name."""


@dataclass(frozen=True)
class WeightSpec:
    """One weight tensor of a layer, in zoo's canonical layout.

    kind: "param" is learned by SGD and counted as a parameter; "buffer" (BatchNorm's running
    statistics) is stored and used but neither counted nor updated by the SGD step.
    init(rng, shape) -> float64 array: the documented initialiser (see zoo/weights.py).
    """

    name: str
    shape: Shape
    init: Callable[[np.random.Generator, Shape], np.ndarray]
    kind: str = "param"


def uniform(bound: float):
    return lambda rng, shape: rng.uniform(-bound, bound, size=shape)


def uniform_range(low: float, high: float):
    return lambda rng, shape: rng.uniform(low, high, size=shape)


def lecun_uniform(fan_in: int):
    """U(-sqrt(3/fan_in), +sqrt(3/fan_in)): unit-variance outputs for unit-variance inputs."""
    return uniform(float(np.sqrt(3.0 / max(fan_in, 1))))


class LayerType:
    """Base of every layer type. Subclasses override what applies to them."""

    type: ClassVar[str]
    param_field: ClassVar[str | None] = None   # e.g. "convolution_param"
    required: ClassVar[tuple[str, ...]] = ()   # fields of the param message that must be set
    n_bottoms: ClassVar[tuple[int, int | None]] = (1, 1)  # (min, max); max None: unbounded
    n_tops: ClassVar[int] = 1
    is_loss: ClassVar[bool] = False
    is_input: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    @classmethod
    def tops_for(cls, p) -> int:
        """How many tops a layer with these parameters has (Slice: one per part)."""
        return cls.n_tops

    @staticmethod
    def infer(p, shapes: list[Shape]) -> list[Shape]:
        raise NotImplementedError

    @staticmethod
    def check(p) -> None:
        """Checks on the parameters alone (positivity and the like)."""

    @staticmethod
    def weights(p, shapes: list[Shape]) -> list[WeightSpec]:
        return []

    @staticmethod
    def macs(p, shapes: list[Shape], out: list[Shape]) -> int:
        """Multiply-accumulates of one forward pass for the given (batched) shapes."""
        return 0

    @staticmethod
    def elementwise_flops(p, shapes: list[Shape], out: list[Shape]) -> int:
        """Non-MAC floating-point operations (activations, pooling comparisons, ...)."""
        return 0

    @staticmethod
    def forward(p, xs: list[np.ndarray], w: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One float64 array per top."""
        raise NotImplementedError

    @classmethod
    def forward_train(cls, p, xs: list[np.ndarray], w: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The forward pass of a training step, where it differs (BatchNorm's batch
        statistics); Dropout stays the identity, as everywhere in verification."""
        return cls.forward(p, xs, w)


REGISTRY: dict[str, type[LayerType]] = {}


def register(cls: type[LayerType]) -> type[LayerType]:
    if cls.type in REGISTRY:
        raise RuntimeError(f"layer type {cls.type!r} registered twice")
    REGISTRY[cls.type] = cls
    return cls


def get(type_name: str) -> type[LayerType]:
    return REGISTRY[type_name]


def size(shape: Shape) -> int:
    """Elements of a shape, in Python integers: int64 arithmetic would wrap silently (the
    validator refuses blobs past zoo.net.MAX_BLOB_ELEMENTS)."""
    return math.prod(int(d) for d in shape)


def positive(p, *fields: str) -> None:
    for f in fields:
        v = getattr(p, f)
        if v <= 0:
            raise LayerError(f"{f} must be > 0, got {v}")


def axis_of(axis: int, rank: int, what: str = "axis") -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise LayerError(f"{what} {axis} is out of range for a blob of rank {rank}")
    return a
