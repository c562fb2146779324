"""`zoo bench`: time every engine the same way, as the survey meant to.

Each measurement point (network x engine x device x threads x batch x mode) runs in a fresh
child process with its thread count set before the engine loads. The batch is made once
(seeded, synthetic, as the survey's synthetic-data setting) and held in memory by the child.
A training iteration is forward + loss + backward + SGD update; inference is a forward pass
in eval mode. Warm-up iterations first, then timed iterations until both `iters` and
`min_time` are met; each iteration synchronises its device before the clock is read (see
runners/base.py). A `layers` breakdown is a separate pass and never mixes with the timing.

The cases are walked by zoo/cases.py, as verify's are: a case that cannot run (e.g. train mode
on a network without a loss layer) is skipped with the reason before any child starts, so no
time is ever reported for work that did not happen.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Callable

from . import __version__, cases, data, engines, isolation
from . import net as N
from . import options as _options

KEYS = ["network", "engine", "device", "threads", "batch", "mode", "status", "median_s",
        "min_s", "max_s", "q1_s", "q3_s", "iqr_s", "iters", "samples_per_s", "gflops",
        "peak_rss_mb", "peak_device_mb", "reason"]


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


@dataclass
class _Batch:
    """One network's batch, made once and sent to every engine's child."""
    size: int
    inputs: dict
    fwd_flops: int


def bench(names: list | None = None, engines_: list[str] | None = None, device: str = "cpu",
          threads: list[int | None] | None = None, batch: int | None = None, mode: str = "train",
          warmup: int = 2, iters: int = 5, min_time: float = 1.0, layers: bool = False,
          seed: int = 0, timeout: float = 1800.0, options: dict | None = None,
          progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Time networks (default: the whole zoo) on engines (default: all registered). A case
    that cannot run (zoo/cases.py: not installed, no training step, no loss layer to train,
    unsupported, build failed) is a row with its status and reason and no time. Options that
    would make the measurement meaningless are refused (zoo.errors.UsageError, exit 2)."""
    mode = _options.mode(mode, MODES)
    device = _options.device(device)
    engines_ = _options.engine_names(engines_)
    threads = [_options.positive_int("threads", t) for t in threads or [None]]
    batch = _options.positive_int("batch", batch)
    warmup = _options.non_negative_int("warmup", warmup)
    iters = _options.positive_int("iters", iters)
    timeout = _options.timeout(timeout)
    env = environment()

    def prepare(net: N.Net) -> _Batch:
        b = batch or default_batch(net, device)
        netb = net.with_batch(b)
        return _Batch(b, data.make(netb, seed), netb.flops)

    def new_row(case: cases.Case, p: _Batch, status: str, reason: str) -> dict:
        return {"network": case.network, "engine": case.engine, "device": device,
                "threads": case.threads, "batch": p.size, "mode": case.mode, "status": status,
                "reason": reason, "environment": env}

    def run(case: cases.Case, p: _Batch, art) -> dict:
        row = new_row(case, p, "ok", "")
        job = {"artifact": str(art.path), "mode": case.mode, "warmup": warmup, "iters": iters,
               "min_time": min_time, "layers": False, "options": options or {}}
        _measure(row, case, job, p, device, layers, timeout)
        row.update({"spec_sha256": art.manifest["spec_sha256"],
                    "weights_sha256": art.manifest["weights_sha256"]})
        return row

    def settle(case: cases.Case, p: _Batch, settled: cases.Settled) -> dict:
        return new_row(case, p, settled.status, settled.reason)

    modes = ["train", "infer"] if mode == "both" else [mode]
    return cases.walk(names, engines_, modes, prepare=prepare, run=run, settle=settle,
                      inference_mode="infer", threads=threads, seed=seed, timeout=timeout,
                      progress=progress)


def _measure(row: dict, case: cases.Case, job: dict, p: _Batch, device: str, layers: bool,
             timeout: float) -> None:
    res = isolation.run(case.engine, "bench", job, p.inputs, threads=case.threads, device=device,
                        timeout=timeout)
    if not res.ok:
        settled = cases.child_failed(res)
        row.update(status=settled.status, reason=settled.reason)
        return
    r = res.result
    row.update({k: r.get(k) for k in ("median_s", "min_s", "max_s", "q1_s", "q3_s", "iqr_s", "iters",
                                      "peak_rss_mb", "peak_device_mb", "device_name", "versions")})
    row["samples_per_s"] = row["batch"] / r["median_s"]
    # training ~ 3x the forward FLOPs (forward, and backward for inputs and weights)
    row["gflops"] = p.fwd_flops * (3 if case.mode == "train" else 1) / r["median_s"] / 1e9
    if layers:
        # a separate profiling pass in its own child: never mixed with the clean timing
        job = {**job, "layers": True, "iters": 1, "min_time": 0.0, "warmup": 0}
        lres = isolation.run(case.engine, "bench", job, p.inputs, threads=case.threads,
                             device=device, timeout=timeout)
        row["layers"] = lres.result.get("layers") if lres.ok else None
        if not lres.ok:
            row["layers_reason"] = lres.reason


def write_csv(rows: list[dict], path) -> None:
    import csv
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=KEYS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def plot(rows: list[dict], path) -> list[str]:
    """The survey's figure types: time per mini-batch against threads (one line per engine,
    one panel per network and mode), and grouped bars per engine at the most threads.
    Writes PATH (PNG) and its SVG, and PATH-bars.png/.svg."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    from pathlib import Path

    import math

    def minor(v, _):      # label 2, 3 and 5 of each decade, plainly (not 3x10^-1)
        return f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""

    def log_y(ax):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(minor))

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    path = Path(path)
    panels = sorted({(r["network"], r["mode"]) for r in ok})
    engines_ = sorted({r["engine"] for r in ok})
    color = {e: f"C{i}" for i, e in enumerate(engines_)}     # one colour per engine everywhere
    tcounts = sorted({r["threads"] or 0 for r in ok})
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (netname, mode) in zip(axes.flat, panels):
        for e in engines_:
            pts = sorted((r["threads"] or 0, r["median_s"]) for r in ok
                         if r["network"] == netname and r["mode"] == mode and r["engine"] == e)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=e, color=color[e])
        ax.set_title(f"{netname} ({mode}, batch {next(r['batch'] for r in ok if r['network'] == netname)})")
        ax.set_xticks(tcounts)
        ax.set_xlabel("threads (0: engine default)" if 0 in tcounts else "threads")
        ax.set_ylabel("time per mini-batch (s)")
        log_y(ax)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    dev = ok[0]["device"]
    fig.suptitle(f"zoo bench on {dev}: {ok[0]['environment']['cpu']}", fontsize=10)
    fig.tight_layout()
    out = [str(path), str(path.with_suffix(".svg"))]
    for o in out:
        fig.savefig(o, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(panels)), 4))
    width = 0.8 / max(len(engines_), 1)
    for i, e in enumerate(engines_):
        ys = []
        for netname, mode in panels:
            pts = [r for r in ok if r["network"] == netname and r["mode"] == mode and r["engine"] == e]
            best = max(pts, key=lambda r: r["threads"] or 0) if pts else None
            ys.append(best["median_s"] if best else 0)
        ax.bar([j + i * width for j in range(len(panels))], ys, width, label=e, color=color[e])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(panels))])
    ax.set_xticklabels([f"{n}\n{m}" for n, m in panels], fontsize=8)
    ax.set_ylabel("time per mini-batch (s)")
    log_y(ax)
    ax.set_title(f"engines on {dev} (most threads measured)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    bars = path.with_name(path.stem + "-bars")
    for suffix in (".png", ".svg"):
        fig.savefig(str(bars) + suffix, dpi=110)
        out.append(str(bars) + suffix)
    plt.close(fig)
    return out


__all__ = ["bench", "plot", "write_csv", "environment", "KEYS"]
