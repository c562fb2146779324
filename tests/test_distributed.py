"""Data-parallel training (zoo/distributed.py, runners/distributed/): real workers of each
engine's own runtime on this machine, on 127.0.0.1 only, on small networks.

Each engine's distributed start-up costs seconds, so every test launches as few runs as it
can: 2 workers on one node (verify, with and without a deliberate fault), 2 "nodes" of 1
worker each (two zoo processes, the multi-node path), teardown on SIGTERM and SIGKILL.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import require_engine

import zoo.distributed as D
from zoo.errors import UsageError

ENGINES = ["torch", "tensorflow", "mxnet"]
NET = "twolayer"             # 784-128-32-10 MLP: small, trains, no BatchNorm
FAULTS_ENV = "ZOO_TEST_FAULTS"


def _verify(engine, **kw):
    [r] = D.verify([NET], [engine], workers=2, threads=1, timeout=300, **kw)
    return r


@pytest.mark.parametrize("engine", ENGINES)
def test_two_workers_match_the_single_process_oracle(engine):
    require_engine(engine)
    r = _verify(engine)
    assert r.status == "pass", r.reason
    assert r.workers == 2 and r.batch == 2
    names = {d["name"] for d in r.details}
    assert "worker 1 vs worker 0" in names          # every worker ends with the same weights
    assert {"loss[step 1]", "loss[step 2]", "fc1.weight"} <= names


@pytest.mark.parametrize("engine", ENGINES)
def test_summed_instead_of_averaged_gradients_fail(engine, monkeypatch):
    require_engine(engine)
    monkeypatch.setenv(FAULTS_ENV, "1")
    r = _verify(engine, fault="sum-gradients")
    assert r.status == "fail", r.reason
    assert r.needed_factor > 10       # twice the update: far outside the tolerance


def test_fault_is_ignored_without_the_test_switch(monkeypatch):
    require_engine("torch")
    monkeypatch.delenv(FAULTS_ENV, raising=False)
    assert _verify("torch", fault="sum-gradients").status == "pass"


@pytest.mark.parametrize("engine", ["caffe", "onnx", "caffe-opencv"])
def test_engines_without_data_parallel_training_are_skipped_with_the_reason(engine):
    [r] = D.verify([NET], [engine], workers=2, threads=1)
    assert r.status == "skipped"
    if engine == "caffe":
        assert "Caffe's data parallelism is GPU-only" in r.reason or r.reason.startswith("not installed")
    else:
        assert r.reason.startswith("inference only")


def test_gpu_is_refused_without_a_cuda_device():
    """The NCCL path is there but cannot run here: the workers refuse the device."""
    require_engine("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    [r] = D.verify([NET], ["torch"], workers=2, threads=1, device="gpu0", timeout=300)
    assert r.status == "skipped" and "no CUDA device" in r.reason, r.reason


@pytest.mark.parametrize("kw, message", [
    ({"workers": 2, "batch": 3}, "multiple of 2"),
    ({"workers": 2, "nodes": 2}, "--master"),
    ({"workers": 1, "nodes": 2, "node_rank": 2, "master": "127.0.0.1:29500"}, "--node-rank"),
    ({"workers": 1, "nodes": 2, "master": "nohostport"}, "HOST:PORT"),
    ({"workers": 0}, "workers"),
])
def test_bad_options_are_usage_errors(kw, message):
    with pytest.raises(UsageError, match=message):
        D.verify([NET], ["torch"], threads=1, **kw)


def test_strong_scaling_must_split_the_batch():
    with pytest.raises(UsageError, match="does not split"):
        D.bench([NET], ["torch"], workers=[1, 2], batch=3, threads=1)


NODE = """
import json, sys, zoo.distributed as D
[r] = D.verify([{net!r}], [{engine!r}], workers=1, nodes=2, node_rank={rank}, master={master!r}, threads=1, timeout=300)
print(json.dumps({{"status": r.status, "reason": r.reason, "workers": r.workers}}))
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_two_nodes_of_one_worker_each(engine):
    """The multi-node path on one machine: two zoo processes, one per "node", meeting at the
    master's port (torch's store, MXNet's scheduler; TensorFlow's workers on PORT+1+rank)."""
    require_engine(engine)
    port = D.free_ports(1)[0]
    master = f"127.0.0.1:{port}"
    nodes = [subprocess.Popen([sys.executable, "-c", NODE.format(net=NET, engine=engine, rank=r, master=master)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        outs = [n.communicate(timeout=400) for n in nodes]
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()
    for (out, err), n in zip(outs, nodes):
        assert n.returncode == 0, err[-2000:]
        got = json.loads(out.strip().splitlines()[-1])
        assert got["status"] == "pass", got["reason"]
        assert got["workers"] == 2


def test_bench_strong_scaling_rows(tmp_path):
    require_engine("torch")
    rows = D.bench([NET], ["torch"], workers=[1, 2], scaling="strong", threads=1, batch=8,
                   warmup=1, iters=2, timeout=300)
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["reason"] for r in rows]
    one, two = rows
    assert (one["batch"], one["batch_per_worker"], two["batch"], two["batch_per_worker"]) == (8, 8, 8, 4)
    assert one["speedup"] == 1.0 and one["efficiency"] == 1.0
    assert two["speedup"] == pytest.approx(two["samples_per_s"] / one["samples_per_s"])
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
    assert len(two["peak_rss_mb_per_worker"]) == 2
    assert all(two[k] > 0 for k in ("compute_s", "exchange_s", "update_s"))
    D.write_csv(rows, tmp_path / "s.csv")
    D.write_json(rows, tmp_path / "s.json")
    assert (tmp_path / "s.csv").read_text().splitlines()[0].startswith("network,engine")
    assert len(json.loads((tmp_path / "s.json").read_text())) == 2
    pytest.importorskip("matplotlib")
    assert D.plot(rows, tmp_path / "s.png") == [NET]
    assert (tmp_path / "s.png").stat().st_size > 0


# --- teardown ----------------------------------------------------------------------------------

HANGING = """
import zoo.distributed as D
D.verify([{net!r}], [{engine!r}], workers=2, threads=1, fault="hang", timeout=300)
"""


def _descendants_of_run(root_pid: int) -> list[int]:
    """Every process that carries this zoo's pid as its distributed root (workers, MXNet's
    launcher, scheduler and server)."""
    mark = f"{D.ROOT_PID_VAR}={root_pid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if mark in f.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(entry))
        except OSError:
            continue
    return found


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("engine, signo", [("mxnet", signal.SIGTERM), ("mxnet", signal.SIGKILL),
                                           ("torch", signal.SIGINT)])
def test_stopping_zoo_leaves_no_worker_scheduler_or_server(engine, signo):
    require_engine(engine)
    env = {**os.environ, FAULTS_ENV: "1"}
    zoo_proc = subprocess.Popen([sys.executable, "-c", HANGING.format(net=NET, engine=engine)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # mxnet: launcher, scheduler, server and 2 workers; torch: 2 workers
        expected = 5 if engine == "mxnet" else 2
        _wait_for(lambda: len(_descendants_of_run(zoo_proc.pid)) >= expected, 120, f"{expected} processes")
        time.sleep(1.0)        # the workers are past their start-up, in the hang
        zoo_proc.send_signal(signo)
        zoo_proc.wait(timeout=60)
        if signo != signal.SIGKILL:
            assert zoo_proc.returncode == 128 + signo
        _wait_for(lambda: not _descendants_of_run(zoo_proc.pid), 30, "every process to end")
    finally:
        if zoo_proc.poll() is None:
            zoo_proc.kill()
