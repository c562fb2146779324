"""TensorFlow/Keras in float64 (exact mode): the converter honours options {"dtype":
"float64"}, the runner feeds and answers float64, and the model then computes what the spec
means to float64 rounding: forward against the NumPy reference, a training step against
the float64 PyTorch oracle, both within 1e-9 of a layer's scale. At that tolerance a wrong
layout, weight mapping or loss scale cannot hide behind float32 rounding."""

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo import data, reference
from zoo import weights as W
from zoo.errors import UsageError

EXACT = 1e-9     # relative to the blob's (or the layer's update's) largest magnitude


@pytest.fixture(autouse=True)
def _engines(monkeypatch, tmp_path):
    require_engine("tensorflow")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))


def tensorflow_runner(net, dtype="float64"):
    from zoo.runners.tensorflow import Runner
    art = zoo.build(net, "tensorflow", in_process=True, options={"dtype": dtype})
    runner = Runner(art.path)
    runner.load()
    return runner


def oracle_step(net, inputs, steps):
    """The verify oracle: zoo's PyTorch model in float64, `steps` SGD steps."""
    require_engine("torch")
    from zoo.runners.torch import Runner
    art = zoo.build(net, "torch", in_process=True, options={"dtype": "float64"})
    runner = Runner(art.path)
    runner.load()
    return runner.train_step(inputs, steps)


def assert_exact_forward(runner, net, weights, inputs):
    ref = reference.forward(net, weights, inputs)
    got = runner.forward(inputs, ["*"])
    assert got, "no blob came back"
    for blob, y in got.items():
        assert y.dtype == np.float64, (blob, y.dtype)
        scale = max(float(np.abs(ref[blob]).max()), 1e-30)
        err = float(np.abs(y - ref[blob]).max())
        assert err <= EXACT * scale, f"{blob}: |tf - ref| = {err:.3g}, scale {scale:.3g}"


def assert_exact_step(runner, net, weights, inputs, steps=2):
    losses, trained = runner.train_step(inputs, steps)
    want_losses, want = oracle_step(net, inputs, steps)
    np.testing.assert_allclose(losses, want_losses, rtol=EXACT, atol=0)
    updated = 0
    for key, ws in net.weight_specs().items():
        if ws.kind != "param":
            continue            # running statistics follow each engine's own rule
        assert trained[key].dtype == np.float64, key
        got, exp = trained[key] - weights[key], want[key] - weights[key]
        scale = float(np.abs(exp).max())
        assert np.abs(got - exp).max() <= EXACT * scale, f"{key}: update off at {EXACT} of {scale:.3g}"
        updated += scale > 0
    assert updated, "no parameter moved: the step checked nothing"


@pytest.mark.parametrize("name", ["linreg", "alexnet-r"])
def test_float64_forward_and_training_step_are_exact(name):
    net = zoo.load(name).with_batch(2)
    weights, inputs = W.make(net), data.make(net)
    runner = tensorflow_runner(net)
    assert_exact_forward(runner, net, weights, inputs)
    assert_exact_step(runner, net, weights, inputs)


def test_float32_build_stays_float32():
    net = zoo.load("linreg").with_batch(2)
    runner = tensorflow_runner(net, "float32")
    (y,) = runner.forward(data.make(net)).values()
    assert y.dtype == np.float32
    assert runner.model.get_layer("fc").kernel.dtype == "float32"


def test_unknown_dtype_is_refused():
    from zoo.converters import tensorflow as conv
    with pytest.raises(UsageError, match="dtype must be one of float32, float64, not 'float16'"):
        conv.build_dtype({"dtype": "float16"})
