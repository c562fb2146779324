"""The gradient of a Clip at its kinks is 0 (zoo.proto ClipParam: 1 strictly between min and
max, as PyTorch's ReLU6/Hardtanh and every engine's ReLU at 0; HardSigmoid, a Clip of
alpha x + beta to [0, 1], likewise). TensorFlow's clip_by_value and MXNet's clip pass the
gradient at x == min and x == max, so a value exactly at a kink
(an exact zero from a zero bias on zero inputs, common in imported networks with BatchNorm
folded from its initial statistics) trained differently there. The network here puts one
sample's outputs exactly on both kinks, through a bias that starts at exactly 0."""

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo import isolation
from zoo import weights as W

SPEC = """name: "t-clip-kinks"
weights: "kinks.npz"
train { lr: 0.1 }
layer { name: "x" type: "Input" input_param { shape: [2, 3] } }
layer { name: "y" type: "Input" input_param { shape: [2, 4] } }
layer { name: "fc" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 4 } }
layer { name: "a" type: "Clip" bottom: "fc" clip_param { min: 0 max: %g } }
layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "y" }
"""
WEIGHT = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.25, -1]], np.float32)



def _feed(top: float) -> dict:
    """Sample 0: every output exactly 0 (the lower kink); sample 1: output 0 exactly `top`."""
    return {"x": np.array([[0, 0, 0], [top, -1, 2]], np.float32), "y": np.full((2, 4), 3, np.float32)}


def _trained(engine, net, feed, options=None):
    art = zoo.build(net, engine, options=options)
    res = isolation.run(engine, "train", {"artifact": str(art.path), "steps": 1}, feed)
    assert res.ok, res.reason
    return res.arrays


@pytest.mark.parametrize("top", [6.0, 4.0])     # ReLU6 (a native op in some engines), any Clip
@pytest.mark.parametrize("engine", ["torch", "tensorflow", "mxnet", "caffe"])
def test_clip_passes_no_gradient_at_its_kinks(engine, top, tmp_path):
    require_engine(engine)
    W.save({"fc.weight": WEIGHT, "fc.bias": np.zeros(4, np.float32)}, tmp_path / "kinks.npz")
    (tmp_path / "kinks.prototxt").write_text(SPEC % top)
    net = zoo.load(tmp_path / "kinks.prototxt")
    got = _trained(engine, net, _feed(top))
    want = _trained("torch", net, _feed(top), {"dtype": "float64"})
    # at a kink the bias gets nothing: only sample 1's outputs 1-3, strictly inside, move it
    assert want["fc.bias"][0] == 0.0
    for key in ("fc.weight", "fc.bias"):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=key)


HARD_SIGMOID = """name: "t-hard-sigmoid-kinks"
weights: "kinks.npz"
train { lr: 0.1 }
layer { name: "x" type: "Input" input_param { shape: [2, 3] } }
layer { name: "y" type: "Input" input_param { shape: [2, 4] } }
layer { name: "fc" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 4 } }
layer { name: "a" type: "HardSigmoid" bottom: "fc" hard_sigmoid_param { alpha: 0.5 beta: 0.5 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "y" }
"""


@pytest.mark.parametrize("engine", ["torch", "tensorflow", "mxnet", "caffe"])
def test_hard_sigmoid_passes_no_gradient_at_its_kinks(engine, tmp_path):
    """HardSigmoid is Clip(alpha x + beta, 0, 1) and has its gradient (zoo.proto): alpha
    strictly inside, 0 at both kinks. PyTorch's clamp passes the gradient at both kinks and
    TensorFlow's ReLU(max_value=1) at 1; each converter gives the spec's. Output 0 sits
    exactly on the lower kink in sample 0 (0.5 * -1 + 0.5) and on the upper one in sample 1
    (0.5 * 1 + 0.5), outputs 1 and 2 of sample 1 strictly inside."""
    require_engine(engine)
    W.save({"fc.weight": WEIGHT, "fc.bias": np.zeros(4, np.float32)}, tmp_path / "kinks.npz")
    (tmp_path / "kinks.prototxt").write_text(HARD_SIGMOID)
    net = zoo.load(tmp_path / "kinks.prototxt")
    feed = {"x": np.array([[-1, -1, -1], [1, 0.5, -0.5]], np.float32),
            "y": np.full((2, 4), 0.9, np.float32)}
    got = _trained(engine, net, feed)
    want = _trained("torch", net, feed, {"dtype": "float64"})
    assert want["fc.bias"][0] == 0.0 and np.all(want["fc.bias"][1:3] != 0.0)
    for key in ("fc.weight", "fc.bias"):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=key)
