"""MXNet: the loss lives in the built model (NAME-train-symbol.json carries MXNet's loss heads,
the runner only feeds and steps), a build runs at any batch size, and a float64 build computes forward and the training step
in float64 (compared with the float64 reference and PyTorch float64 oracle at ~1e-9).
The inference files' plain use (SymbolBlock) is tests/test_plain_scripts.py's."""

import importlib
import json

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo import data, reference
from zoo import weights as W
from zoo.errors import Unsupported
from layer_cases import CASES

EXACT = 1e-9     # float64 against float64: relative to the blob's or update's scale

# two loss layers with weights, (N, T, K) sequence logits: every part of the loss heads
TWO_LOSSES = """
name: "t-two-losses"
train { lr: 0.1 momentum: 0.9 weight_decay: 0.01 }
layer { name: "x" type: "Input" input_param { shape: [3, 4, 5] } }
layer { name: "label" type: "Input" input_param { shape: [3, 4] dtype: INT64 } }
layer { name: "target" type: "Input" input_param { shape: [3, 4, 6] } }
layer { name: "fc" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 6 } }
layer { name: "ce" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" loss_param { loss_weight: 0.5 } }
layer { name: "l2" type: "EuclideanLoss" bottom: "fc" bottom: "target" loss_param { loss_weight: 2 } }
"""


@pytest.fixture(autouse=True)
def _mx(monkeypatch, tmp_path):
    require_engine("mxnet")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))


def _runner(engine, net, options=None):
    art = zoo.build(net, engine, options=options, in_process=True)
    r = importlib.import_module(f"zoo.runners.{engine}").Runner(art.path, "cpu")
    r.load()
    return art, r


def _rel(got, want, scale) -> float:
    return float(np.abs(np.asarray(got) - np.asarray(want)).max() / max(scale, 1e-300))


@pytest.mark.parametrize("name", ["linreg", "softmax-mnist"])
def test_training_step_at_another_batch_than_the_build(name):
    """The build is at the spec's batch (10, 64); verify runs it at 2: the loss heads read
    the batch size when the graph runs, so the loss is the reference's."""
    net = zoo.load(name)
    netb = net.with_batch(2)
    inputs = data.make(netb, 0)
    _, r = _runner("mxnet", net)
    losses, _ = r.train_step(inputs, 1)
    ref = reference.forward(netb, W.for_net(net, 0), inputs, train=True)
    want = float(sum(ref[loss] for loss in netb.losses))
    assert losses[0] == pytest.approx(want, rel=1e-6)


def test_a_confidently_wrong_prediction_has_its_whole_loss():
    """A row whose label has probability < 1e-8 (loss > 18.4): the reported loss is the
    reference's, not clipped (MXNet's softmax_cross_entropy would report at most 18.42)."""
    net = zoo.load("softmax-mnist")
    netb = net.with_batch(2)
    inputs = data.make(netb, 0)
    inputs["x"] = inputs["x"] * 1000
    _, r = _runner("mxnet", net, {"dtype": "float64"})
    losses, _ = r.train_step(inputs, 1)
    want = float(reference.forward(netb, W.for_net(net, 0), inputs, train=True)["loss"])
    assert want > 20 and losses[0] == pytest.approx(want, rel=EXACT)


def test_training_symbol_carries_the_loss_heads():
    net = zoo.from_text(TWO_LOSSES)
    art, r = _runner("mxnet", net)
    meta = art.manifest["meta"]
    graph = json.loads((art.path / meta["train_symbol"]).read_text())
    ops = {n["op"] for n in graph["nodes"]}
    assert {"log_softmax", "pick", "MakeLoss"} <= ops
    # with a temperature: MXNet's own kernel, not oneDNN's (1.4e-6 off; exact_log_softmax)
    assert all(float(n["attrs"]["temperature"]) == 1.0 for n in graph["nodes"] if n["op"] == "log_softmax")
    inputs = {n["name"] for n in graph["nodes"] if n["op"] == "null"}
    assert {"x", "label", "target"} <= inputs
    # the inference symbol has neither the labels nor the loss
    deploy = json.loads((art.path / f"{meta['prefix']}-symbol.json").read_text())
    assert "MakeLoss" not in {n["op"] for n in deploy["nodes"]}
    assert not {"label", "target"} & {n["name"] for n in deploy["nodes"]}
    netb = net.with_batch(2)
    feed = data.make(netb, 1)
    losses, _ = r.train_step(feed, 1)
    ref = reference.forward(netb, W.for_net(net, 0), feed, train=True)
    assert losses[0] == pytest.approx(float(ref["ce"] + ref["l2"]), rel=1e-6)


def test_training_step_matches_the_float64_oracle_with_two_weighted_losses():
    """Gradients of both heads, their weights and the (N, T, K) mean: against PyTorch."""
    net = zoo.from_text(TWO_LOSSES)
    netb = net.with_batch(2)
    feed = data.make(netb, 1)
    _, mx64 = _runner("mxnet", net, {"dtype": "float64"})
    _, oracle = _runner("torch", net, {"dtype": "float64"})
    got_losses, got = mx64.train_step(feed, 2)
    want_losses, want = oracle.train_step(feed, 2)
    assert np.allclose(got_losses, want_losses, rtol=EXACT, atol=0)
    w0 = W.for_net(net, 0)
    for key in want:
        scale = np.abs(want[key] - w0[key]).max()
        assert _rel(got[key], want[key], scale) < EXACT, key


# a classifier that is confidently right: a margin of ~100 between the labelled logit and the
# next, so the labels' log-probabilities are 0 and the logits' gradient is 0 in float32 too
CONFIDENT = """
name: "t-confident"
train { lr: 0.1 momentum: 0.9 weight_decay: 0.01 }
layer { name: "x" type: "Input" input_param { shape: [2, 5] } }
layer { name: "label" type: "Input" input_param { shape: [2] dtype: INT64 } }
layer { name: "fc" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }
"""


def test_a_confidently_right_prediction_has_no_gradient_in_float32():
    """MXNet's float32 log_softmax is oneDNN's logsoftmax primitive, whose log(sum) is off by
    ~1.4e-6 (log_softmax([0]) = +1.43e-6): a saturated softmax then had a loss of -1.43e-6
    and a spurious logit gradient of 1.43e-6, times the features in the weights' gradient
    (16x the 1e-3 update tolerance here; 58x and 1.6x on imported inception_v3 and
    resnet50, whose logits saturate after the first step). On MXNet's own kernel
    (temperature 1) it gets the float64 oracle's 0, as torch's float32 does."""
    net = zoo.from_text(CONFIDENT)
    netb = net.with_batch(2)
    w0 = W.for_net(net, 0)
    feed = data.make(netb, 0)
    feed["x"] = feed["x"] * 100
    feed["label"] = reference.forward(netb, w0, feed)["fc"].argmax(-1)
    _, mx32 = _runner("mxnet", net)
    _, oracle = _runner("torch", net, {"dtype": "float64"})
    got_losses, got = mx32.train_step(feed, 2)
    want_losses, want = oracle.train_step(feed, 2)
    assert want_losses == [0.0, 0.0]
    assert np.allclose(got_losses, want_losses, rtol=0, atol=1e-7), got_losses
    for key in want:     # the default rtol_update, relative to the update's scale
        assert _rel(got[key], want[key], np.abs(want[key] - w0[key]).max()) < 1e-3, key


@pytest.mark.parametrize("name", ["linreg", "alexnet-r"])
def test_float64_build_forward_and_training_step_are_exact(name):
    net = zoo.load(name)
    netb = net.with_batch(2)
    inputs = data.make(netb, 0)
    art, r = _runner("mxnet", net, {"dtype": "float64"})
    assert art.manifest["meta"]["dtype"] == "float64"
    ref = reference.forward(netb, W.for_net(net, 0), inputs)
    everything = r.forward(inputs, ["*"])
    for blob, got in everything.items():
        assert got.dtype == np.float64
        assert _rel(got, ref[blob], np.abs(ref[blob]).max()) < EXACT, blob
    got_losses, got = r.train_step(inputs, 2)
    _, oracle = _runner("torch", net, {"dtype": "float64"})
    want_losses, want = oracle.train_step(inputs, 2)
    assert np.allclose(got_losses, want_losses, rtol=EXACT, atol=0)
    w0 = W.for_net(net, 0)
    for key in want:
        assert got[key].dtype == np.float64
        assert _rel(got[key], want[key], np.abs(want[key] - w0[key]).max()) < EXACT, key


# rows whose float64 build differs from their float32 one (LeakyReLU's and PReLU's where, both
# GELUs (erf with an exact gradient), LSTM's float64 constants) or uses this converter's own
# arrangements (merged LayerNorm axes, asymmetric AVE pooling's divisor map, batch_dot with scale)
EXACT_ROWS = ["LeakyReLU", "PReLU", "GELU", "GELU-tanh", "HardSwish", "LayerNorm-chw-noaffine",
              "MatMul-attention", "Pooling-AVE-asymmetric-ceil-PADDED", "Embedding-LSTM"]


@pytest.mark.parametrize("case", EXACT_ROWS)
def test_float64_layer_rows_are_exact(case):
    net = zoo.from_text(CASES[case], file=f"tests/layer_cases.py:{case}")
    netb = net.with_batch(2)
    inputs = data.make(netb, 0)
    _, r = _runner("mxnet", net, {"dtype": "float64"})
    ref = reference.forward(netb, W.for_net(net, 0), inputs)
    for blob, got in r.forward(inputs, ["*"]).items():
        assert _rel(got, ref[blob], np.abs(ref[blob]).max()) < EXACT, blob
    got_losses, got = r.train_step(inputs, 1)
    _, oracle = _runner("torch", net, {"dtype": "float64"})
    want_losses, want = oracle.train_step(inputs, 1)
    assert np.allclose(got_losses, want_losses, rtol=EXACT, atol=0)
    w0 = W.for_net(net, 0)
    learned = [k for k, ws in net.weight_specs().items() if ws.kind == "param"]
    for key in learned:
        assert _rel(got[key], want[key], np.abs(want[key] - w0[key]).max()) < EXACT, key


def test_float64_build_refuses_lrn_with_the_reason():
    net = zoo.from_text(CASES["LRN"])
    with pytest.raises(Unsupported, match="LRN computes in float32 only"):
        zoo.build(net, "mxnet", options={"dtype": "float64"}, in_process=True)


def test_unknown_dtype_is_refused():
    with pytest.raises(Unsupported, match="float16"):
        zoo.build(zoo.load("linreg"), "mxnet", options={"dtype": "float16"}, in_process=True)


def test_a_build_from_before_training_symbols_is_refused_with_the_fix(tmp_path):
    """A build written by an older zoo (zoo/builds.py keys its cache by the converter's source,
    but a build given by path, `--out`, is read as it is) that predates the loss moving into
    the model says so instead of crashing."""
    from zoo.errors import ManifestError
    art = zoo.build("linreg", "mxnet", out=tmp_path / "old")
    manifest = json.loads((art.path / "manifest.json").read_text())
    del manifest["meta"]["train_symbol"]
    (art.path / "manifest.json").write_text(json.dumps(manifest))
    runner = importlib.import_module("zoo.runners.mxnet").Runner(art.path, "cpu")
    with pytest.raises(ManifestError, match="rebuild it"):
        runner.load()
