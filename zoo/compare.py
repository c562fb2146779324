"""Comparing an engine's arrays with the float64 reference: a report, not just a verdict.

After Polygraphy's comparator: cast up before subtracting, report the largest absolute and
relative errors and the tolerance factor that would have been needed, and fail when nothing
was compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tolerances import Tolerance


@dataclass
class Diff:
    name: str
    ok: bool
    max_abs_err: float
    max_rel_err: float     # max |a - r| / max |r|: the error relative to the tensor's scale
    worst_ratio: float     # max |a - r| / allowed (atol + rtol |r|, or the bound): <= 1 passes
    reason: str = ""


# The error a correct engine may have where the bound is 0 (a blob that is exactly 0 in
# every engine, e.g. a ReLU of negatives): float32's smallest normal, which engines that
# flush subnormals to zero may lose.
FLUSH = 2.0**-126


# Large arrays are judged a slice at a time: a slice's temporaries stay in the CPU's cache,
# and nothing the size of a weight tensor is allocated (whole-array float64 temporaries cost
# their page faults on every comparison: a 30 M-element update comparison took 1.5 s, and
# 0.09 s by slices). The results are the same to the bit.
CHUNK = 1 << 16


def _slices(n: int):
    return (slice(i, i + CHUNK) for i in range(0, n, CHUNK))


def _flat(a, shape) -> np.ndarray:
    a = np.asarray(a)
    return (a if a.shape == shape else np.broadcast_to(a, shape)).reshape(-1)


def _non_finite(name: str) -> Diff:
    return Diff(name, False, float("inf"), float("inf"), float("inf"), "non-finite values")


def _uncomparable(name: str, got: np.ndarray, ref: np.ndarray, empty_ok: bool = False) -> Diff | None:
    """The Diff that says why `got` cannot be compared with `ref`, or None."""
    if got.shape != ref.shape:
        return Diff(name, False, float("inf"), float("inf"), float("inf"),
                    f"shape {got.shape}, expected {ref.shape}")
    if ref.size == 0 and not empty_ok:
        return Diff(name, False, 0.0, 0.0, 0.0, "nothing to compare (empty)")
    return None


def _checked(name: str, got, ref):
    """(got, ref) as float64, or the Diff that says why they cannot be compared."""
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    if (why := _uncomparable(name, got, ref)) is not None:
        return why
    g = got.astype(np.float64)
    if not np.all(np.isfinite(g)):
        return _non_finite(name)
    return g, ref


def within_bound(name: str, got, ref, bound, flush: float = FLUSH) -> Diff:
    """The scale-aware forward judge: |got - ref| <= bound elementwise, the bound being
    zoo.magnitude's (the rounding a correct engine may accumulate there); flush: the error
    allowed where the bound is 0 (FLUSH, or float64's smallest normal in exact mode)."""
    got, ref = np.asarray(got), np.asarray(ref, dtype=np.float64)
    if (why := _uncomparable(name, got, ref)) is not None:
        return why
    g, r, b = got.reshape(-1), ref.reshape(-1), _flat(bound, ref.shape)
    err, allowed = np.empty(min(CHUNK, r.size)), np.empty(min(CHUNK, r.size))
    worsts, ratios, scales = [], [], []
    for c in _slices(r.size):
        e, a = err[:r[c].size], allowed[:r[c].size]
        if not np.isfinite(g[c]).all():
            return _non_finite(name)
        np.abs(np.subtract(g[c], r[c], out=e), out=e)
        a[...] = b[c]                              # the bound in float64, then + flush
        a += flush
        worsts.append(e.max())
        ratios.append(np.divide(e, a, out=a).max())
        scales.append(np.abs(r[c], out=a).max())
    worst, ratio, scale = float(np.max(worsts)), float(np.max(ratios)), float(np.max(scales))
    return Diff(name, ratio <= 1.0, worst, worst / scale if scale else worst, ratio)


def allclose(name: str, got, ref, tol: Tolerance) -> Diff:
    """The elementwise rule |a - r| <= atol + rtol |r| (a user's --atol/--rtol, the oracle
    check, losses)."""
    checked = _checked(name, got, ref)
    if isinstance(checked, Diff):
        return checked
    g, ref = checked
    err = np.abs(g - ref)
    scale = float(np.max(np.abs(ref)))
    ratio = float(np.max(err / (tol.atol + tol.rtol * np.abs(ref))))
    return Diff(name, ratio <= 1.0, float(err.max()), float(err.max() / scale) if scale else float(err.max()),
                ratio)


def update_close(name: str, got, ref, start, rtol_update: float, steps: int,
                 scale: float | None = None, ulp: float = 2.0**-23) -> Diff:
    """A parameter after the training step(s): see zoo/tolerances.py for the rule.
    scale: the largest update among the layer's parameters (default: this tensor's);
    ulp: the relative rounding of storing a weight (float32's 2^-23; float64's 2^-52)."""
    got, ref = np.asarray(got), np.asarray(ref, dtype=np.float64)
    if (why := _uncomparable(name, got, ref, empty_ok=True)) is not None:
        return why
    g, r = got.reshape(-1), ref.reshape(-1)
    if scale is None:
        s = _flat(start, ref.shape)
        biggest = float(np.max([np.abs(r[c] - s[c]).max() for c in _slices(r.size)], initial=0.0))
    else:
        biggest = scale
    floor = rtol_update * biggest
    err, allowed = np.empty(min(CHUNK, r.size)), np.empty(min(CHUNK, r.size))
    worsts, ratios = [0.0], [0.0]
    for c in _slices(r.size):
        e, a = err[:r[c].size], allowed[:r[c].size]
        if not np.isfinite(g[c]).all():
            return _non_finite(name)
        np.abs(np.subtract(g[c], r[c], out=e), out=e)
        worsts.append(e.max())
        np.abs(r[c], out=a)
        a *= steps * ulp
        a += floor
        with np.errstate(divide="ignore", invalid="ignore"):
            if floor > 0:                          # allowed > 0 everywhere
                ratios.append(np.divide(e, a, out=a).max())
            else:
                ratios.append(np.max(np.where(a > 0, e / a, np.where(e > 0, np.inf, 0.0))))
    worst, ratio = float(np.max(worsts)), float(np.max(ratios))
    return Diff(name, ratio <= 1.0, worst, worst / biggest if biggest else worst, ratio)
