"""What zoo's allocator settings in runner children (zoo/memory.py: freed memory kept, in
transparent huge pages) do to `zoo bench`: each point timed with glibc's defaults
(ZOO_MALLOC=glibc), with freed memory kept in 4 KiB pages (ZOO_MALLOC=kept) and with zoo's
default (kept, in huge pages), alternating, `--rounds` times, each run in its own fresh child
as zoo bench always does. Prints each setting's median time, the ratios glibc / default and
kept / default (above 1: the default is faster), each setting's peak RSS and how much of the
default's was in huge pages.

    .venv/bin/python benchmarks/allocator.py [--nets fcn-r,alexnet-r,resnet-56,mobilenet-v2]
        [--engines torch,tensorflow,mxnet,onnx] [--threads 2] [--mode both] [--rounds 2]
        [--optimize]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = {"glibc": "glibc", "kept": "kept", "default": ""}   # ZOO_MALLOC in the children


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="fcn-r,alexnet-r,resnet-56,mobilenet-v2")
    ap.add_argument("--engines", default="torch,tensorflow,mxnet,onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", default="both", choices=["train", "infer", "both"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-time", type=float, default=10.0)
    ap.add_argument("--optimize", action="store_true", help="time each engine's optimised configuration")
    args = ap.parse_args(argv)
    import zoo
    from zoo.memory import KEEP_FREED_VAR, thp_mode

    times: dict[tuple, dict[str, list[float]]] = {}
    rss: dict[tuple, dict[str, float]] = {}
    huge: dict[tuple, float] = {}
    notes: dict[tuple, str] = {}
    for _ in range(args.rounds):
        for setting, value in SETTINGS.items():
            os.environ[KEEP_FREED_VAR] = value
            rows = zoo.bench(args.nets.split(","), args.engines.split(","), threads=[args.threads],
                             mode=args.mode, warmup=2, iters=5, min_time=1.0,
                             max_time=args.max_time, peak=False, optimize=args.optimize)
            for r in rows:
                key = (r["network"], r["engine"], r["mode"])
                if r["status"] != "ok":
                    notes[key] = f"{r['status']}: {r.get('reason', '')}"
                    continue
                times.setdefault(key, {}).setdefault(setting, []).append(r["median_s"])
                rss.setdefault(key, {})[setting] = max(rss.get(key, {}).get(setting, 0.0),
                                                       r.get("peak_rss_mb") or 0.0)
                if setting == "default":
                    huge[key] = max(huge.get(key, 0.0), r.get("huge_pages_mb") or 0.0)
    os.environ.pop(KEEP_FREED_VAR, None)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{args.threads} thread(s), {args.rounds} round(s) of each setting, alternating"
          f"{', optimised configurations' if args.optimize else ''}; the kernel's transparent "
          f"huge pages: {thp_mode()}; load at the end: {load}")
    print(f"{'network':14}{'engine':12}{'mode':7}{'glibc ms':>10}{'kept ms':>10}{'default':>10}"
          f"{'g/d':>7}{'k/d':>7}   peak RSS MB glibc / kept / default (of it huge)")
    for key in sorted(set(times) | set(notes)):
        t = times.get(key, {})
        if len(t) < len(SETTINGS):
            print(f"{key[0]:14}{key[1]:12}{key[2]:7}  {notes.get(key, 'not timed in every setting')}")
            continue
        g, k, d = (statistics.median(t[s]) for s in SETTINGS)
        m = rss[key]
        print(f"{key[0]:14}{key[1]:12}{key[2]:7}{g * 1e3:10.2f}{k * 1e3:10.2f}{d * 1e3:10.2f}"
              f"{g / d:7.2f}{k / d:7.2f}   {m['glibc']:.0f} / {m['kept']:.0f} / {m['default']:.0f}"
              f" ({huge.get(key, 0.0):.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
