"""Do the bench statistics hold? The new adaptive method against the old fixed count, on the
same points, each repeated in fresh processes.

For each point (network x engine x mode x threads) and each method, RUNS separate `zoo bench`
processes (each point in its own child, as zoo bench runs them) are measured one after the
other, alternating the methods so a change in the machine's load hits both alike. Reported
per point and method:
  - spread between processes: (max - min) / median of the RUNS medians, and their CV;
  - seconds per run (warm-up + timing) and timed iterations;
  - coverage: in how many runs the reported 95% CI of the median contains the median of all
    other runs of that method (a CI that holds across processes covers it about 95% of the
    time; the fixed method's 5 iterations give no 95% interval at all);
  - how many runs flagged themselves noisy.

    .venv/bin/python benchmarks/stats_check.py [--points twolayer:onnx:infer:1,...] [--runs 6]
        [--ci-width 0.1] [--max-time 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from zoo import benchmark

DEFAULT_POINTS = "twolayer:onnx:infer:1,alexnet-r:torch:train:1"


def parse_points(text: str) -> list[tuple[str, str, str, int]]:
    out = []
    for item in text.split(","):
        net, eng, mode, threads = item.split(":")
        out.append((net, eng, mode, int(threads)))
    return out


def one_run(point, method: str, args) -> dict:
    net, eng, mode, threads = point
    t0 = time.perf_counter()
    [row] = benchmark.bench([net], [eng], threads=[threads], batch=args.batch, mode=mode,
                            method=method, ci_width=args.ci_width, max_time=args.max_time,
                            min_time=args.min_time, peak=False)
    if row["status"] != "ok":
        raise SystemExit(f"{point}: {row['status']}: {row['reason']}")
    row["wall_s"] = time.perf_counter() - t0
    return row


def coverage(rows: list[dict]) -> tuple[int, int]:
    """(runs whose CI holds the median of the other runs' medians, runs that had a CI)."""
    hits = have = 0
    for i, r in enumerate(rows):
        others = [x["median_s"] for j, x in enumerate(rows) if j != i]
        if r.get("ci_low_s") is None or not others:
            continue
        have += 1
        hits += r["ci_low_s"] <= statistics.median(others) <= r["ci_high_s"]
    return hits, have


def describe(rows: list[dict]) -> dict:
    meds = [r["median_s"] for r in rows]
    m = statistics.median(meds)
    hits, have = coverage(rows)
    return {"medians_ms": [round(x * 1e3, 4) for x in meds],
            "between_rel_range": (max(meds) - min(meds)) / m,
            "between_cv": statistics.stdev(meds) / statistics.mean(meds) if len(meds) > 1 else 0.0,
            "ci_rel_width_median": statistics.median([r["ci_rel_width"] for r in rows])
            if all(r.get("ci_rel_width") is not None for r in rows) else None,
            "ci_covers_others": f"{hits}/{have}",
            "noisy_runs": sum(bool(r.get("noisy")) for r in rows),
            "iters_median": statistics.median(r["iters"] for r in rows),
            "wall_s_median": statistics.median(r["wall_s"] for r in rows),
            "others_cores_median": statistics.median(r.get("others_cores") or 0 for r in rows)}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", default=DEFAULT_POINTS, help="net:engine:mode:threads,...")
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--ci-width", type=float, default=0.1)
    p.add_argument("--max-time", type=float, default=5.0)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    report = []
    for point in parse_points(args.points):
        runs = {"fixed": [], "adaptive": []}
        for _ in range(args.runs):
            for method in runs:                 # alternated: the load changes for both alike
                runs[method].append(one_run(point, method, args))
        for method, rows in runs.items():
            d = {"point": ":".join(map(str, point)), "method": method, **describe(rows)}
            report.append(d)
            print(json.dumps(d))
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
