"""How spec validation scales with the number of layers, in any order.

    .venv/bin/python benchmarks/validate_scale.py [--layers 100000] [--limit-s 10] [--limit-mb 500]

Writes a chain of N layers (an Input, then ReLUs, each reading the previous) as a prototxt
in three orders: as data flows, reversed, and shuffled (seeded). Each is validated by
`zoo validate`'s own code (zoo.spec.read + zoo.net.Net) in a fresh child process, which
reports its wall time (parse and validation separately) and its peak resident memory
(ru_maxrss: the whole process, protobuf's C++ parser included, unlike tracemalloc) and its
CPU time (wall time on a shared machine counts other people's work). Exit status 1 if any
order's wall time or peak memory exceeds the limits (the reliability issue's: 10 s, 500 MB).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
from zoo import net as N, spec as S
from zoo.memory import peak_rss_mb
t0, c0 = time.perf_counter(), time.process_time()
proto, source = S.read(sys.argv[1])
t1, c1 = time.perf_counter(), time.process_time()
net = N.Net(proto, source)
t2, c2 = time.perf_counter(), time.process_time()
assert len(net.layers) == int(sys.argv[2])
print(json.dumps({"parse_s": t1 - t0, "validate_s": t2 - t1, "cpu_s": c2 - c0,
                  "peak_mb": peak_rss_mb()}))
"""


def chain(n: int, order: str) -> str:
    layers = ['layer { name: "l0" type: "Input" input_param { shape: [2, 8] } }']
    layers += [f'layer {{ name: "l{i}" type: "ReLU" bottom: "l{i - 1}" }}' for i in range(1, n)]
    if order == "reversed":
        layers.reverse()
    elif order == "shuffled":
        random.Random(0).shuffle(layers)
    return 'name: "chain"\n' + "\n".join(layers) + "\n"


def measure(text: str, n: int, folder: Path, order: str) -> dict:
    path = folder / f"chain-{order}.prototxt"
    path.write_text(text)
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode:
        return {"order": order, "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return {"order": order, **json.loads(r.stdout)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=100_000)
    ap.add_argument("--limit-s", type=float, default=10.0)
    ap.add_argument("--limit-mb", type=float, default=500.0)
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for order in ("in order", "reversed", "shuffled"):
            r = measure(chain(args.layers, order), args.layers, Path(tmp), order.replace(" ", "-"))
            if "error" in r:
                print(f"{args.layers} layers, {order:9}: error: {r['error']}")
                ok = False
                continue
            total = r["parse_s"] + r["validate_s"]
            good = total < args.limit_s and r["peak_mb"] < args.limit_mb
            ok &= good
            print(f"{args.layers} layers, {order:9}: parse {r['parse_s']:.2f} s + validate "
                  f"{r['validate_s']:.2f} s = {total:.2f} s wall ({r['cpu_s']:.2f} s CPU), peak "
                  f"{r['peak_mb']:.0f} MB"
                  f"{'' if good else '  OVER THE LIMIT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
