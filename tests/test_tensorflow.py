"""TensorFlow/Keras: each explicit conversion is load-bearing (break it and verify fails at
that layer), and the built .keras file loads safely in plain Keras."""

import numpy as np
import pytest

import zoo
from conftest import require_engine
from layer_cases import CASES
from zoo import verifier


@pytest.fixture(autouse=True)
def _tf(monkeypatch, tmp_path):
    require_engine("tensorflow")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))   # broken builds stay in here


def _broken_verify(net, patch, monkeypatch):
    from zoo.converters import tensorflow as conv
    monkeypatch.setattr(conv, *patch)
    zoo.build(net, "tensorflow", in_process=True)             # the broken converter's build
    [r] = verifier.verify([net], ["tensorflow"])               # reuses that build
    return r


def test_flatten_permutation_is_load_bearing(monkeypatch):
    r = _broken_verify(zoo.load("alexnet-r"), ("dense_to_keras", lambda w, flat: np.ascontiguousarray(w.T)),
                       monkeypatch)
    assert r.status == "fail" and r.first_bad_layer == "fc", r


def test_lrn_alpha_scaling_is_load_bearing(monkeypatch):
    net = zoo.from_text(CASES["LRN"])
    r = _broken_verify(net, ("lrn_window_weight", lambda alpha, n: alpha), monkeypatch)
    assert r.status == "fail" and r.first_bad_layer == "n", r


def test_lstm_gate_mapping_is_load_bearing(monkeypatch):
    def swap_g_o(a):   # what a Keras converter that assumed i, f, o, g would do
        i, f, g, o = np.split(a, 4, axis=0)
        return np.concatenate([i, f, o, g], axis=0)
    net = zoo.from_text(CASES["Embedding-LSTM"])
    r = _broken_verify(net, ("lstm_gates_to_keras", swap_g_o), monkeypatch)
    assert r.status == "fail" and r.first_bad_layer == "lstm", r


def test_unbroken_converter_passes_in_process(monkeypatch):
    net = zoo.load("alexnet-r")
    zoo.build(net, "tensorflow", in_process=True)
    [r] = verifier.verify([net], ["tensorflow"])
    assert r.status == "pass", r.reason


def test_keras_file_loads_in_plain_keras_safe_mode(tmp_path):
    import subprocess
    import sys
    d = tmp_path / "d"
    zoo.build("alexnet-r", "tensorflow", out=d)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (f"import keras, numpy as np\nnet = keras.saving.load_model('{d}/model.keras', safe_mode=True)\n"
              f"y = net(np.load('{tmp_path}/x.npy'))\ny = y[0] if isinstance(y, list) else y\n"
              f"np.save('{tmp_path}/y.npy', np.asarray(y))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    net = zoo.load("alexnet-r").with_batch(2)
    ref = zoo.reference.forward(net, zoo.weights.make(zoo.load("alexnet-r")), {"data": x})["fc"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-4, atol=1e-5)


# --- the loss is part of the built model --------------------------------------------------
LOSSES = '''name: "losses"
train { lr: 0.1 momentum: 0.9 weight_decay: 0.01 }
layer { name: "x" type: "Input" input_param { shape: [2, 3, 4] } }
layer { name: "label" type: "Input" input_param { shape: [2, 3] dtype: INT64 } }
layer { name: "target" type: "Input" input_param { shape: [2, 3, 2] } }
layer { name: "logits" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 5 } }
layer { name: "a" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 2 } }
layer { name: "b" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 2 } }
layer { name: "ce" type: "SoftmaxWithLoss" bottom: "logits" bottom: "label" loss_param { loss_weight: 0.5 } }
layer { name: "ab" type: "EuclideanLoss" bottom: "a" bottom: "b" loss_param { loss_weight: 2 } }
layer { name: "at" type: "EuclideanLoss" bottom: "a" bottom: "target" }
'''


def test_training_loss_lives_in_the_model():
    """train.keras (safe mode) outputs the spec's total loss: (N, T, K) logits, loss
    weights, a Euclidean loss between two blobs and one against a label, summed exactly as
    the float64 reference sums them; the runner's step from it matches the float64 oracle."""
    import keras
    from test_tensorflow_float64 import assert_exact_step, tensorflow_runner
    from zoo import data, reference
    from zoo import weights as W
    from zoo.converters.tensorflow import TRAIN_MODEL_FILE
    net = zoo.from_text(LOSSES)
    weights, inputs = W.make(net), data.make(net)
    runner = tensorflow_runner(net)
    train = keras.saving.load_model(str(runner.dir / TRAIN_MODEL_FILE), safe_mode=True)
    feed = [inputs["x"].astype(np.float64), inputs["label"], inputs["target"].astype(np.float64)]
    got = float(train(feed))
    ref = reference.forward(net, weights, inputs)
    want = sum(float(ref[top]) for top in net.losses)
    assert abs(got - want) <= 1e-12 * abs(want), (got, want)
    assert_exact_step(runner, net, weights, inputs)


def test_runner_has_no_loss_formula():
    from pathlib import Path
    from zoo.runners import tensorflow as runner
    source = Path(runner.__file__).read_text()
    for formula in ("cross_entropy", "reduce_sum", "square", "SoftmaxWithLoss", "EuclideanLoss"):
        assert formula not in source, formula


# --- NCHW axes of an NHWC map ---------------------------------------------------------------
# C = H = W = 4: a wrong axis mapping keeps every shape and changes the values
AXES = '''name: "axes"
layer { name: "x" type: "Input" input_param { shape: [2, 3, 4, 4] } }
layer { name: "c" type: "Convolution" bottom: "x" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "red" type: "Reduce" bottom: "c" reduce_param { operation: MEAN axis: 1 keepdims: true } }
layer { name: "red2" type: "Reduce" bottom: "c" reduce_param { operation: MAX axis: [1, 3] } }
layer { name: "lsm" type: "LogSoftmax" bottom: "c" softmax_param { axis: 1 } }
layer { name: "sl" type: "Slice" bottom: "c" top: "s1" top: "s2" slice_param { axis: 1 size: [1, 3] } }
layer { name: "ln" type: "LayerNorm" bottom: "c" layer_norm_param { axis: 1 } }
layer { name: "ln2" type: "LayerNorm" bottom: "c" layer_norm_param { axis: 2 } }
layer { name: "pr" type: "PReLU" bottom: "c" }
layer { name: "tr" type: "Transpose" bottom: "c" transpose_param { order: [0, 2, 1, 3] } }
layer { name: "sd" type: "Convolution" bottom: "x" convolution_param { num_output: 4 kernel_size: 3 stride_h: 2 stride_w: 1 dilation: 2 pad: 2 } }
'''
MAPPED = ["red", "red2", "lsm", "s1", "s2", "ln", "ln2", "pr", "tr"]


def test_nchw_axes_map_to_nhwc(monkeypatch):
    """Exact (float64) with the mapping; without it every mapped layer is wrong. Also: a
    convolution with stride and dilation (Keras refuses both: zoo subsamples)."""
    from test_tensorflow_float64 import assert_exact_forward, tensorflow_runner
    from zoo import data, reference
    from zoo import weights as W
    from zoo.converters import tensorflow as conv
    net = zoo.from_text(AXES)
    weights, inputs = W.make(net), data.make(net)
    assert_exact_forward(tensorflow_runner(net), net, weights, inputs)
    monkeypatch.setattr(conv, "nhwc_axis", lambda a: a)
    zoo.build(net, "tensorflow", in_process=True, options={"dtype": "float64"}, force=True)
    broken = tensorflow_runner(net).forward(inputs, MAPPED)
    ref = reference.forward(net, weights, inputs)
    right = [b for b in MAPPED if broken[b].shape == ref[b].shape
             and np.abs(broken[b] - ref[b]).max() <= 1e-6 * np.abs(ref[b]).max()]
    assert not right, f"unchanged by a wrong axis mapping: {right}"
