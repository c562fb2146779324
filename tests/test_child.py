"""Engines run in child processes (zoo/isolation.py): crashes, aborts, hangs and exceptions
are that engine's typed result, with the real cause as the one-line reason."""

import os

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo import engines, isolation, verifier


@pytest.fixture
def two_engines():
    require_engine("onnx")
    require_engine("torch")


@pytest.fixture(scope="module")
def linreg_torch():
    require_engine("torch")
    return zoo.build("linreg", "torch").path


def forward(artifact, **kw):
    x = np.zeros((2, 2), np.float32)
    return isolation.run("torch", "forward", {"artifact": str(artifact)}, {"x": x}, **kw)


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


@pytest.mark.parametrize("fault,status,reason", [
    ("sigkill", "crashed", "crashed with SIGKILL (killed: out of memory, or by hand)"),
    ("sigsegv", "crashed", "crashed with SIGSEGV"),
    # the fatal glog line, not the warning before it or the stack trace after it
    ("abort", "crashed", "crashed with SIGABRT: F0000 00:00:00.000000 1 fault.cc:2] Check failed: "
                         "fault injected by ZOO_FAULT"),
    # the exception's first line, not the MXNet-style WARNING printed before it
    ("raise", "error", "RuntimeError: fault injected by ZOO_FAULT"),
    ("unsupported", "unsupported", "fault injected by ZOO_FAULT: this engine cannot express it"),
])
def test_each_failure_is_one_typed_result_with_the_real_cause(linreg_torch, monkeypatch, fault, status, reason):
    monkeypatch.setenv("ZOO_FAULT", f"torch:{fault}")
    r = forward(linreg_torch, timeout=60)
    assert (r.status, r.reason) == (status, reason), (r.status, r.reason, r.stderr_tail)
    assert not r.ok and not r.arrays


def test_a_run_that_works_is_ok_with_its_arrays(linreg_torch):
    r = forward(linreg_torch, timeout=120)
    assert r.ok and r.reason == "" and r.arrays["fc"].shape == (2, 1), (r.status, r.reason)


def test_a_hanging_child_times_out_and_its_group_is_killed(linreg_torch, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_FAULT", "torch:hang-with-grandchild")
    r = forward(linreg_torch, timeout=4, keep_dir=tmp_path / "work")
    assert r.status == "timeout" and r.reason == "timed out after 4 s (process group killed)"
    assert "hanging (ZOO_FAULT)" in r.stderr_tail
    assert not isolation._live


def test_a_hanging_engine_times_out_in_verify_and_the_others_run(two_engines, monkeypatch):
    monkeypatch.setenv("ZOO_FAULT", "torch:hang")
    results = verifier.verify(["linreg"], ["torch", "onnx"], timeout=5)
    by = {r.engine: r for r in results}
    assert by["torch"].status == "error" and "timed out after 5 s" in by["torch"].reason
    assert by["onnx"].status == "pass"


def test_an_unknown_engine_is_unavailable_not_raised():
    r = isolation.run("nosuch", "forward", {"artifact": "/nonexistent"}, timeout=60)
    assert r.status == "engine-unavailable" and "unknown engine 'nosuch'" in r.reason


def test_a_missing_artifact_is_an_error_naming_it(monkeypatch):
    require_engine("torch")
    r = isolation.run("torch", "forward", {"artifact": "/nonexistent"}, timeout=60)
    assert r.status == "error" and r.reason == "/nonexistent: no manifest.json (not a finished zoo build)"


def test_the_crash_reason_skips_log_and_warning_lines():
    stderr = "\n".join([
        "Fatal error: the real cause",
        "I0000 00:00:1732900000.000000   12 cpu_feature_guard.cc:210] This TensorFlow binary is optimized",
        "W0000 00:00:1732900000.000000   12 onednn.cc:1] oneDNN custom operations are on.",
        "[20:21:00] ../src/nnvm/legacy_json_util.cc:209: Loading symbol saved by previous version",
        "[20:21:00] ../src/operator/nn/./mkldnn/mkldnn_base.cc:74: WARNING: type inference failed",
        "/x/site-packages/mxnet/gluon/block.py:1: UserWarning: something",
        "  warnings.warn(",
        "*** Check failure stack trace: ***",
        "    @     0x7f0000000000  (unknown)",
    ])
    assert isolation.meaningful_line(stderr) == "Fatal error: the real cause"
    assert isolation.meaningful_line("[20:21:00] src/a.cc:1: Check failed: x == y") == \
        "[20:21:00] src/a.cc:1: Check failed: x == y"


def test_thread_variables_reach_the_child_before_import():
    env = engines.get("tensorflow").environment(3, "cpu")
    assert env["OMP_NUM_THREADS"] == "3" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert os.environ.get("ZOO_FAULT") is None
    # MXNet: each operator on the threads asked, one operator at a time (two at once on
    # two threads each would oversubscribe the cores)
    env = engines.get("mxnet").environment(2, "cpu")
    assert env["OMP_NUM_THREADS"] == "2" and env["MXNET_CPU_WORKER_NTHREADS"] == "1"


def test_gpu_device_without_cuda_is_a_clear_skip():
    require_engine("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    [r] = verifier.verify(["linreg"], ["torch"], device="gpu0")
    assert r.status == "skipped" and "no CUDA device is present" in r.reason, r.reason



def test_a_caffe_training_step_leaves_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    """Caffe's solver reads its net from files; zoo writes them to a temporary folder and
    removes it once the solver has read them (406 such folders had piled up in /tmp)."""
    require_engine("caffe")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    (result,) = verifier.verify(["linreg"], ["caffe"], mode="train")
    assert result.status == "pass", result.reason
    # the oracle's torch keeps its own reusable compile cache there, which is not zoo's to remove
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("torchinductor_")] == []
