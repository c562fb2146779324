"""Subtle conversion breaks that `zoo verify --dtype float64` catches and the float32 check
cannot see (issue 19), as engines: PyTorch with one thing wrong.

Each break is an engine declared the way any engine is (zoo/engines.py's README note: a
converter, a runner, a declaration, registered through ZOO_EXTRA_ENGINES=exact_breaks with
this folder on PYTHONPATH), so verify runs it in its own child process against the real,
unbroken float64 reference and oracle. The converter is zoo's torch converter; the runner is
zoo's torch runner with the break applied to the model it loads:

  torch-bn-eps         every BatchNorm's eps 1e-3 instead of the spec's (1e-5 in the zoo)
  torch-bn-eps-1pc     every BatchNorm's eps 1% too large
  torch-lr             the learning rate 1e-3 relative too large
  torch-lr-1e-4        the learning rate 1e-4 relative too large
  torch-reordered      no break: the batch reversed and the model in NCHW memory order (zoo's
                       is channels-last), so sums run in another order (a correct float64 engine that rounds differently:
                       what the float64 tolerances must allow)
  torch-float32-only   ignores the dtype option: computes in float32 whatever the build says
                       (a float64 verify must say so, not pass it at a loose tolerance)

Run as a script, it is the ResNet-50 demonstration (slow: minutes per case on 2 cores):

    .venv/bin/python benchmarks/exact_breaks.py [--network resnet-50] [--breaks torch-bn-eps,torch-lr]

For each break it verifies forward and train in float32 and in float64 and prints one line
per case: status, the worst error over the allowed error (needed_factor), and the reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from zoo import engines
from zoo.runners.torch import Runner as TorchRunner

HERE = Path(__file__).resolve().parent

BREAKS = {   # engine name -> what is wrong
    "torch-bn-eps": "BatchNorm eps 1e-3 instead of the spec's",
    "torch-bn-eps-1pc": "BatchNorm eps 1% too large",
    "torch-lr": "learning rate 1e-3 relative too large",
    "torch-lr-1e-4": "learning rate 1e-4 relative too large",
    "torch-reordered": "no break: batch reversed, NCHW memory order (another summation order)",
    "torch-float32-only": "computes in float32 whatever the build's dtype",
}
LR_ERROR = {"torch-lr": 1e-3, "torch-lr-1e-4": 1e-4}


class Runner(TorchRunner):
    """zoo's torch runner with the break of the build's engine (the manifest names it)."""

    @property
    def engine(self) -> str:
        return self.manifest["engine"]

    def load(self) -> None:
        super().load()
        torch = self.torch
        for m in self.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                if self.engine == "torch-bn-eps":
                    m.eps = 1e-3
                elif self.engine == "torch-bn-eps-1pc":
                    m.eps = m.eps * 1.01
        if self.engine == "torch-reordered" and getattr(self.model, "channels_last", False):
            self.model.channels_last = False                  # images stay NCHW in forward
            self.model.to(memory_format=torch.contiguous_format)
        if self.engine == "torch-float32-only":
            self.dtype = torch.float32
            self.model.to(dtype=torch.float32)

    def _optimizer(self):
        opt = super()._optimizer()
        for group in opt.param_groups:
            group["lr"] *= 1.0 + LR_ERROR.get(self.engine, 0.0)
        return opt

    def _tensors(self, inputs: dict, names: list[str]) -> dict:
        if self.engine != "torch-reordered":
            return super()._tensors(inputs, names)
        # reverse the batch: the loss is a mean over it, so only the order of sums changes
        flipped = {b: a[::-1].copy() if b in names else a for b, a in inputs.items()}
        return super()._tensors(flipped, names)

    def forward(self, inputs, expose=None):
        if self.engine != "torch-reordered":
            return super().forward(inputs, expose)
        got = super().forward(inputs, expose)          # batch reversed: put it back
        return {b: a[::-1].copy() for b, a in got.items()}


def _declare(name: str) -> engines.Engine:
    torch = engines.get("torch")
    dtypes = ("float32",) if name == "torch-float32-only" else torch.dtypes
    return engines.register(engines.Engine(
        name, torch.packages, torch.imports, torch.extra, train=True,
        converter=torch.converter, runner="exact_breaks", gaps=torch.gaps, dtypes=dtypes,
        note=f"zoo's torch with a deliberate break: {BREAKS[name]} (benchmarks/exact_breaks.py)"))


ENGINES = {name: _declare(name) for name in BREAKS}


def child_environment() -> dict[str, str]:
    """What verify's children need to find these engines."""
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return {"ZOO_EXTRA_ENGINES": "exact_breaks", "PYTHONPATH": path}


def main(argv: list[str]) -> int:
    import argparse
    import time

    from zoo import verifier
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", default="resnet-50")
    ap.add_argument("--breaks", default="torch-bn-eps,torch-lr")
    ap.add_argument("--modes", default="forward,train")
    args = ap.parse_args(argv)
    os.environ.update(child_environment())
    for name in args.breaks.split(","):
        for dtype in ("float32", "float64"):
            for mode in args.modes.split(","):
                t0 = time.perf_counter()
                [r] = verifier.verify([args.network], [name], mode=mode, dtype=dtype)
                print(f"{args.network} {name} ({BREAKS[name]}) {dtype} {mode}: {r.status}, "
                      f"needed_factor {r.needed_factor}, {time.perf_counter() - t0:.0f} s; "
                      f"{r.tolerance_source}; {r.reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main(sys.argv[1:]))
