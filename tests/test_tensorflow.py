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
