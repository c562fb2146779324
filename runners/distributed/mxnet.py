"""MXNet data parallelism: the KVStore `dist_sync`, with its scheduler and server processes.

On one machine the parent starts MXNet's own launcher, mxnet/tools/launch.py with the local
launcher (`launch` below), which starts the scheduler, the servers and the workers, every one
running `python -m zoo.runners.distributed RUNDIR` with DMLC_ROLE set. On several machines
each node's zoo starts its own processes with the environment that launcher gives them
(DMLC_PS_ROOT_URI/PORT, DMLC_NUM_WORKER/SERVER, DMLC_ROLE), node 0 the scheduler; MXNet's
`launch.py --launcher ssh` would instead start every node from one machine.

The step: autograd on the build's training symbol, then gluon.Trainer with the dist_sync
kvstore and update_on_kvstore=False: the workers push their gradients, the servers sum
them, every worker pulls the sum and applies the same SGD update as the single-process
runner with rescale_grad = 1/num_workers (each worker's loss is already its shard's mean,
so the sum over workers divided by their number is the whole batch's gradient). The update
on the workers, not the servers, so that exchange and update can be timed apart and the
update is the single-process runner's. Trainer's kvstore broadcast (worker 0's parameters
pushed, every worker pulls them) is run and waited for before the first forward, not left to
the first step(), where its pulls race the gradients' (`_synchronise_weights`). BatchNorm keeps
per-worker batch statistics. Several GPUs in one process would use the `device` kvstore
(not available: the PyPI mxnet 1.9.1 wheel is CPU-only, and a gpu device is refused).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from . import common

BATCHNORM = "per-worker batch statistics (MXNet BatchNorm, not synchronised)"
LOOPBACK = "127.0.0.1"


def run(job: dict, batch: dict, fault: str):
    from zoo.converters.mxnet import import_mxnet
    from zoo.runners.mxnet import Runner
    mx = import_mxnet()
    runner = Runner(Path(job["artifact"]), job["device"], job.get("threads"), {})
    runner.load()            # gpu: EngineUnavailable, this MXNet has no CUDA
    kv = mx.kv.create("dist_sync")
    rank, world = kv.rank, kv.num_workers
    feed_np = common.shard(batch, rank, int(job["per_worker"]), job["replicate"])
    block = runner._training_block(dropout=job["action"] == "bench")
    t = runner.net.train
    params = {k: v for k, v in block.collect_params().items() if v.grad_req != "null"}
    trainer = mx.gluon.Trainer(params, "sgd", {"learning_rate": float(t.lr), "momentum": float(t.momentum),
                                               "wd": float(t.weight_decay)},
                               kvstore=kv, update_on_kvstore=False)
    _synchronise_weights(mx, trainer)
    # the mean over workers; the deliberate test fault sums them instead
    scale = 1 if fault == "sum-gradients" else world
    feed = runner._training_feed(feed_np)

    def forward_backward():
        with mx.autograd.record(train_mode=True):
            loss = block(*feed)
        loss.backward()
        return loss

    def step():
        loss = forward_backward()
        trainer.step(scale)
        mx.nd.waitall()
        return loss

    if job["action"] == "verify":
        losses = [float(step().asscalar()) for _ in range(int(job["steps"]))]
        pd = block.collect_params()
        weights = {k: pd[v].data().asnumpy() for k, v in runner.meta["names"].items()}
        return {"rank": rank, "world": world, "losses": losses, "batchnorm": BATCHNORM,
                **runner.info()}, weights

    def barrier():
        kv._barrier()

    def compute():
        forward_backward()
        mx.nd.waitall()

    def exchange():
        trainer.allreduce_grads()
        mx.nd.waitall()

    def update():
        trainer.update(scale)
        mx.nd.waitall()
    block.hybridize(static_alloc=True, static_shape=True)
    phases = {"compute": compute, "exchange": exchange, "update": update}
    return {**common.bench_result(job, step, barrier, phases, rank, world), **runner.info()}, {}


def _synchronise_weights(mx, trainer) -> None:
    """Trainer's own kvstore set-up and weight broadcast (what its first step() would do
    lazily), finished before any gradient is pushed.

    Left to the first step(), MXNet 1.9.1 races: per key, kv.broadcast is a blocking init
    (worker 0 pushes its weights, barrier) and then an *asynchronous* pull of the weights,
    and the same step's pushpull of that key's gradient is an engine operation with no
    dependency on that pull (src/kvstore/kvstore_dist.h: the pull writes a fresh receive
    buffer, or on worker 0 the weight itself; the pushpull reads and writes the gradient).
    Under CPU load a worker's weight pull can reach the server after both workers'
    gradients for that key were summed there; with no optimizer on the server the stored
    value is then the gradient sum, and a plain pull returns it at once
    (kvstore_dist_server.h): that worker's weights become the summed gradient (seen as one
    of ResNet-56's ~169 tensors wrong on one worker or on both). mx.nd.waitall() after the
    broadcast makes every weight pull land before the first pushpull is issued."""
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    if trainer._params_to_init:
        # deferred-initialised parameters would be broadcast inside step() again, racing
        raise RuntimeError("MXNet parameters without a shape at the kvstore broadcast: "
                           f"{[p.name for p in trainer._params_to_init]}")
    mx.nd.waitall()


def launch(argv: list[str]) -> int:
    """MXNet's own launcher (mxnet/tools/launch.py, its `main`) with ARGV, run in this
    process. Its local launcher looks up this machine's routable address for the scheduler
    (dmlc_tracker.tracker.get_host_ip ignores --host-ip there); zoo keeps every process on
    the loopback interface, so that lookup answers 127.0.0.1. The tracker's Python 3.8-era
Thread.isAlive call is given its current name."""
    spec = importlib.util.find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        print("mxnet is not installed", file=sys.stderr)
        return 1
    script = Path(list(spec.submodule_search_locations)[0]) / "tools" / "launch.py"
    import threading

    import dmlc_tracker.tracker as tracker
    tracker.get_host_ip = lambda host_ip=None: LOOPBACK
    if not hasattr(threading.Thread, "isAlive"):
        # the tracker MXNet 1.9.1 ships calls Thread.isAlive, gone since Python 3.9
        threading.Thread.isAlive = threading.Thread.is_alive
    loaded = importlib.util.spec_from_file_location("mxnet_launch", script)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    sys.argv = [str(script), *argv]
    module.main()
    return 0
