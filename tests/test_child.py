"""Engines run in child processes: crashes, aborts and hangs are that engine's failure."""

import os

import pytest

from conftest import require_engine
from zoo import child, engines, verifier


@pytest.fixture
def two_engines():
    require_engine("onnx")
    require_engine("torch")


@pytest.mark.parametrize("fault,status,words", [
    ("sigkill", "error", "SIGKILL"),
    ("sigsegv", "error", "SIGSEGV"),
    ("abort", "error", "SIGABRT"),
    ("raise", "error", "RuntimeError: fault injected"),
])
def test_a_crashing_engine_is_reported_and_the_others_run(two_engines, monkeypatch, fault, status, words):
    monkeypatch.setenv("ZOO_FAULT", f"torch:{fault}")
    results = verifier.verify(["linreg"], ["onnx", "torch"])
    by = {r.engine: r for r in results}
    assert by["onnx"].status == "pass"
    assert by["torch"].status == status and words in by["torch"].reason, by["torch"].reason
    assert verifier.exit_status(results) == 1


def test_a_hanging_engine_times_out_and_its_group_is_killed(two_engines, monkeypatch):
    monkeypatch.setenv("ZOO_FAULT", "torch:hang")
    results = verifier.verify(["linreg"], ["torch", "onnx"], timeout=20)
    by = {r.engine: r for r in results}
    assert by["torch"].status == "error" and "timed out after 20 s" in by["torch"].reason
    assert by["onnx"].status == "pass"


def test_child_result_carries_stderr_tail():
    r = child.run("nosuch", "forward", {"artifact": "/nonexistent"}, timeout=60)
    assert r.status == "error" and "unknown engine 'nosuch'" in r.reason


def test_thread_variables_reach_the_child_before_import():
    env = engines.get("tensorflow").environment(3, "cpu")
    assert env["OMP_NUM_THREADS"] == "3" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert os.environ.get("ZOO_FAULT") is None


def test_gpu_device_without_cuda_is_a_clear_skip():
    require_engine("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    [r] = verifier.verify(["linreg"], ["torch"], device="gpu0")
    assert r.status == "skipped" and "no CUDA device is present" in r.reason, r.reason
