"""zoo/cases.py: the one walk of verify and bench. Each engine builds once per network and the
build serves every mode; the cases that cannot run are settled with the same reasons in both
commands, before any build or child; a child's typed status maps to a case status in one place;
both API calls refuse options that would make them meaningless."""

import math
import threading
import time

import pytest

from conftest import require_engine
import zoo
from zoo import benchmark, cache, cases, isolation, verifier
from zoo import engines as E
from zoo import net as N
from zoo.errors import UsageError

NO_LOSS = """
name: "noloss"
train { lr: 0.01 batch_cpu: 2 batch_gpu: 2 }
layer { name: "x" type: "Input" input_param { shape: [2, 4] } }
layer { name: "fc" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 3 } }
"""


@pytest.mark.parametrize("status,case_status,starts", [
    ("unsupported", "skipped", "unsupported: "),
    ("engine-unavailable", "skipped", "unavailable: "),
    ("error", "error", "build failed: "),
    ("timeout", "error", "build failed: "),
    ("crashed", "error", "build failed: "),
])
def test_every_child_status_maps_to_one_case_status(status, case_status, starts):
    assert set(isolation.STATUSES) == {"ok", "unsupported", "engine-unavailable", "error", "timeout", "crashed"}
    s = cases.settle_child(status, "why", "I0000 00:00:00 noise\nlast words\n", doing="build failed: ")
    assert s.status == case_status and s.reason.startswith(starts) and "why" in s.reason
    # only a timed-out child, which could not say why, brings its last meaningful stderr line
    assert ("last words" in s.reason) == (status == "timeout"), s.reason
    assert "noise" not in s.reason


def test_a_real_crash_is_an_error_with_its_signal(monkeypatch):
    require_engine("onnx")
    monkeypatch.setenv("ZOO_FAULT", "onnx:sigsegv")
    res = isolation.run("onnx", "forward", {"artifact": "/nonexistent"}, threads=None, device="cpu", timeout=60)
    s = cases.child_failed(res)
    assert res.status == "crashed" and s.status == "error" and "SIGSEGV" in s.reason, (res, s)


def test_one_build_per_engine_serves_every_mode_and_thread_count(tmp_path, monkeypatch):
    require_engine("torch")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    seen = []

    def run(case, prepared, art):
        seen.append((case.mode, case.threads, art.path))
        return case

    def settle(case, prepared, settled):
        raise AssertionError(f"{case} settled: {settled}")

    prepared = []
    got = cases.walk(["linreg"], ["torch"], ["forward", "train"], prepare=prepared.append, run=run,
                     settle=settle, inference_mode="forward", threads=[1, 2])
    assert [(c.mode, c.threads) for c in got] == [("forward", 1), ("forward", 2), ("train", 1), ("train", 2)]
    assert len({p for _, _, p in seen}) == 1                       # one build ...
    assert len(list((tmp_path / "cache").rglob("manifest.json"))) == 1   # ... made once
    assert [n.name for n in prepared] == ["linreg"]                 # prepared once


@pytest.mark.parametrize("jobs", [None, cases.ONE_SHOT])
def test_ahead_starts_once_per_network_before_its_cases_in_a_pooled_walk_only(jobs, tmp_path, monkeypatch):
    """verify's oracle is started as a network opens (`ahead`), with the cases that will run;
    the walk ends a network only after its `ahead` ended; the old path never calls it."""
    require_engine("torch")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cases.ONE_SHOT_VAR, raising=False)
    events, lock = [], threading.Lock()

    def ahead(net, runnable):
        time.sleep(0.5)         # a case that waited for nothing would finish first
        with lock:
            events.append(("ahead", net.name, [(c.engine, c.mode) for c in runnable]))

    def run(case, net, art):
        with lock:
            events.append(("case", case.network, case.engine, case.mode))
        return case

    nets = [N.from_text(NO_LOSS), N.load("linreg")]
    got = cases.walk(nets, ["onnx", "torch"], ["forward", "train"], prepare=lambda n: n, run=run,
                     settle=lambda case, p, s: case, inference_mode="forward", jobs=jobs,
                     ahead=ahead)
    assert [(c.network, c.engine, c.mode) for c in got] == [
        (n, e, m) for n in ("noloss", "linreg") for e in ("onnx", "torch") for m in ("forward", "train")]
    aheads = [e for e in events if e[0] == "ahead"]     # the walk returned after each ended
    if jobs == cases.ONE_SHOT:
        assert aheads == []
        return
    # onnx does not train, a network without a loss does not train: what `ahead` is told
    assert sorted(aheads) == [                          # in whichever order they ended
        ("ahead", "linreg", [("onnx", "forward"), ("torch", "forward"), ("torch", "train")]),
        ("ahead", "noloss", [("onnx", "forward"), ("torch", "forward")])]


def test_no_loss_layer_settles_train_before_any_build(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    net = N.from_text(NO_LOSS)
    got = cases.walk([net], None, ["train"], prepare=lambda n: n,
                     run=lambda *a: pytest.fail(f"ran {a[0]}"),
                     settle=lambda case, p, s: (case.engine, s), inference_mode="infer")
    assert [e for e, _ in got] == list(E.ENGINES)
    assert {s for _, s in got} == {cases.Settled("skipped", "the network has no loss layer; use --mode infer")}
    assert not (tmp_path / "cache").exists()                        # nothing was built


def test_verify_and_bench_skip_the_same_cases_with_the_same_reasons():
    require_engine("onnx")
    [v] = verifier.verify(["linreg"], ["onnx"], mode="train")
    [b] = benchmark.bench(["linreg"], ["onnx"], mode="train", batch=2)
    assert v.status == b["status"] == "skipped" and v.reason == b["reason"] and "inference only" in v.reason
    assert b.get("median_s") is None


@pytest.mark.parametrize("kwargs,words", [
    ({"atol": -1.0}, "atol"), ({"rtol": math.nan}, "rtol"), ({"threads": 0}, "threads"),
    ({"timeout": 0}, "timeout"), ({"batch": 0}, "batch"), ({"device": "tpu"}, "device"),
    ({"mode": "fast"}, "mode"), ({"engines_": ["nosuch"]}, "nosuch"),
])
def test_verify_refuses_meaningless_options(kwargs, words):
    with pytest.raises(UsageError, match=words):
        verifier.verify(["linreg"], **{"engines_": ["onnx"], **kwargs})


@pytest.mark.parametrize("kwargs,words", [
    ({"threads": [1, 0]}, "threads"), ({"timeout": -5}, "timeout"), ({"batch": 0}, "batch"),
    ({"device": "gpu-1"}, "device"), ({"mode": "forward"}, "mode"), ({"iters": 0}, "iters"),
    ({"warmup": -1}, "warmup"),
])
def test_bench_refuses_meaningless_options(kwargs, words):
    with pytest.raises(UsageError, match=words):
        benchmark.bench(["linreg"], ["onnx"], **kwargs)


def test_a_one_off_specs_build_is_used_then_removed(tmp_path, monkeypatch):
    require_engine("torch")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "noloss.prototxt"
    spec.write_text(NO_LOSS)
    used = []

    def run(case, prepared, art):
        assert (art.path / "manifest.json").is_file() and art.transient
        used.append(art.path)
        return case

    cases.walk([str(spec)], ["torch"], ["forward"], prepare=lambda n: n, run=run,
               settle=lambda c, p, s: pytest.fail(f"{c}: {s}"), inference_mode="forward")
    assert len(used) == 1 and not used[0].exists()


def test_verify_of_a_one_off_spec_leaves_no_build_behind(tmp_path, monkeypatch):
    """Engine builds and the float64 oracle's build of an import-like spec are transient."""
    require_engine("torch")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "mine.prototxt"
    spec.write_text(zoo.load("linreg").text.replace('name: "linreg"', 'name: "mine"', 1))
    results = zoo.verify([str(spec)], ["torch"], mode="both")
    assert [r.status for r in results] == ["pass", "pass"], [r.reason for r in results]
    assert cache.entries() == []
