"""Running engine work in a fresh child process (the parent's side).

Every conversion, run and timing of an engine happens in `python -m zoo.runners.child DIR`.
The parent writes DIR/job.json (and DIR/inputs.npz), sets the thread and device variables
in the child's environment (so they are in force before the engine is imported), starts it
in its own process group, and waits with a timeout. A timeout kills the whole group. A
signal (SIGSEGV, SIGABRT from a glog CHECK, SIGKILL from the OOM killer), a non-zero exit
or an exception reported by the child is that engine's failure, with the last lines of its
stderr; the caller goes on with the next engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import engines

DEFAULT_TIMEOUT = 900.0
STDERR_TAIL = 15


@dataclass
class ChildResult:
    status: str                      # "ok", "error" (exception), "crash" (signal/exit), "timeout"
    result: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    reason: str = ""
    stderr_tail: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory, or by hand)" if -code == signal.SIGKILL else ""
        return f"crashed with {name}{hint}"
    return f"exited with status {code}"


def run(engine: str, action: str, job: dict, arrays: dict[str, np.ndarray] | None = None, *,
        threads: int | None = None, device: str = "cpu", timeout: float = DEFAULT_TIMEOUT,
        keep_dir: Path | None = None) -> ChildResult:
    """Run `action` of `engine` in a child process; never raises for the child's failures."""
    with tempfile.TemporaryDirectory(prefix="zoo-child-") as tmp:
        work = Path(keep_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "job.json").write_text(json.dumps({**job, "engine": engine, "action": action,
                                                   "threads": threads, "device": device}))
        if arrays:
            np.savez(work / "inputs.npz", **arrays)
        env = {**os.environ, **engines.get(engine).environment(threads, device)}
        t0 = time.perf_counter()
        with open(work / "stderr.txt", "wb") as err, open(work / "stdout.txt", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "zoo.runners.child", str(work)],
                                    stdout=out, stderr=err, env=env, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return ChildResult("timeout", reason=f"timed out after {timeout:g} s (process "
                                   "group killed)", stderr_tail=_tail(work / "stderr.txt"),
                                   wall_s=time.perf_counter() - t0)
            finally:
                _kill_group(proc)   # no grandchildren outlive the run
        wall = time.perf_counter() - t0
        tail = _tail(work / "stderr.txt")
        err_file, res_file = work / "error.json", work / "result.json"
        if err_file.exists():
            e = json.loads(err_file.read_text())
            return ChildResult("error", reason=f"{e['type']}: {e['message']}", stderr_tail=tail,
                               wall_s=wall, result=e)
        if code != 0 or not res_file.exists():
            return ChildResult("crash", reason=describe_exit(code) if code else
                               "exited without a result", stderr_tail=tail, wall_s=wall)
        result = json.loads(res_file.read_text())
        out_arrays = {}
        if (work / "outputs.npz").exists():
            with np.load(work / "outputs.npz", allow_pickle=False) as z:
                out_arrays = {k: z[k] for k in z.files}
        return ChildResult("ok", result=result, arrays=out_arrays, stderr_tail=tail, wall_s=wall)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: Path, n: int = STDERR_TAIL) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])
