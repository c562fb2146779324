"""Why zoo's PyTorch models are channels-last: one training step and one inference pass of
the generated model in NCHW memory order against channels-last (the generated default for
networks with 2-D convolutions, converters/torch.py), alternating in one process, with a
per-operator profile of one training step in each layout.

    .venv/bin/python benchmarks/channels_last.py [--nets alexnet-r:256,resnet-56:32,mobilenet-v2:4]
                                                 [--threads 1] [--pairs 5] [--profile alexnet-r]

Each net is NAME:BATCH. The ratio is NCHW time / channels-last time, the median over pairs of
alternating iterations (so a change of the machine's load hits both alike); above 1 means
channels-last is faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_model(torch, name: str, batch: int):
    import importlib.util

    import zoo
    from zoo import data
    art = zoo.build(name, "torch").path
    spec = importlib.util.spec_from_file_location(f"cl_{name.replace('-', '_')}", art / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    meta = json.loads((art / "manifest.json").read_text())["meta"]
    net = zoo.load(name).with_batch(batch)
    feed = {meta["input_names"][k]: torch.from_numpy(v) for k, v in data.make(net, 0).items()}
    data_args = {k: v for k, v in feed.items() if k in meta["data_inputs"]}
    return mod, feed, data_args


def layouts(torch, mod, feed, data_args):
    """{"nchw" | "channels-last": (train step, inference pass)} on models of the same weights."""
    out = {}
    for layout in ("nchw", "channels-last"):
        mod.Model.channels_last = layout == "channels-last"
        model = mod.load()
        model.channels_last = layout == "channels-last"    # forward reads it: keep it per model
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(model=model, opt=opt):
            model.train()
            opt.zero_grad(set_to_none=True)
            model.training_loss(**feed).backward()
            opt.step()

        def infer(model=model):
            model.eval()
            with torch.no_grad():
                model(**data_args)
        out[layout] = (step, infer)
    mod.Model.channels_last = True
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="alexnet-r:256,resnet-56:32,mobilenet-v2:4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--profile", default="alexnet-r", help="a net of --nets to profile per operator ('' for none)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); ratio = NCHW / channels-last "
          f"(median of {args.pairs} alternating pairs; > 1: channels-last faster)")
    print(f"{'network':14} {'batch':>5} {'mode':6} {'NCHW ms':>9} {'CL ms':>9} {'ratio':>6}")
    for item in args.nets.split(","):
        name, batch = item.split(":")
        mod, feed, data_args = load_model(torch, name, int(batch))
        fns = layouts(torch, mod, feed, data_args)
        for mode, i in (("train", 0), ("infer", 1)):
            for layout in fns:
                fns[layout][i]()                     # warm-up
            pairs = [(timed(fns["nchw"][i]), timed(fns["channels-last"][i])) for _ in range(args.pairs)]
            a = statistics.median(p[0] for p in pairs)
            b = statistics.median(p[1] for p in pairs)
            r = statistics.median(p[0] / p[1] for p in pairs)
            print(f"{name:14} {batch:>5} {mode:6} {a * 1e3:9.1f} {b * 1e3:9.1f} {r:6.2f}", flush=True)
        if name == args.profile:
            for layout in fns:
                with torch.profiler.profile() as prof:
                    fns[layout][0]()
                rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:6]
                total = sum(e.self_cpu_time_total for e in prof.key_averages())
                print(f"  {name} train step, {layout}: {total / 1e3:.0f} ms of operators; the largest:")
                for e in rows:
                    print(f"    {e.key:42} {e.self_cpu_time_total / 1e3:8.1f} ms  {100 * e.self_cpu_time_total / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
