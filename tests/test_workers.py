"""Long-lived engine children (zoo.isolation.Worker, WorkerPool): many jobs per child, and a
kill, hang or crash in one job is that job's typed result; the child is replaced, the other
jobs go on, and nothing is left behind (no process, no temporary folder)."""

import os
import signal
import tempfile
import threading
import time

import numpy as np
import psutil
import pytest

import zoo
from conftest import require_engine
from zoo import data, isolation, reference
from zoo import weights as W
from zoo.errors import UsageError

NETS = ("linreg", "twolayer")
KILLED = "crashed with SIGKILL (killed: out of memory, or by hand): hanging (ZOO_FAULT)"
ABORTED = "crashed with SIGABRT: F0000 00:00:00.000000 1 fault.cc:2] Check failed: fault injected by ZOO_FAULT"


@pytest.fixture(scope="module")
def cases():
    """Per network: its inputs (the spec's batch) and the float64 reference outputs."""
    out = {}
    for name in NETS:
        net = zoo.load(name)
        inputs = data.make(net, include_labels=False)
        ref = reference.forward(net, W.for_net(net, 0), inputs, with_loss=False)
        out[name] = (inputs, {o: ref[o] for o in net.outputs})
    return out


@pytest.fixture(scope="module")
def builds():
    made = {}

    def get(name, engine):
        require_engine(engine)
        if (name, engine) not in made:
            made[name, engine] = zoo.build(name, engine).path
        return made[name, engine]
    return get


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """This test's temporary folders go here, so the test can see that none is left."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("ZOO_TEST_FAULTS", "1")
    return folder


def forward_job(builds, cases, name, engine, fault=None):
    job = {"artifact": str(builds(name, engine))}
    if fault:
        job["fault"] = fault
    return job, cases[name][0]


def assert_matches_reference(res, cases, name):
    assert res.ok, (res.status, res.reason, res.stderr_tail)
    for blob, ref in cases[name][1].items():
        np.testing.assert_allclose(res.arrays[blob], ref, rtol=1e-4, atol=1e-5)


def group(pgid):
    """The live (not zombie) processes of process group `pgid`."""
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out


def assert_nothing_left(pids, tmp):
    deadline = time.monotonic() + 10
    while any(group(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if group(p)] == [], "engine processes outlived their Worker"
    # zoo's own folders (ONNX Runtime leaves a .ses file in TMPDIR: not zoo's to remove)
    assert list(tmp.glob("zoo-*")) == [], "temporary folders were left behind"
    assert not isolation._live


def hanging_children(tmp):
    return [d for d in tmp.glob("zoo-child-*") if "hanging" in _read(d / "stderr.txt")]


def _read(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def kill_when_hanging(tmp, worker):
    """From outside, as the OOM killer would: SIGKILL the child once its job hangs."""
    def killer():
        deadline = time.monotonic() + 60
        while not hanging_children(tmp) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
    thread = threading.Thread(target=killer)
    thread.start()
    return thread


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_a_kill_a_hang_and_a_crash_are_their_cases_errors_and_the_others_pass(builds, cases, tmp, engine):
    plan = [("linreg", None), ("twolayer", None), ("linreg", "kill"), ("twolayer", None),
            ("linreg", "hang-with-grandchild"), ("linreg", None), ("twolayer", "abort"),
            ("twolayer", None)]
    results, pids = [], []
    with isolation.Worker(engine, threads=1) as worker:
        for name, fault in plan:
            job, inputs = forward_job(builds, cases, name, engine,
                                      "hang" if fault == "kill" else fault)
            killer = kill_when_hanging(tmp, worker) if fault == "kill" else None
            pid_before = worker.pid
            res = worker.run("forward", job, inputs, timeout=3 if fault and "hang" in fault else 120)
            if killer:
                killer.join()
            results.append(res)
            pids.append(worker.pid or pid_before)
    statuses = [(r.status, r.reason) for r in results]
    assert statuses[2] == ("crashed", KILLED), statuses
    assert statuses[4] == ("timeout", "timed out after 3 s (process group killed)"), statuses
    assert statuses[6] == ("crashed", ABORTED), statuses
    for (name, fault), res in zip(plan, results):
        if fault is None:
            assert_matches_reference(res, cases, name)
    # one child served the first two cases; each failure's child was replaced
    assert pids[0] == pids[1] == pids[2] and pids[3] == pids[4] and pids[5] == pids[6]
    assert len({pids[0], pids[3], pids[5], pids[7]}) == 4 and worker.started == 4
    assert_nothing_left(set(pids), tmp)


def test_forward_reuses_the_loaded_runner_and_training_never_leaks(builds, cases, tmp):
    require_engine("torch")
    net = zoo.load("linreg")
    batch = data.make(net)
    job = {"artifact": str(builds("linreg", "torch"))}
    with isolation.Worker("torch", threads=1) as worker:
        first = worker.run("forward", job, batch, timeout=120)
        again = worker.run("forward", job, batch, timeout=120)
        trains = [worker.run("train", {**job, "steps": 2}, batch, timeout=120) for _ in range(2)]
        after = worker.run("forward", job, batch, timeout=120)
        pid = worker.pid
    assert (first.result["runner"], again.result["runner"], after.result["runner"]) == \
        ("loaded", "kept", "kept")
    for res in (first, again, after):
        assert_matches_reference(res, cases, "linreg")
    # each training step starts from the build's weights, not the previous job's
    assert all(t.ok for t in trains), [(t.status, t.reason) for t in trains]
    assert trains[0].result["losses"] == trains[1].result["losses"]
    for key in trains[0].arrays:
        np.testing.assert_array_equal(trains[0].arrays[key], trains[1].arrays[key])
    assert worker.started == 1
    assert_nothing_left({pid}, tmp)


def test_an_exception_replaces_the_child_but_a_refusal_does_not(builds, cases, tmp):
    job, inputs = forward_job(builds, cases, "linreg", "onnx")
    with isolation.Worker("onnx") as worker:
        assert worker.run("forward", job, inputs, timeout=120).ok
        first = worker.pid
        refused = worker.run("forward", {**job, "fault": "unsupported"}, inputs, timeout=120)
        assert refused.status == "unsupported" and worker.pid == first
        raised = worker.run("forward", {**job, "fault": "raise"}, inputs, timeout=120)
        assert (raised.status, raised.reason) == ("error", "RuntimeError: fault injected by ZOO_FAULT")
        assert worker.pid is None          # replaced lazily, by the next job
        assert_matches_reference(worker.run("forward", job, inputs, timeout=120), cases, "linreg")
        second = worker.pid
        assert second != first and worker.started == 2
        os.kill(second, signal.SIGKILL)    # dies while idle: no case's fault, the next job runs
        time.sleep(0.2)
        assert_matches_reference(worker.run("forward", job, inputs, timeout=120), cases, "linreg")
        third = worker.pid
    assert worker.started == 3
    assert_nothing_left({first, second, third}, tmp)


def test_a_job_file_cannot_inject_a_fault_in_a_normal_run(builds, cases, tmp, monkeypatch):
    monkeypatch.delenv("ZOO_TEST_FAULTS")
    job, inputs = forward_job(builds, cases, "linreg", "onnx", fault="sigkill")
    res = isolation.run("onnx", "forward", job, inputs, timeout=120)
    assert_matches_reference(res, cases, "linreg")
    assert_nothing_left(set(), tmp)


def test_a_child_outlives_the_thread_that_started_it(builds, cases, tmp):
    """PR_SET_PDEATHSIG follows the thread that started a child: Workers start theirs from one
    thread that lives as long as zoo, so a pool thread's exit does not kill them."""
    job, inputs = forward_job(builds, cases, "linreg", "onnx")
    with isolation.Worker("onnx") as worker:
        starter = threading.Thread(target=worker.run, args=("forward", job, inputs), kwargs={"timeout": 120})
        starter.start()
        starter.join()
        pid = worker.pid
        time.sleep(0.3)
        assert_matches_reference(worker.run("forward", job, inputs, timeout=120), cases, "linreg")
        assert worker.pid == pid and worker.started == 1
    assert_nothing_left({pid}, tmp)


def test_a_pool_runs_engines_side_by_side_and_close_ends_every_child(builds, cases, tmp):
    calls = [{"engine": engine, "action": "forward", "job": job, "arrays": inputs, "threads": 1,
              "timeout": 120}
             for engine in ("onnx", "torch") for name in NETS
             for job, inputs in [forward_job(builds, cases, name, engine)]]
    with isolation.WorkerPool(jobs=2) as pool:
        for call, res in zip(calls, pool.run_all(calls)):
            assert_matches_reference(res, cases, "linreg" if "linreg" in call["job"]["artifact"] else "twolayer")
        workers = [pool.worker("onnx", 1), pool.worker("torch", 1)]
        pids = {w.pid for w in workers}
        assert None not in pids and all(w.started == 1 for w in workers)
        # two hanging jobs at once: both engines' children run side by side
        hangs = [pool.submit(engine, "forward", {**job, "fault": "hang"}, inputs, threads=1, timeout=120)
                 for engine in ("onnx", "torch")
                 for job, inputs in [forward_job(builds, cases, "linreg", engine)]]
        deadline = time.monotonic() + 60
        while len(hanging_children(tmp)) < 2:
            assert time.monotonic() < deadline, "the two engines' jobs did not run at once"
            time.sleep(0.05)
    # closing the pool ended the jobs in flight (reported as crashed) and every child
    assert [h.result().status for h in hangs] == ["crashed", "crashed"]
    assert_nothing_left(pids, tmp)


def test_threads_per_child_share_the_cores():
    assert isolation.plan_parallelism(None, cores=2) == (2, 1)
    assert isolation.plan_parallelism(1, cores=8) == (1, 8)
    assert isolation.plan_parallelism(3, cores=8) == (3, 2)
    assert isolation.plan_parallelism(4, cores=2) == (4, 1)
    with pytest.raises(UsageError, match="--jobs 0"):
        isolation.plan_parallelism(0, cores=2)


# a zoo whose pool's onnx child has served a job and now idles while zoo does other work
IDLE_POOL = """
import sys, time, numpy as np
from zoo import isolation
with isolation.WorkerPool(jobs=2) as pool:
    res = pool.submit("onnx", "forward", {"artifact": sys.argv[1]}, {"x": np.zeros((10, 2), np.float32)},
                      timeout=120).result()
    print(res.status, pool.worker("onnx").pid, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def idle_pool(builds, tmp):
    """Start IDLE_POOL; return (zoo process, its idle child's pid)."""
    import subprocess
    import sys
    art = str(builds("linreg", "onnx"))
    proc = subprocess.Popen([sys.executable, "-c", IDLE_POOL, art], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)})
    status, pid = proc.stdout.readline().split()
    assert status == "ok", proc.communicate()
    yield proc, int(pid)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if group(int(pid)):
        os.killpg(int(pid), signal.SIGKILL)


def test_a_stopped_zoo_kills_its_idle_long_lived_children(idle_pool, tmp):
    zoo_proc, child = idle_pool
    zoo_proc.terminate()
    zoo_proc.communicate(timeout=30)
    assert zoo_proc.returncode == 128 + signal.SIGTERM
    assert_nothing_left({child}, tmp)


def test_the_idle_child_of_a_sigkilled_zoo_exits(idle_pool, tmp):
    zoo_proc, child = idle_pool
    zoo_proc.kill()         # nothing is cleaned up by zoo: the kernel ends the child
    zoo_proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while group(child):
        assert time.monotonic() < deadline, "the idle engine child outlived a SIGKILLed zoo"
        time.sleep(0.1)


def test_a_pool_gives_a_job_without_threads_its_share_and_one_with_threads_its_own(builds, cases, tmp):
    """zoo/cases.py's pool gives each child its share of the cores (`threads`); a job that
    names a thread count (bench's --threads) gets a child with exactly that."""
    job, inputs = forward_job(builds, cases, "linreg", "onnx")
    with isolation.WorkerPool(jobs=1, threads=1) as pool:
        assert pool.worker("onnx") is pool.worker("onnx", 1)
        shared = pool.run("onnx", "forward", job, inputs, timeout=120)
        own = pool.run("onnx", "forward", job, inputs, threads=2, timeout=120)
        pids = {pool.worker("onnx", 1).pid, pool.worker("onnx", 2).pid}
    assert_matches_reference(shared, cases, "linreg")
    assert_matches_reference(own, cases, "linreg")
    assert (shared.result["threads"], own.result["threads"]) == (1, 2)
    assert_nothing_left(pids, tmp)


def test_a_child_grown_past_max_rss_is_replaced_before_the_next_job(builds, cases, tmp):
    job, inputs = forward_job(builds, cases, "linreg", "onnx")
    pids = set()
    for max_rss, children in ((1, 2), (1 << 50, 1)):     # every child is past 1 byte
        with isolation.Worker("onnx", threads=1, max_rss=max_rss) as worker:
            for _ in range(2):
                assert_matches_reference(worker.run("forward", job, inputs, timeout=120), cases, "linreg")
                pids.add(worker.pid)
            assert worker.started == children
    assert_nothing_left(pids - {None}, tmp)


def test_routed_to_sends_run_to_the_pool_in_its_context_only(builds, cases, tmp):
    job, inputs = forward_job(builds, cases, "linreg", "onnx")
    with isolation.WorkerPool(jobs=1) as pool:
        with isolation.routed_to(pool):
            for _ in range(2):
                assert_matches_reference(isolation.run("onnx", "forward", job, inputs, timeout=120),
                                         cases, "linreg")
            # another thread runs in its own context: one-shot, unless given a copy of this one
            other = []
            t = threading.Thread(target=lambda: other.append(isolation._routing.get()))
            t.start()
            t.join()
            assert other == [None]
        worker = pool.worker("onnx")
        assert worker.started == 1 and worker.pid is not None    # both jobs, one child
        assert isolation.run("onnx", "forward", job, inputs, timeout=120).ok   # one-shot again
        assert worker.started == 1
        pids = {worker.pid}
    assert_nothing_left(pids, tmp)


REWIND_SPEC = """name: "t-rewind"
train { lr: 0.1 momentum: 0.9 weight_decay: 0.01 }
layer { name: "data" type: "Input" input_param { shape: [4, 3, 6, 6] } }
layer { name: "label" type: "Input" input_param { shape: [4] dtype: INT64 } }
layer { name: "conv" type: "Convolution" bottom: "data" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" }
layer { name: "relu" type: "ReLU" bottom: "bn" }
layer { name: "drop" type: "Dropout" bottom: "relu" dropout_param { dropout_ratio: 0.5 } }
layer { name: "flat" type: "Flatten" bottom: "drop" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }
"""


@pytest.mark.parametrize("engine", ["torch", "tensorflow", "mxnet", "caffe"])
def test_a_kept_runner_is_rewound_after_training(engine, tmp_path, tmp):
    """A serving child keeps the runner a training job used and rewinds it before the next
    job: every job gives, bit for bit, what it gives in a fresh child. Training moves the
    weights, BatchNorm's running statistics and the layers' modes; a train_forward with
    after_steps 0 must start from the build's weights, not the previous job's."""
    require_engine(engine)
    (tmp_path / "rewind.prototxt").write_text(REWIND_SPEC)
    net = zoo.load(tmp_path / "rewind.prototxt")
    batch = data.make(net)
    job = {"artifact": str(zoo.build(net, engine).path)}
    expose = {"expose": ["bn", "fc"]}
    plan = [("forward", {}), ("train", {"steps": 2}), ("train_forward", {**expose, "after_steps": 0}),
            ("train_forward", {**expose, "after_steps": 1}), ("train", {"steps": 2}),
            ("forward", {}), ("train_forward", {**expose, "after_steps": 0})]
    fresh = [isolation.run(engine, action, {**job, **extra}, batch, threads=1, timeout=300)
             for action, extra in plan]
    with isolation.Worker(engine, threads=1) as worker:
        kept = [worker.run(action, {**job, **extra}, batch, timeout=300) for action, extra in plan]
        pid = worker.pid
    assert [r.result.get("runner") for r in kept] == ["loaded"] + ["kept"] * (len(plan) - 1)
    assert worker.started == 1
    for (action, _), want, got in zip(plan, fresh, kept):
        assert want.ok and got.ok, (action, want.reason, got.reason)
        assert got.result.get("losses") == want.result.get("losses"), action
        assert sorted(got.arrays) == sorted(want.arrays), action
        for key in want.arrays:
            np.testing.assert_array_equal(got.arrays[key], want.arrays[key], err_msg=f"{action} {key}")
    # the check can see a runner that was not rewound: training moved what these jobs return
    assert not np.array_equal(fresh[2].arrays["fc"], fresh[3].arrays["fc"])
    assert_nothing_left({pid}, tmp)
