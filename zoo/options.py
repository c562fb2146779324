"""Checks of the options that would make a verify or bench meaningless.

Each raises zoo.errors.UsageError (exit status 2) with one line naming the option, e.g.
``atol must be a finite number >= 0, not -1.0``: a negative tolerance passes every case, a
batch of 0 used to be replaced silently by a default, and an unknown device was accepted.
The API functions (zoo.verify, zoo.bench) call these, so the refusal happens wherever the
API is used; `None` means "the default" and passes through unchanged where it is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from .errors import UsageError

_DEVICE = re.compile(r"(cpu|gpu(\d+)?)")


def _number(name: str, value) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a number, not {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None


def tolerance(name: str, value) -> float | None:
    """A finite number >= 0 (a negative or NaN tolerance passes every comparison)."""
    if value is None:
        return None
    v = _number(name, value)
    if not math.isfinite(v) or v < 0:
        raise UsageError(f"{name} must be a finite number >= 0, not {value!r}")
    return v


def positive_int(name: str, value) -> int | None:
    """An integer >= 1 (batch, threads, iterations)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"{name} must be an integer >= 1, not {value!r}")
    try:
        v = int(value)
        exact = v == float(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{name} must be an integer >= 1, not {value!r}") from None
    if not exact or v < 1:
        raise UsageError(f"{name} must be an integer >= 1, not {value!r}")
    return v


def positive_ints(name: str, text) -> list[int]:
    """A comma list of integers >= 1 ("1,2,4"), or an iterable of them."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    if not items or any(i == "" for i in items):
        raise UsageError(f"{name} must be a comma list of integers >= 1, not {text!r}")
    return [positive_int(name, i) for i in items]


def non_negative_int(name: str, value) -> int:
    """An integer >= 0 (warm-up iterations)."""
    if value is not None and not isinstance(value, bool):
        try:
            v = int(value)
            if v == float(value) and v >= 0:
                return v
        except (TypeError, ValueError, OverflowError):
            pass
    raise UsageError(f"{name} must be an integer >= 0, not {value!r}")


def timeout(value, name: str = "timeout") -> float:
    """Seconds, finite and > 0 (0 would time every engine out before it starts)."""
    v = _number(name, value)
    if not math.isfinite(v) or v <= 0:
        raise UsageError(f"{name} must be a number of seconds > 0, not {value!r}")
    return v


def device(text, name: str = "device") -> str:
    """"cpu", "gpu" or "gpuN"; "gpu" is "gpu0". Anything else is refused."""
    t = text.strip().lower() if isinstance(text, str) else None
    m = _DEVICE.fullmatch(t or "")
    if not m:
        raise UsageError(f"{name} must be cpu, gpu or gpuN (e.g. gpu0), not {text!r}")
    return "gpu0" if t == "gpu" else t


def engine_names(text) -> list[str]:
    """Engine names from a comma list ("onnx,torch") or an iterable; None means every engine.
    An unknown name is refused with the list of engines."""
    from .engines import ENGINES
    if text is None:
        return list(ENGINES)
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else \
        [str(t).strip() for t in _iterable("engines", text)]
    items = [t for t in items if t]
    if not items:
        raise UsageError(f"engines: no engine named; engines: {', '.join(ENGINES)}")
    unknown = [t for t in items if t not in ENGINES]
    if unknown:
        raise UsageError(f"unknown engine {unknown[0]!r}; engines: {', '.join(ENGINES)}")
    return list(dict.fromkeys(items))   # in the order given, each once


def mode(text, allowed: Iterable[str], name: str = "mode") -> str:
    """One of `allowed`, e.g. mode(m, ("forward", "train", "both")); also any other choice
    (name="--to" for a format)."""
    allowed = list(allowed)
    if text not in allowed:
        choices = f"{', '.join(allowed[:-1])} or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
        raise UsageError(f"{name} must be {choices}, not {text!r}")
    return text


def _iterable(name: str, value):
    try:
        return list(value)
    except TypeError:
        raise UsageError(f"{name} must be a comma list, not {value!r}") from None
