"""Long fuzzing runs of zoo's untrusted-input paths (the test suite runs a few hundred cases).

    .venv/bin/python benchmarks/fuzz.py --cases 5000            # cases spread over every kind
    .venv/bin/python benchmarks/fuzz.py --case onnx:1234        # reproduce one case

Prints per kind how many inputs were accepted and refused, every internal error, hang,
crash or memory overrun (with the case to reproduce it), the slowest case and the peak
memory a case added, and exits 1 if any case was not clean. Cases and the sandbox are in
tests/fuzzing.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzzing import KINDS, MEMORY_BOUND, TIME_LIMIT, WALL_FACTOR, Sandbox, summarise  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000, help="total cases, spread over the kinds")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--case", help="KIND:SEED: run one case and print its outcome")
    ap.add_argument("--memory-mb", type=int, default=MEMORY_BOUND >> 20)
    ap.add_argument("--time-limit", type=float, default=TIME_LIMIT,
                    help=f"CPU seconds per case (and {WALL_FACTOR}x as many wall seconds)")
    args = ap.parse_args()
    with Sandbox(args.memory_mb << 20, args.time_limit) as sb:
        if args.case:
            kind, seed = args.case.split(":")
            o = sb.run(kind, int(seed))
            print(f"{o.kind}:{o.seed} {o.status} ({o.seconds:.2f} s) {o.detail}")
            return 0 if o.clean else 1
        kinds = args.kinds.split(",")
        outcomes, t0 = [], time.perf_counter()
        for i in range(args.cases):
            o = sb.run(kinds[i % len(kinds)], args.start + i // len(kinds))
            outcomes.append(o)
            if not o.clean:
                print(f"DEFECT {o.kind}:{o.seed} {o.status}: {o.detail}", flush=True)
            if (i + 1) % 500 == 0:
                print(f"... {i + 1} cases, {time.perf_counter() - t0:.0f} s", flush=True)
        wall = time.perf_counter() - t0
    print(f"\n{args.cases} cases in {wall:.0f} s; memory bound {args.memory_mb} MiB above the "
          f"worker's baseline, time limit {args.time_limit:g} s of CPU ({WALL_FACTOR * args.time_limit:g} s "
          "wall) per case")
    for kind, counts in sorted(summarise(outcomes).items()):
        print(f"  {kind:9s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    slow = max(outcomes, key=lambda o: o.seconds)
    print(f"slowest case: {slow.kind}:{slow.seed} {slow.seconds:.2f} s; peak resident memory a "
          f"case added: {sb.peak_extra_rss / 2**20:.0f} MiB")
    bad = [o for o in outcomes if not o.clean]
    print(f"defects: {len(bad)} (internal {sum(o.status == 'internal' for o in bad)}, hangs "
          f"{sum(o.status == 'hang' for o in bad)}, memory {sum(o.status == 'memory' for o in bad)}, "
          f"crashes {sum(o.status == 'crash' for o in bad)})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
