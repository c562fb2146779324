"""`zoo bench`: time every engine the same way, as the survey meant to.

Each measurement point (network x engine x device x threads x batch x mode) runs in a fresh
child process with its thread count set before the engine loads. The batch is made once
(seeded, synthetic, as the survey's synthetic-data setting) and held in memory by the child.
A training iteration is forward + loss + backward + SGD update; inference is a forward pass
in eval mode. Warm-up until the timings stop falling, then timed iterations until the
median's 95% confidence interval is narrow enough or a time limit passes (zoo/stats.py; the
earlier fixed count is `method="fixed"`); each iteration synchronises its device before the
clock is read (runners/base.py). Each point records the machine's load (the 1-minute load
average before and after, and the cores other processes used while it was timed) and is
flagged `noisy`, with the reasons, when it should not be compared; `repeat` runs it in
several fresh processes and reports their spread. GFLOP/s sit beside the machine's float32
GEMM peak at the same thread count (zoo/peak.py). A `layers` breakdown is a separate pass
and never mixes with the timing; an engine without a per-layer profiler says so.

With `optimize`, each point is timed twice, each in its own fresh child: as built ("config":
"default") and in the engine's fastest standard configuration ("optimized": torch.compile
and channels-last where faster, XLA, MXNet's oneDNN fusion, ORT's full optimisation and
threads; "enabled" says what, per engine, from its runner). The optimised model is verified
in its child before it is timed (runners/base.py, verify_optimized): its forward outputs on
the bench batch against the float64 NumPy reference with zoo/magnitude.py's bounds (the
first VERIFY_ROWS samples: the reference of the whole batch takes minutes, and eval-mode
outputs are per sample) and, in train mode, one step's loss and updated weights against the
default configuration's step, at verify's tolerances. One that fails is a row with status
"fail", the reason and no time. An engine with no optimised configuration (Caffe, OpenCV)
has a "skipped" optimised row saying so.

The cases are walked by zoo/cases.py, as verify's are: a case that cannot run (e.g. train mode
on a network without a loss layer) is skipped with the reason before any child starts, so no
time is ever reported for work that did not happen.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Callable

from . import __version__, cases, data, engines, isolation, reference
from . import weights as W
from . import net as N
from . import options as _options
from . import stats as S
from .errors import UsageError

KEYS = ["network", "engine", "config", "enabled", "device", "threads", "batch", "mode", "status", "median_s",
        "mean_s", "min_s", "max_s", "q1_s", "q3_s", "iqr_s", "p10_s", "p90_s", "p99_s", "cv",
        "ci_low_s", "ci_high_s", "ci_rel_width", "iters", "warmup_iters", "stopped_by",
        "samples_per_s", "gflops", "peak_gflops", "peak_fraction", "repeat", "between_rel_range",
        "others_cores", "load_before", "load_after", "noisy", "noise", "peak_rss_mb",
        "peak_device_mb", "reason"]

# what a point copies from its child's result (zoo/stats.py's summary and the runner's info)
_FROM_CHILD = ("median_s", "mean_s", "min_s", "max_s", "q1_s", "q3_s", "iqr_s", "p10_s", "p90_s",
               "p99_s", "cv", "ci_low_s", "ci_high_s", "ci_rel_width", "iters", "warmup_iters",
               "warmup_s", "warmup_settled", "stopped_by", "elapsed_s", "others_cores",
               "own_cores", "peak_rss_mb", "huge_pages_mb", "peak_device_mb", "device_name", "versions", "allocator")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "zoo": __version__,
            "engines": {e.name: e.versions() for e in engines.ENGINES.values() if e.installed}}


def default_batch(net: N.Net, device: str) -> int:
    return int(net.train.batch_gpu if device.startswith("gpu") else net.train.batch_cpu)


MODES = ("train", "infer", "both")
CONFIGS = ("default", "optimized")
VERIFY_ROWS = 2      # samples of the bench batch an optimised model's outputs are checked on
# the names the reference travels under beside the batch (runners/__main__.py reads them)
CHECK_REF, CHECK_BOUND = "__check_ref__:", "__check_bound__:"


@dataclass
class _Batch:
    """One network's batch, made once and sent to every engine's child."""
    size: int
    inputs: dict
    fwd_flops: int
    check: dict | None = None    # --optimize: reference outputs and bounds of the first rows
    net: N.Net | None = None     # --optimize: for verify's oracle, when the parent asks it
    seed: int = 0


def _check_arrays(net: N.Net, inputs: dict, seed: int) -> dict:
    """The reference an optimised model is verified against (see the module's docstring):
    the float64 outputs of the first VERIFY_ROWS samples and their allowed errors."""
    clash = sorted(k for k in inputs if k.startswith((CHECK_REF, CHECK_BOUND)))
    if clash:      # the child would take it for a reference array: refused, never misread
        raise UsageError(f"{net.name}: input blob {clash[0]!r} starts with a name --optimize uses "
                         f"for its own arrays ({CHECK_REF!r}, {CHECK_BOUND!r}); rename the blob")
    rows = min(VERIFY_ROWS, next(iter(inputs.values())).shape[0])
    small = net.with_batch(rows)
    first = {k: v[:rows] for k, v in inputs.items()}
    weights = W.for_net(net, seed)
    ref = reference.forward(small, weights, first, with_loss=False)
    bound = reference.bounds(small, weights, ref)
    out = {}
    for blob in small.outputs:
        out[CHECK_REF + blob] = ref[blob]
        out[CHECK_BOUND + blob] = bound[blob]
    return out


def bench(names: list | None = None, engines_: list[str] | None = None, device: str = "cpu",
          threads: list[int | None] | None = None, batch: int | None = None, mode: str = "train",
          warmup: int = 2, iters: int = 5, min_time: float = 1.0, layers: bool = False,
          seed: int = 0, timeout: float = 1800.0, options: dict | None = None,
          progress: Callable[[dict], None] | None = None, ci_width: float = 0.1,
          max_time: float = 20.0, repeat: int = 1, method: str = "adaptive",
          peak: bool = True, started: Callable[[cases.Case], None] | None = None,
          optimize: bool = False) -> list[dict]:
    """Time networks (default: the whole zoo) on engines (default: all registered). A case
    that cannot run (zoo/cases.py: not installed, no training step, no loss layer to train,
    unsupported, build failed) is a row with its status and reason and no time. Options that
    would make the measurement meaningless are refused (zoo.errors.UsageError, exit 2).

    Statistics (zoo/stats.py): with `method` "adaptive", warm-up (at least `warmup`
    iterations) runs until the timings stop falling, then timed iterations (at least `iters`
    and `min_time` seconds) until the median's 95% confidence interval is at most `ci_width`
    of the median wide or `max_time` seconds have passed; "fixed" is the earlier fixed-count
    method. `repeat` runs each point in that many fresh processes and reports the spread
    between them. `peak` measures the machine's float32 GEMM peak per thread count once
    (zoo/peak.py, cached) and reports each point's GFLOP/s as a fraction of it.
    `optimize`: each point also in the engine's optimised configuration, verified before it
    is timed (the module's docstring); rows carry "config" ("default" or "optimized"),
    the optimised one right after its default, and "enabled" (what was switched on).
    `progress` is called once per row."""
    mode = _options.mode(mode, MODES)
    device = _options.device(device)
    engines_ = _options.engine_names(engines_)
    threads = [_options.positive_int("threads", t) for t in threads or [None]]
    batch = _options.positive_int("batch", batch)
    warmup = _options.non_negative_int("warmup", warmup)
    iters = _options.positive_int("iters", iters)
    min_time = _options.tolerance("min_time", min_time)
    timeout = _options.timeout(timeout)
    repeat = _options.positive_int("repeat", repeat)
    settings = statistics_settings(method, ci_width, max_time, min_time)
    env = environment()
    peaks = _Peaks(peak and device == "cpu")

    def prepare(net: N.Net) -> _Batch:
        b = batch or default_batch(net, device)
        netb = net.with_batch(b)
        inputs = data.make(netb, seed)
        check = _check_arrays(net, inputs, seed) if optimize else None
        return _Batch(b, inputs, netb.flops, check, net, seed)

    configs = CONFIGS if optimize else CONFIGS[:1]

    def new_row(case: cases.Case, p: _Batch, status: str, reason: str, config: str) -> dict:
        return {"network": case.network, "engine": case.engine, "config": config,
                "device": device, "threads": case.threads, "batch": p.size, "mode": case.mode,
                "status": status, "reason": reason, "enabled": None, "environment": env}

    def run_config(case: cases.Case, p: _Batch, art, config: str) -> dict:
        row = new_row(case, p, "ok", "", config)
        opts = {**(options or {}), "bench_stats": settings}
        job = {"artifact": str(art.path), "mode": case.mode, "warmup": warmup, "iters": iters,
               "min_time": min_time, "layers": False, "options": opts}
        arrays = p.inputs
        if config == "optimized":
            job["options"] = {**opts, "optimize": True}
            job["check_rows"] = VERIFY_ROWS
            arrays = {**p.inputs, **p.check}
        # per-layer profiles are of the default configuration (the engines' profilers see
        # the model as built; a compiled one is one fused program)
        _measure(row, case, job, p, device, layers and config == "default", timeout, repeat,
                 ci_width, arrays)
        row.update({"spec_sha256": art.manifest["spec_sha256"],
                    "weights_sha256": art.manifest["weights_sha256"]})
        if row["status"] == "ok":
            peaks.annotate(row)
        return row

    def run(case: cases.Case, p: _Batch, art) -> list[dict]:
        rows = []
        for config in configs:
            rows.append(run_config(case, p, art, config))
            if progress:
                progress(rows[-1])
        return rows

    def settle(case: cases.Case, p: _Batch, settled: cases.Settled) -> list[dict]:
        rows = [new_row(case, p, settled.status, settled.reason, c) for c in configs]
        for row in rows:
            if progress:
                progress(row)
        return rows

    modes = ["train", "infer"] if mode == "both" else [mode]
    per_case = cases.walk(names, engines_, modes, prepare=prepare, run=run, settle=settle,
                          inference_mode="infer", threads=threads, seed=seed, timeout=timeout,
                          started=started)
    return [row for rows in per_case for row in rows]


def statistics_settings(method: str, ci_width, max_time, min_time: float) -> dict:
    """The child's zoo.stats settings (beyond warmup/iters/min_time), checked here so that a
    meaningless one is a UsageError before any child starts."""
    method = _options.mode(method, S.METHODS, "method")
    ci_width = _options.tolerance("ci_width", ci_width)
    if not ci_width:
        raise UsageError(f"ci_width must be a number > 0 (e.g. 0.1: the median +- 5%), not {ci_width!r}")
    max_time = _options.timeout(max_time, "max_time")
    if max_time < min_time:
        raise UsageError(f"max_time ({max_time:g} s) is less than min_time ({min_time:g} s)")
    return {"method": method, "ci_width": ci_width, "max_time": max_time}


class _Peaks:
    """The machine's GEMM peak per thread count (zoo/peak.py), measured when a point first
    needs it, and each ok point's fraction of it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._by_threads: dict[int | None, dict] = {}

    def annotate(self, row: dict) -> None:
        if not self.enabled:
            return
        t = row["threads"]
        if t not in self._by_threads:
            from . import peak
            self._by_threads[t] = peak.peak(t)
        p = self._by_threads[t]
        row["peak_gflops"] = p["gflops"]
        row["peak"] = p
        row["peak_fraction"] = row["gflops"] / p["gflops"] if p["gflops"] else None


def _measure(row: dict, case: cases.Case, job: dict, p: _Batch, device: str, layers: bool,
             timeout: float, repeat: int = 1, ci_width: float = 0.1,
             arrays: dict | None = None) -> None:
    row["load_before"] = S.load_average()

    def timed() -> dict | None:
        """One bench child's result; None, the row saying why, when the child failed."""
        res = isolation.run(case.engine, "bench", job, p.inputs if arrays is None else arrays,
                            threads=case.threads, device=device, timeout=timeout)
        if not res.ok:
            settled = cases.child_failed(res)
            row.update(status=settled.status, reason=settled.reason)
            return None
        return res.result

    runs = []
    for _ in range(repeat):             # each in a fresh child: their spread is the point
        result = timed()
        ok = result is not None and _verified(row, result)
        # a child whose optimised step failed only its own comparison stopped before timing:
        # when the oracle passes that step, another child times it (its forward checked again)
        if result is not None and not ok and _oracle_decides(row, job, case, p, device, timeout):
            result = timed()
            ok = result is not None and _verified(row, result)
        if not ok:
            row["load_after"] = S.load_average()
            return
        runs.append(result)
    row["load_after"] = S.load_average()
    _summarise(row, runs, case, ci_width)
    row["samples_per_s"] = row["batch"] / row["median_s"]
    # training ~ 3x the forward FLOPs (forward, and backward for inputs and weights)
    row["gflops"] = p.fwd_flops * (3 if case.mode == "train" else 1) / row["median_s"] / 1e9
    if layers:
        _layer_pass(row, case, job, p, device, timeout)


def _verified(row: dict, result: dict) -> bool:
    """Copy an optimised run's verification into the row; False (the row now says "fail",
    why, and has no time) when the optimised model failed it."""
    v = result.get("verification")
    if v is None:
        return True
    row["verification"] = v
    row["enabled"] = v.get("enabled")
    if v["status"] == "pass":
        return True
    row.update(status="fail", reason=f"optimised model failed verification, not timed: {v['reason']}")
    return False


def _oracle_decides(row: dict, job: dict, case: cases.Case, p: _Batch, device: str,
                    timeout: float) -> bool:
    """When an optimised training step failed only its comparison with the default
    configuration's float32 step, let verify's calibrated judge decide: the same step (same
    batch, weights and inputs) against the float64 oracle, with its branch matching at ReLU
    kinks and its conditioning probe (`zoo verify --optimize`). The in-child comparison has
    neither: a fused kernel's reordered float32 sums take the other side of a kink at a few
    units, moving an update by more than 2^-24 input moves do (TensorFlow's fused BatchNorm
    on ResNet-56: 1.04x that tolerance). True, with `job` now saying so, when the oracle
    passes it; the row keeps both verdicts. The row's status is back to ok then."""
    v = row.get("verification") or {}
    if (case.mode != "train" or v.get("failed") != "train" or p.net is None
            or not job.get("options", {}).get("optimize")):
        return False
    from .verifier import verify
    [result] = verify([p.net], [case.engine], "train", batch=p.size, seed=p.seed, device=device,
                      threads=case.threads, timeout=timeout, jobs=1, optimize=True)
    row["oracle_verification"] = {"status": result.status, "reason": result.reason,
                                  "tolerance": result.tolerance_source, "batch": p.size}
    if result.status != "pass":
        return False
    job["train_verified"] = (
        f"passed zoo verify --optimize against the float64 oracle at batch {p.size} "
        f"({result.tolerance_source}); its comparison here with the default float32 step "
        f"was inconclusive ({v.get('reason')})")
    row.update(status="ok", reason="")
    return True


def _summarise(row: dict, runs: list[dict], case: cases.Case, ci_width: float) -> None:
    """The row's figures: those of the process whose median is the median of the runs'
    (with one run, that run), plus the spread between processes; then whether it is fit to
    compare (`noisy`, with the reasons in `noise`)."""
    order = sorted(range(len(runs)), key=lambda i: runs[i]["median_s"])
    middle = runs[order[(len(runs) - 1) // 2]]
    row.update({k: middle.get(k) for k in _FROM_CHILD})
    row["settings"] = middle.get("settings")
    row["repeat"] = len(runs)
    # a busy machine in any of the runs taints the point
    row["others_cores"] = max((r.get("others_cores") or 0.0) for r in runs) \
        if any(r.get("others_cores") is not None for r in runs) else None
    row["busy"] = S.busy_reason(row["others_cores"], case.threads, _cores())
    if len(runs) > 1:
        row.update(S.between_processes([r["median_s"] for r in runs]))
        row["repeats"] = [{k: r.get(k) for k in ("median_s", "ci_low_s", "ci_high_s", "iters",
                                                 "cv", "others_cores", "stopped_by")} for r in runs]
    row["noise"] = S.noise_reasons(row, ci_width)
    row["noisy"] = bool(row["noise"])


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _layer_pass(row: dict, case: cases.Case, job: dict, p: _Batch, device: str,
                timeout: float) -> None:
    """A separate profiling pass in its own child: never mixed with the clean timing."""
    fixed = {**job["options"], "bench_stats": {"method": "fixed"}}
    job = {**job, "layers": True, "iters": 1, "min_time": 0.0, "warmup": 0, "options": fixed}
    lres = isolation.run(case.engine, "bench", job, p.inputs, threads=case.threads,
                         device=device, timeout=timeout)
    row["layers"] = lres.result.get("layers") if lres.ok else None
    # the step timed in the profiling child itself: what the layers' sum compares with
    row["layers_step_s"] = lres.result.get("layers_step_s") if lres.ok else None
    if not lres.ok:
        row["layers_reason"] = lres.reason
    elif row["layers"] is None:
        row["layers_reason"] = lres.result.get("layers_reason") or \
            f"per-layer times are not available from {case.engine}"


def write_csv(rows: list[dict], path) -> None:
    import csv
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=KEYS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def plot(rows: list[dict], path) -> list[str]:
    """The survey's figure types: time per mini-batch against threads (one line per engine,
    one panel per network and mode, with the 95% CI of each median as an error bar), grouped
    bars per engine at the most threads, and GFLOP/s against threads with the machine's GEMM
    peak as a dashed line. Writes PATH (PNG) and its SVG, PATH-bars.png/.svg and
    PATH-gflops.png/.svg; returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pathlib import Path

    # an optimised configuration is its own line and colour ("torch optimized")
    ok = [dict(r, engine=f"{r['engine']} optimized") if r.get("config") == "optimized" else r
          for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    path = Path(path)
    out = []
    for suffix, fig in ((None, _threads_figure(ok, plt, "median_s")),
                        ("-bars", _bars_figure(ok, plt)),
                        ("-gflops", _threads_figure(ok, plt, "gflops"))):
        stem = path.with_name(path.stem + (suffix or ""))
        for ext in (".png", ".svg"):
            target = str(stem) + ext
            fig.savefig(target, dpi=110)
            out.append(target)
        plt.close(fig)
    return out


def _panels(ok: list[dict]) -> list[tuple[str, str]]:
    return sorted({(r["network"], r["mode"]) for r in ok})


def _colours(ok: list[dict]) -> dict[str, str]:
    """One colour per engine, the same in every figure."""
    return {e: f"C{i}" for i, e in enumerate(sorted({r["engine"] for r in ok}))}


def time_axis(ax, values: list[float], label: str) -> None:
    """Label the y axis whatever the range: a log axis only where the values span a decade
    or more (it then holds a labelled power of ten), plain numbers otherwise; never an
    exponent the reader has to apply (matplotlib's "1e-3" offset)."""
    from matplotlib.ticker import FuncFormatter, ScalarFormatter
    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) >= 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
        ax.yaxis.set_major_formatter(fmt)
    ax.set_ylabel(label)


_UNIT = {"median_s": ("time per mini-batch", 1.0), "gflops": ("GFLOP/s", 1.0)}


def _time_unit(ok: list[dict]) -> tuple[str, float]:
    """Seconds or milliseconds, whichever keeps the numbers readable."""
    longest = max(r["median_s"] for r in ok)
    return ("µs", 1e6) if longest < 1e-3 else ("ms", 1e3) if longest < 1.0 else ("s", 1.0)


def _threads_figure(ok: list[dict], plt, key: str):
    panels = _panels(ok)
    colour = _colours(ok)
    tcounts = sorted({r["threads"] or 0 for r in ok})
    unit, scale = _time_unit(ok) if key == "median_s" else ("", 1.0)
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (netname, mode) in zip(axes.flat, panels):
        shown = []
        here = [r for r in ok if r["network"] == netname and r["mode"] == mode]
        for e in colour:
            pts = sorted((r for r in here if r["engine"] == e), key=lambda r: r["threads"] or 0)
            if not pts:
                continue
            xs = [r["threads"] or 0 for r in pts]
            ys = [(r[key] or 0) * scale for r in pts]
            shown += ys
            if key == "median_s":
                err = [[(r["median_s"] - (r.get("ci_low_s") or r["median_s"])) * scale for r in pts],
                       [((r.get("ci_high_s") or r["median_s"]) - r["median_s"]) * scale for r in pts]]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=e, color=colour[e])
                for x, y, r in zip(xs, ys, pts):
                    if r.get("noisy"):
                        ax.annotate("noisy", (x, y), fontsize=7, color=colour[e],
                                    xytext=(4, 4), textcoords="offset points")
            else:
                ax.plot(xs, ys, marker="o", label=e, color=colour[e])
        if key == "gflops":
            peak = sorted({(r["threads"] or 0, r["peak_gflops"]) for r in here if r.get("peak_gflops")})
            if peak:
                ax.plot([p[0] for p in peak], [p[1] for p in peak], "k--", label="GEMM peak")
                shown += [p[1] for p in peak]
        batch = here[0]["batch"]
        ax.set_title(f"{netname} ({mode}, batch {batch})")
        ax.set_xticks(tcounts)
        ax.set_xlabel("threads (0: engine default)" if 0 in tcounts else "threads")
        label = f"{_UNIT[key][0]} ({unit})" if unit else _UNIT[key][0]
        time_axis(ax, shown, label)
        if key == "gflops" and ax.get_yscale() == "linear":
            ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"zoo bench on {ok[0]['device']}: {ok[0]['environment']['cpu']}", fontsize=10)
    fig.tight_layout()
    return fig


def _bars_figure(ok: list[dict], plt):
    """Bars start at zero on a linear axis: a bar's length is its value."""
    panels = _panels(ok)
    colour = _colours(ok)
    unit, scale = _time_unit(ok)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(panels)), 4))
    width = 0.8 / max(len(colour), 1)
    for i, e in enumerate(colour):
        ys = []
        for netname, mode in panels:
            pts = [r for r in ok if r["network"] == netname and r["mode"] == mode and r["engine"] == e]
            best = max(pts, key=lambda r: r["threads"] or 0) if pts else None
            ys.append(best["median_s"] * scale if best else 0)
        ax.bar([j + i * width for j in range(len(panels))], ys, width, label=e, color=colour[e])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(panels))])
    ax.set_xticklabels([f"{n}\n{m}" for n, m in panels], fontsize=8)
    ax.set_xlabel("network and mode")
    from matplotlib.ticker import ScalarFormatter
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)
    ax.set_ylabel(f"time per mini-batch ({unit})")
    ax.set_title(f"engines on {ok[0]['device']} (most threads measured)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["bench", "plot", "write_csv", "environment", "KEYS"]
