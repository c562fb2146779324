"""Data-parallel training through each engine's own distributed runtime: `zoo bench NAME
--workers N` and `zoo verify NAME --workers N` (the parent's side; the workers are
runners/distributed/).

N workers per node, each its own process with its thread count set explicitly (default: the
node's cores shared equally; never an engine launcher's default, such as torchrun's
OMP_NUM_THREADS=1), launched and joined here with a timeout:
  torch       torch.distributed + DistributedDataParallel (gloo on CPU, NCCL on GPU), each
              worker started with the environment torch's elastic launcher sets
  tensorflow  MultiWorkerMirroredStrategy, one worker per process, the cluster in TF_CONFIG
  mxnet       KVStore dist_sync: on one node MXNet's own launcher (mxnet/tools/launch.py,
              local) starts the scheduler, server and workers; on several, each node starts
              its own with the environment that launcher sets (node 0 the scheduler)
  caffe       skipped on CPU: BVLC Caffe's data parallelism is multi-GPU only (NCCL)
  onnx, caffe-opencv  inference only: skipped for training
Several machines: `nodes` M, this machine's `node_rank` R and the `master` HOST:PORT (the
rendezvous: torch's TCP store, MXNet's scheduler; TensorFlow's workers listen on PORT+1+rank
on their node's host, `hosts`, default the master's host for every node). One machine:
everything on 127.0.0.1 with free ports.

Every process is the leader of its own process group, registered with zoo/isolation.py so
that SIGTERM, SIGINT (Ctrl-C) and SIGHUP kill them all (`signals_end_children`), as do a
worker's failure and the timeout; a SIGKILLed zoo cannot clean up, so every worker,
scheduler and server also dies with its parent (PR_SET_PDEATHSIG) and watches zoo's pid.

verify: one (two, see zoo/verifier.py) data-parallel SGD step(s), each worker holding its
share of the verify batch, against the float64 oracle's step on the whole batch (networks
without BatchNorm), within the training tolerance; and every worker's weights equal to worker
0's. BatchNorm: every engine here keeps per-worker batch statistics, so a network with
BatchNorm (one step) is compared with the mean of the oracle's steps on each worker's shard,
the matching single-process computation.

bench: strong scaling (the total batch fixed and split over the workers) or weak scaling
(the batch per worker fixed); per point samples/s, speed-up and efficiency against 1 worker,
the time per mini-batch, its split into compute (forward + backward), gradient exchange and
update (a separate pass with the phases run apart), peak RSS per worker.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import cases, compare, data, engines, isolation, transport, verifier
from . import net as N
from . import options as _options
from . import tolerances as T
from .errors import UsageError

DATA_PARALLEL = ("torch", "tensorflow", "mxnet")
INFERENCE_ONLY = ("onnx", "caffe-opencv")
CAFFE_CPU = "unsupported: Caffe's data parallelism is GPU-only (NCCL, caffe train -gpu)"
CAFFE_GPU = ("unsupported: zoo does not drive Caffe's multi-GPU training (caffe train -gpu "
             "0,1 needs a data layer; zoo's Caffe builds take Input blobs)")
SCALINGS = ("strong", "weak")
LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT = 600.0
COLLECTIVE_TIMEOUT = 300.0    # a worker waiting in a collective for one that died gives up
TEARDOWN_GRACE = 20.0         # after every result: time for the runtimes to shut down cleanly
ROOT_PID_VAR = "ZOO_DIST_ROOT_PID"


# --- the plan: who runs where -------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    workers: int              # on this node
    nodes: int
    node_rank: int
    master_host: str
    master_port: int
    hosts: tuple[str, ...]    # each node's address (TensorFlow's cluster)
    threads: int              # per worker

    @property
    def world(self) -> int:
        return self.workers * self.nodes

    def rank(self, local: int) -> int:
        return self.node_rank * self.workers + local

    def tf_addresses(self, free_ports: list[int] | None) -> list[str]:
        if free_ports is not None:         # one machine: free ports on loopback
            return [f"{LOOPBACK}:{p}" for p in free_ports]
        return [f"{self.hosts[r // self.workers]}:{self.master_port + 1 + r}" for r in range(self.world)]


def free_ports(n: int) -> list[int]:
    """n ports free on 127.0.0.1 now (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def parse_master(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--master {text!r}: expected HOST:PORT (e.g. 10.0.0.1:29500)")
    return host, int(port)


def plan(workers: int, nodes: int = 1, node_rank: int = 0, master: str | None = None,
         hosts: list[str] | None = None, threads: int | None = None) -> Plan:
    workers = _options.positive_int("workers", workers)
    nodes = _options.positive_int("nodes", nodes)
    threads = _options.positive_int("threads", threads)
    if isinstance(node_rank, bool) or not isinstance(node_rank, int) or not 0 <= node_rank < nodes:
        raise UsageError(f"--node-rank {node_rank!r}: expected 0..{nodes - 1} for --nodes {nodes}")
    if nodes > 1 and master is None:
        raise UsageError("--nodes > 1 needs --master HOST:PORT (the same on every node)")
    host, port = parse_master(master) if master is not None else (LOOPBACK, 0)
    hosts = tuple(hosts) if hosts else (host,) * nodes
    if len(hosts) != nodes:
        raise UsageError(f"hosts: {len(hosts)} given for {nodes} nodes")
    if nodes > 1 and port + workers * nodes >= 65536:
        raise UsageError(f"--master port {port}: the workers' ports PORT+1.. would pass 65535")
    if threads is None:     # explicit, always: the node's cores shared by its workers
        threads = max(1, isolation.usable_cores() // workers)
    return Plan(workers, nodes, node_rank, host, port, hosts, threads)


# --- launching ---------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict
    slot: int | None = None       # the worker slot whose result it writes; None: launcher/server


def _worker_argv(rundir: Path) -> list[str]:
    return [sys.executable, "-m", "zoo.runners.distributed", str(rundir)]


def _base_env(engine: str, p: Plan, device: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != isolation.PARENT_PID_VAR}
    env.update(engines.get(engine).environment(p.threads, device))
    env[ROOT_PID_VAR] = str(os.getpid())
    return env


def _torch_procs(rundir: Path, p: Plan, device: str) -> list[Proc]:
    """The environment torch's elastic launcher gives each worker (torchrun), the threads
    explicit."""
    port = p.master_port or free_ports(1)[0]
    procs = []
    for local in range(p.workers):
        env = _base_env("torch", p, device)
        env.update({"MASTER_ADDR": p.master_host, "MASTER_PORT": str(port),
                    "RANK": str(p.rank(local)), "WORLD_SIZE": str(p.world),
                    "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(p.workers),
                    "GROUP_RANK": str(p.node_rank), "GROUP_WORLD_SIZE": str(p.nodes),
                    "ROLE_RANK": str(p.rank(local)), "ROLE_WORLD_SIZE": str(p.world),
                    "ROLE_NAME": "default", "TORCHELASTIC_RUN_ID": "zoo",
                    "ZOO_DIST_SLOT": str(local)})
        if p.master_host == LOOPBACK:
            env["GLOO_SOCKET_IFNAME"] = "lo"      # gloo's own address: loopback too
        procs.append(Proc(f"worker-{local}", _worker_argv(rundir), env, local))
    return procs


def _tensorflow_procs(rundir: Path, p: Plan, device: str) -> list[Proc]:
    addresses = p.tf_addresses(free_ports(p.world) if p.nodes == 1 else None)
    procs = []
    for local in range(p.workers):
        env = _base_env("tensorflow", p, device)
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses},
                                       "task": {"type": "worker", "index": p.rank(local)}})
        env["ZOO_DIST_SLOT"] = str(local)
        procs.append(Proc(f"worker-{local}", _worker_argv(rundir), env, local))
    return procs


def _mxnet_procs(rundir: Path, p: Plan, device: str) -> list[Proc]:
    env = _base_env("mxnet", p, device)
    env.update({"DMLC_NODE_HOST": p.hosts[p.node_rank], "ZOO_DIST_SERVER_THREADS": "1"})
    if p.hosts[p.node_rank] == LOOPBACK:
        env["DMLC_INTERFACE"] = "lo"
    if p.nodes == 1:
        # MXNet's own launcher: scheduler, one server and the workers (DMLC_TASK_ID 0..N-1)
        command = " ".join(shlex.quote(a) for a in _worker_argv(rundir))
        argv = [sys.executable, "-m", "zoo.runners.distributed", "--mxnet-launch",
                "-n", str(p.workers), "-s", "1", "--launcher", "local", command]
        return [Proc("launcher", argv, env)]
    env.update({"DMLC_PS_ROOT_URI": p.master_host, "DMLC_PS_ROOT_PORT": str(p.master_port),
                "DMLC_NUM_WORKER": str(p.world), "DMLC_NUM_SERVER": str(p.nodes)})
    procs = []
    if p.node_rank == 0:
        procs.append(Proc("scheduler", _worker_argv(rundir), {**env, "DMLC_ROLE": "scheduler"}))
    procs.append(Proc("server", _worker_argv(rundir), {**env, "DMLC_ROLE": "server"}))
    for local in range(p.workers):
        procs.append(Proc(f"worker-{local}", _worker_argv(rundir),
                          {**env, "DMLC_ROLE": "worker", "DMLC_TASK_ID": str(local)}, local))
    return procs


PROCS = {"torch": _torch_procs, "tensorflow": _tensorflow_procs, "mxnet": _mxnet_procs}


@dataclass
class Outcome:
    status: str                                  # isolation.STATUSES
    results: dict[int, dict] = field(default_factory=dict)      # slot -> result.json
    arrays: dict[int, dict] = field(default_factory=dict)       # slot -> its outputs/ (zoo/transport.py)
    reason: str = ""
    stderr_tail: str = ""
    wall_s: float = 0.0
    traceback: str = ""                          # the first failing worker's, for debugging

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def launch(engine: str, p: Plan, job: dict, batch: dict[str, np.ndarray], *, device: str = "cpu",
           timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    """Run `job` on this node's workers of `engine` and wait for every result, an error, a
    crash or the timeout; then every process started here is ended. Never raises for the
    workers' failures (Terminated, on a signal, after killing them all)."""
    rundir = Path(tempfile.mkdtemp(prefix="zoo-dist-"))
    started: list[tuple[Proc, subprocess.Popen]] = []
    t0 = time.perf_counter()
    try:
        (rundir / "job.json").write_text(json.dumps({**job, "engine": engine, "device": device,
                                                     "threads": p.threads,
                                                     "collective_timeout": min(timeout, COLLECTIVE_TIMEOUT)}))
        transport.save(rundir / transport.INPUTS, batch)
        with isolation.signals_end_children():
            for proc in PROCS[engine](rundir, p, device):
                started.append((proc, _start(proc, rundir)))
            out = _wait(started, rundir, p.workers, timeout)
            if out.ok:
                _let_finish(started)
    finally:
        _end(started)
        out_tail = _tails(rundir, started)
        shutil.rmtree(rundir, ignore_errors=True)
    out.stderr_tail = out_tail
    if not out.ok and out.status in ("crashed", "timeout"):
        line = isolation.meaningful_line(out_tail)
        out.reason = f"{out.reason} | stderr: {line}" if line else out.reason
    out.wall_s = time.perf_counter() - t0
    return out


def _start(proc: Proc, rundir: Path) -> subprocess.Popen:
    logs = rundir / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{proc.name}.out", "ab") as out, open(logs / f"{proc.name}.err", "ab") as err:
        # SIGTERM/SIGINT/SIGHUP: kill_children ends its group
        return isolation.start_group(proc.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env=proc.env)


def _slot_files(rundir: Path, slot: int) -> tuple[Path, Path]:
    d = rundir / f"slot-{slot}"
    return d / "result.json", d / "error.json"


def _wait(started, rundir: Path, slots: int, timeout: float) -> Outcome:
    deadline = time.monotonic() + timeout
    while True:
        results, errors = {}, {}
        for s in range(slots):
            res, err = _slot_files(rundir, s)
            if err.exists():
                errors[s] = json.loads(err.read_text())
            elif res.exists():
                results[s] = json.loads(res.read_text())
        if errors:
            first = errors[min(errors)]
            kind = first.get("kind") if first.get("kind") in ("unsupported", "engine-unavailable") else "error"
            return Outcome(kind, reason=f"worker {min(errors)}: {first.get('reason', 'error')}",
                           traceback=first.get("traceback", ""))
        if len(results) == slots:
            return Outcome("ok", results, {s: _arrays(rundir, s) for s in results})
        for proc, popen in started:
            code = popen.poll()
            if code is not None and (code != 0 or proc.slot is None or proc.slot not in results):
                time.sleep(0.2)         # a result or error file written just before the exit
                if any(_slot_files(rundir, s)[0].exists() or _slot_files(rundir, s)[1].exists()
                       for s in range(slots) if s not in results):
                    break
                return Outcome("crashed", reason=f"{proc.name} {isolation.describe_exit(code)} "
                                                 "before every worker had a result")
        if time.monotonic() > deadline:
            return Outcome("timeout", reason=f"timed out after {timeout:g} s (every process group killed)")
        time.sleep(0.05)


def _arrays(rundir: Path, slot: int) -> dict:
    return transport.load(rundir / f"slot-{slot}" / transport.OUTPUTS)


def _let_finish(started) -> None:
    """Every worker has its result: give the runtimes a moment to shut down cleanly (a
    worker's exit ends MXNet's scheduler and servers)."""
    deadline = time.monotonic() + TEARDOWN_GRACE
    for _, popen in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=max(0.0, deadline - time.monotonic()))


def _end(started) -> None:
    """Kill every process group started here (idempotent for those already gone) and reap."""
    for _, popen in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, 9)
    for _, popen in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=10)
        isolation.forget_group(popen)


def _tails(rundir: Path, started) -> str:
    parts = []
    for proc, _ in started:
        text = isolation.tail(rundir / "logs" / f"{proc.name}.err")
        if text:
            parts.append(f"[{proc.name}]\n{text}")
    return "\n".join(parts)


# --- which engines train data-parallel --------------------------------------------------------

def skip_reason(net: N.Net, engine: str, device: str) -> str | None:
    eng = engines.get(engine)
    if engine == "caffe":
        if (why := eng.missing()) is not None:
            return f"not installed: {why}"
        return CAFFE_CPU if device == "cpu" else CAFFE_GPU
    if engine in INFERENCE_ONLY or not eng.train:
        return f"inference only: {eng.note or engine + ' has no training step'}"
    if engine not in DATA_PARALLEL:
        return f"unsupported: zoo has no data-parallel runtime for {engine}"
    return cases.skip_reason(net, eng, cases.TRAIN, "forward")


def _outcome_settled(out: Outcome) -> cases.Settled:
    return cases.settle_child(out.status, out.reason, out.stderr_tail)


# --- verify ------------------------------------------------------------------------------------

@dataclass
class DistCaseResult(verifier.CaseResult):
    workers: int = 0              # in all (every node)
    nodes: int = 1
    batch: int = 0
    batchnorm: str = ""           # how BatchNorm's statistics were computed, when it has one

    def to_dict(self) -> dict:
        return asdict(self)


def verify(names: list, engines_: list[str] | None = None, workers: int = 2, batch: int | None = None,
           nodes: int = 1, node_rank: int = 0, master: str | None = None, hosts: list[str] | None = None,
           threads: int | None = None, device: str = "cpu", seed: int = 0,
           timeout: float = DEFAULT_TIMEOUT, fault: str | None = None,
           progress: Callable | None = None) -> list[DistCaseResult]:
    """The data-parallel training step of each network on each engine against the
    single-process float64 oracle (see the module docstring). `fault` (tests only: honoured
    by the workers only with ZOO_TEST_FAULTS=1) builds a deliberate error into the step."""
    p = plan(workers, nodes, node_rank, master, hosts, threads)
    engines_ = _options.engine_names(engines_)
    device = _options.device(device)
    timeout = _options.timeout(timeout)
    batch = _options.positive_int("batch", batch) or max(verifier.DEFAULT_BATCH, p.world)
    if batch % p.world:
        raise UsageError(f"--batch {batch}: verify splits the batch equally over {p.world} workers; "
                         f"use a multiple of {p.world}")
    results = []
    for name in names or []:
        net = name if isinstance(name, N.Net) else N.load(name)
        with verifier._prepare(net, batch, seed) as prob:
            for engine in engines_:
                r = _verify_case(prob, engine, p, batch, device, seed, timeout, fault)
                results.append(r)
                if progress:
                    progress(r)
    return results


def _verify_case(prob, engine, p: Plan, batch, device, seed, timeout, fault) -> DistCaseResult:
    started = time.perf_counter()
    case = DistCaseResult(prob.net.name, engine, "train", "error", workers=p.world, nodes=p.nodes,
                          batch=batch, atol=T.FORWARD.atol, rtol=T.FORWARD.rtol,
                          judge="elementwise: atol + rtol |ref|")
    try:
        with contextlib.ExitStack() as leases:
            if (why := skip_reason(prob.net, engine, device)) is not None:
                case.status, case.reason = "skipped", why
                return case
            art = cases.obtain_build(prob.net, engine, seed, timeout, leases)
            if isinstance(art, cases.Settled):
                case.status, case.reason = art.status, art.reason
                return case
            steps = verifier.train_steps(prob.net)
            job = {"action": "verify", "artifact": str(art.path), "steps": steps,
                   "per_worker": batch // p.world, "replicate": False}
            if fault:
                job["fault"] = fault
            out = launch(engine, p, job, prob.inputs, device=device, timeout=timeout)
            if not out.ok:
                settled = _outcome_settled(out)
                case.status, case.reason = settled.status, settled.reason
                return case
            _judge(prob, case, out, p, steps, seed, timeout)
            return case
    finally:
        case.seconds = time.perf_counter() - started


def _has_batchnorm(net: N.Net) -> bool:
    return any(l.type == "BatchNorm" for l in net.layers)


def _judge(prob, case: DistCaseResult, out: Outcome, p: Plan, steps: int, seed, timeout) -> None:
    oracle = verifier._oracle(prob, seed, timeout)
    if "error" in oracle:
        case.status, case.reason = "error", oracle["error"]
        return
    if _has_batchnorm(prob.net):
        case.batchnorm = out.results[0].get("batchnorm", "per-worker batch statistics")
        oracle = _shardwise_oracle(prob, oracle, p.world, steps, timeout)
        if "error" in oracle:
            case.status, case.reason = "error", oracle["error"]
            return
        case.tolerance_source = ("BatchNorm with per-worker statistics: against the mean of the "
                                 "float64 oracle's step on each worker's shard")
    # the data-parallel loss of a step: the mean of the workers' shard losses (this node's
    # workers; with several nodes every node checks its own against the whole batch's, so
    # only a single node compares the mean)
    losses = np.mean([r["losses"] for r in out.results.values()], axis=0) if p.nodes == 1 else None
    diffs = []
    if losses is not None:
        diffs += [compare.allclose(f"loss[step {i + 1}]", got, want, T.FORWARD)
                  for i, (got, want) in enumerate(zip(losses, oracle["losses"]))]
    rtol_update, source = T.train_update_rtol(case.engine, prob.net.name)
    rank0 = min(out.arrays, key=lambda s: out.results[s]["rank"])
    updates = verifier._update_diffs(prob, out.arrays[rank0], oracle, rtol_update, steps)
    if not all(d.ok for d in updates) and all(d.ok for d in diffs):
        # only updates are off: can this point resolve rtol_update at all? (verifier's rule)
        probe = _conditioning(prob, oracle, steps, timeout)
        if "error" in probe:
            case.tolerance_source += f"; conditioning probe failed: {probe['error']}"
        elif T.CONDITIONING_MARGIN * probe["S"] > rtol_update:
            rtol_update = T.CONDITIONING_MARGIN * probe["S"]
            case.tolerance_source = "; ".join(filter(None, [case.tolerance_source, (
                f"rtol_update {rtol_update:.3g}: ill-conditioned point: float32 rounding at layer "
                f"boundaries moves the float64 oracle's update by {probe['S']:.3g} of a layer's "
                f"largest update ({probe['where']}; zoo/tolerances.py)")]))
            updates = verifier._update_diffs(prob, out.arrays[rank0], oracle, rtol_update, steps)
    diffs += updates + _synchronised(prob, out, rank0)
    verifier._summarise(case, diffs)
    if case.status == "fail":
        bad = next(d for d in diffs if not d.ok)
        case.reason = f"{bad.name}: {bad.reason or f'{bad.worst_ratio:.3g}x the tolerance'}"


def _synchronised(prob, out: Outcome, rank0: int) -> list[compare.Diff]:
    """Every worker ends with worker 0's parameters (one synchronous step applies the same
    averaged gradient to the same weights): exactly, since they computed the same update.
    Buffers are not parameters: BatchNorm's running statistics are each worker's own (torch
    DDP broadcasts rank 0's at the next forward; Keras and MXNet keep them per replica)."""
    params = [k for k, ws in prob.net.weight_specs().items() if ws.kind == "param"]
    diffs = []
    for slot, arrays in out.arrays.items():
        if slot == rank0:
            continue
        worst = max(float(np.max(np.abs(arrays[k].astype(np.float64) - out.arrays[rank0][k])))
                    for k in params if k in out.arrays[rank0])
        name = f"worker {out.results[slot]['rank']} vs worker {out.results[rank0]['rank']}"
        diffs.append(compare.Diff(name, worst == 0.0, worst, worst, float("inf") if worst else 0.0,
                                  "" if worst == 0.0 else "the workers' weights differ after the step"))
    return diffs


def _shardwise_oracle(prob, oracle: dict, world: int, steps: int, timeout) -> dict:
    """The float64 oracle's step on each worker's shard (its own BatchNorm statistics),
    averaged: with one SGD step from zero momentum, w - lr (mean of the shards' g + wd w)
    is exactly what the data-parallel step computes."""
    if steps != 1:
        return {"error": "a BatchNorm network's data-parallel check needs a single step"}
    per = next(iter(prob.inputs.values())).shape[0] // world
    weights, losses = [], []
    for r in range(world):
        shard = {k: v[r * per:(r + 1) * per] for k, v in prob.inputs.items()}
        res = isolation.run(verifier.ORACLE_ENGINE, "train", {"artifact": oracle["artifact"], "steps": 1},
                            shard, threads=None, device="cpu", timeout=timeout)
        if not res.ok:
            return {"error": f"the training oracle failed on shard {r}: {res.reason}"}
        weights.append(res.arrays)
        losses.append(res.result["losses"])
    mean = {k: np.mean([w[k] for w in weights], axis=0) for k in weights[0]}
    shards = [({k: v[r * per:(r + 1) * per] for k, v in prob.inputs.items()}, w)
              for r, w in enumerate(weights)]
    return {"losses": list(np.mean(losses, axis=0)), "weights": mean, "artifact": oracle["artifact"],
            "shards": shards}


def _conditioning(prob, oracle: dict, steps: int, timeout) -> dict:
    """The verifier's conditioning probe for a data-parallel step: on the whole batch, or,
    with per-worker BatchNorm statistics, on each worker's shard against that shard's oracle
    step (the largest S of the shards: a rounding decision in one shard moves the mean update
    by its share, so this does not understate the point's conditioning)."""
    if "shards" not in oracle:
        return verifier._conditioning(prob, oracle, steps, timeout)
    worst = {"S": 0.0, "where": ""}
    for r, (shard, shard_weights) in enumerate(oracle["shards"]):
        res = verifier.probe(prob, oracle["artifact"], shard, {"weights": shard_weights}, steps,
                             timeout, where=f"shard {r}, ")
        if "error" in res or res["S"] > worst["S"]:
            worst = res
        if "error" in res:
            break
    return worst


# --- bench -------------------------------------------------------------------------------------

KEYS = ["network", "engine", "device", "scaling", "workers", "nodes", "threads", "batch",
        "batch_per_worker", "status", "median_s", "samples_per_s", "speedup", "efficiency",
        "compute_s", "exchange_s", "update_s", "peak_rss_mb", "peak_rss_mb_per_worker", "reason"]


def bench(names: list, engines_: list[str] | None = None, workers=(1, 2), scaling: str = "strong",
          threads: int | None = 1, batch: int | None = None, warmup: int = 2, iters: int = 5,
          nodes: int = 1, node_rank: int = 0, master: str | None = None, hosts: list[str] | None = None,
          device: str = "cpu", seed: int = 0, timeout: float = DEFAULT_TIMEOUT,
          progress: Callable | None = None) -> list[dict]:
    """Time the data-parallel training iteration at each worker count (per node) and give
    speed-up and efficiency against the 1-worker point of the same network and engine."""
    counts = _options.positive_ints("workers", workers)
    scaling = _options.mode(scaling, SCALINGS, "scaling")
    engines_ = _options.engine_names(engines_)
    device = _options.device(device)
    timeout = _options.timeout(timeout)
    batch = _options.positive_int("batch", batch)
    warmup = _options.non_negative_int("warmup", warmup)
    iters = _options.positive_int("iters", iters)
    plans = [plan(n, nodes, node_rank, master, hosts, threads) for n in counts]
    from .benchmark import default_batch, environment
    env = environment()
    rows = []
    for name in names or []:
        net = name if isinstance(name, N.Net) else N.load(name)
        total = batch or default_batch(net, device)
        for engine in engines_:
            for p in plans:
                row = _bench_point(net, engine, p, scaling, total, device, warmup, iters, seed, timeout)
                row["environment"] = env
                rows.append(row)
                if progress:
                    progress(row)
    _scaling_figures(rows)
    return rows


def _split(total: int, p: Plan, scaling: str) -> tuple[int, int]:
    """(the batch of one iteration over all workers, each worker's share)."""
    if scaling == "weak":
        return total * p.world, total
    if total % p.world:
        raise UsageError(f"strong scaling: batch {total} does not split equally over {p.world} workers")
    return total, total // p.world


def _bench_point(net, engine, p: Plan, scaling, total, device, warmup, iters, seed, timeout) -> dict:
    whole, per = _split(total, p, scaling)
    row = {"network": net.name, "engine": engine, "device": device, "scaling": scaling,
           "workers": p.world, "nodes": p.nodes, "threads": p.threads, "batch": whole,
           "batch_per_worker": per, "status": "ok", "reason": ""}
    if (why := skip_reason(net, engine, device)) is not None:
        row.update(status="skipped", reason=why)
        return row
    with contextlib.ExitStack() as leases:
        art = cases.obtain_build(net, engine, seed, timeout, leases)
        if isinstance(art, cases.Settled):
            row.update(status=art.status, reason=art.reason)
            return row
        # strong: the whole batch, each worker its rows; weak: every worker the same batch
        sent = data.make(net.with_batch(per if scaling == "weak" else whole), seed)
        job = {"action": "bench", "artifact": str(art.path), "per_worker": per,
               "replicate": scaling == "weak", "warmup": warmup, "iters": iters}
        out = launch(engine, p, job, sent, device=device, timeout=timeout)
    if not out.ok:
        settled = _outcome_settled(out)
        row.update(status=settled.status, reason=settled.reason)
        return row
    res = [out.results[s] for s in sorted(out.results)]
    median = max(r["median_s"] for r in res)      # a synchronous step lasts as long as its slowest worker
    row.update({"median_s": median, "samples_per_s": whole / median,
                "peak_rss_mb_per_worker": [r["peak_rss_mb"] for r in res],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in res),
                "versions": res[0].get("versions", {})})
    for phase in ("compute_s", "exchange_s", "update_s"):
        if all(phase in r for r in res):
            row[phase] = max(r[phase] for r in res)
    return row


def _scaling_figures(rows: list[dict]) -> None:
    """speed-up = samples/s at N workers / samples/s at 1 worker (same network, engine,
    scaling); efficiency = speed-up / N (strong and weak alike, in throughput terms)."""
    base = {(r["network"], r["engine"], r["scaling"]): r["samples_per_s"]
            for r in rows if r["status"] == "ok" and r["workers"] == 1}
    for r in rows:
        b = base.get((r["network"], r["engine"], r["scaling"]))
        if r["status"] == "ok" and b:
            r["speedup"] = r["samples_per_s"] / b
            r["efficiency"] = r["speedup"] / r["workers"]


def write_json(rows: list, path) -> None:
    _atomic_text(path, json.dumps([r.to_dict() if hasattr(r, "to_dict") else r for r in rows], indent=1))


def write_csv(rows: list[dict], path) -> None:
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=KEYS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    _atomic_text(path, buf.getvalue())


def _atomic_text(path, text: str) -> None:
    """Written beside the target and renamed: never half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def plot(rows: list[dict], path) -> list[str]:
    """The survey's scaling figure: per network, samples/s against workers for each engine
    (with the ideal linear line from 1 worker), and scaling efficiency beneath. Returns the
    networks drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError(f"--plot needs matplotlib (pip install 'zoo[plot]'): {e}") from None
    ok = [r for r in rows if r["status"] == "ok"]
    nets = list(dict.fromkeys(r["network"] for r in ok))
    if not nets:
        raise UsageError("--plot: no point was measured")
    fig, axes = plt.subplots(2, len(nets), figsize=(4.5 * len(nets), 7), squeeze=False)
    for j, name in enumerate(nets):
        top, bottom = axes[0][j], axes[1][j]
        for engine in dict.fromkeys(r["engine"] for r in ok if r["network"] == name):
            pts = sorted((r for r in ok if r["network"] == name and r["engine"] == engine),
                         key=lambda r: r["workers"])
            xs = [r["workers"] for r in pts]
            line, = top.plot(xs, [r["samples_per_s"] for r in pts], "o-", label=engine)
            base = next((r["samples_per_s"] for r in pts if r["workers"] == 1), None)
            if base:
                top.plot(xs, [base * x for x in xs], ":", color=line.get_color())
            eff = [(r["workers"], r["efficiency"]) for r in pts if "efficiency" in r]
            if eff:
                bottom.plot(*zip(*eff), "o-", color=line.get_color(), label=engine)
        scaling = ok[0]["scaling"]
        top.set_title(f"{name} ({scaling} scaling)")
        top.set_ylabel("samples/s (dotted: linear)")
        bottom.set_ylabel("scaling efficiency")
        bottom.set_xlabel("workers")
        bottom.set_ylim(0, 1.2)
        top.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent or ".")
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return nets
