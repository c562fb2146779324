"""`zoo bench --layers`: every engine's per-layer profile (runners/*.py `layer_times`) names
the spec's layers, is positive where work is done, and adds up to roughly the whole step.

The profiles are separate passes from the clean timing and each has its own overheads
(a sub-model per layer on TensorFlow and MXNet, hooks on PyTorch, a profiler on ONNX Runtime
and OpenCV), so "roughly" is a factor: the sum of the layers' times must be within
SUM_FACTOR of the whole step timed in the same profiling process just before (separate
processes on this shared VM differ by more than the layers' overheads). Each case prints its
ratio (pytest -s).
"""

import pytest

from conftest import require_engine
from zoo import benchmark
from zoo import net as N
from zoo.runners.base import by_spec_layer, spec_layer

NET = "mlp-mnist"       # 784-128-64-10: three InnerProducts big enough at this batch to time
BATCH = 4096    # work per layer well above this shared VM's scheduling noise (ms)
SUM_FACTOR = 3.0
CASES = [(e, "infer") for e in ("torch", "tensorflow", "mxnet", "onnx", "caffe", "caffe-opencv")] + \
        [(e, "train") for e in ("torch", "tensorflow", "mxnet", "caffe")]


@pytest.mark.parametrize("engine, mode", CASES)
def test_per_layer_times_name_the_spec_layers_and_add_up(engine, mode):
    require_engine(engine)
    [row] = benchmark.bench([NET], [engine], threads=[1], batch=BATCH, mode=mode, warmup=1,
                            iters=3, min_time=0, max_time=2, layers=True, peak=False)
    assert row["status"] == "ok", row["reason"]
    layers = row["layers"]
    assert layers, row.get("layers_reason")
    spec = {l.name for l in N.load(NET).layers}
    names = [l["layer"] for l in layers]
    assert set(names) <= spec, f"names that are no spec layer: {set(names) - spec}"
    assert len(names) == len(set(names))
    assert {"fc1", "fc2", "fc3"} <= set(names)
    for l in layers:
        assert l["forward_s"] >= 0 and l["backward_s"] >= 0, l
        if l["layer"].startswith("fc"):
            assert l["forward_s"] > 0, l
            if mode == "train":
                assert l["backward_s"] > 0, l
    total = sum(l["forward_s"] + l["backward_s"] for l in layers)
    ratio = total / row["layers_step_s"]
    print(f"{engine} {mode}: layers {total * 1e3:.2f} ms, step {row['layers_step_s'] * 1e3:.2f} ms, "
          f"ratio {ratio:.2f}")
    assert 1 / SUM_FACTOR <= ratio <= SUM_FACTOR, (
        f"{engine} {mode}: layers sum to {total * 1e3:.2f} ms, the step took "
        f"{row['layers_step_s'] * 1e3:.2f} ms in the same process (ratio {ratio:.2f})")


def test_engine_names_map_to_spec_layers():
    layers = ["conv1", "conv1_bn", "fc3", "fc"]
    assert spec_layer("conv1", layers) == "conv1"
    assert spec_layer("conv1/pad", layers) == "conv1"
    assert spec_layer("conv1_bn", layers) == "conv1_bn"       # the longer name wins
    assert spec_layer("fused fc3", layers) == "fc3"           # ONNX Runtime's fused node
    assert spec_layer("fc3_fc3_0_split", layers) == "fc3"     # Caffe's Split
    assert spec_layer("fcx", layers) == "fcx"                 # no layer: kept, not guessed
    rows = [{"layer": "fc3", "forward_s": 1.0, "backward_s": 2.0},
            {"layer": "fc3_fc3_0_split", "forward_s": 0.5, "backward_s": 0.0}]
    assert by_spec_layer(rows, layers) == [{"layer": "fc3", "forward_s": 1.5, "backward_s": 2.0}]


SQUARE = """name: "t-square"
train { lr: 0.01 batch_cpu: 64 batch_gpu: 64 }
layer { name: "data" type: "Input" input_param { shape: [64, 32] } }
layer { name: "label" type: "Input" input_param { shape: [64] dtype: INT64 } }
layer { name: "fc1" type: "InnerProduct" bottom: "data" inner_product_param { num_output: 32 } }
layer { name: "square" type: "Eltwise" bottom: "fc1" bottom: "fc1" eltwise_param { operation: PROD } }
layer { name: "fc2" type: "InnerProduct" bottom: "square" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc2" bottom: "label" }
"""


@pytest.mark.parametrize("engine", ["tensorflow", "mxnet"])
def test_a_layer_reading_one_blob_twice_is_profiled(engine, tmp_path):
    """ResNet-56's zero shortcut is an Eltwise of a blob with itself; a Keras sub-model
    cannot take one tensor as two inputs, which once failed TensorFlow's whole profile."""
    require_engine(engine)
    spec = tmp_path / "square.prototxt"
    spec.write_text(SQUARE)
    [row] = benchmark.bench([str(spec)], [engine], threads=[1], mode="train", warmup=1, iters=2,
                            min_time=0, max_time=1, layers=True, peak=False)
    assert row["status"] == "ok", row["reason"]
    assert row["layers"], row.get("layers_reason")
    assert "square" in {l["layer"] for l in row["layers"]}
