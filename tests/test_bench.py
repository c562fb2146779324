"""`zoo bench`: every engine timed the same way; JSON/CSV keys; plots; per-layer pass."""

import json
import os
import subprocess
import sys

import pytest

from conftest import require_engine
from test_cases import NO_LOSS
from zoo import benchmark
from zoo import engines as E

KEYS = ["network", "engine", "device", "threads", "batch", "mode", "median_s", "min_s", "max_s", "iters",
        "samples_per_s", "gflops", "peak_rss_mb"]


def test_bench_cli_writes_json_csv_and_plots(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "bench", "alexnet-r", "linreg", "--threads", "1,2",
                        "--batch", "8", "--iters", "2", "--min-time", "0", "--max-time", "1", "--warmup", "1", "--mode", "both",
                        "--json", str(out), "--csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "r.png")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads(out.read_text())
    ok = [x for x in rows if x["status"] == "ok"]
    assert ok, rows
    for x in ok:
        for k in KEYS:
            assert x[k] is not None, k
        assert x["iters"] >= 2 and x["min_s"] <= x["median_s"] <= x["max_s"]
        assert x["environment"]["cpu"] and x["spec_sha256"] and x["weights_sha256"]
    assert {x["threads"] for x in ok} == {1, 2}
    for x in rows:
        if x["status"] == "skipped":
            assert x["reason"]
    for f in ("r.png", "r.svg", "r-bars.png", "r-bars.svg", "r.csv"):
        assert (tmp_path / f).stat().st_size > 0


@pytest.mark.parametrize("engine", ["torch", "caffe"])
def test_layer_breakdown_is_a_separate_pass(engine):
    require_engine(engine)
    [row] = benchmark.bench(["alexnet-r"], [engine], threads=[1], batch=8, mode="train", warmup=1, iters=2,
                            min_time=0, layers=True)
    assert row["status"] == "ok", row["reason"]
    names = {l["layer"] for l in row["layers"]}
    assert {"conv1", "conv2", "fc"} <= names
    assert all(l["forward_s"] >= 0 and l["backward_s"] >= 0 for l in row["layers"])
    assert any(l["backward_s"] > 0 for l in row["layers"])


def test_gpu_request_without_gpu_is_skipped_never_run_on_cpu():
    require_engine("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    [row] = benchmark.bench(["linreg"], ["torch"], device="gpu0", batch=4, iters=1, min_time=0)
    assert row["status"] == "skipped" and "no CUDA device" in row["reason"] and row.get("median_s") is None


def test_bench_without_a_loss_skips_train_on_every_engine_and_times_infer(tmp_path):
    """As every model `zoo import` writes: train mode (the default) has nothing to train, so
    each engine says why, with no time and no child (nothing is even built); infer is timed."""
    spec = tmp_path / "noloss.prototxt"
    spec.write_text(NO_LOSS)
    cache = tmp_path / "cache"
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "bench", str(spec), "--json", str(out)],
                       capture_output=True, text=True, env={**os.environ, "ZOO_CACHE": str(cache)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [x["engine"] for x in rows] == list(E.ENGINES)
    for x in rows:
        assert x["mode"] == "train" and x["status"] == "skipped", x
        assert x["reason"] == "the network has no loss layer; use --mode infer"
        assert x.get("median_s") is None
    assert not cache.exists()
    require_engine("torch")
    [row] = benchmark.bench([str(spec)], ["torch"], mode="infer", iters=1, warmup=0, min_time=0)
    assert row["status"] == "ok" and row["batch"] == 2 and row["median_s"] > 0, row


def test_bench_reports_trustworthy_statistics_repeats_load_and_peak():
    """linreg on onnx: the adaptive method's figures, two fresh processes with their spread,
    the load around the point, the GEMM peak beside the GFLOP/s, and ONNX Runtime's per-layer
    profile."""
    require_engine("onnx")
    [row] = benchmark.bench(["linreg"], ["onnx"], threads=[1], batch=4, mode="infer", warmup=1,
                            iters=6, min_time=0.02, max_time=0.5, repeat=2, layers=True)
    assert row["status"] == "ok", row["reason"]
    assert row["p10_s"] <= row["median_s"] <= row["p90_s"] <= row["p99_s"] <= row["max_s"]
    assert row["ci_low_s"] <= row["median_s"] <= row["ci_high_s"] and row["iters"] >= 6
    assert row["stopped_by"] in ("ci", "max_time") and row["cv"] >= 0 and row["mean_s"] > 0
    assert row["repeat"] == 2 and len(row["repeat_medians_s"]) == 2
    assert row["median_s"] in row["repeat_medians_s"] and row["between_rel_range"] >= 0
    assert row["load_before"] is not None and row["others_cores"] is not None
    assert isinstance(row["noisy"], bool) and row["noisy"] == bool(row["noise"])
    assert row["peak_gflops"] > 0 and row["peak_fraction"] == row["gflops"] / row["peak_gflops"]
    assert [l["layer"] for l in row["layers"]] == ["fc"] and row["layers"][0]["forward_s"] > 0


@pytest.mark.parametrize("kw, message", [({"ci_width": 0}, "ci_width must be a number > 0"),
                                         ({"max_time": 0.5, "min_time": 1}, "less than min_time"),
                                         ({"method": "best"}, "method must be adaptive or fixed"),
                                         ({"repeat": 0}, "repeat must be an integer >= 1")])
def test_meaningless_statistics_settings_are_refused_before_anything_runs(kw, message):
    from zoo.errors import UsageError
    with pytest.raises(UsageError, match=message):
        benchmark.bench(["linreg"], ["onnx"], mode="infer", **kw)


def test_a_peak_measured_on_a_busy_machine_is_measured_again_and_not_kept(tmp_path, monkeypatch):
    """A GEMM peak measured while other processes held the cores reads low: it serves the
    run that measured it, and the next run measures again instead of reading it back."""
    from zoo import peak
    monkeypatch.setattr(peak, "folder", lambda: tmp_path)
    figures = iter([{"gflops": 20.0, "others_cores": 1.8},      # busy
                    {"gflops": 100.0, "others_cores": 0.1},     # quiet
                    {"gflops": 999.0, "others_cores": 0.0}])    # never asked for
    calls = []

    def measure(lib, n, size, reps):
        calls.append((lib, n))
        return next(figures)
    monkeypatch.setattr(peak, "measure", measure)
    assert peak.peak(1, libraries=("numpy",))["gflops"] == 20.0
    assert peak.peak(1, libraries=("numpy",))["gflops"] == 100.0     # measured again
    assert peak.peak(1, libraries=("numpy",))["gflops"] == 100.0     # now from the cache
    assert calls == [("numpy", 1), ("numpy", 1)]
