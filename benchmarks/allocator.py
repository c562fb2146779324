"""What keeping freed memory (zoo/memory.py keep_freed_memory, on in every runner child) does
to `zoo bench`: each point timed with glibc's defaults (ZOO_MALLOC=glibc) and with freed
memory kept, alternating, `--rounds` times, each run in its own fresh child as zoo bench
always does. Prints the median time of each setting, their ratio (glibc / kept: above 1 means
keeping is faster) and each setting's peak RSS.

    .venv/bin/python benchmarks/allocator.py [--nets fcn-r,alexnet-r,resnet-56,mobilenet-v2]
        [--engines torch,tensorflow,mxnet,onnx] [--threads 2] [--mode both] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = {"glibc": "glibc", "kept": ""}     # ZOO_MALLOC in the children's environment


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="fcn-r,alexnet-r,resnet-56,mobilenet-v2")
    ap.add_argument("--engines", default="torch,tensorflow,mxnet,onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", default="both", choices=["train", "infer", "both"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-time", type=float, default=10.0)
    args = ap.parse_args(argv)
    import zoo
    from zoo.memory import KEEP_FREED_VAR

    times: dict[tuple, dict[str, list[float]]] = {}
    rss: dict[tuple, dict[str, float]] = {}
    notes: dict[tuple, str] = {}
    for _ in range(args.rounds):
        for setting, value in SETTINGS.items():
            os.environ[KEEP_FREED_VAR] = value
            rows = zoo.bench(args.nets.split(","), args.engines.split(","), threads=[args.threads],
                             mode=args.mode, warmup=2, iters=5, min_time=1.0,
                             max_time=args.max_time, peak=False)
            for r in rows:
                key = (r["network"], r["engine"], r["mode"])
                if r["status"] != "ok":
                    notes[key] = f"{r['status']}: {r.get('reason', '')}"
                    continue
                times.setdefault(key, {}).setdefault(setting, []).append(r["median_s"])
                rss.setdefault(key, {})[setting] = max(rss.get(key, {}).get(setting, 0.0),
                                                       r.get("peak_rss_mb") or 0.0)
    os.environ.pop(KEEP_FREED_VAR, None)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{args.threads} thread(s), {args.rounds} round(s) of each setting, alternating; "
          f"load at the end: {load}")
    print(f"{'network':14}{'engine':12}{'mode':7}{'glibc ms':>10}{'kept ms':>10}{'ratio':>7}"
          f"{'glibc MB':>10}{'kept MB':>10}")
    for key in sorted(set(times) | set(notes)):
        t = times.get(key, {})
        if len(t) < 2:
            print(f"{key[0]:14}{key[1]:12}{key[2]:7}  {notes.get(key, 'not timed in both settings')}")
            continue
        g, k = statistics.median(t["glibc"]), statistics.median(t["kept"])
        print(f"{key[0]:14}{key[1]:12}{key[2]:7}{g * 1e3:10.2f}{k * 1e3:10.2f}{g / k:7.2f}"
              f"{rss[key]['glibc']:10.0f}{rss[key]['kept']:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
