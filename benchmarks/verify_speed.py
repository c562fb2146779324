"""What the worker pool saves in `zoo verify`: the same verify (default: the whole zoo, every
engine, --mode both) run twice in one process, the old path then the new one, with the
wall time of each, their ratio and a case-by-case check that the statuses are identical.

    .venv/bin/python benchmarks/verify_speed.py [--names linreg,twolayer] [--engines a,b]
                                                [--mode both] [--jobs N] [--batch N]
                                                [--json FILE]

  old path  a fresh child per job, one case at a time: jobs=1 with ZOO_ONE_SHOT=1, which
            makes zoo/cases.py's walk ignore the pool (what verify did before the pool)
  new path  the pool: one long-lived child per engine and thread setting, engines side by
            side, `--jobs` at once (default: one per core, zoo.isolation.plan_parallelism)

Every build the two runs need (each engine's, and the float64 oracle's) is made, or found in
the cache, before either is timed, so neither pays for a build the other reuses (on a
machine where others rebuild too, give it a cache of its own: ZOO_CACHE=DIR), and the
cache's bound is raised for the run to CACHE_LIMIT unless ZOO_CACHE_LIMIT says otherwise (the
whole zoo's builds do not fit the default bound: each path would evict and rebuild them; the
run stops if what was built does not fit). Printed: each
path's wall time, the ratio, every case whose status differs, and the old path's failures
and errors with their reasons. Exit status: 0 when the statuses are identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

from zoo import builds, cache, cases, engines, isolation, verifier
from zoo import net as N
from zoo.errors import ZooError


CACHE_LIMIT = "64G"


def prebuild(names: list[str], engine_names: list[str] | None, modes: list[str]) -> None:
    """Make (or find cached) every build the verify will use, outside the timing."""
    engs = [engines.get(e) for e in engine_names] if engine_names else list(engines.ENGINES.values())
    for name in names:
        net = N.load(name)
        for eng in engs:
            if any(cases.skip_reason(net, eng, m, "forward") is None for m in modes):
                try:
                    builds.build(net, eng.name)
                except ZooError as e:      # the verify reports it as the case's error
                    print(f"  build {name}/{eng.name}: {e}", file=sys.stderr)
        if "train" in modes and net.loss_layers and engines.get(verifier.ORACLE_ENGINE).missing() is None:
            builds.build(net, verifier.ORACLE_ENGINE, options={"dtype": "float64"})


def timed_verify(names, engine_names, mode, batch, jobs, one_shot: bool) -> tuple[float, list]:
    if one_shot:
        os.environ[cases.ONE_SHOT_VAR] = "1"
    else:
        os.environ.pop(cases.ONE_SHOT_VAR, None)
    try:
        t0 = time.perf_counter()
        results = verifier.verify(names, engine_names, mode=mode, batch=batch, jobs=jobs)
        return time.perf_counter() - t0, results
    finally:
        os.environ.pop(cases.ONE_SHOT_VAR, None)


def differences(old: list, new: list) -> list[str]:
    """Every case whose status differs (or that only one run has), one line each."""
    by_case = {(r.network, r.engine, r.mode): r for r in new}
    lines = []
    for r in old:
        key = (r.network, r.engine, r.mode)
        other = by_case.pop(key, None)
        if other is None:
            lines.append(f"{'/'.join(key)}: old {r.status}, missing from the new path")
        elif other.status != r.status:
            lines.append(f"{'/'.join(key)}: old {r.status} ({r.reason}), new {other.status} "
                         f"({other.reason})")
    lines += [f"{'/'.join(k)}: new {r.status}, missing from the old path" for k, r in by_case.items()]
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", help="comma list of networks (default: the whole zoo)")
    ap.add_argument("--engines", help="comma list of engines (default: every engine)")
    ap.add_argument("--mode", default="both", choices=verifier.MODES)
    ap.add_argument("--jobs", type=int, default=None, help="the new path's jobs (default: one per core)")
    ap.add_argument("--batch", type=int, default=verifier.DEFAULT_BATCH)
    ap.add_argument("--json", help="also write every case of both paths (network, engine, mode, "
                    "status, reason, seconds) to this file")
    args = ap.parse_args(argv)
    if "jobs" not in inspect.signature(verifier.verify).parameters:
        print("zoo.verifier.verify has no `jobs` parameter yet: it must pass jobs to cases.walk",
              file=sys.stderr)
        return 2
    names = args.names.split(",") if args.names else N.S.zoo_names()
    engine_names = args.engines.split(",") if args.engines else None
    modes = ["forward", "train"] if args.mode == "both" else [args.mode]
    jobs, per_child = isolation.plan_parallelism(args.jobs)
    print(f"verify --mode {args.mode} of {len(names)} networks x "
          f"{len(engine_names) if engine_names else len(engines.ENGINES)} engines; new path: "
          f"{jobs} jobs x {per_child} threads on {isolation.usable_cores()} cores", flush=True)
    # Under a cache bound smaller than the builds (the whole zoo's take 13.3 GiB; the default
    # bound was 4G until it was found here) each path would evict and rebuild them as it goes.
    if "ZOO_CACHE_LIMIT" not in os.environ:
        os.environ["ZOO_CACHE_LIMIT"] = CACHE_LIMIT
        print(f"the build cache's bound is {CACHE_LIMIT} for this run (ZOO_CACHE_LIMIT), so "
              "that every build made beforehand stays cached", flush=True)
    prebuild(names, engine_names, modes)
    held = cache.usage()
    print(f"builds made or found: the cache holds {held / 2**30:.1f} GiB "
          f"(bound {cache.limit_bytes() / 2**30:.1f} GiB)", flush=True)
    if held > cache.limit_bytes():
        print("verify_speed: the builds do not fit the cache's bound: both paths would rebuild "
              "(raise ZOO_CACHE_LIMIT)", file=sys.stderr)
        return 2

    old_s, old = timed_verify(names, engine_names, args.mode, args.batch, 1, one_shot=True)
    print(f"old path (a fresh child per job, one case at a time): {old_s:8.1f} s", flush=True)
    new_s, new = timed_verify(names, engine_names, args.mode, args.batch, args.jobs, one_shot=False)
    print(f"new path (worker pool, {jobs} jobs at once):           {new_s:8.1f} s")
    print(f"ratio old / new: {old_s / new_s:.2f}x (new takes {new_s / old_s:.0%} of the old time)")

    diff = differences(old, new)
    counts = {s: sum(r.status == s for r in old) for s in ("pass", "fail", "error", "skipped")}
    print(f"{len(old)} cases ({', '.join(f'{n} {s}' for s, n in counts.items())}): "
          + ("statuses identical" if not diff else f"{len(diff)} statuses differ:"))
    for line in diff:
        print(f"  {line}")
    if args.json:
        rows = lambda rs: [{"network": r.network, "engine": r.engine, "mode": r.mode,
                            "status": r.status, "reason": r.reason, "seconds": r.seconds}
                           for r in rs]
        with open(args.json, "w") as f:
            json.dump({"old_s": old_s, "new_s": new_s, "jobs": jobs, "old": rows(old),
                       "new": rows(new)}, f, indent=1)
    for r in old:                   # what the statuses are, when they are not passes
        if r.status in ("fail", "error"):
            print(f"  old path {r.status}: {r.network}/{r.engine}/{r.mode}: {r.reason[:160]}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
