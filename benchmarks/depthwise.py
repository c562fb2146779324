"""Is depthwise convolution the slow path? Two tiny specs whose convolution does the same
number of FLOPs: a 3x3 depthwise convolution over C channels (group = C) and a dense 3x3
convolution over sqrt(C) channels in and out, both at the same spatial size, so
    depthwise MACs = C * 9 * H * W = sqrt(C) * sqrt(C) * 9 * H * W = dense MACs.
Each is benchmarked with `zoo bench --layers` (per-layer forward/backward from every
engine's profiler, runners/*.py `layer_times`) and the script prints the ratio of the
convolution layer's time, depthwise over dense; the target is a ratio within 3x on torch and
tensorflow. The measured layer is not the network's first (a per-channel 1x1 scaling
comes before it) so that, as inside a real network, its backward computes the gradient of
its input as well as its weights (PyTorch's module hooks see no backward of a first layer,
whose input needs no gradient). A ratio above 1 is expected: at equal FLOPs the depthwise layer moves sqrt(C)
times more activations per FLOP, and its kernels cannot block like a GEMM.

    .venv/bin/python benchmarks/depthwise.py [--engines torch,tensorflow,mxnet,onnx]
        [--channels 64] [--size 56] [--batch 16] [--threads 1] [--mode both]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPEC = """name: "{name}"
description: "benchmarks/depthwise.py: one 3x3 convolution, {what}"
train {{ lr: 0.01 batch_cpu: {batch} batch_gpu: {batch} }}
layer {{ name: "data" type: "Input" input_param {{ shape: [{batch}, {cin}, {size}, {size}] }} }}
layer {{ name: "label" type: "Input" input_param {{ shape: [{batch}] dtype: INT64 }} }}
layer {{ name: "pre" type: "Convolution" bottom: "data"
        convolution_param {{ num_output: {cin} kernel_size: 1 group: {cin} bias_term: false }} }}
layer {{ name: "conv" type: "Convolution" bottom: "pre"
        convolution_param {{ num_output: {cout} kernel_size: 3 pad: 1 group: {group} bias_term: false }} }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" pooling_param {{ pool: AVE global_pooling: true }} }}
layer {{ name: "flat" type: "Flatten" bottom: "pool" }}
layer {{ name: "fc" type: "InnerProduct" bottom: "flat" inner_product_param {{ num_output: 10 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }}
"""


def write_specs(folder: Path, channels: int, size: int, batch: int) -> dict[str, Path]:
    dense = math.isqrt(channels)
    if dense * dense != channels:
        raise SystemExit(f"--channels must be a square (64, 144, 256, ...), not {channels}")
    specs = {
        "depthwise": SPEC.format(name="dw-conv", what=f"depthwise over {channels} channels",
                                 batch=batch, cin=channels, cout=channels, group=channels, size=size),
        "dense": SPEC.format(name="dense-conv", what=f"dense {dense} -> {dense} channels",
                             batch=batch, cin=dense, cout=dense, group=1, size=size),
    }
    paths = {}
    for kind, text in specs.items():
        paths[kind] = folder / f"{kind}.prototxt"
        paths[kind].write_text(text)
    return paths


def conv_times(row: dict) -> tuple[float, float] | None:
    """(forward s, backward s) of the layer "conv" in a bench row's per-layer profile."""
    for layer in row.get("layers") or []:
        if layer["layer"] == "conv":
            return layer["forward_s"], layer["backward_s"]
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="torch,tensorflow,mxnet,onnx")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", default="both", choices=["train", "infer", "both"])
    args = ap.parse_args(argv)
    import zoo

    with tempfile.TemporaryDirectory(prefix="zoo-depthwise-") as tmp:
        paths = write_specs(Path(tmp), args.channels, args.size, args.batch)
        rows = zoo.bench([str(paths["depthwise"]), str(paths["dense"])], args.engines.split(","),
                         threads=[args.threads], batch=args.batch, mode=args.mode, warmup=1,
                         iters=5, min_time=0.2, max_time=5, layers=True, peak=False)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"depthwise 3x3 over {args.channels} channels vs dense 3x3 "
          f"{math.isqrt(args.channels)}->{math.isqrt(args.channels)}, {args.size}x{args.size}, "
          f"batch {args.batch}, {args.threads} thread(s); equal FLOPs "
          f"({_conv_flops(args.channels, args.size, args.batch):,} per batch forward)")
    print(f"load: {load}")
    by = {(r["network"], r["engine"], r["mode"]): r for r in rows}
    print(f"{'engine':<12}{'mode':<7}{'dw fwd ms':>11}{'dense fwd ms':>14}{'fwd ratio':>11}"
          f"{'dw bwd ms':>11}{'dense bwd ms':>14}{'bwd ratio':>11}")
    worst = {}
    for (net, engine, mode), r in by.items():
        if net != "dw-conv":
            continue
        d = by.get(("dense-conv", engine, mode))
        if r["status"] != "ok" or d is None or d["status"] != "ok":
            why = r["reason"] if r["status"] != "ok" else (d or {}).get("reason", "no dense row")
            print(f"{engine:<12}{mode:<7}  {r['status']}: {why}")
            continue
        a, b = conv_times(r), conv_times(d)
        if a is None or b is None:
            print(f"{engine:<12}{mode:<7}  no per-layer time for 'conv': "
                  f"{r.get('layers_reason') or d.get('layers_reason')}")
            continue
        fr = a[0] / b[0] if b[0] else float("inf")
        br = a[1] / b[1] if mode == "train" and b[1] else None
        worst[engine] = max(worst.get(engine, 0.0), fr, br or 0.0)
        print(f"{engine:<12}{mode:<7}{a[0] * 1e3:>11.3f}{b[0] * 1e3:>14.3f}{fr:>11.2f}"
              + (f"{a[1] * 1e3:>11.3f}{b[1] * 1e3:>14.3f}{br:>11.2f}" if br is not None else ""))
    for engine, w in worst.items():
        print(f"{engine}: depthwise is {w:.2f}x the dense convolution at its worst "
              f"({'within' if w <= 3 else 'NOT within'} 3x)")
    return 0


def _conv_flops(channels: int, size: int, batch: int) -> int:
    return 2 * channels * 9 * size * size * batch


if __name__ == "__main__":
    sys.exit(main())
