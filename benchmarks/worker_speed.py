"""What a long-lived engine child saves: N forward jobs on one small build, each in a fresh
one-shot child (`zoo.isolation.run`, as verify runs today) against all N through one
`zoo.isolation.Worker` (one child, the engine imported once), per engine.

    .venv/bin/python benchmarks/worker_speed.py [--net linreg] [--jobs 5] [--engines torch,tensorflow,mxnet,onnx]

Both ways run the same jobs, one after another, with one thread per child, and must give
the same outputs (checked). Printed per engine: total seconds each way, the Worker's first
job (the import and load) and its later jobs' median, and ratio = one-shot total / Worker
total. The build is made (or reused from the cache) before the timing starts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import zoo
from zoo import data, engines, isolation


def one_shot(engine: str, job: dict, inputs: dict, n: int) -> tuple[list[float], list]:
    times, outs = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        res = isolation.run(engine, "forward", job, inputs, threads=1, timeout=600)
        times.append(time.perf_counter() - t0)
        outs.append(_checked(engine, res))
    return times, outs


def served(engine: str, job: dict, inputs: dict, n: int) -> tuple[list[float], list]:
    times, outs = [], []
    with isolation.Worker(engine, threads=1) as worker:
        for _ in range(n):
            t0 = time.perf_counter()
            res = worker.run("forward", job, inputs, timeout=600)
            times.append(time.perf_counter() - t0)
            outs.append(_checked(engine, res))
        if worker.started != 1:
            raise SystemExit(f"{engine}: the Worker restarted its child ({worker.started} starts)")
    return times, outs


def _checked(engine: str, res: isolation.ChildResult) -> dict:
    if not res.ok:
        raise SystemExit(f"{engine}: {res.status}: {res.reason}")
    return res.arrays


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="linreg")
    ap.add_argument("--jobs", type=int, default=5, help="forward jobs per engine and way")
    ap.add_argument("--engines", default="torch,tensorflow,mxnet,onnx")
    args = ap.parse_args(argv)
    net = zoo.load(args.net)
    inputs = data.make(net, include_labels=False)
    print(f"{args.net}: {args.jobs} forward jobs per engine, one thread per child")
    print(f"{'engine':<12}{'one-shot s':>12}{'worker s':>10}{'1st job s':>11}{'later med s':>13}{'ratio':>8}")
    for engine in args.engines.split(","):
        if (why := engines.get(engine).missing()) is not None:
            print(f"{engine:<12}skipped: {why}")
            continue
        job = {"artifact": str(zoo.build(net, engine).path)}
        fresh_t, fresh_out = one_shot(engine, job, inputs, args.jobs)
        worker_t, worker_out = served(engine, job, inputs, args.jobs)
        for a, b in zip(fresh_out, worker_out):
            for blob in a:
                np.testing.assert_array_equal(a[blob], b[blob])
        later = statistics.median(worker_t[1:]) if len(worker_t) > 1 else float("nan")
        print(f"{engine:<12}{sum(fresh_t):>12.2f}{sum(worker_t):>10.2f}{worker_t[0]:>11.2f}"
              f"{later:>13.3f}{sum(fresh_t) / sum(worker_t):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
