"""The one walk over network x engine x mode that `zoo verify` and `zoo bench` share.

Around its own work (verify's comparison, bench's timing) each command does the same: load
and prepare each network once, build each engine's native files once per network and reuse
them for every mode and thread count, and settle the cases that cannot run with the same
reasons: the engine is not installed, it has no training step, the network has no loss layer
to train, the engine cannot express the network, or its build failed. Only a case with a
build reaches the command's `run` callback; every other case goes to its `settle` callback
with a status ("skipped" or "error") and the reason, and no child process is started for it.

A child process's typed result (zoo/isolation.py) becomes a case status in one place,
`settle_child`: unsupported and engine-unavailable are `skipped` with the reason; error,
timeout and crashed are `error` with the reason. The engine's own declaration of what it
cannot express (`Engine.unsupported`) is asked before anything is built.

How the cases' children run (`walk`'s `jobs`):
  ONE_SHOT (0, the default: bench)  a fresh child per job, one case at a time (bench's
                      repeats measure the spread between processes, and timings must not
                      overlap). ZOO_ONE_SHOT=1 in the environment forces it whatever `jobs`
                      says: the old path that benchmarks/verify_speed.py compares against.
  N >= 1, or None     one zoo.isolation.WorkerPool for the walk: every `isolation.run` made
                      while a case runs goes to the long-lived Worker of its (engine, threads,
                      device); the engines' cases run side by side, at most N at once (None:
                      one per core), and a job that names no thread count gets the child's
                      share of the cores (isolation.plan_parallelism). While one network's
                      cases run the next is prepared (at most two are held). The walk has
                      WALK_SPARE threads more than the pool runs jobs at once: while one case
                      compares in this process or waits for what its network computes once
                      (verify's oracle), another case's job keeps a child busy. (A thread per
                      engine of each held network took the whole zoo's parent past 7 GB and
                      the machine out of memory: each case holds its arrays here.)
                      `ahead(prepared, cases)`, when given, is started as each network opens,
                      before its engines' cases, with the cases that will not be skipped
                      before their build (verify: the float64 oracle, which the training
                      cases would otherwise wait for); the one-at-a-time walk never calls it.
                      A crash, hang or timeout is still that job's typed result and the
                      child is replaced; results come back in the same order, and `progress`
                      is called once per case, from the walk's threads, one call at a time.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from . import cache, engines, isolation
from . import net as N
from .builds import Build, BuildFailed, build, one_off
from .errors import ZooError

TRAIN = "train"                 # the mode that takes training steps, in verify and in bench
ONE_SHOT = 0                    # walk's jobs: no pool, a fresh child per job, one case at a time
ONE_SHOT_VAR = "ZOO_ONE_SHOT"   # "1": every walk takes the ONE_SHOT path (the old path, measured)
NETWORKS_HELD = 2               # networks prepared at once by a pooled walk: one runs, one waits
WALK_SPARE = 1                  # a pooled walk's threads beyond the pool's jobs (and `ahead`s)

P = TypeVar("P")                # what a command prepares once per network
R = TypeVar("R")                # one case's result, in the command's own form


@dataclass(frozen=True)
class Case:
    network: str
    engine: str
    mode: str                   # verify: forward | train; bench: train | infer
    threads: int | None = None
    started: float = field(default=0.0, compare=False)   # perf_counter() before its build


@dataclass(frozen=True)
class Settled:
    """A case that ends without the command's own work: why, and how it counts."""
    status: str                 # "skipped" or "error"
    reason: str


# the isolation.ChildResult statuses that skip a case, and how its reason starts; every other
# status that is not "ok" (error, timeout, crashed) is an error
_SKIPPING = {"unsupported": "unsupported: ", "engine-unavailable": "unavailable: "}


def settle_child(status: str, reason: str, stderr_tail: str = "", doing: str = "") -> Settled:
    """The case status of a child that did not succeed; `doing` starts an error's reason (a
    skip is not a failure of anything). A timed-out child says what it was last doing (a
    crashed one's reason already has its last meaningful stderr line: zoo/isolation.py)."""
    if status in _SKIPPING:
        return Settled("skipped", f"{_SKIPPING[status]}{reason}")
    last = isolation.meaningful_line(stderr_tail) if status == "timeout" else ""
    return Settled("error", f"{doing}{reason}" + (f" | stderr: {last}" if last else ""))


def child_failed(res) -> Settled:
    """settle_child for an isolation.ChildResult that is not ok."""
    return settle_child(res.status, res.reason, res.stderr_tail)


def skip_reason(net: N.Net, eng: engines.Engine, mode: str, inference_mode: str,
                dtype: str = "float32") -> str | None:
    """Why this case is skipped before anything is built, or None. The network's own reason
    comes first: it is the same on every engine, installed or not."""
    if mode == TRAIN and not net.loss_layers:
        return f"the network has no loss layer; use --mode {inference_mode}"
    if (why := eng.missing()) is not None:
        return f"not installed: {why}"
    if (why := eng.dtype_refusal(dtype)) is not None:
        return why
    if mode == TRAIN and not eng.train:
        return eng.note or f"{eng.name} has no training step"
    if (why := eng.unsupported(net)) is not None:
        return f"unsupported: {why}"
    return None


def obtain_build(net: N.Net, engine: str, seed: int, timeout: float,
                 leases: contextlib.ExitStack, options: dict | None = None) -> Build | Settled:
    """The one place a case gets its engine's native files: zoo/builds.py's bounded cache
    (transient for a one-off spec such as an import), leased in `leases` so that it is not
    evicted while its cases use it. `options`: the build's (e.g. {"dtype": "float64"})."""
    try:
        art = build(net, engine, seed=seed, options=options or None, timeout=timeout,
                    transient=one_off(net))
        leases.enter_context(art.lease())
        return art
    except BuildFailed as e:
        return settle_child(e.status, str(e), e.stderr_tail, doing="build failed: ")
    except ZooError as e:       # EngineUnavailable, no space, evicted before the lease
        return Settled("error", f"build failed: {e}")


class _NativeFiles(contextlib.AbstractContextManager):
    """One engine's build of one network: made when a case first needs it, then reused by
    every mode and thread count (a failed build too: each of its cases says why). Leased
    while in use; a transient build is removed after its last case."""

    def __init__(self, net: N.Net, engine: str, seed: int, timeout: float, options: dict):
        self.net, self.engine, self.seed, self.timeout = net, engine, seed, timeout
        self.options = options
        self._got: Build | Settled | None = None
        self._leases = contextlib.ExitStack()

    def get(self) -> Build | Settled:
        if self._got is None:
            self._got = obtain_build(self.net, self.engine, self.seed, self.timeout, self._leases,
                                     self.options)
        return self._got

    def __exit__(self, *exc) -> None:
        self._leases.close()
        if isinstance(self._got, Build) and self._got.transient:
            cache.discard_transient([self._got])


def walk(names: list | None, engine_names: list[str] | None, modes: list[str], *,
         prepare: Callable[[N.Net], P],
         run: Callable[[Case, P, Build], R],
         settle: Callable[[Case, P, Settled], R],
         inference_mode: str,
         threads: list[int | None] = (None,),
         seed: int = 0, timeout: float = 900.0,
         progress: Callable[[R], None] | None = None,
         jobs: int | None = ONE_SHOT, build_options: dict | None = None,
         started: Callable[[Case], None] | None = None,
         ahead: Callable[[P, list[Case]], None] | None = None) -> list[R]:
    """Every case of names (default: the zoo) x engines (default: all) x modes x threads,
    in that order; `inference_mode` is the mode to suggest for a network without a loss.
    jobs: how the children run (the module's docstring); call it from the main thread.
    build_options: every build's (e.g. {"dtype": "float64"}: an engine that declares no
    float64 is skipped with its reason before anything is built). `started(case)` is called
    as each case begins and `progress(result)` as it ends (one call at a time).
    ahead(prepared, cases): work a pooled walk starts as each network opens (the docstring)."""
    engs = [engines.get(e) for e in engine_names] if engine_names else list(engines.ENGINES.values())
    walk_one = _EngineWalk(engs, modes, threads, run, settle, inference_mode, seed, timeout,
                           _serialised(progress), dict(build_options or {}), _serialised(started))
    networks = names or N.S.zoo_names()
    if jobs == ONE_SHOT or os.environ.get(ONE_SHOT_VAR) == "1":
        return _walk_one_at_a_time(networks, prepare, walk_one)
    jobs, per_child = isolation.plan_parallelism(jobs)
    with isolation.WorkerPool(jobs, threads=per_child, max_rss=_child_memory_share(len(engs))) as pool, \
            isolation.routed_to(pool):
        return _walk_side_by_side(networks, prepare, walk_one, pool, ahead)


def _load(name) -> N.Net:
    return name if isinstance(name, N.Net) else N.load(name)


def _prepared(net: N.Net, prepare, per_network: contextlib.ExitStack):
    prepared = prepare(net)
    if isinstance(prepared, contextlib.AbstractContextManager):   # e.g. verify's oracle build
        per_network.enter_context(prepared)
    return prepared


def _walk_one_at_a_time(networks, prepare, walk_one) -> list:
    results = []
    for name in networks:
        net = _load(name)
        with contextlib.ExitStack() as per_network:
            prepared = _prepared(net, prepare, per_network)
            for eng in walk_one.engs:
                results += walk_one(net, prepared, eng)
    return results


@dataclass
class _OpenNetwork:
    """A network whose engines' cases were handed to the walk's threads."""
    resources: contextlib.ExitStack
    futures: list[Future] = field(default_factory=list)   # one per engine, in their order
    ahead: Future | None = None                           # the walk's `ahead`, when given

    @property
    def tasks(self) -> list[Future]:
        return self.futures + ([self.ahead] if self.ahead is not None else [])


def _walk_side_by_side(networks, prepare, walk_one, pool: isolation.WorkerPool, ahead) -> list:
    """Each network's engines (and its `ahead`) as tasks of the walk's threads (each in a
    copy of this context, so that their isolation.run goes to the pool, which runs pool.jobs
    of their jobs at once); the next network is prepared here meanwhile. On any failure no
    new case starts and every child is ended before the held networks' resources (build
    leases, transient builds) are released."""
    results: list = []
    held: deque[_OpenNetwork] = deque()
    executor = ThreadPoolExecutor(pool.jobs + WALK_SPARE + (NETWORKS_HELD if ahead else 0),
                                  thread_name_prefix="zoo-walk")
    try:
        for name in networks:
            opened = _open(name, prepare, walk_one, executor, held, ahead)
            held.append(opened)
            while len(held) >= NETWORKS_HELD:
                results += _finish(held[0])
                held.popleft()
        while held:
            results += _finish(held[0])
            held.popleft()
        return results
    finally:
        if held:                                # a failure, or zoo is stopping
            walk_one.stop.set()
            for opened in held:
                for f in opened.tasks:
                    f.cancel()
            pool.close()                        # jobs in flight end now
        executor.shutdown(wait=True)
        for opened in held:
            opened.resources.close()


def _open(name, prepare, walk_one, executor, held, ahead) -> _OpenNetwork:
    """Load and prepare one network and hand its engines to the executor. A network that
    cannot be loaded or prepared fails where the one-at-a-time walk would: after the cases
    of the networks before it have run and been reported."""
    resources = contextlib.ExitStack()
    try:
        net = _load(name)
        prepared = _prepared(net, prepare, resources)
    except BaseException as e:
        resources.close()
        if isinstance(e, Exception):        # not Terminated or Ctrl-C: those stop at once
            while held:
                _finish(held[0])
                held.popleft()
        raise
    early = None
    if ahead is not None:
        early = executor.submit(contextvars.copy_context().run, ahead, prepared,
                                walk_one.runnable(net))
    futures = [executor.submit(contextvars.copy_context().run, walk_one, net, prepared, eng)
               for eng in walk_one.engs]
    return _OpenNetwork(resources, futures, early)


def _finish(opened: _OpenNetwork) -> list:
    """The network's results in the engines' order, once every engine is done (none still
    uses its resources, nor its `ahead`); then its resources are released. The first
    exception of a task is raised at once (the caller stops the others, then releases the
    resources)."""
    wait(opened.tasks, return_when=FIRST_EXCEPTION)
    for f in opened.tasks:
        if f.done() and f.exception() is not None:
            raise f.exception()
    results = [r for f in opened.futures for r in f.result()]
    opened.resources.close()
    return results


class _EngineWalk:
    """One engine's cases of one network, mode by mode and thread count by thread count: its
    build made once, when first needed. Called from the walk's threads."""

    def __init__(self, engs, modes, threads, run, settle, inference_mode, seed, timeout, progress,
                 build_options: dict, started=None):
        self.engs, self.modes, self.threads = engs, modes, threads
        self.run, self.settle, self.inference_mode = run, settle, inference_mode
        self.seed, self.timeout, self.progress = seed, timeout, progress
        self.build_options, self.started = build_options, started
        self.dtype = build_options.get("dtype", "float32")
        self.stop = threading.Event()

    def runnable(self, net: N.Net) -> list[Case]:
        """The network's cases that are not skipped before their build."""
        return [Case(net.name, eng.name, mode, t) for eng in self.engs for mode in self.modes
                for t in self.threads
                if skip_reason(net, eng, mode, self.inference_mode, self.dtype) is None]

    def __call__(self, net: N.Net, prepared, eng: engines.Engine) -> list:
        try:
            return self._cases(net, prepared, eng)
        except BaseException:
            self.stop.set()     # at once, before this thread takes another engine's cases
            raise

    def _cases(self, net: N.Net, prepared, eng: engines.Engine) -> list:
        results = []
        with _NativeFiles(net, eng.name, self.seed, self.timeout, self.build_options) as native:
            for mode in self.modes:
                for t in self.threads:
                    if self.stop.is_set():
                        raise ZooError("the walk was stopped")
                    case = Case(net.name, eng.name, mode, t, time.perf_counter())
                    if self.started:
                        self.started(case)
                    result = self._one(case, net, prepared, eng, native)
                    results.append(result)
                    if self.progress:
                        self.progress(result)
        return results

    def _one(self, case: Case, net: N.Net, prepared, eng, native: _NativeFiles):
        if (why := skip_reason(net, eng, case.mode, self.inference_mode, self.dtype)) is not None:
            return self.settle(case, prepared, Settled("skipped", why))
        if isinstance(got := native.get(), Settled):
            return self.settle(case, prepared, got)
        return self.run(case, prepared, got)


def _serialised(progress: Callable | None) -> Callable | None:
    """A callback (progress, started), called by one thread at a time."""
    if progress is None:
        return None
    lock = threading.Lock()

    def report(result) -> None:
        with lock:
            progress(result)
    return report


PARENT_SHARES = 2     # the parent's part of the machine's memory, in children's shares


def _child_memory_share(children: int) -> int | None:
    """The resident memory past which a pooled child is replaced: an equal share of the
    machine's memory among the engines' children kept at once and this process (which holds
    PARENT_SHARES: a whole-zoo verify's parent peaks at 7-8.5 GB of 23.5), but at least 2 GiB
    (an engine and a big network's runner; a job needs what it needs, the cap only ends
    hoarding). Measured on the whole zoo with a share of total / children: FCN-S's children
    (3.5-4.6 GB each, four of them idle with its runners kept) and the parent took the 23.5 GB
    machine out of memory."""
    total = isolation.memory_bytes()
    if total is None:
        return None
    return max(2 << 30, total // (max(1, children) + PARENT_SHARES))


__all__ = ["Case", "ONE_SHOT", "ONE_SHOT_VAR", "Settled", "TRAIN", "child_failed", "obtain_build",
           "settle_child", "skip_reason", "walk"]
