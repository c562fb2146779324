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

With --then REV the old path is zoo itself as it was at commit REV (`--then issue`: THEN_ISSUE,
zoo when the verify issue was written, before the pool, the scale-aware judge and the exact
mode): REV's files (git archive) are installed into a temporary folder and its `verify` runs
in a child of this process, with a build cache of its own, on REV's own zoo (default) or on
--names. What the user sees: the whole verify then and now, on the same networks (REV's
specs); the cheaper elementwise judge REV had is on its side. Without --then the two paths
share this zoo's judge, oracle and reference, and only how the children run differs.

Every build the two runs need (each engine's, and the float64 oracle's) is made, or found in
the cache, before either is timed, so neither pays for a build the other reuses (on a
machine where others rebuild too, give it a cache of its own: ZOO_CACHE=DIR), and the
cache's bound is raised for the run to CACHE_LIMIT unless ZOO_CACHE_LIMIT says otherwise (the
whole zoo's builds do not fit the default bound: each path would evict and rebuild them; the
run stops if what was built does not fit; --prebuild-only makes them and stops, so that the
timed run can follow alone, with ZOO_THEN_CACHE=DIR keeping the old zoo's too). Printed:
each path's wall time and peak memory, the ratio, every case whose status differs, and the
old path's failures and errors with their reasons. Exit status: 0 when the statuses are identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil

from zoo import builds, cache, cases, engines, isolation, verifier
from zoo import net as N
from zoo.errors import ZooError


CACHE_LIMIT = "64G"
REPO = Path(__file__).resolve().parents[1]
# the last commit before work on the verify issue (whole-zoo verify --mode both: 144 cases,
# "about 20 minutes on this 2-core machine", as the issue says)
THEN_ISSUE = "6427bca"
THEN_CACHE_VAR = "ZOO_THEN_CACHE"   # the old zoo's build cache, kept between runs when set

# Run in a child under the old zoo (its own `zoo` package first on sys.path): every build
# the verify will make is made first, then verify alone is timed.
THEN_CHILD = r"""
import json, sys, time
from zoo import builds, engines, verifier
from zoo import net as N
a = json.loads(sys.argv[1])
names = a["names"] or N.S.zoo_names()
engs = [engines.get(e) for e in a["engines"]] if a["engines"] else list(engines.ENGINES.values())
for name in names:
    net = N.load(name)
    wanted = [(eng.name, None) for eng in engs]
    if a["mode"] != "forward" and net.loss_layers:      # the float64 oracle, whatever the engines
        wanted.append((verifier.ORACLE_ENGINE, {"dtype": "float64"}))
    for engine, options in wanted:
        try:
            builds.build(net, engine, options=options)
        except Exception as e:          # the verify reports it as the case's error
            print(f"  build {name}/{engine}: {e}", file=sys.stderr)
if a["out"] is None:                    # --prebuild-only
    sys.exit(0)
t0 = time.perf_counter()
rs = verifier.verify(names, a["engines"], mode=a["mode"], batch=a["batch"])
seconds = time.perf_counter() - t0
with open(a["out"], "w") as f:
    json.dump({"seconds": seconds,
               "cases": [{"network": r.network, "engine": r.engine, "mode": r.mode, "status": r.status,
                          "reason": r.reason, "seconds": r.seconds} for r in rs]}, f)
"""


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


class MemoryPeak:
    """While active: the most memory in use on the machine (total - available: the verify's
    children and this process, on an otherwise idle machine) and this process's largest
    resident size, sampled every 0.2 s. A pool trades memory for time: both are printed."""

    def __init__(self):
        self.machine = self.parent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            vm = psutil.virtual_memory()
            self.machine = max(self.machine, vm.total - vm.available)
            self.parent = max(self.parent, me.memory_info().rss)

    def __enter__(self) -> "MemoryPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def __str__(self) -> str:
        return (f"peak memory in use {self.machine / 2**30:.1f} GiB of "
                f"{psutil.virtual_memory().total / 2**30:.1f} (this process {self.parent / 2**30:.1f})")


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


def install_then(rev: str, where: Path) -> Path:
    """REV's files, installed as a package folder (not this venv's editable zoo)."""
    src, pkg = where / "src", where / "pkg"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(pkg), str(src)], check=True)
    return pkg


def timed_verify_then(pkg: Path, where: Path, names, engine_names, mode, batch,
                      build_only: bool = False) -> tuple[float, list] | None:
    """The old zoo's verify in a child (its builds made first, outside the timing): seconds,
    and its cases (with the attributes `differences` reads). Its build cache: THEN_CACHE_VAR's
    folder, else one in `where` (removed with it). build_only: the builds only."""
    out = where / "then.json"
    args = {"names": names, "engines": engine_names, "mode": mode, "batch": batch,
            "out": None if build_only else str(out)}
    env = {**os.environ, "PYTHONPATH": str(pkg),
           "ZOO_CACHE": os.environ.get(THEN_CACHE_VAR) or str(where / "cache")}
    env.pop(cases.ONE_SHOT_VAR, None)
    # cwd: a folder without a zoo/ of its own, so that `import zoo` finds REV's
    subprocess.run([sys.executable, "-c", THEN_CHILD, json.dumps(args)], cwd=where, env=env,
                   check=True)
    if build_only:
        return None
    got = json.loads(out.read_text())
    return got["seconds"], [SimpleNamespace(**c) for c in got["cases"]]


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
    ap.add_argument("--then", metavar="REV", help="the old path is zoo at this commit ('issue': "
                    f"{THEN_ISSUE}), run in a child")
    ap.add_argument("--prebuild-only", action="store_true",
                    help="make (or find) every build both paths need, then stop: the timed run "
                    f"can follow on an idle machine (with --then, set {THEN_CACHE_VAR} to keep "
                    "the old zoo's builds)")
    args = ap.parse_args(argv)
    if args.then:
        with tempfile.TemporaryDirectory(prefix="zoo-then-") as where:
            return _main(args, Path(where))
    return _main(args, None)


def _main(args, where: Path | None) -> int:
    if "jobs" not in inspect.signature(verifier.verify).parameters:
        print("zoo.verifier.verify has no `jobs` parameter yet: it must pass jobs to cases.walk",
              file=sys.stderr)
        return 2
    then = None
    if where is not None:
        rev = THEN_ISSUE if args.then == "issue" else args.then
        then = SimpleNamespace(rev=rev, pkg=install_then(rev, where))
        then_zoo = sorted(p.stem for p in (then.pkg / "zoo" / "specs").glob("*.prototxt"))
        print(f"old path: zoo at {rev}, installed in {then.pkg}; its zoo: {', '.join(then_zoo)}",
              flush=True)
    names = args.names.split(",") if args.names else then_zoo if then else N.S.zoo_names()
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
    if args.prebuild_only:
        if then:
            timed_verify_then(then.pkg, where, names, engine_names, args.mode, args.batch,
                              build_only=True)
        print("builds made; nothing timed (--prebuild-only)")
        return 0

    with MemoryPeak() as old_mem:
        if then:    # its builds are made in the child, before its clock starts
            old_s, old = timed_verify_then(then.pkg, where, names, engine_names, args.mode,
                                              args.batch)
            what = f"zoo at {then.rev}"
        else:
            old_s, old = timed_verify(names, engine_names, args.mode, args.batch, 1, one_shot=True)
            what = "a fresh child per job, one case at a time"
    print(f"old path ({what}): {old_s:8.1f} s; {old_mem}", flush=True)
    with MemoryPeak() as new_mem:
        new_s, new = timed_verify(names, engine_names, args.mode, args.batch, args.jobs, one_shot=False)
    print(f"new path (worker pool, {jobs} jobs at once):           {new_s:8.1f} s; {new_mem}")
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
            json.dump({"old_s": old_s, "new_s": new_s, "jobs": jobs, "then": then and then.rev,
                       "peak_bytes": {"old": [old_mem.machine, old_mem.parent],
                                      "new": [new_mem.machine, new_mem.parent]},
                       "old": rows(old),
                       "new": rows(new)}, f, indent=1)
    for r in old:                   # what the statuses are, when they are not passes
        if r.status in ("fail", "error"):
            print(f"  old path {r.status}: {r.network}/{r.engine}/{r.mode}: {r.reason[:160]}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
