"""The child process: `python -m zoo.runners DIR` runs DIR/job.json for one engine.

Writes DIR/result.json and DIR/outputs.npz, or DIR/error.json when the work raised, with
the kind of failure decided here by exception class (`unsupported`, `engine-unavailable`,
`error`) and the exception's own message as the one-line reason. The parent
(zoo/isolation.py) set the thread and device variables before this process started, so they
are in force before any engine is imported.
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

import importlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


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


def main(argv: list[str]) -> int:
    work = Path(argv[0])
    try:
        job = json.loads((work / "job.json").read_text())
        _inject_fault(job["engine"])
        result, arrays = ACTIONS[job["action"]](job, work)
        if arrays:
            np.savez(work / "outputs.npz", **{k: np.asarray(v) for k, v in arrays.items()})
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
