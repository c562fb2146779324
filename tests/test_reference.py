"""The float64 NumPy reference against values computed by hand, one row per layer type."""

import numpy as np
import pytest

from zoo import spec_pb2
from zoo.layers import REGISTRY, get
from zoo.layers.pooling import pool_out


def P(field, **kw):
    msg = getattr(spec_pb2, field)()
    for k, v in kw.items():
        if isinstance(v, list):
            getattr(msg, k).extend(v)
        else:
            setattr(msg, k, v)
    return msg


def run(type_, p, xs, w=None):
    return get(type_).forward(p, [np.asarray(x, dtype=np.float64) for x in xs], w or {})[0]


def test_inner_product():
    x = [[1.0, 2.0]]
    w = {"weight": np.array([[1.0, 0.0], [2.0, -1.0], [0.5, 0.5]]), "bias": np.array([0.0, 1.0, -1.0])}
    np.testing.assert_allclose(run("InnerProduct", P("InnerProductParam", num_output=3), [x], w),
                               [[1.0, 1.0, 0.5]])


def test_inner_product_on_sequences_uses_last_axis():
    x = np.arange(6.0).reshape(1, 3, 2)
    w = {"weight": np.array([[1.0, 1.0]])}
    np.testing.assert_allclose(run("InnerProduct", P("InnerProductParam", num_output=1, bias_term=False), [x], w),
                               [[[1.0], [5.0], [9.0]]])


def test_convolution_by_hand():
    x = np.arange(9.0).reshape(1, 1, 3, 3)          # 0..8
    w = {"weight": np.ones((1, 1, 2, 2)), "bias": np.array([10.0])}
    y = run("Convolution", P("ConvolutionParam", num_output=1, kernel_size=2), [x], w)
    np.testing.assert_allclose(y, [[[[0 + 1 + 3 + 4 + 10, 1 + 2 + 4 + 5 + 10], [3 + 4 + 6 + 7 + 10, 4 + 5 + 7 + 8 + 10]]]])


def test_convolution_pad_stride_dilation_group():
    x = np.zeros((1, 2, 5, 5)); x[0, 0, 2, 2] = 1.0; x[0, 1, 0, 0] = 3.0
    w = {"weight": np.ones((2, 1, 2, 2))}
    p = P("ConvolutionParam", num_output=2, kernel_size=2, pad=1, stride=2, dilation=2, group=2, bias_term=False)
    y = run("Convolution", p, [x], w)
    # out = floor((5 + 2 - 2*(2-1) - 1)/2) + 1 = 3; group 0 sees only channel 0
    assert y.shape == (1, 2, 3, 3)
    # output (i, j) of group 0 sums padded input at rows {2i, 2i+2} - 1, cols {2j, 2j+2} - 1
    # x[2,2] (padded 3,3) is never on those odd positions... check by brute force instead
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for g in range(2):
        for i in range(3):
            for j in range(3):
                want = sum(xp[0, g, 2 * i + a * 2, 2 * j + b * 2] for a in range(2) for b in range(2))
                assert y[0, g, i, j] == want


def test_pool_output_sizes():
    assert pool_out(8, 3, 2, 0, ceil=False) == 3 and pool_out(8, 3, 2, 0, ceil=True) == 4
    assert pool_out(5, 2, 2, 1, ceil=True) == 3     # the 4th window would start in the padding
    assert pool_out(32, 3, 2, 0, ceil=False) == 15  # AlexNet-R
    assert pool_out(7, 3, 2, 0, ceil=True) == 3 and pool_out(7, 3, 2, 0, ceil=False) == 3


def test_max_pool_ceil_never_takes_padding():
    x = -np.arange(1.0, 17.0).reshape(1, 1, 4, 4)   # all negative
    p = P("PoolingParam", pool=0, kernel_size=3, stride=2, pad=1, round_mode=2)
    y = run("Pooling", p, [x])
    # out = ceil((4+2-3)/2)+1 = 3; windows start at -1, 1, 3 (3 < 4 + 1: kept)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0] == -1.0 and y[0, 0, 2, 2] == -16.0


def test_average_pool_divisors():
    x = np.ones((1, 1, 4, 4))
    padded = P("PoolingParam", pool=1, kernel_size=3, stride=2, pad=1, round_mode=2, avg_divisor=1)
    valid = P("PoolingParam", pool=1, kernel_size=3, stride=2, pad=1, round_mode=2, avg_divisor=2)
    yp, yv = run("Pooling", padded, [x]), run("Pooling", valid, [x])
    # corner window [-1, 2): PADDED counts 3x3 = 9 positions, 4 of them real -> 4/9
    assert yp[0, 0, 0, 0] == pytest.approx(4 / 9)
    # last window [3, 6) is clipped to [3, H + pad) = [3, 5): 2 positions, 1 real -> 1/2 per axis
    assert yp[0, 0, 2, 2] == pytest.approx(1 / 4)
    assert yp[0, 0, 0, 2] == pytest.approx((2 * 1) / (3 * 2))
    np.testing.assert_allclose(yv, 1.0)              # VALID: only real inputs, all ones


def test_global_pool():
    x = np.arange(8.0).reshape(1, 2, 2, 2)
    y = run("Pooling", P("PoolingParam", pool=1, global_pooling=True), [x])
    np.testing.assert_allclose(y.ravel(), [1.5, 5.5])


def test_activations():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(run("ReLU", None, [x]), [0, 0, 2])
    np.testing.assert_allclose(run("Sigmoid", None, [x]), 1 / (1 + np.exp([1.0, 0.0, -2.0])))
    np.testing.assert_allclose(run("TanH", None, [x]), np.tanh(x))


def test_lrn_formula_and_alpha_scaling():
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    p = P("LRNParam", local_size=3, alpha=3.0, beta=0.5, k=1.0)
    y = run("LRN", p, [x]).ravel()
    # channel 1: window {0,1,2}: sum x^2 = 14; (1 + 3/3 * 14)^-0.5 * 2
    assert y[1] == pytest.approx(2 * 15 ** -0.5)
    # channel 0: window clipped to {0,1}: 1 + 4 = 5 -> (1 + 5)^-0.5
    assert y[0] == pytest.approx(6 ** -0.5)


def test_dropout_is_identity():
    x = np.arange(4.0)
    np.testing.assert_array_equal(run("Dropout", P("DropoutParam", dropout_ratio=0.5), [x]), x)


def test_softmax():
    y = run("Softmax", P("SoftmaxParam", axis=1), [np.array([[[0.0, 5.0], [np.log(3.0), 5.0]]])])
    np.testing.assert_allclose(y, [[[0.25, 0.5], [0.75, 0.5]]])


def test_flatten_reshape_concat():
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(run("Flatten", P("FlattenParam", axis=1), [x]), x.reshape(2, 12))
    np.testing.assert_array_equal(run("Reshape", P("ReshapeParam", shape=[0, -1, 4]), [x]), x.reshape(2, 3, 4))
    y = run("Concat", P("ConcatParam", axis=1), [x, x[:, :1]])
    assert y.shape == (2, 4, 2, 2) and (y[:, 3] == x[:, 0]).all()


def test_eltwise():
    a, b = np.array([1.0, -2.0]), np.array([3.0, 4.0])
    np.testing.assert_allclose(run("Eltwise", P("EltwiseParam", operation=1, coeff=[2.0, -1.0]), [a, b]), [-1, -8])
    np.testing.assert_allclose(run("Eltwise", P("EltwiseParam", operation=0), [a, b]), [3, -8])
    np.testing.assert_allclose(run("Eltwise", P("EltwiseParam", operation=2), [a, b]), [3, 4])
    np.testing.assert_allclose(run("Eltwise", P("EltwiseParam", operation=1, coeff=[0.0, 0.0]), [a, b]), [0, 0])


def test_batch_norm_inference_and_training():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    w = {"gamma": np.array([2.0, 1.0]), "beta": np.array([0.0, 1.0]),
         "running_mean": np.array([1.0, 0.0]), "running_var": np.array([3.0, 15.0])}
    p = P("BatchNormParam", eps=1.0)
    np.testing.assert_allclose(run("BatchNorm", p, [x], w), [[0.0, 1.5], [2.0, 2.5]])
    y = get("BatchNorm").forward_train(p, [x], w)[0]
    # batch mean [2, 4], biased var [1, 4]: (x - m) / sqrt(v + 1)
    np.testing.assert_allclose(y, [[2 * -1 / np.sqrt(2), -2 / np.sqrt(5) + 1], [2 * 1 / np.sqrt(2), 2 / np.sqrt(5) + 1]])


def test_embedding():
    w = {"weight": np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])}
    y = get("Embedding").forward(P("EmbeddingParam", input_dim=3, num_output=2), [np.array([[2, 0]])], w)[0]
    np.testing.assert_array_equal(y, [[[4, 5], [0, 1]]])


def test_lstm_one_unit_by_hand():
    # one unit, one input: gates rows i, f, g, o
    w = {"weight_ih": np.array([[1.0], [0.0], [2.0], [0.5]]), "weight_hh": np.array([[0.0], [1.0], [0.0], [0.0]]),
         "bias": np.array([0.0, 0.0, 0.0, 0.0])}
    x = np.array([[[1.0], [0.0]]])
    y = run("LSTM", P("LSTMParam", num_output=1), [x], w)
    s = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c1 = s(1.0) * np.tanh(2.0)                  # f * 0 + i * g
    h1 = s(0.5) * np.tanh(c1)
    c2 = s(h1) * c1 + s(0.0) * np.tanh(0.0)     # step 2: x = 0, f sees h1
    h2 = s(0.0) * np.tanh(c2)
    np.testing.assert_allclose(y.ravel(), [h1, h2])


def test_losses():
    logits = np.array([[0.0, np.log(3.0)], [0.0, 0.0]])
    loss = get("SoftmaxWithLoss").forward(P("LossParam"), [logits, np.array([1, 0])], {})[0]
    assert float(loss) == pytest.approx((-np.log(0.75) - np.log(0.5)) / 2)
    e = get("EuclideanLoss").forward(P("LossParam"), [np.array([[1.0, 2.0], [0.0, 0.0]]), np.zeros((2, 2))], {})[0]
    assert float(e) == pytest.approx(5.0 / 4)


def test_every_layer_type_has_a_hand_computed_test():
    import inspect
    import sys
    src = inspect.getsource(sys.modules[__name__])
    for t in REGISTRY:
        if t != "Input":
            assert f'"{t}"' in src, f"no hand-computed test for {t}"
