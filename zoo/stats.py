"""Timing statistics for `zoo bench`: when to stop warming up, when to stop measuring, and
what to report, so that a figure says how far it can be trusted.

Imports nothing but the standard library: the sampling loop runs inside each engine's child
(runners/base.py) and the summaries are computed again in the parent for `--repeat`.

Two methods (`Settings.method`):
- "adaptive" (default). Warm-up runs until the timings stop getting faster: the median of the
  last `window` iterations is no more than `drift` below the median of the `window` before
  them (at least `warmup` iterations, at most `warmup_max_time` seconds; a warm-up stopped by
  that limit is reported as not settled). Then timed iterations run until the median's 95%
  confidence interval is at most `ci_width` of the median wide (and at least `iters`
  iterations and `min_time` seconds are taken), or `max_time` seconds have passed.
- "fixed": the earlier method, kept for comparison (benchmarks/stats_check.py): `warmup`
  iterations, then timed ones until both `iters` and `min_time` are met.

The confidence interval of the median is the distribution-free one from order statistics
(the binomial(n, 1/2) count of samples below the median): it assumes only that the timed
iterations are independent draws from one distribution, not that they are normal. Timings on
a shared machine are neither quite independent nor from one distribution (neighbours come
and go), which is why a point also reports the load during its timing, and why `--repeat`
measures the spread between fresh processes, which on such a machine exceeds any one
process's interval (benchmarks/stats_check.py measures by how much).
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import asdict, dataclass
from typing import Callable

METHODS = ("adaptive", "fixed")
CONFIDENCE = 0.95
MAX_SAMPLES = 1_000_000      # bounds the memory of a microsecond-fast step under a long max_time


@dataclass(frozen=True)
class Settings:
    method: str = "adaptive"
    warmup: int = 2              # at least this many warm-up iterations (fixed: exactly)
    iters: int = 5               # at least this many timed iterations
    min_time: float = 1.0        # at least this many seconds of timed iterations
    ci_width: float = 0.1        # stop when (ci_high - ci_low) / median <= this
    max_time: float = 20.0       # ... or when the timed iterations have taken this long
    drift: float = 0.05          # warm-up ends when a window is no more than this much faster
    window: int = 3              # iterations per warm-up window
    warmup_max_time: float | None = None   # default: max_time / 4

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def warmup_limit(self) -> float:
        return self.max_time / 4 if self.warmup_max_time is None else self.warmup_max_time


# --- order statistics -------------------------------------------------------------------------
def percentile(sorted_times: list[float], p: float) -> float:
    """The p-th percentile (0..100) of sorted data, linearly interpolated (numpy's default)."""
    if not sorted_times:
        raise ValueError("no samples")
    pos = (len(sorted_times) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_times) - 1)
    return sorted_times[lo] + (sorted_times[hi] - sorted_times[lo]) * (pos - lo)


def median_ci_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the order statistics that bound the median with at least
    `confidence` for n independent samples, the narrowest symmetric pair; None when n is too
    small for any pair to reach it (n < 6 at 95%)."""
    if n < 1:
        return None
    alpha = 1.0 - confidence
    if n > 200:
        # the normal approximation to Binomial(n, 1/2), good to a rank at this size
        z = _z(confidence)
        k = max(0, math.floor((n - z * math.sqrt(n)) / 2.0 - 0.5))
        return k, n - 1 - k
    # the interval [x_(k+1), x_(n-k)] (1-based) misses the median when at most k samples lie
    # below it or at most k above: probability 2 * P(Binomial(n, 1/2) <= k)
    cdf, best = 0.0, None
    for k in range(0, n // 2 + 1):
        cdf += math.comb(n, k) / 2.0 ** n
        if 2.0 * cdf > alpha:
            break
        best = k
    if best is None:
        return None
    return best, n - 1 - best


def _z(confidence: float) -> float:
    """The two-sided standard normal quantile for `confidence` (1.96 at 95%)."""
    from statistics import NormalDist
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def median_ci(times: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    ranks = median_ci_ranks(len(times), confidence)
    if ranks is None:
        return None
    s = sorted(times)
    return s[ranks[0]], s[ranks[1]]


def summary(times: list[float]) -> dict:
    """Everything a point reports about its timed iterations (seconds)."""
    s = sorted(times)
    n = len(s)
    med = percentile(s, 50)
    mean = sum(s) / n
    sd = math.sqrt(sum((t - mean) ** 2 for t in s) / (n - 1)) if n > 1 else 0.0
    q1, q3 = percentile(s, 25), percentile(s, 75)
    ci = median_ci(s)
    return {
        "median_s": med, "mean_s": mean, "min_s": s[0], "max_s": s[-1],
        "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1,
        "p10_s": percentile(s, 10), "p90_s": percentile(s, 90), "p99_s": percentile(s, 99),
        "cv": sd / mean if mean > 0 else None,
        "ci_low_s": ci[0] if ci else None, "ci_high_s": ci[1] if ci else None,
        "ci_rel_width": (ci[1] - ci[0]) / med if ci and med > 0 else None,
        "iters": n,
    }


# --- the sampling loop -----------------------------------------------------------------------
def _median(xs: list[float]) -> float:
    return percentile(sorted(xs), 50)


def still_warming(times: list[float], window: int, drift: float) -> bool:
    """True while the last `window` timings are more than `drift` faster (by median) than
    the `window` before them, or there are not yet two windows to compare."""
    if len(times) < 2 * window:
        return True
    last, before = _median(times[-window:]), _median(times[-2 * window:-window])
    return last < (1.0 - drift) * before


def _ci_met(times: list[float], width: float) -> bool:
    ci = median_ci(times)
    if ci is None:
        return False
    med = _median(times)
    return med > 0 and (ci[1] - ci[0]) / med <= width


def sample(step: Callable[[], None], settings: Settings,
           clock: Callable[[], float] = time.perf_counter) -> dict:
    """Warm up and time `step` as `settings` say. Returns the summary of the timed iterations
    plus "times_s" (every timed iteration), "warmup_iters", "warmup_s", "warmup_settled",
    "stopped_by" ("ci", "max_time", "iters" for the fixed method, "max_samples"), "elapsed_s"
    and the load on the machine during the timed iterations (`Load.measure`)."""
    warm, warm_settled = _warm_up(step, settings, clock)
    load = Load.start()
    times, stopped_by, elapsed = _timed(step, settings, clock)
    out = summary(times)
    out.update({"times_s": times, "warmup_iters": len(warm), "warmup_s": sum(warm),
                "warmup_settled": warm_settled, "stopped_by": stopped_by, "elapsed_s": elapsed,
                **load.stop()})
    return out


def _warm_up(step, settings: Settings, clock) -> tuple[list[float], bool]:
    warm: list[float] = []
    start = clock()
    if settings.method == "fixed":
        for _ in range(settings.warmup):
            warm.append(_time_one(step, clock))
        return warm, True
    while True:
        warm.append(_time_one(step, clock))
        if len(warm) >= settings.warmup and not still_warming(warm, settings.window, settings.drift):
            return warm, True
        if clock() - start >= settings.warmup_limit:
            return warm, False


def _timed(step, settings: Settings, clock) -> tuple[list[float], str, float]:
    times: list[float] = []
    start = clock()
    next_check = 6            # the CI needs 6 samples; after that check at ~10% more samples
    while True:
        times.append(_time_one(step, clock))
        elapsed = clock() - start
        enough = len(times) >= settings.iters and elapsed >= settings.min_time
        if settings.method == "fixed":
            if enough:
                return times, "iters", elapsed
        else:
            if enough and len(times) >= next_check:
                next_check = max(len(times) + 1, int(len(times) * 1.1))
                if _ci_met(times, settings.ci_width):
                    return times, "ci", elapsed
            if elapsed >= settings.max_time and len(times) >= settings.iters:
                return times, "max_time", elapsed
        if len(times) >= MAX_SAMPLES:
            return times, "max_samples", elapsed


def _time_one(step, clock) -> float:
    t0 = clock()
    step()                    # each iteration synchronises its device itself
    return clock() - t0


# --- the machine's load ----------------------------------------------------------------------
def _cpu_busy_seconds() -> float | None:
    """CPU seconds all processes (and the hypervisor's steal) have used since boot, from
    /proc/stat; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Load:
    """How many cores other processes kept busy while this process was measuring: the
    machine's busy CPU time (steal included) minus this process's own, over the wall time."""
    wall: float
    busy: float | None
    own: float

    @classmethod
    def start(cls) -> "Load":
        return cls(time.monotonic(), _cpu_busy_seconds(), _own_cpu_seconds())

    def stop(self) -> dict:
        wall = time.monotonic() - self.wall
        busy = _cpu_busy_seconds()
        own = _own_cpu_seconds() - self.own
        others = None
        if busy is not None and self.busy is not None and wall > 0:
            # jiffies are coarse (10 ms): a short point's figure is rounded, never negative
            others = max(0.0, (busy - self.busy - own) / wall)
        return {"others_cores": others, "own_cores": own / wall if wall > 0 else None}


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where it is not available."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def busy_reason(others_cores: float | None, threads: int | None, cores: int | None) -> str:
    """Why a point was taken on a busy machine, or "": other processes used more of the cores
    than this point's threads left free (by more than half a core)."""
    if others_cores is None or not cores:
        return ""
    want = min(threads or cores, cores)
    if others_cores > cores - want + 0.5:
        return (f"busy machine: other processes used {others_cores:.1f} of {cores} cores while "
                f"this point ran {want} thread{'s' if want != 1 else ''}")
    return ""


def noise_reasons(point: dict, ci_width: float) -> list[str]:
    """Why a point is too noisy to compare with another, or []: its median's confidence
    interval is wider than asked (or could not be computed), its warm-up never settled, the
    machine was busy, or (with repeats) separate processes disagree by more than `ci_width`."""
    reasons = []
    rel = point.get("ci_rel_width")
    if rel is None:
        reasons.append(f"{point.get('iters')} timed iterations: too few for a 95% confidence "
                       "interval of the median (6 needed)")
    elif rel > ci_width:
        reasons.append(f"95% CI of the median is {rel:.1%} of it wide (asked: {ci_width:.1%})")
    if point.get("warmup_settled") is False:
        reasons.append("warm-up did not settle: timings were still falling when its time ran out")
    if point.get("busy"):
        reasons.append(point["busy"])
    spread = point.get("between_rel_range")
    if spread is not None and spread > ci_width:
        reasons.append(f"separate processes' medians differ by {spread:.1%} of the median "
                       f"(asked: {ci_width:.1%})")
    return reasons


def between_processes(medians: list[float]) -> dict:
    """The spread of one point's medians measured in separate fresh processes."""
    s = sorted(medians)
    med = percentile(s, 50)
    mean = sum(s) / len(s)
    sd = math.sqrt(sum((m - mean) ** 2 for m in s) / (len(s) - 1)) if len(s) > 1 else 0.0
    return {"repeat_medians_s": medians, "between_min_s": s[0], "between_max_s": s[-1],
            "between_rel_range": (s[-1] - s[0]) / med if med > 0 else None,
            "between_cv": sd / mean if mean > 0 else None}


__all__ = ["Settings", "METHODS", "sample", "summary", "median_ci", "median_ci_ranks",
           "percentile", "still_warming", "busy_reason", "noise_reasons", "between_processes",
           "load_average", "Load"]
