"""What every engine's worker shares: the job, its share of the batch, the timing loop,
and writing the result or the error where the parent looks for it."""

from __future__ import annotations

import importlib
import json
import os
import time
import traceback
from pathlib import Path

import numpy as np

from zoo import transport
from zoo.memory import allocator, peak_rss_mb

TEST_FAULTS_VAR = "ZOO_TEST_FAULTS"   # "1": the job's "fault" is honoured (tests only)
# "sum-gradients": the data-parallel step sums the gradients instead of averaging them;
# "hang": the worker never finishes (for the teardown tests)
FAULTS = ("sum-gradients", "hang")

ENGINE_MODULES = {"torch": "zoo.runners.distributed.torch",
                  "tensorflow": "zoo.runners.distributed.tensorflow",
                  "mxnet": "zoo.runners.distributed.mxnet"}


def fault(job: dict) -> str:
    """The deliberate fault to build into this step, or "": only when ZOO_TEST_FAULTS=1 is in
    the worker's environment, so a job file alone never steers a normal run."""
    if os.environ.get(TEST_FAULTS_VAR) == "1" and job.get("fault") in FAULTS:
        return job["fault"]
    return ""


def inputs(rundir: Path) -> dict[str, np.ndarray]:
    return transport.load(rundir / transport.INPUTS)


def shard(batch: dict[str, np.ndarray], rank: int, per_worker: int, replicate: bool) -> dict:
    """This rank's rows of the batch (strong scaling and verify: the batch is split in equal
    contiguous shards); replicate=True (weak scaling): every worker holds the same
    per-worker batch, which is what the parent sends."""
    if replicate:
        return dict(batch)
    lo = rank * per_worker
    out = {k: np.ascontiguousarray(v[lo:lo + per_worker]) for k, v in batch.items()}
    for k, v in out.items():
        if v.shape[0] != per_worker:
            raise ValueError(f"rank {rank}: blob {k} has {v.shape[0]} rows for this worker, expected {per_worker}")
    return out


def time_steps(step, barrier, warmup: int, iters: int) -> list[float]:
    """Seconds per synchronous data-parallel iteration. Every worker runs the same number of
    iterations (a worker that stopped early would leave the others waiting in a collective),
    so the count is fixed; a barrier before each timed iteration starts the workers together."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        barrier()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def time_phases(phases: dict, barrier, iters: int) -> dict[str, float]:
    """Median seconds of each phase of an iteration run as separate, synchronised parts
    (compute: forward + backward; exchange: the gradient all-reduce; update: the SGD step).
    A separate pass from the iteration timing: separating the phases stops the engine
    overlapping them, so their sum may exceed the overlapped iteration."""
    got: dict[str, list[float]] = {name: [] for name in phases}
    for i in range(iters + 1):          # the first is a warm-up of the separated path
        barrier()
        for name, fn in phases.items():
            t0 = time.perf_counter()
            fn()
            if i:
                got[name].append(time.perf_counter() - t0)
    return {f"{name}_s": float(np.median(v)) for name, v in got.items()}


def bench_result(job: dict, step, barrier, phases: dict | None, rank: int, world: int) -> dict:
    times = time_steps(step, barrier, int(job["warmup"]), int(job["iters"]))
    out = {"times_s": times, "median_s": float(np.median(times)), "rank": rank, "world": world}
    if phases:
        out.update(time_phases(phases, barrier, int(job["iters"])))
    out["peak_rss_mb"] = peak_rss_mb()
    out["allocator"] = allocator()
    return out


def slot_dir(rundir: Path) -> Path:
    slot = os.environ.get("ZOO_DIST_SLOT") or os.environ.get("DMLC_TASK_ID") or "0"
    d = rundir / f"slot-{int(slot)}"
    d.mkdir(exist_ok=True)
    return d


def run_worker(rundir: str) -> int:
    """Run this worker's part of RUNDIR's job: 0 with result.json written, 1 with error.json."""
    rundir = Path(rundir)
    out = slot_dir(rundir)
    try:
        job = json.loads((rundir / "job.json").read_text())
        module = importlib.import_module(ENGINE_MODULES[job["engine"]])
        if fault(job) == "hang":
            while True:
                time.sleep(1)
        result, arrays = module.run(job, inputs(rundir), fault(job))
        if arrays:
            transport.save(out / transport.OUTPUTS, arrays)
        _write(out / "result.json", result)
        return 0
    except BaseException as e:  # noqa: BLE001 - everything goes to the parent
        from zoo.runners.__main__ import failure_kind, reason
        _write(out / "error.json", {"kind": failure_kind(e), "reason": _reason(e, reason(e)), "type": type(e).__name__,
                                    "traceback": traceback.format_exc()[-4000:]})
        return 1


def _reason(e: BaseException, first: str) -> str:
    """TensorFlow's errors from inside a tf.function start "in user code:" and end with
    the cause: that last line is the reason then."""
    if first.rstrip().endswith("in user code:"):
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        if lines:
            return f"{type(e).__name__}: {lines[-1][:2000]}"
    return first


def _write(path: Path, obj: dict) -> None:
    """Written whole and renamed: the parent never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
