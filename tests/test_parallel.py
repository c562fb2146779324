"""zoo/cases.py's pooled walk: every engine job of a verify goes to one long-lived child per
engine (zoo.isolation.WorkerPool), engines side by side, with the isolation of a fresh child
per job: a crash or hang is that case's error, the child is replaced, the others go on, the
results and statuses are those of the one-shot path, and no process or folder is left."""

import os
import tempfile
import threading
import time

import numpy as np
import psutil
import pytest

import zoo
from conftest import require_engine
from zoo import cases, data, isolation, reference, verifier
from zoo import weights as W

NETS = ["linreg", "twolayer"]
ENGINES = ["torch", "onnx"]


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """This test's temporary folders go here, so the test can see that none is left."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.delenv(cases.ONE_SHOT_VAR, raising=False)
    return folder


class ChildWatch:
    """Every engine child started while it watches (zoo's children are its process-group
    leaders; isolation._live holds them while they live)."""

    def __init__(self):
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop.is_set():
            self.pids.update(list(isolation._live))
            time.sleep(0.02)

    def assert_nothing_left(self, tmp):
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + 10
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self._alive() == [], "engine processes outlived the walk"
        assert not isolation._live
        assert list(tmp.glob("zoo-*")) == [], "temporary folders were left behind"

    def _alive(self):
        out = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) in self.pids and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p.pid)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        return out


def _read(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def summary(results):
    return [(r.network, r.engine, r.mode, r.status, r.reason) for r in results]


def test_a_pooled_verify_gives_the_one_shot_statuses_and_errors(tmp, monkeypatch):
    """Two networks x two engines x both modes, with every onnx job crashing (SIGSEGV): the
    onnx cases are errors with the signal, the torch cases (and the float64 oracle, on the
    torch child) pass, and the one-shot path says exactly the same."""
    for engine in ENGINES:
        require_engine(engine)
        for name in NETS:                  # built before the fault: it must hit the cases
            zoo.build(name, engine)
    monkeypatch.setenv("ZOO_FAULT", "onnx:sigsegv")
    watch = ChildWatch()
    progress = []
    pooled = verifier.verify(NETS, ENGINES, mode="both", jobs=2, progress=progress.append)
    monkeypatch.setenv(cases.ONE_SHOT_VAR, "1")
    one_shot = verifier.verify(NETS, ENGINES, mode="both", jobs=2)
    assert summary(pooled) == summary(one_shot)
    assert [(r.network, r.engine, r.mode) for r in pooled] == [
        (n, e, m) for n in NETS for e in ENGINES for m in ("forward", "train")]
    assert sorted(map(id, progress)) == sorted(map(id, pooled))    # once per case
    got = {(r.network, r.engine, r.mode): (r.status, r.reason) for r in pooled}
    for name in NETS:
        assert got[name, "torch", "forward"][0] == "pass"
        assert got[name, "torch", "train"][0] == "pass", got[name, "torch", "train"]
        assert got[name, "onnx", "forward"][0] == "error"
        assert got[name, "onnx", "forward"][1].startswith("crashed with SIGSEGV"), got
        assert got[name, "onnx", "train"][0] == "skipped"
    watch.assert_nothing_left(tmp)


def _inputs_and_reference(name):
    net = zoo.load(name)
    inputs = data.make(net, include_labels=False)
    ref = reference.forward(net, W.for_net(net, 0), inputs, with_loss=False)
    return inputs, {o: ref[o] for o in net.outputs}


def test_a_hang_and_a_crash_are_their_cases_errors_the_child_is_replaced_and_the_rest_pass(tmp, monkeypatch):
    """A walk whose own jobs carry faults (ZOO_TEST_FAULTS=1): linreg's onnx job hangs past
    its timeout and twolayer's torch job is SIGKILLed; each is that case's error, the same
    engine's next case passes in a replacement child, and every job ran with the child's
    share of the cores as its thread count."""
    for engine in ENGINES:
        require_engine(engine)
    monkeypatch.setenv("ZOO_TEST_FAULTS", "1")
    faults = {("linreg", "onnx"): "hang", ("twolayer", "torch"): "sigkill"}
    nets = NETS + ["linreg"]                    # linreg again: after each fault, a clean case
    expected = {name: _inputs_and_reference(name) for name in NETS}
    builds = {(n, e): zoo.build(n, e).path for n in NETS for e in ENGINES}
    _, per_child = isolation.plan_parallelism(2)
    faulted = set()

    def run(case, prepared, art):
        key = (case.network, case.engine)
        fault = faults.get(key) if key not in faulted else None
        faulted.add(key)
        job = {"artifact": str(builds[key]), **({"fault": fault} if fault else {})}
        res = isolation.run(case.engine, "forward", job, expected[case.network][0],
                            threads=case.threads, timeout=3 if fault == "hang" else 120)
        if not res.ok:
            return case, cases.child_failed(res).reason
        assert res.result["threads"] == per_child
        for blob, ref in expected[case.network][1].items():
            np.testing.assert_allclose(res.arrays[blob], ref, rtol=1e-4, atol=1e-5)
        return case, "pass"

    calls, inside = [], []

    def progress(result):                       # one call at a time, from any thread
        inside.append(result)
        time.sleep(0.05)
        calls.append(len(inside))
        inside.remove(result)

    watch = ChildWatch()
    got = cases.walk(nets, ENGINES, ["forward"], prepare=lambda net: net, run=run,
                     settle=lambda case, p, s: pytest.fail(f"{case} settled: {s}"),
                     inference_mode="forward", progress=progress, jobs=2)
    assert [(c.network, c.engine) for c, _ in got] == [(n, e) for n in nets for e in ENGINES]
    outcome = {(c.network, c.engine, i // 2): why for i, (c, why) in enumerate(got)}
    assert outcome["linreg", "onnx", 0] == ("timed out after 3 s (process group killed) | "
                                            "stderr: hanging (ZOO_FAULT)")
    assert outcome["twolayer", "torch", 1].startswith("crashed with SIGKILL"), outcome
    assert [why for why in outcome.values()].count("pass") == 4, outcome
    assert calls == [1] * len(got)              # once per case, never two at once
    # four children: each engine's first, and the replacement of each faulted one
    assert len(watch.pids) == 4, watch.pids
    watch.assert_nothing_left(tmp)


def test_the_pool_is_routed_to_only_inside_the_walk(tmp):
    require_engine("onnx")
    art = zoo.build("linreg", "onnx").path
    inputs, _ = _inputs_and_reference("linreg")
    seen = []

    def run(case, prepared, build):
        seen.append(isolation._routing.get())
        return isolation.run("onnx", "forward", {"artifact": str(art)}, inputs, timeout=120).status

    assert cases.walk(["linreg"], ["onnx"], ["forward"], prepare=lambda n: n, run=run,
                      settle=lambda *a: pytest.fail("settled"), inference_mode="forward",
                      jobs=1) == ["ok"]
    assert isinstance(seen[0], isolation.WorkerPool)
    assert isolation._routing.get() is None               # and one-shot again after it
    assert cases.walk(["linreg"], ["onnx"], ["forward"], prepare=lambda n: n, run=run,
                      settle=lambda *a: pytest.fail("settled"), inference_mode="forward") == ["ok"]
    assert seen[1] is None                                # the default: one-shot (bench)
    assert not isolation._live and list(tmp.glob("zoo-*")) == []


def test_a_failing_case_stops_the_walk_and_ends_every_child(tmp, monkeypatch):
    """An exception in a case (a bug, not a child's failure) ends the walk with it: no new
    case starts, the children in flight are killed, the network's builds are released."""
    require_engine("onnx")
    require_engine("torch")
    monkeypatch.setenv("ZOO_TEST_FAULTS", "1")
    art = {e: zoo.build("linreg", e).path for e in ENGINES}
    inputs, _ = _inputs_and_reference("linreg")
    started, failed_at = [], []

    def run(case, prepared, build):
        started.append((time.monotonic(), case))
        if (case.network, case.engine) == ("linreg", "onnx"):   # once torch's job hangs
            deadline = time.monotonic() + 60
            while not any("hanging" in _read(f) for f in tmp.glob("zoo-child-*/stderr.txt")):
                assert time.monotonic() < deadline, "the torch job never started"
                time.sleep(0.05)
            failed_at.append(time.monotonic())
            raise RuntimeError("a bug in the command's callback")
        return isolation.run("torch", "forward", {"artifact": str(art["torch"]), "fault": "hang"},
                             inputs, timeout=120).status

    watch = ChildWatch()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="a bug in the command's callback"):
        cases.walk(["linreg", "twolayer"], ENGINES, ["forward"], prepare=lambda n: n, run=run,
                   settle=lambda *a: pytest.fail("settled"), inference_mode="forward", jobs=2)
    assert time.monotonic() - t0 < 60               # the hanging torch job did not hold it up
    # the walk's spare thread may have started the next network's first case meanwhile; no
    # case started after the failure
    assert {(c.network, c.engine) for _, c in started} >= {("linreg", "onnx"), ("linreg", "torch")}
    assert all(t < failed_at[0] for t, _ in started), started
    watch.assert_nothing_left(tmp)
