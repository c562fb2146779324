"""Engine work in a fresh child process: the parent's side of process isolation.

Every conversion, run and timing of an engine happens in `python -m zoo.runners DIR`
(runners/__main__.py). The parent writes DIR/job.json (and DIR/inputs.npz), sets the
engine's thread, device and log variables in the child's environment (in force before the
engine is imported), starts it in its own process group, and waits with a timeout.

The child's outcome is one typed `ChildResult.status`:
  ok                  result.json (and outputs.npz) were written
  unsupported         the engine cannot express the layer or option (zoo.errors.Unsupported)
  engine-unavailable  the engine or the device asked for is not there (EngineUnavailable)
  error               any other exception in the child; reason is its message
  timeout             the timeout passed: the child's whole process group was killed
  crashed             a signal (SIGSEGV, SIGABRT from a glog CHECK, SIGKILL from the OOM
                      killer) or an exit without a result; reason names the signal and the
                      last meaningful line of stderr
None of these is raised: the caller goes on with the next engine.

No engine outlives zoo: while a child runs, SIGTERM, SIGINT and SIGHUP kill every live
child's process group and end zoo with status 128 + signal (130 for Ctrl-C), unwinding so
that temporary folders are removed on the way out; a SIGKILLed zoo cannot clean up, so the
child asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG, runners/__main__.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import engines
from .errors import ZooError

__all__ = ["ChildResult", "DEFAULT_TIMEOUT", "STATUSES", "STDERR_TAIL", "Terminated",
           "describe_exit", "kill_children", "meaningful_line", "run", "signals_end_children"]

DEFAULT_TIMEOUT = 900.0
STDERR_TAIL = 15
STATUSES = ("ok", "unsupported", "engine-unavailable", "error", "timeout", "crashed")
PARENT_PID_VAR = "ZOO_PARENT_PID"   # the child exits at once if its parent is not this pid


@dataclass
class ChildResult:
    status: str                      # one of STATUSES
    result: dict = field(default_factory=dict)   # result.json, or the child's error.json
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    reason: str = ""                 # one line: why it was not ok
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
    try:
        env = {**os.environ, **engines.get(engine).environment(threads, device),
               PARENT_PID_VAR: str(os.getpid())}
    except ZooError as e:   # an unknown engine name
        return ChildResult("engine-unavailable", reason=str(e))
    with signals_end_children(), tempfile.TemporaryDirectory(prefix="zoo-child-") as tmp:
        work = Path(keep_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "job.json").write_text(json.dumps({**job, "engine": engine, "action": action,
                                                   "threads": threads, "device": device}))
        if arrays:
            np.savez(work / "inputs.npz", **arrays)
        t0 = time.perf_counter()
        code = _start_and_wait(work, env, timeout)
        wall = time.perf_counter() - t0
        tail = _tail(work / "stderr.txt")
        if code is None:
            return ChildResult("timeout", reason=f"timed out after {timeout:g} s (process group "
                               "killed)", stderr_tail=tail, wall_s=wall)
        return _outcome(work, code, tail, wall)


def _start_and_wait(work: Path, env: dict, timeout: float) -> int | None:
    """The child's exit code, or None when it timed out. Its process group is killed either
    way, so no grandchild outlives the run."""
    with open(work / "stderr.txt", "wb") as err, open(work / "stdout.txt", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "zoo.runners", str(work)],
                                stdout=out, stderr=err, env=env, start_new_session=True)
        _live[proc.pid] = proc
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            _kill_group(proc)
            _live.pop(proc.pid, None)


def _outcome(work: Path, code: int, tail: str, wall: float) -> ChildResult:
    err_file, res_file = work / "error.json", work / "result.json"
    if err_file.exists():
        e = json.loads(err_file.read_text())
        kind = e.get("kind") if e.get("kind") in ("unsupported", "engine-unavailable") else "error"
        return ChildResult(kind, reason=e.get("reason") or e.get("type", "error"),
                           stderr_tail=tail, wall_s=wall, result=e)
    if code != 0 or not res_file.exists():
        why = describe_exit(code) if code else "exited without a result"
        line = meaningful_line(tail)
        return ChildResult("crashed", reason=f"{why}: {line}" if line else why,
                           stderr_tail=tail, wall_s=wall)
    result = json.loads(res_file.read_text())
    out_arrays = {}
    if (work / "outputs.npz").exists():
        with np.load(work / "outputs.npz", allow_pickle=False) as z:
            out_arrays = {k: z[k] for k in z.files}
    return ChildResult("ok", result=result, arrays=out_arrays, stderr_tail=tail, wall_s=wall)


# Lines engines print that are never the cause of a failure: log levels I/W in glog/absl
# format (TensorFlow's "I0000 00:00:..."), TensorFlow's oneDNN and CPU-instruction notices,
# MXNet's "[hh:mm:ss] file:line: ..." notices, Python warnings, and stack-trace lines.
_NOISE = [re.compile(p) for p in (
    r"^[IW]\d{4} \d\d:\d\d:\d\d",
    r"oneDNN custom operations are on|TF_ENABLE_ONEDNN_OPTS",
    r"This TensorFlow binary is optimized|To enable the following instructions|rebuild TensorFlow",
    r"^\[\d\d:\d\d:\d\d\] (?!.*(Check failed|Error|error))",
    r"\bWARNING\b|^WARNING:",
    r"^\S+:\d+: \w*Warning: |^\s*warnings\.warn\(",
    r"^\*\*\* (Check failure stack trace|Aborted at)|^PC: @|^\s+@\s+0x",
    r"^Traceback \(most recent call last\)|^\s+File \".*\", line \d+|^Current thread 0x",
    r"^Thread 0x|^Extension modules:|^Stack \(most recent call first\)",
)]


def meaningful_line(text: str) -> str:
    """The last line of `text` that is not a known log, warning or stack-trace line."""
    for line in reversed(text.splitlines()):
        s = line.strip()
        if s and not any(p.search(line) for p in _NOISE):
            return s[:500]
    return ""


# --- no engine outlives zoo --------------------------------------------------------------------

_live: dict[int, subprocess.Popen] = {}   # pid (= process group id) -> child, while it runs
_TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_installed: dict[int, object] = {}
_depth = 0


class Terminated(SystemExit):
    """zoo was asked to stop (SIGTERM, SIGINT, SIGHUP): children killed, exit 128 + signal."""

    def __init__(self, signo: int, killed: int = 0):
        super().__init__(128 + signo)
        self.signo, self.killed = signo, killed     # killed: engine process groups
        self.name = signal.Signals(signo).name


def kill_children() -> int:
    """SIGKILL every live child's process group (its grandchildren die with it); how many."""
    pids = list(_live)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return len(pids)


@contextlib.contextmanager
def signals_end_children():
    """While active, SIGTERM/SIGINT/SIGHUP kill the children and raise Terminated, so the
    `finally` blocks on the way out remove temporary folders (this module's and a build's
    `.tmp-*`). Re-entrant; only the main thread can install signal handlers, elsewhere it
    does nothing (the children are still killed by PR_SET_PDEATHSIG if zoo dies)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        for s in _TERMINATING:
            _installed[s] = signal.signal(s, _on_signal)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            for s, previous in _installed.items():
                signal.signal(s, previous if previous is not None else signal.SIG_DFL)
            _installed.clear()


def _on_signal(signo, _frame) -> None:
    killed = kill_children()
    for s in _TERMINATING:   # a second signal while unwinding must not interrupt the clean-up
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signo, killed)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _tail(path: Path, n: int = STDERR_TAIL) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])
