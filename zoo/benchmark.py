"""`zoo bench`: time every engine the same way, as the survey meant to.

Each measurement point (network x engine x device x threads x batch x mode) runs in a fresh
child process with its thread count set before the engine loads. The batch is made once
(seeded, synthetic, as the survey's synthetic-data setting) and held in memory by the child.
A training iteration is forward + loss + backward + SGD update; inference is a forward pass
in eval mode. Warm-up iterations first, then timed iterations until both `iters` and
`min_time` are met; each iteration synchronises its device before the clock is read (see
runners/base.py). A `layers` breakdown is a separate pass and never mixes with the timing.
"""

from __future__ import annotations

import os
import platform
from typing import Callable

from . import __version__, child, data, engines
from . import net as N
from .builds import BuildFailed, build
from .errors import ZooError

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


def bench(names: list | None = None, engines_: list[str] | None = None, device: str = "cpu",
          threads: list[int | None] | None = None, batch: int | None = None, mode: str = "train",
          warmup: int = 2, iters: int = 5, min_time: float = 1.0, layers: bool = False,
          seed: int = 0, timeout: float = 1800.0, options: dict | None = None,
          progress: Callable[[dict], None] | None = None) -> list[dict]:
    names = names or N.S.zoo_names()
    engs = [engines.get(e) for e in engines_] if engines_ else list(engines.ENGINES.values())
    modes = ["train", "infer"] if mode == "both" else [mode]
    threads = threads or [None]
    env = environment()
    rows = []
    for name in names:
        net = name if isinstance(name, N.Net) else N.load(name)
        b = batch or default_batch(net, device)
        netb = net.with_batch(b)
        inputs = data.make(netb, seed)          # made once, sent to every child
        fwd_flops = netb.flops
        for eng in engs:
            art, build_error = None, None
            for m in modes:
                for t in threads:
                    row = {"network": net.name, "engine": eng.name, "device": device, "threads": t,
                           "batch": b, "mode": m, "status": "ok", "reason": ""}
                    if (why := eng.missing()) is not None:
                        row.update(status="skipped", reason=f"not installed: {why}")
                    elif m == "train" and not eng.train:
                        row.update(status="skipped", reason=eng.note or "inference only")
                    else:
                        if art is None and build_error is None:
                            try:
                                art = build(net, eng.name, seed=seed, timeout=timeout)
                            except (BuildFailed, ZooError) as e:
                                build_error = e
                        if build_error is not None:
                            unsupported = getattr(build_error, "unsupported", False)
                            row.update(status="skipped" if unsupported else "error",
                                       reason=("unsupported: " if unsupported else "build failed: ")
                                       + str(build_error))
                        else:
                            _measure(row, eng, art, inputs, m, t, device, warmup, iters, min_time,
                                     layers, timeout, options, fwd_flops)
                            row.update({"spec_sha256": art.manifest["spec_sha256"],
                                        "weights_sha256": art.manifest["weights_sha256"]})
                    row["environment"] = env
                    rows.append(row)
                    if progress:
                        progress(row)
    return rows


def _measure(row, eng, art, inputs, mode, threads, device, warmup, iters, min_time, layers,
             timeout, options, fwd_flops) -> None:
    job = {"artifact": str(art.path), "mode": mode, "warmup": warmup, "iters": iters,
           "min_time": min_time, "layers": False, "options": options or {}}
    res = child.run(eng.name, "bench", job, inputs, threads=threads, device=device, timeout=timeout)
    if not res.ok:
        unavailable = res.result.get("type") in ("EngineUnavailable", "Unsupported") or \
            res.result.get("unsupported")
        row.update(status="skipped" if unavailable else "error", reason=res.reason)
        return
    r = res.result
    row.update({k: r.get(k) for k in ("median_s", "min_s", "max_s", "q1_s", "q3_s", "iqr_s", "iters",
                                      "peak_rss_mb", "peak_device_mb", "device_name", "versions")})
    row["samples_per_s"] = row["batch"] / r["median_s"]
    # training ~ 3x the forward FLOPs (forward, and backward for inputs and weights)
    row["gflops"] = fwd_flops * (3 if mode == "train" else 1) / r["median_s"] / 1e9
    if layers:
        # a separate profiling pass in its own child: never mixed with the clean timing
        job["layers"], job["iters"], job["min_time"], job["warmup"] = True, 1, 0.0, 0
        lres = child.run(eng.name, "bench", job, inputs, threads=threads, device=device, timeout=timeout)
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
