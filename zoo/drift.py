"""`zoo verify --layers --plot F.png`: how the error grows through a network, per engine.

One figure per run, one column per (network, mode): on top each engine's max relative error
(max |engine - ref| / max |ref|) at every blob in network order (every parameter in train
mode), below its ratio to the allowed error (<= 1 passes). matplotlib is imported here only.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError


def table(result) -> list[str]:
    """The per-layer rows of one result as text lines (the CLI prints them as a table)."""
    lines = [f"{result.network} {result.engine} {result.mode}"
             + (f" (blobs: {result.exposed})" if result.exposed else "")]
    for row in result.layers:
        lines.append(f"  {row['layer']:<24} {row['type']:<14} {row['max_abs_err']:10.3g} "
                     f"{row['max_rel_err']:10.3g} {row['ratio']:10.3g}"
                     + ("" if row["ok"] else "  FAIL"))
    return lines


def plot(results, path: str | Path) -> Path:
    """Write the drift figure of `results` (CaseResults with `layers`) to `path` (.png)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot {path}: the figure is written as PNG; name it *.png")
    groups: dict[tuple[str, str], list] = {}
    for r in results:
        if r.layers:
            groups.setdefault((r.network, r.mode), []).append(r)
    if not groups:
        raise UsageError("--plot: no per-layer numbers to draw (run with --layers; every case "
                         "was skipped or failed before comparing)")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(groups), figsize=(6.5 * len(groups), 7.5), squeeze=False)
    for col, ((network, mode), rs) in enumerate(groups.items()):
        top, bottom = axes[0][col], axes[1][col]
        names = [row["layer"] for row in rs[0].layers]
        for r in rs:
            xs = range(len(r.layers))
            rel = [max(row["max_rel_err"], 1e-12) for row in r.layers]
            ratio = [max(row["ratio"], 1e-12) for row in r.layers]
            top.plot(xs, rel, marker=".", label=r.engine)
            bottom.plot(xs, ratio, marker=".", label=r.engine)
        top.set_title(f"{network} ({mode}): error through the network")
        top.set_ylabel("max |engine - ref| / max |ref|")
        bottom.set_ylabel("ratio to the allowed error")
        bottom.axhline(1.0, color="red", linewidth=1, linestyle="--")
        for ax in (top, bottom):
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
        step = max(1, len(names) // 30)
        bottom.set_xticks(range(0, len(names), step))
        bottom.set_xticklabels(names[::step], rotation=70, fontsize=7)
        top.set_xticks(range(0, len(names), step))
        top.set_xticklabels([])
        top.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)          # complete or absent: never half a figure under the name
    return path
