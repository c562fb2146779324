"""The branch-matched oracle: the training judge for networks whose float32 step takes another
branch of a kink than float64 does.

A ReLU's derivative jumps from 0 to 1 at 0 (a Clip's at both ends). Where a pre-activation
lies within float32's rounding of the kink, a correct float32 engine may take either side,
and the gradient that flows back through that one unit is then all or nothing: measured on
ResNet-18 (batch 2), torch float32 decides 2 of 4.6 million ReLU inputs differently from
float64, and that alone moves conv1's update 1.9x past TRAIN_UPDATE_RTOL; in float64 the
same engine passes. No tolerance on the update separates such a flip from a real error, and
modelling the flips statistically (the conditioning probe, a band of random flips) gave a
probe 5 times too loose on one network and too tight on another.

So the oracle is asked the question with the engine's own branch decisions:
  1. the engine runs the forward pass of its training step (BatchNorm on batch statistics,
     Dropout the identity) and returns the outputs of its kink layers (`kink_layers`);
  2. each output element gets the branch the engine took (`codes`: 0 below the kink, 1 on
     the linear part, 2 above the upper kink of a Clip);
  3. every element where the engine's branch differs from the float64 reference's must be
     a legitimate float32 decision: the reference's pre-activation lies within the forward
     judge's bound (k u S, zoo/magnitude.py, BatchNorm on batch statistics) of the kink
     (`check`); one that does not is an engine error and the case is judged as before;
  4. the float64 oracle reruns the step with those branches forced (runners/torch.py,
     options {"branches": ...}), and the engine's update is judged against it at the
     default TRAIN_UPDATE_RTOL, nothing widened.

Two-step comparisons (networks without BatchNorm, zoo/verifier.py) match both steps: the
second step's branches are read after the engine's own first step, and judged against the
float64 forward at the engine's weights after that step (so the check is about that
forward's rounding alone, not about how far the first update moved). Max pooling's argmax
can flip the same way at a near-tie; it is not matched (none was needed on the zoo's
networks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import magnitude, reference
from . import tolerances as T

KINK_TYPES = ("ReLU", "Clip")
INPUT_PREFIX = "__branch__:"     # the codes travel beside the batch under this prefix
WEIGHT_PREFIX = "__weights__:"   # and an engine's weights after a step beside its blobs
BELOW, LINEAR, ABOVE = 0, 1, 2


def kinks(layer) -> tuple[float, float | None]:
    if layer.type == "ReLU":
        return 0.0, None
    return float(layer.p.min), float(layer.p.max)


def kink_layers(net) -> list:
    """The ReLU and Clip layers whose input and output are each written by one layer (an
    in-place chain would leave only its last value visible)."""
    writers: dict[str, int] = {}
    for layer in net.layers:
        for t in layer.tops:
            writers[t] = writers.get(t, 0) + 1
    return [l for l in net.layers
            if l.type in KINK_TYPES and l.tops[0] != l.bottoms[0]
            and writers.get(l.tops[0]) == 1 and writers.get(l.bottoms[0]) == 1]


def codes(layer, v: np.ndarray) -> np.ndarray:
    """The branch taken at each element, read from the layer's input or its output alike
    (where ReLU or Clip clamps, its output is the kink itself)."""
    lo, hi = kinks(layer)
    c = np.full(v.shape, LINEAR, np.int8)
    c[v <= lo] = BELOW
    if hi is not None:
        c[v >= hi] = ABOVE
    return c


@dataclass
class Check:
    flips: int                 # elements where the engine's branch differs from float64's
    worst: float               # the largest |x_ref - kink| / bound among them (<= 1: legitimate)
    where: str                 # the layer of the worst one
    elements: int              # elements matched in all

    @property
    def ok(self) -> bool:
        return self.worst <= 1.0

    @staticmethod
    def combine(checks: list["Check"]) -> "Check":
        """One verdict over several steps' checks (the worst of them names the layer)."""
        worst = max(checks, key=lambda c: c.worst)
        where = worst.where
        if len(checks) > 1 and worst.flips:
            where += f" in step {checks.index(worst) + 1}"
        return Check(sum(c.flips for c in checks), worst.worst, where, sum(c.elements for c in checks))

    def describe(self) -> str:
        if not self.flips:
            return f"no branch differs from float64's ({self.elements} kink inputs)"
        return (f"{self.flips} of {self.elements} kink inputs took the other branch, each "
                f"within {self.worst:.2g} of the forward bound of the kink (worst: {self.where})")


class TrainReference:
    """The float64 training-mode forward and its bounds, once per network."""

    def __init__(self, net, weights: dict, inputs: dict):
        self.blobs = reference.forward(net, weights, inputs, with_loss=False, train=True)
        self.bounds = magnitude.bounds(net, _batch_statistics(net, weights, self.blobs), self.blobs,
                                       T.ROUNDING_K, T.unit_roundoff("float32"))


def _batch_statistics(net, weights: dict, blobs: dict) -> dict:
    """The weights with each BatchNorm's running mean and variance replaced by the batch's
    own (biased) statistics: what a training step normalises by, so the inference bound
    rule (magnitude.batch_norm) bounds the training forward."""
    out = dict(weights)
    for layer in net.layers:
        if layer.type != "BatchNorm" or layer.bottoms[0] not in blobs:
            continue
        x = blobs[layer.bottoms[0]]
        axes = tuple(i for i in range(x.ndim) if i != 1)
        out[f"{layer.name}.running_mean"] = x.mean(axis=axes)
        out[f"{layer.name}.running_var"] = x.var(axis=axes)
    return out


def check(net, ref: TrainReference, engine_codes: dict[str, np.ndarray]) -> Check:
    """Step 3 of the module's docstring, over every matched layer."""
    by_name = {l.name: l for l in net.layers}
    flips, elements, worst, where = 0, 0, 0.0, ""
    for name, c in engine_codes.items():
        layer = by_name[name]
        x = ref.blobs[layer.bottoms[0]]
        bound = ref.bounds[layer.bottoms[0]]
        if c.shape != x.shape:
            raise ValueError(f"layer {name!r}: the engine's output has shape {c.shape}, "
                             f"the reference's {x.shape}")
        differs = c != codes(layer, x)
        elements += c.size
        if not differs.any():
            continue
        flips += int(differs.sum())
        lo, hi = kinks(layer)
        dist = np.abs(x - lo) if hi is None else np.minimum(np.abs(x - lo), np.abs(x - hi))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(bound > 0, dist / bound, np.where(dist > 0, np.inf, 0.0))
        r = float(np.max(ratio[differs]))
        if r >= worst:
            worst, where = r, name
    return Check(flips, worst, where, elements)


def oracle_inputs(inputs: dict, engine_codes: list[dict[str, np.ndarray]]) -> dict:
    """The batch with the engine's branches of each step beside it, for the oracle's child.
    A spec's own blob under the prefix would be taken for codes there: refused, never
    misread."""
    clash = sorted(k for k in inputs if k.startswith(INPUT_PREFIX))
    if clash:
        raise ValueError(f"input blob {clash[0]!r} starts with {INPUT_PREFIX!r}, which the "
                         "branch-matched oracle uses for its own arrays")
    return {**inputs, **{f"{INPUT_PREFIX}{step}:{name}": c
                         for step, codes in enumerate(engine_codes) for name, c in codes.items()}}


def split_inputs(arrays: dict) -> tuple[dict, list[dict]]:
    """(the batch, [{layer: codes} for each step]): the oracle child's side of
    `oracle_inputs`."""
    batch = {k: v for k, v in arrays.items() if not k.startswith(INPUT_PREFIX)}
    forced: dict[int, dict] = {}
    for k, v in arrays.items():
        if k.startswith(INPUT_PREFIX):
            step, layer = k[len(INPUT_PREFIX):].split(":", 1)
            forced.setdefault(int(step), {})[layer] = v
    return batch, [forced.get(i, {}) for i in range(max(forced, default=-1) + 1)]


def with_weights(blobs: dict, weights: dict) -> dict:
    """A train_forward child's answer: the exposed blobs and, under WEIGHT_PREFIX, the
    weights of the steps taken before it (`weights_of` reads them back)."""
    clash = sorted(b for b in blobs if b.startswith(WEIGHT_PREFIX))
    if clash:
        raise ValueError(f"blob {clash[0]!r} starts with {WEIGHT_PREFIX!r}, which the "
                         "branch-matched oracle uses for its own arrays")
    return {**blobs, **{WEIGHT_PREFIX + k: v for k, v in weights.items()}}


def weights_of(arrays: dict) -> dict:
    return {k[len(WEIGHT_PREFIX):]: v for k, v in arrays.items() if k.startswith(WEIGHT_PREFIX)}
