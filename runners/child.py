"""The child process: `python -m zoo.runners.child DIR` runs DIR/job.json for one engine.

Writes DIR/result.json and DIR/outputs.npz, or DIR/error.json when the work raised. The
parent (zoo/child.py) set the thread and device variables before this process started, so
they are in force before any engine is imported.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def _inject_fault(engine: str) -> None:
    """Test hook: ZOO_FAULT=ENGINE:KIND makes this engine's child crash, hang or raise, so
    the tests can show the parent reports it and goes on. Unset in normal use."""
    spec = os.environ.get("ZOO_FAULT", "")
    if not spec or spec.split(":")[0] != engine:
        return
    kind = spec.split(":", 1)[1]
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "sigsegv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "abort":
        os.abort()
    elif kind == "hang":
        while True:
            time.sleep(1)
    elif kind == "raise":
        raise RuntimeError("fault injected by ZOO_FAULT")


def do_build(job: dict, work: Path):
    from zoo import net as N
    from zoo import weights as W
    from zoo import engines
    conv = importlib.import_module(engines.get(job["engine"]).converter_module)
    net = N.from_text(job["spec_text"], file=job.get("spec_file", "<spec>"))
    weights = W.load(job["weights_file"], net)
    meta = conv.build(net, weights, Path(job["outdir"]), job.get("options") or {})
    return meta, {}


def _runner(job: dict):
    from zoo import engines
    mod = importlib.import_module(engines.get(job["engine"]).runner_module)
    runner = mod.Runner(Path(job["artifact"]), job["device"], job.get("threads"),
                        job.get("options") or {})
    runner.load()
    return runner


def _inputs(work: Path) -> dict[str, np.ndarray]:
    f = work / "inputs.npz"
    if not f.exists():
        return {}
    with np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def do_forward(job: dict, work: Path):
    runner = _runner(job)
    outs = runner.forward(_inputs(work), job.get("expose"))
    return {"blobs": sorted(outs), **runner.info()}, outs


def do_train(job: dict, work: Path):
    runner = _runner(job)
    losses, weights = runner.train_step(_inputs(work), int(job.get("steps", 1)))
    return {"losses": [float(x) for x in losses], **runner.info()}, weights


def do_bench(job: dict, work: Path):
    runner = _runner(job)
    return runner.bench(_inputs(work), job["mode"], job["warmup"], job["iters"],
                        job["min_time"], job.get("layers", False)), {}


ACTIONS = {"build": do_build, "forward": do_forward, "train": do_train, "bench": do_bench}


def main(argv: list[str]) -> int:
    work = Path(argv[0])
    job = json.loads((work / "job.json").read_text())
    try:
        _inject_fault(job["engine"])
        result, arrays = ACTIONS[job["action"]](job, work)
        if arrays:
            np.savez(work / "outputs.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        (work / "result.json").write_text(json.dumps(result))
        return 0
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
        (work / "error.json").write_text(json.dumps({
            "type": type(e).__name__, "message": str(e).strip().splitlines()[0][:2000] if str(e).strip() else "",
            "unsupported": type(e).__name__ == "Unsupported",
            "traceback": traceback.format_exc()[-4000:]}))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
