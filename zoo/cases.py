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
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from . import cache, engines, isolation
from . import net as N
from .builds import Build, BuildFailed, build, one_off
from .errors import ZooError

TRAIN = "train"                 # the mode that takes training steps, in verify and in bench

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


def skip_reason(net: N.Net, eng: engines.Engine, mode: str, inference_mode: str) -> str | None:
    """Why this case is skipped before anything is built, or None. The network's own reason
    comes first: it is the same on every engine, installed or not."""
    if mode == TRAIN and not net.loss_layers:
        return f"the network has no loss layer; use --mode {inference_mode}"
    if (why := eng.missing()) is not None:
        return f"not installed: {why}"
    if mode == TRAIN and not eng.train:
        return eng.note or f"{eng.name} has no training step"
    if (why := eng.unsupported(net)) is not None:
        return f"unsupported: {why}"
    return None


def obtain_build(net: N.Net, engine: str, seed: int, timeout: float,
                 leases: contextlib.ExitStack) -> Build | Settled:
    """The one place a case gets its engine's native files: zoo/builds.py's bounded cache
    (transient for a one-off spec such as an import), leased in `leases` so that it is not
    evicted while its cases use it."""
    try:
        art = build(net, engine, seed=seed, timeout=timeout, transient=one_off(net))
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

    def __init__(self, net: N.Net, engine: str, seed: int, timeout: float):
        self.net, self.engine, self.seed, self.timeout = net, engine, seed, timeout
        self._got: Build | Settled | None = None
        self._leases = contextlib.ExitStack()

    def get(self) -> Build | Settled:
        if self._got is None:
            self._got = obtain_build(self.net, self.engine, self.seed, self.timeout, self._leases)
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
         progress: Callable[[R], None] | None = None) -> list[R]:
    """Every case of names (default: the zoo) x engines (default: all) x modes x threads,
    in that order; `inference_mode` is the mode to suggest for a network without a loss."""
    engs = [engines.get(e) for e in engine_names] if engine_names else list(engines.ENGINES.values())
    results = []
    for name in names or N.S.zoo_names():
        net = name if isinstance(name, N.Net) else N.load(name)
        with contextlib.ExitStack() as per_network:
            prepared = prepare(net)
            if isinstance(prepared, contextlib.AbstractContextManager):   # e.g. verify's oracle build
                per_network.enter_context(prepared)
            results += _walk_engines(net, prepared, engs, modes, threads, run, settle,
                                     inference_mode, seed, timeout, progress)
    return results


def _walk_engines(net, prepared, engs, modes, threads, run, settle, inference_mode, seed,
                  timeout, progress) -> list:
    """One network's cases, engine by engine: each engine's build made once, when needed."""
    results = []
    for eng in engs:
        with _NativeFiles(net, eng.name, seed, timeout) as native:
            for mode in modes:
                for t in threads:
                    case = Case(net.name, eng.name, mode, t, time.perf_counter())
                    if (why := skip_reason(net, eng, mode, inference_mode)) is not None:
                        result = settle(case, prepared, Settled("skipped", why))
                    elif isinstance(got := native.get(), Settled):
                        result = settle(case, prepared, got)
                    else:
                        result = run(case, prepared, got)
                    results.append(result)
                    if progress:
                        progress(result)
    return results


__all__ = ["Case", "Settled", "TRAIN", "child_failed", "obtain_build", "settle_child",
           "skip_reason", "walk"]
