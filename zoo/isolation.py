"""Engine work in child processes: the parent's side of process isolation.

Every conversion, run and timing of an engine happens in a child, `python -m zoo.runners
--serve FD` (runners/__main__.py). A `Worker` owns one such child for one engine and
thread/device setting and sends it jobs one at a time: for each, the parent writes
DIR/job.json (and DIR/inputs/, arrays as zoo/transport.py writes them), sends DIR on the
child's stdin and waits, with a timeout, for its one-line answer. The engine's thread,
device and log variables are in the child's environment (in force before the engine is
imported); the child is the leader of its own process group. `run` is a one-job Worker (a
fresh child per call); `WorkerPool` runs several engines' Workers side by side. Inside `routed_to(pool)` (zoo/cases.py's walk holds it
while the cases run) every `run` goes to the pool's Worker for its engine, thread and device
setting instead: the same typed results, without starting an engine per job.

Each job's outcome is one typed `ChildResult.status`:
  ok                  result.json (and outputs/) were written
  unsupported         the engine cannot express the layer or option (zoo.errors.Unsupported)
  engine-unavailable  the engine or the device asked for is not there (EngineUnavailable)
  error               any other exception in the child; reason is its message
  timeout             the timeout passed: the child's whole process group was killed
  crashed             a signal (SIGSEGV, SIGABRT from a glog CHECK, SIGKILL from the OOM
                      killer) or an exit without a result; reason names the signal and the
                      last meaningful line of the job's stderr
None of these is raised: the caller goes on with the next job. After error, timeout and
crashed the Worker's child is replaced (lazily, by the next job); see `Worker`.

No engine outlives zoo: while a Worker (or `run`) is open, SIGTERM, SIGINT and SIGHUP kill
every live child's process group and end zoo with status 128 + signal (130 for Ctrl-C),
unwinding so that temporary folders are removed on the way out; a SIGKILLed zoo cannot clean
up, so the child asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG,
runners/__main__.py; children are started from one long-lived thread, `_spawn`, since the
kernel means the thread that started it).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import engines, transport
from .errors import UsageError, ZooError

__all__ = ["ChildResult", "DEFAULT_TIMEOUT", "STATUSES", "STDERR_TAIL", "Terminated", "Worker",
           "WorkerPool", "describe_exit", "kill_children", "meaningful_line", "plan_parallelism",
           "routed_to", "run", "signals_end_children", "usable_cores"]

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
    """Run `action` of `engine` in a fresh child process; never raises for the child's failures.
    A one-job `Worker`: the child is started for this job and ended after it. Inside
    `routed_to(pool)` the job goes to that pool's long-lived Worker instead, except a build:
    a converter may load protobuf classes that clash with the engine's own in one process
    (zoo's caffe_pb2 and pycaffe's both define package `caffe`), so builds keep a child of
    their own (they are cached: one per network and engine)."""
    pool = _routing.get()
    if pool is not None and action != "build":
        return pool.run(engine, action, job, arrays, threads=threads, device=device,
                        timeout=timeout, keep_dir=keep_dir)
    with signals_end_children(), Worker(engine, threads, device) as worker:
        return worker.run(action, job, arrays, timeout=timeout, keep_dir=keep_dir)


class Worker:
    """One long-lived child for `engine` (with its thread and device setting) that runs jobs
    one at a time; the engine is imported once, by the first job.

    `run` has `isolation.run`'s typed results and reasons. The child is started lazily, for
    the first job and after each replacement. It lives on after ok, unsupported and
    engine-unavailable (zoo's own checks, raised before or without any engine computation).
    It is replaced after an error, a timeout and a crash: an exception from inside an engine
    may leave it unusable (MXNet's asynchronous engine re-raises a failed operation's error at
    the next wait; a half-loaded model), so the next job starts clean, as it would in a
    one-shot child. On a timeout the child's process group is killed first.

    While the child lives its process group is in `_live`, so `kill_children` (SIGTERM,
    SIGINT, SIGHUP under `signals_end_children`, which a Worker used as a context manager
    holds from the main thread) ends it even while it idles; a SIGKILLed zoo's children die by
    PR_SET_PDEATHSIG. Jobs of one Worker are serialised; use one Worker per thread of work.

    max_rss (bytes): a child whose resident memory has grown past it after a job is replaced
    before the next one, so that children kept for a whole zoo (and side by side) do not
    hold on to what their biggest network's job left in the allocator.
    """

    def __init__(self, engine: str, threads: int | None = None, device: str = "cpu",
                 max_rss: int | None = None):
        self.engine, self.threads, self.device, self.max_rss = engine, threads, device, max_rss
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._closed = False
        self._signals: contextlib.ExitStack | None = None
        self.started = 0          # children started so far (the first, then replacements)

    @property
    def pid(self) -> int | None:
        """The live child's pid (= its process group id), or None between children."""
        child = self._child
        return child.proc.pid if child is not None and child.proc.poll() is None else None

    def run(self, action: str, job: dict, arrays: dict[str, np.ndarray] | None = None, *,
            timeout: float = DEFAULT_TIMEOUT, keep_dir: Path | None = None) -> ChildResult:
        """Run one job in the child; never raises for the child's failures."""
        with self._lock, signals_end_children():
            if self._closed:
                raise ZooError(f"worker for {self.engine} is closed")
            try:
                env = self._environment()
            except ZooError as e:   # an unknown engine name
                return ChildResult("engine-unavailable", reason=str(e))
            if self._child is not None and self._child.proc.poll() is not None:
                self._retire()      # died while idle (killed from outside): not this job's doing
            if self._child is None:
                self._child = _Child.start(env)
                self.started += 1
            try:
                res = self._child.run({**job, "engine": self.engine, "action": action,
                                       "threads": self.threads, "device": self.device},
                                      arrays, timeout, keep_dir)
            except BaseException:   # Terminated, KeyboardInterrupt: the job's state is unknown
                self._retire()
                raise
            if res.status in ("error", "timeout", "crashed") or self._closed or self._grown():
                self._retire()
            return res

    def _grown(self) -> bool:
        """Whether the child's resident memory is past max_rss (Linux; elsewhere never)."""
        if self.max_rss is None or self._child is None:
            return False
        rss = resident_bytes(self._child.proc.pid)
        return rss is not None and rss > self.max_rss

    def _environment(self) -> dict:
        return {**os.environ, **engines.get(self.engine).environment(self.threads, self.device),
                PARENT_PID_VAR: str(os.getpid())}

    def _retire(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.end()

    def close(self) -> None:
        """End the child (its whole process group) and remove its folder. Idempotent."""
        self._closed = True
        while not self._lock.acquire(timeout=0.05):
            # a job in flight in another thread ends now, as crashed; its child may still be
            # starting when close begins, hence the retries until the job lets go
            child = self._child
            if child is not None:
                _kill_group(child.proc)
        try:
            self._retire()
        finally:
            self._lock.release()
        if self._signals is not None:
            signals, self._signals = self._signals, None
            signals.close()

    def __enter__(self) -> "Worker":
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(signals_end_children())
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resident_bytes(pid: int) -> int | None:
    """A process's resident memory (VmRSS in /proc), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_bytes() -> int | None:
    """The machine's physical memory, or None when it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_parallelism(jobs: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """(children running at once, threads per child) so that together they use the cores
    and do not oversubscribe them: jobs defaults to one per core; each child gets an equal
    share of the cores, at least one thread."""
    cores = cores or usable_cores()
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: expected 1 or more")
    jobs = jobs or cores
    return jobs, max(1, cores // jobs)


class WorkerPool:
    """Workers by (engine, threads, device), running jobs of different Workers side by side,
    at most `jobs` at once; the jobs of one Worker run one after another in submission order
    (threads of this process wait on the children). `submit` returns a Future of the
    ChildResult; `run_all` runs a list and returns the results in its order.

    `threads` is the thread setting of a job that names none (zoo/cases.py gives each child
    its share of the cores, `plan_parallelism`); a job's own thread count wins. `max_rss`: see
    `Worker`. `run` is `isolation.run`'s signature, for `routed_to`.

    Use it as a context manager from the main thread: while it is open SIGTERM, SIGINT and
    SIGHUP kill every child and raise Terminated; `close` ends every child, in flight or idle,
    and cancels jobs not started."""

    def __init__(self, jobs: int | None = None, threads: int | None = None,
                 max_rss: int | None = None):
        self.jobs, _ = plan_parallelism(jobs)
        self.threads, self.max_rss = threads, max_rss
        self._workers: dict[tuple, Worker] = {}
        self._queue: list[tuple[tuple, tuple, dict, Future]] = []
        self._busy: set[tuple] = set()
        self._cv = threading.Condition()
        self._executor = ThreadPoolExecutor(self.jobs, thread_name_prefix="zoo-pool")
        self._signals: contextlib.ExitStack | None = None
        self._closed = False

    def worker(self, engine: str, threads: int | None = None, device: str = "cpu") -> Worker:
        key = (engine, threads or self.threads, device)
        with self._cv:
            if self._closed:
                raise ZooError("the worker pool is closed")
            if key not in self._workers:
                self._workers[key] = Worker(*key, max_rss=self.max_rss)
            return self._workers[key]

    def submit(self, engine: str, action: str, job: dict, arrays: dict | None = None, *,
               threads: int | None = None, device: str = "cpu",
               timeout: float = DEFAULT_TIMEOUT, keep_dir: Path | None = None) -> Future:
        worker = self.worker(engine, threads, device)      # created here: a closed pool refuses
        future: Future = Future()
        with self._cv:
            self._queue.append(((worker.engine, worker.threads, worker.device),
                                (action, job, arrays),
                                {"timeout": timeout, "keep_dir": keep_dir}, future))
            self._dispatch()
        return future

    def run(self, engine: str, action: str, job: dict, arrays: dict | None = None, *,
            threads: int | None = None, device: str = "cpu", timeout: float = DEFAULT_TIMEOUT,
            keep_dir: Path | None = None) -> ChildResult:
        """One job, waited for: `isolation.run` through this pool. A pool closed meanwhile (zoo
        is stopping) raises ZooError rather than giving a result for a job never run."""
        future = self.submit(engine, action, job, arrays, threads=threads, device=device,
                             timeout=timeout, keep_dir=keep_dir)
        try:
            return future.result()
        except CancelledError:
            raise ZooError("the worker pool was closed before the job ran") from None

    def run_all(self, calls: list[dict]) -> list[ChildResult]:
        """Each call a dict of `submit`'s arguments; the results in the same order."""
        futures = [self.submit(**call) for call in calls]
        return [f.result() for f in futures]

    def _dispatch(self) -> None:
        """Start queued jobs whose Worker is idle while fewer than `jobs` run (lock held)."""
        while len(self._busy) < self.jobs:
            item = next((it for it in self._queue if it[0] not in self._busy), None)
            if item is None:
                return
            self._queue.remove(item)
            self._busy.add(item[0])
            self._executor.submit(self._execute, *item)

    def _execute(self, key: tuple, args: tuple, kwargs: dict, future: Future) -> None:
        try:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._workers[key].run(*args, **kwargs))
                except BaseException as e:  # noqa: BLE001 - handed to whoever waits on it
                    future.set_exception(e)
        finally:
            with self._cv:
                self._busy.discard(key)
                if not self._closed:
                    self._dispatch()

    def close(self) -> None:
        """Cancel jobs not started, end every child (a job in flight is reported crashed),
        wait for the pool's threads. Idempotent."""
        with self._cv:
            self._closed = True
            queued, self._queue = self._queue, []
        for *_, future in queued:
            future.cancel()
        for worker in list(self._workers.values()):
            worker.close()
        self._executor.shutdown(wait=True)
        if self._signals is not None:
            signals, self._signals = self._signals, None
            signals.close()

    def __enter__(self) -> "WorkerPool":
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(signals_end_children())
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# the pool that `run` sends jobs to in this context (thread), or None: a fresh child per job
_routing: contextvars.ContextVar[WorkerPool | None] = contextvars.ContextVar("zoo_pool", default=None)


@contextlib.contextmanager
def routed_to(pool: WorkerPool):
    """While active, `run` in this context goes to `pool` (a thread started inside it inherits
    this only when it runs in a copy of the context: contextvars.copy_context().run)."""
    token = _routing.set(pool)
    try:
        yield pool
    finally:
        _routing.reset(token)


class _Child:
    """One `python -m zoo.runners --serve` process: jobs go to its stdin, one line each, and
    it answers each on a pipe of its own (its stdout and stderr go to files, since engines
    print there). Its folder (zoo-child-*) holds those files and the job folders."""

    def __init__(self, proc: subprocess.Popen, answers: int, folder: Path):
        self.proc, self.answers, self.folder = proc, answers, folder
        self.jobs = 0
        self.stopped = False
        self._pending = b""

    @classmethod
    def start(cls, env: dict) -> "_Child":
        folder = Path(tempfile.mkdtemp(prefix="zoo-child-"))
        # the engine's temporary files live in the child's folder and go with it: TensorFlow's
        # autograph writes one module per traced function and deletes it only at a clean
        # exit, which a child ended by killing its group never has
        (folder / "tmp").mkdir()
        env = {**env, "TMPDIR": str(folder / "tmp")}
        read_end, write_end = os.pipe()
        try:
            # O_APPEND: the files can be emptied between jobs while the child holds them
            with open(folder / "stdout.txt", "ab") as out, open(folder / "stderr.txt", "ab") as err:
                proc = _spawn([sys.executable, "-m", "zoo.runners", "--serve", str(write_end)],
                              stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
                              start_new_session=True, pass_fds=(write_end,))
        except BaseException:
            os.close(read_end)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            os.close(write_end)
        _live[proc.pid] = proc
        return cls(proc, read_end, folder)

    def run(self, job: dict, arrays, timeout: float, keep_dir: Path | None) -> ChildResult:
        self.jobs += 1
        work = Path(keep_dir) if keep_dir else self.folder / f"job-{self.jobs}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            for name in ("stdout.txt", "stderr.txt"):     # this job's output only
                os.truncate(self.folder / name, 0)
            (work / "job.json").write_text(json.dumps(job))
            for kind in (transport.INPUTS, transport.OUTPUTS):   # a kept folder's earlier job's
                transport.discard(work / kind)
            if arrays:
                transport.save(work / transport.INPUTS, arrays)
            t0 = time.perf_counter()
            code = self._send_and_wait(work, timeout)
            wall = time.perf_counter() - t0
            if code is None:
                self.stop()     # before reading stderr: nothing more is written to it
            err_tail = tail(self.folder / "stderr.txt")
            if keep_dir:
                for name in ("stdout.txt", "stderr.txt"):
                    shutil.copyfile(self.folder / name, work / name)
            if code is None:
                return ChildResult("timeout", reason=f"timed out after {timeout:g} s (process "
                                   "group killed)", stderr_tail=err_tail, wall_s=wall)
            return _outcome(work, code, err_tail, wall)
        finally:
            if not keep_dir:
                shutil.rmtree(work, ignore_errors=True)

    def _send_and_wait(self, work: Path, timeout: float) -> int | None:
        """The job's exit status: the child's answer (0 or 1), or its exit code when it died
        (then its group is killed and it is reaped); None when the timeout passed."""
        try:
            self.proc.stdin.write((json.dumps(str(work)) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._exit_code()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.answers], [], [], left)
            if ready:
                chunk = os.read(self.answers, 64)
                if not chunk:       # EOF: the child died
                    return self._exit_code()
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return 0 if line.strip() == b"0" else 1

    def _exit_code(self) -> int:
        self.stop()
        code = self.proc.poll()
        return code if code is not None else -signal.SIGKILL

    def stop(self) -> None:
        """Kill the child's process group, reap it and close its pipes. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        _kill_group(self.proc)
        _live.pop(self.proc.pid, None)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        os.close(self.answers)

    def end(self) -> None:
        """stop, and remove the child's folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn(argv: list[str], **popen_kw) -> subprocess.Popen:
    """Start a child from one thread that lives as long as zoo. PR_SET_PDEATHSIG fires when
    the *thread* that started the child ends, not its process: a long-lived child started by
    a pool thread would be killed when that thread exits."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(1, thread_name_prefix="zoo-spawner")
    return _spawner.submit(subprocess.Popen, argv, **popen_kw).result()


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
    return ChildResult("ok", result=result, arrays=transport.load(work / transport.OUTPUTS),
                       stderr_tail=tail, wall_s=wall)


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


def start_group(argv: list[str], **popen_kw) -> subprocess.Popen:
    """Start a child as the leader of its own process group, registered so that a
    terminating signal (kill_children) ends it and everything it started. Pair with
    forget_group once it has been reaped."""
    popen = _spawn(argv, start_new_session=True, **popen_kw)
    _live[popen.pid] = popen
    return popen


def forget_group(popen: subprocess.Popen) -> None:
    _live.pop(popen.pid, None)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def tail(path: Path, n: int = STDERR_TAIL) -> str:
    """The last n lines of a log file (empty when it cannot be read)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])
