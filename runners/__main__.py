"""The child process: `python -m zoo.runners DIR` runs DIR/job.json for one engine;
`python -m zoo.runners --serve FD` serves many jobs, one at a time, in one process.

Each job writes DIR/result.json and DIR/outputs/ (zoo/transport.py), or DIR/error.json when
the work raised, with the kind of failure decided here by exception class (`unsupported`,
`engine-unavailable`, `error`) and the exception's own message as the one-line reason. The
parent (zoo/isolation.py) set the thread and device variables before this process started,
so they are in force before any engine is imported.

Serve mode (zoo.isolation.Worker): the parent writes one job folder per line on stdin, as a
JSON string; the child runs it exactly as the one-shot mode does and answers on file
descriptor FD with one line, the job's exit status (0: result.json written, 1: error.json
written). The engine is imported once, by the first job. EOF on stdin ends the child.
Loaded runners are kept between jobs on the same build (see `_runner`): rewound to the build's
state after a training job, never for a bench job, which always loads the build afresh.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when zoo dies (even by SIGKILL, when zoo can
    clean nothing up), then check zoo is still there: it may have died before the request."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    expected = os.environ.get("ZOO_PARENT_PID")
    if expected and os.getppid() != int(expected):
        os._exit(128 + signal.SIGKILL)


_die_with_parent()   # before anything slow: an orphan must not start an engine

from zoo.memory import keep_freed_memory  # noqa: E402

keep_freed_memory()  # before any engine allocates (zoo/memory.py says why)

import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import OrderedDict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from zoo import transport  # noqa: E402
from zoo.transport import INPUTS, OUTPUTS  # noqa: E402

TEST_FAULTS_VAR = "ZOO_TEST_FAULTS"   # "1": a job's own "fault" field is honoured (tests only)


def _fault_for(job: dict) -> str:
    """The fault to inject into this job, or "". ZOO_FAULT=ENGINE:KIND applies to every job of
    that engine; a job's "fault" field only when ZOO_TEST_FAULTS=1 is in this child's
    environment, so a job file alone can never steer a normal run."""
    spec = os.environ.get("ZOO_FAULT", "")
    if spec and spec.split(":")[0] == job.get("engine"):
        return spec.split(":", 1)[1]
    if os.environ.get(TEST_FAULTS_VAR) == "1" and isinstance(job.get("fault"), str):
        return job["fault"]
    return ""


def _inject_fault(job: dict) -> None:
    """Test hook: make this job crash, hang or raise (`_fault_for`), so the tests can show the
    parent reports it and goes on. Nothing happens in normal use."""
    kind = _fault_for(job)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "sigsegv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "abort":
        print("W0000 00:00:00.000000 1 fault.cc:1] a warning printed before the failure", file=sys.stderr)
        print("F0000 00:00:00.000000 1 fault.cc:2] Check failed: fault injected by ZOO_FAULT",
              file=sys.stderr, flush=True)
        print("*** Check failure stack trace: ***\n    @     0x7f0000000000  (unknown)",
              file=sys.stderr, flush=True)
        os.abort()
    elif kind in ("hang", "hang-with-grandchild"):
        if kind == "hang-with-grandchild":   # an engine's own helper process
            import subprocess
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print("hanging (ZOO_FAULT)", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)
    elif kind == "raise":
        print("[00:00:00] src/fault.cc:1: WARNING: a warning printed before the exception",
              file=sys.stderr, flush=True)
        raise RuntimeError("fault injected by ZOO_FAULT\nsecond line of the message")
    elif kind == "unsupported":
        from zoo.errors import Unsupported
        raise Unsupported("fault injected by ZOO_FAULT: this engine cannot express it")


def do_build(job: dict, work: Path):
    from zoo import engines
    from zoo import net as N
    from zoo import weights as W
    conv = importlib.import_module(engines.get(job["engine"]).converter_module)
    spec_file = job.get("spec_file")   # messages name the real file, never a placeholder
    net = N.from_text(job["spec_text"], file=spec_file if spec_file not in (None, "None") else "spec")
    weights = W.load(job["weights_file"], net)
    meta = conv.build(net, weights, Path(job["outdir"]), job.get("options") or {})
    return meta, {}


# --- loaded runners ------------------------------------------------------------------------
# A serving child keeps the last few runners it loaded, by build and settings, so the next
# job on the same build skips the load (TensorFlow's load_model of a big network takes
# seconds) and the manifest hashing. A forward job leaves its runner as it found it (eval mode,
# the build's weights). A training job (train, train_forward) changes it: its weights and
# other state such as BatchNorm's statistics and torch's training mode; so a runner is
# kept for training only when its engine can rewind it (`Runner.save_build_state`, `rewind`),
# and every job that finds a trained runner rewinds it first: it starts exactly where a
# freshly loaded one would (tests/test_workers.py). A bench job always loads the build afresh
# and is never kept: its timing must not depend on what ran before it.
KEEP_RUNNERS = 2       # a network's engine build and its float64 oracle (one torch child)
_runners: OrderedDict = OrderedDict()


def _load_runner(job: dict):
    from zoo import engines
    mod = importlib.import_module(engines.get(job["engine"]).runner_module)
    runner = mod.Runner(Path(job["artifact"]), job["device"], job.get("threads"),
                        job.get("options") or {})
    runner.load()
    # a test's broken optimised model is broken for every job: zoo bench's own check and the
    # oracle's (zoo verify --optimize) must both see it
    _perturb_optimized(runner, _fault_for(job))
    return runner


def _build_identity(artifact: Path) -> tuple | None:
    """What changes when the build at `artifact` is replaced (a rebuild renames a new folder
    in, so the folder's inode changes), or None when it cannot be read."""
    try:
        d, m = os.stat(artifact), os.stat(artifact / "manifest.json")
    except OSError:
        return None
    return (d.st_dev, d.st_ino, m.st_ino, m.st_mtime_ns, m.st_size)


def _runner_key(job: dict) -> tuple | None:
    ident = _build_identity(Path(job["artifact"]))
    if ident is None:
        return None
    return (job["engine"], str(Path(job["artifact"]).resolve()), ident, job["device"],
            job.get("threads"), json.dumps(job.get("options") or {}, sort_keys=True))


@contextlib.contextmanager
def _runner(job: dict, trains: bool = False):
    """The job's runner, loaded or kept, as (runner, "loaded" | "kept"). It is out of the kept
    set while the job runs, and goes back only when the job succeeds (a job that raised may
    have left it anywhere) and, when the job trains, only if the engine can rewind it."""
    key = _runner_key(job)
    runner = _runners.pop(key, None) if key is not None else None
    if runner is not None:
        if runner.moved_by_training:
            runner.rewind()
        how = "kept"
    else:
        runner, how = _load_runner(job), "loaded"
    keep = key is not None
    if trains and not runner.moved_by_training:
        keep = keep and runner.save_build_state()
    yield runner, how
    if not keep:
        return
    runner.moved_by_training = runner.moved_by_training or trains
    _runners[key] = runner
    while len(_runners) > KEEP_RUNNERS:
        _runners.popitem(last=False)


def _inputs(work: Path) -> dict[str, np.ndarray]:
    return transport.load(work / INPUTS)


def _configuration(runner, mode: str) -> dict:
    """With options {"optimize": True} (zoo verify --optimize): what the optimised
    configuration enables, or Unsupported (the case is skipped) for an engine without one,
    which would otherwise be verified as built under the optimised name."""
    return {"enabled": runner.optimizations(mode)} if runner.optimize else {}


def do_forward(job: dict, work: Path):
    with _runner(job) as (runner, how):
        enabled = _configuration(runner, "infer")
        outs = runner.forward(_inputs(work), job.get("expose"))
        return {"blobs": sorted(outs), "runner": how, **enabled, **runner.info()}, outs


def do_train(job: dict, work: Path):
    with _runner(job, trains=True) as (runner, how):
        enabled = _configuration(runner, "train")
        losses, weights = runner.train_step(_inputs(work), int(job.get("steps", 1)))
        return ({"losses": [float(x) for x in losses], "runner": how, **enabled, **runner.info()},
                weights)


def do_train_forward(job: dict, work: Path):
    """The forward pass of training step `after_steps` + 1: after that many steps (the branches
    of a later step, zoo/branches.py), whose updated weights come back beside the blobs."""
    from zoo import branches
    # trains: training mode updates BatchNorm's statistics
    with _runner(job, trains=True) as (runner, how):
        _configuration(runner, "train")
        inputs, steps = _inputs(work), int(job.get("after_steps", 0))
        weights = runner.train_step(inputs, steps)[1] if steps else {}
        outs = runner.train_forward(inputs, job["expose"])
        return ({"blobs": sorted(outs), "after_steps": steps, "runner": how, **runner.info()},
                branches.with_weights(outs, weights))


def split_check(arrays: dict) -> tuple[dict, dict]:
    """(the batch, the optimised model's reference): zoo/benchmark.py sends the reference
    outputs and their bounds beside the batch, under prefixes it refuses in a spec's blob names.
    Imported here, not at the top: zoo.benchmark costs every child ~0.1 s to import."""
    from zoo.benchmark import CHECK_BOUND, CHECK_REF
    batch = {k: v for k, v in arrays.items() if not k.startswith((CHECK_REF, CHECK_BOUND))}
    ref = {k[len(CHECK_REF):]: v for k, v in arrays.items() if k.startswith(CHECK_REF)}
    bound = {k[len(CHECK_BOUND):]: v for k, v in arrays.items() if k.startswith(CHECK_BOUND)}
    return batch, {"ref": ref, "bound": bound}


def _perturb_optimized(runner, kind: str) -> None:
    """Test hook (ZOO_FAULT=ENGINE:perturb-optimized or perturb-optimized-step): the
    optimised model answers slightly wrong (outputs, or a training step's updated weights,
    scaled by 1 + 1e-3), as a subtly broken compiler would, so the tests can show such a
    model is reported as failing and never timed. perturb-optimized-step-bench: the step
    only in bench children (do_bench), so that bench's own comparison fails and verify's
    oracle passes, the case the oracle decides (zoo/benchmark.py, `_oracle_decides`)."""
    if not runner.optimize:
        return
    if kind == "perturb-optimized":
        forward = runner.forward

        def wrong_forward(inputs, expose=None):
            return {k: v * np.float32(1 + 1e-3) for k, v in forward(inputs, expose).items()}
        runner.forward = wrong_forward
    elif kind == "perturb-optimized-step":
        train_step = runner.train_step

        def wrong_step(inputs, steps=1):
            losses, weights = train_step(inputs, steps)
            return losses, {k: v * np.float32(1 + 1e-3) for k, v in weights.items()}
        runner.train_step = wrong_step


def do_bench(job: dict, work: Path):
    runner = _load_runner(job)
    if _fault_for(job) == "perturb-optimized-step-bench":
        _perturb_optimized(runner, "perturb-optimized-step")
    inputs, check = split_check(_inputs(work))
    check["rows"] = job.get("check_rows", 0)
    check["train_verified"] = job.get("train_verified")
    return runner.bench(inputs, job["mode"], job["warmup"], job["iters"],
                        job["min_time"], job.get("layers", False), check=check), {}


ACTIONS = {"build": do_build, "forward": do_forward, "train": do_train,
           "train_forward": do_train_forward, "bench": do_bench}


def failure_kind(e: BaseException) -> str:
    from zoo.errors import EngineUnavailable, Unsupported
    if isinstance(e, Unsupported):
        return "unsupported"
    if isinstance(e, EngineUnavailable):
        return "engine-unavailable"
    return "error"


# lines of an exception's message that are not its cause: tracebacks, log lines, warnings
_NOT_THE_CAUSE = re.compile(r"^(Traceback \(most recent call last\)|\s+File \"|\s*$|"
                            r"\[\d\d:\d\d:\d\d\] .*WARNING|[IW]\d{4} \d\d:\d\d:\d\d|Stack trace:)")


def message(e: BaseException) -> str:
    """The exception's own message: its first line that is not a traceback or log line."""
    lines = [ln.strip() for ln in str(e).splitlines() if not _NOT_THE_CAUSE.match(ln)]
    return lines[0][:2000] if lines else ""


def reason(e: BaseException) -> str:
    """One line: the message, after the class name unless it is one of zoo's errors (whose
    messages say it all)."""
    from zoo.errors import ZooError
    message_ = message(e)
    if isinstance(e, ZooError) and message_:
        return message_
    return f"{type(e).__name__}: {message_}" if message_ else type(e).__name__


def run_job(work: Path) -> int:
    """Run the job in folder `work`: 0 when result.json was written, 1 for error.json."""
    try:
        job = json.loads((work / "job.json").read_text())
        _inject_fault(job)
        result, arrays = ACTIONS[job["action"]](job, work)
        if arrays:
            transport.save(work / OUTPUTS, arrays)
        (work / "result.json").write_text(json.dumps(result))
        return 0
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
        kind = failure_kind(e)
        (work / "error.json").write_text(json.dumps({
            "kind": kind, "reason": reason(e), "type": type(e).__name__,
            "message": message(e),
            "unsupported": kind == "unsupported",   # read by builds.py until it reads "kind"
            "traceback": traceback.format_exc()[-4000:]}))
        return 1


def _reset_peak_memory() -> None:
    """A bench job reports the process's peak RSS (runners/base.py): in a serving child that
    must be this job's peak, not an earlier job's, so the kernel's high-water mark is reset
    before each job (Linux; elsewhere the figure covers the child's life so far)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def serve(answer_fd: int) -> int:
    """Jobs from stdin (one JSON-quoted folder per line), answers on `answer_fd`, until EOF."""
    answers = os.fdopen(answer_fd, "w", buffering=1)
    for line in sys.stdin:
        if not line.strip():
            continue
        _reset_peak_memory()
        code = run_job(Path(json.loads(line)))
        sys.stdout.flush()
        sys.stderr.flush()      # the parent reads this job's stderr once it has the answer
        answers.write(f"{code}\n")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        if len(argv) != 2 or not argv[1].isdigit():
            print("usage: python -m zoo.runners --serve ANSWER_FD", file=sys.stderr)
            return 2
        return serve(int(argv[1]))
    return run_job(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
