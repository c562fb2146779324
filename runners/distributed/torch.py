"""PyTorch data parallelism: torch.distributed + DistributedDataParallel.

The parent starts one process per worker with the environment torch's elastic launcher
(torchrun) gives each worker (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK, ...), except
that the thread count is explicit (torchrun would set OMP_NUM_THREADS=1 when unset). gloo on
the CPU, NCCL on a GPU (one device per worker: gpu index + local rank). DDP broadcasts rank
0's parameters and buffers at construction (weights synchronised at start) and averages
the gradients in buckets during backward. BatchNorm keeps per-worker batch statistics (no
SyncBatchNorm conversion).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from zoo.errors import EngineUnavailable

from . import common


def _runner(job: dict, local_rank: int):
    from zoo.runners.torch import Runner
    device = job["device"]
    if device != "cpu":          # gpuN: this worker's device is N + local rank
        device = f"gpu{int(device[3:]) + local_rank}"
    runner = Runner(Path(job["artifact"]), device, job.get("threads"), {})
    runner.load()                # gpu_index(): EngineUnavailable when there is no CUDA device
    return runner


def _init(job: dict, runner):
    import torch.distributed as dist
    backend = "nccl" if runner.dev.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise EngineUnavailable("this torch has no NCCL")
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(job["collective_timeout"])))
    return dist


class _Loss:
    """The generated model's training loss as a module's forward: DDP hooks forward()."""

    @staticmethod
    def wrap(torch, model):
        class TrainingLoss(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, **feed):
                return self.model.training_loss(**feed)
        return TrainingLoss()


def _summing_hook(dist):
    """The deliberate test fault: all-reduce the gradient buckets without dividing by the
    world size (summed, not averaged)."""
    def hook(state, bucket):
        fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])
    return hook


def run(job: dict, batch: dict, fault: str):
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    runner = _runner(job, local_rank)
    dist = _init(job, runner)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        feed_np = common.shard(batch, rank, int(job["per_worker"]), job["replicate"])
        runner._train_mode(dropout=job["action"] == "bench")
        ddp = DDP(_Loss.wrap(torch, runner.model),
                  device_ids=[runner.dev.index] if runner.dev.type == "cuda" else None)
        if fault == "sum-gradients":
            ddp.register_comm_hook(None, _summing_hook(dist))
        opt = runner._optimizer()          # the same parameter tensors DDP wraps
        feed = runner._tensors(feed_np, runner.net.data_inputs + runner.net.labels)
        sync = torch.cuda.synchronize if runner.dev.type == "cuda" else (lambda: None)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = ddp(**feed)
            loss.backward()
            opt.step()
            sync()
            return loss

        if job["action"] == "verify":
            losses = [float(step().detach()) for _ in range(int(job["steps"]))]
            state = runner.model.state_dict()
            weights = {c: state[t].detach().cpu().numpy() for c, t in runner.meta["names"].items()}
            return {"rank": rank, "world": world, "losses": losses, "batchnorm": BATCHNORM,
                    **runner.info()}, weights
        barrier = dist.barrier
        phases = _phases(torch, dist, ddp, runner.model, opt, feed, world, sync)
        return {**common.bench_result(job, step, barrier, phases, rank, world), **runner.info()}, {}
    finally:
        dist.destroy_process_group()


BATCHNORM = "per-worker batch statistics (torch.nn.BatchNorm, not SyncBatchNorm)"


def _phases(torch, dist, ddp, model, opt, feed, world, sync) -> dict:
    """The iteration as three separate parts: forward + backward without DDP's overlapped
    all-reduce (no_sync), then one all-reduce of all gradients flattened (what DDP's buckets
    do, not overlapped), then the SGD update."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
    params = [p for p in model.parameters() if p.requires_grad]

    def compute():
        opt.zero_grad(set_to_none=False)
        with ddp.no_sync():
            ddp(**feed).backward()
        sync()

    def exchange():
        grads = [p.grad for p in params if p.grad is not None]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= world
        for g, r in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(r)
        sync()

    def update():
        opt.step()
        sync()
    return {"compute": compute, "exchange": exchange, "update": update}
