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


def _checked(name: str, got, ref):
    """(got, ref) as float64, or the Diff that says why they cannot be compared."""
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return Diff(name, False, float("inf"), float("inf"), float("inf"),
                    f"shape {got.shape}, expected {ref.shape}")
    if ref.size == 0:
        return Diff(name, False, 0.0, 0.0, 0.0, "nothing to compare (empty)")
    g = got.astype(np.float64)
    if not np.all(np.isfinite(g)):
        return Diff(name, False, float("inf"), float("inf"), float("inf"), "non-finite values")
    return g, ref


def within_bound(name: str, got, ref, bound, flush: float = FLUSH) -> Diff:
    """The scale-aware forward judge: |got - ref| <= bound elementwise, the bound being
    zoo.magnitude's (the rounding a correct engine may accumulate there); flush: the error
    allowed where the bound is 0 (FLUSH, or float64's smallest normal in exact mode)."""
    checked = _checked(name, got, ref)
    if isinstance(checked, Diff):
        return checked
    g, ref = checked
    err = np.abs(g - ref)
    allowed = np.asarray(bound, dtype=np.float64) + flush
    ratio = float(np.max(err / allowed))
    scale = float(np.max(np.abs(ref)))
    return Diff(name, ratio <= 1.0, float(err.max()), float(err.max() / scale) if scale else float(err.max()),
                ratio)


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
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return Diff(name, False, float("inf"), float("inf"), float("inf"),
                    f"shape {got.shape}, expected {ref.shape}")
    if not np.all(np.isfinite(got)):
        return Diff(name, False, float("inf"), float("inf"), float("inf"), "non-finite values")
    biggest = float(np.max(np.abs(ref - np.asarray(start, dtype=np.float64)))) if scale is None else scale
    # in place: a ViT's 86 M parameters are compared once per engine and per probe
    err = np.subtract(got, ref)
    np.abs(err, out=err)
    worst = float(err.max(initial=0.0))
    allowed = np.abs(ref)
    allowed *= steps * ulp
    allowed += rtol_update * biggest
    with np.errstate(divide="ignore", invalid="ignore"):
        if rtol_update * biggest > 0:          # allowed > 0 everywhere
            ratio = float(np.divide(err, allowed, out=allowed).max(initial=0.0))
        else:
            ratio = float(np.max(np.where(allowed > 0, err / allowed, np.where(err > 0, np.inf, 0.0)),
                                 initial=0.0))
    return Diff(name, ratio <= 1.0, worst, worst / biggest if biggest else worst, ratio)
