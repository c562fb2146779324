"""The float64 NumPy reference against values computed by hand, one row per layer type."""

import numpy as np
import pytest

from zoo import spec_pb2
from zoo.layers import REGISTRY, get
from zoo.layers.pooling import pool_out, pool_out_sides


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


# --- issue 14: today's vocabulary, checked against torch.nn.functional in float64 -----------
torch = pytest.importorskip("torch")
F = torch.nn.functional


def T(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def conv_p(**kw):
    kw.setdefault("num_output", 4)
    kw.setdefault("bias_term", True)
    return P("ConvolutionParam", **kw)


@pytest.mark.parametrize("kw,torch_kw", [
    (dict(kernel_h=3, kernel_w=1, stride_h=2, stride_w=1, pad_h=1, pad_w=0),
     dict(stride=(2, 1), padding=(1, 0))),
    (dict(kernel_size=3, dilation_h=2, dilation_w=1, pad_h=2, pad_w=1),
     dict(dilation=(2, 1), padding=(2, 1))),
    (dict(kernel_h=1, kernel_w=5, stride=2), dict(stride=2)),
])
def test_convolution_per_axis_matches_torch(kw, torch_kw):
    x = rand(2, 3, 9, 8)
    p = conv_p(**kw)
    g = get("Convolution")
    wshape = g.weights(p, [x.shape])[0].shape
    w = {"weight": rand(*wshape, seed=1), "bias": rand(4, seed=2)}
    y = run("Convolution", p, [x], w)
    want = F.conv2d(T(x), T(w["weight"]), T(w["bias"]), **torch_kw).numpy()
    assert y.shape == want.shape == g.infer(p, [x.shape])[0]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_convolution_asymmetric_pads_match_torch():
    x = rand(2, 3, 7, 6)
    p = conv_p(kernel_size=3, stride=2, pad_top=0, pad_bottom=1, pad_left=2, pad_right=0)
    w = {"weight": rand(4, 3, 3, 3, seed=1), "bias": rand(4, seed=2)}
    y = run("Convolution", p, [x], w)
    want = F.conv2d(F.pad(T(x), (2, 0, 0, 1)), T(w["weight"]), T(w["bias"]), stride=2).numpy()
    assert y.shape == (2, 4, 3, 3) == get("Convolution").infer(p, [x.shape])[0]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_and_grouped_convolution_match_torch(stride):
    x = rand(2, 6, 7, 7)
    for group, out in ((6, 6), (6, 12), (3, 6)):   # depthwise, depthwise x2, grouped
        p = conv_p(num_output=out, kernel_size=3, pad=1, stride=stride, group=group)
        w = {"weight": rand(out, 6 // group, 3, 3, seed=group), "bias": rand(out, seed=3)}
        y = run("Convolution", p, [x], w)
        want = F.conv2d(T(x), T(w["weight"]), T(w["bias"]), stride=stride, padding=1,
                        groups=group).numpy()
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def brute_pool(x, kh, kw, sh, sw, pads, oh, ow, op, divisor=None):
    """Pooling by loops: window [start, start + k) clipped to the real input for MAX and the
    sum; the divisor clipped to [-top, H + bottom) (PADDED) or [0, H) (VALID)."""
    top, bottom, left, right = pads
    n, c, h, w = x.shape
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * sh - top, j * sw - left
            rows, cols = slice(max(r0, 0), min(r0 + kh, h)), slice(max(c0, 0), min(c0 + kw, w))
            win = x[:, :, rows, cols]
            if op == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
                continue
            if divisor == "valid":
                count = win.shape[2] * win.shape[3]
            else:
                count = ((min(r0 + kh, h + bottom) - max(r0, -top))
                         * (min(c0 + kw, w + right) - max(c0, -left)))
            y[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return y


@pytest.mark.parametrize("pads,rm", [((0, 1, 1, 0), 2), ((1, 0, 0, 2), 2), ((1, 2, 2, 1), 1),
                                     ((2, 0, 1, 1), 2)])
def test_pooling_asymmetric_pads_with_ceil(pads, rm):
    x = rand(1, 2, 7, 8)
    top, bottom, left, right = pads
    kw = dict(kernel_h=3, kernel_w=4, stride_h=2, stride_w=3, pad_top=top, pad_bottom=bottom,
              pad_left=left, pad_right=right, round_mode=rm)
    ceil = rm == 2
    for pool, div in ((0, None), (1, "padded"), (1, "valid")):
        extra = {} if div is None else {"avg_divisor": 1 if div == "padded" else 2}
        p = P("PoolingParam", pool=pool, **kw, **extra)
        get("Pooling").check(p)
        oh = pool_out_sides(7, 3, 2, top, bottom, ceil)
        ow = pool_out_sides(8, 4, 3, left, right, ceil)
        y = run("Pooling", p, [x])
        assert y.shape == (1, 2, oh, ow) == get("Pooling").infer(p, [x.shape])[0]
        want = brute_pool(x, 3, 4, 2, 3, pads, oh, ow, "max" if pool == 0 else "ave", div)
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_pooling_ceil_asymmetric_sizes_by_hand():
    # H 7, k 3, s 2, top 0 bottom 1: ceil((7+1-3)/2)+1 = 4; last start 6 < 7 + 0: kept
    assert pool_out_sides(7, 3, 2, 0, 1, True) == 4
    # H 6, k 2, s 2, top 0 bottom 1: ceil(5/2)+1 = 4; last start 6 >= 6 + 0: dropped -> 3
    assert pool_out_sides(6, 2, 2, 0, 1, True) == 3
    # symmetric pads give the old rule
    assert pool_out_sides(5, 2, 2, 1, 1, True) == pool_out(5, 2, 2, 1, True) == 3


@pytest.mark.parametrize("ceil", [False, True])
def test_pooling_per_axis_symmetric_matches_torch(ceil):
    x = rand(2, 3, 9, 11)
    p = P("PoolingParam", pool=0, kernel_h=3, kernel_w=2, stride_h=2, stride_w=3, pad_h=1,
          pad_w=1, round_mode=2 if ceil else 1)
    want = F.max_pool2d(T(x), (3, 2), (2, 3), (1, 1), ceil_mode=ceil).numpy()
    np.testing.assert_allclose(run("Pooling", p, [x]), want, rtol=0, atol=0)
    p = P("PoolingParam", pool=1, kernel_h=3, kernel_w=2, stride_h=2, stride_w=3, pad_h=1,
          pad_w=1, round_mode=2 if ceil else 1, avg_divisor=1)
    want = F.avg_pool2d(T(x), (3, 2), (2, 3), (1, 1), ceil_mode=ceil, count_include_pad=True)
    np.testing.assert_allclose(run("Pooling", p, [x]), want.numpy(), rtol=1e-12, atol=1e-12)


def test_activations_match_torch():
    x = rand(2, 3, 4, 5) * 4
    t = T(x)
    cases = [
        ("Clip", P("ClipParam", min=0.0, max=6.0), F.relu6(t)),
        ("Clip", P("ClipParam", min=-1.5, max=0.5), torch.clamp(t, -1.5, 0.5)),
        ("LeakyReLU", P("LeakyReLUParam"), F.leaky_relu(t, 0.01)),
        ("LeakyReLU", P("LeakyReLUParam", negative_slope=0.2), F.leaky_relu(t, 0.2)),
        ("ELU", P("ELUParam", alpha=0.5), F.elu(t, 0.5)),
        ("HardSigmoid", P("HardSigmoidParam", alpha=1 / 6, beta=0.5), F.hardsigmoid(t)),
        ("HardSigmoid", P("HardSigmoidParam"), torch.clamp(0.2 * t + 0.5, 0, 1)),   # ONNX's
        ("HardSwish", None, F.hardswish(t)),
        ("SiLU", None, F.silu(t)),
        ("GELU", P("GELUParam"), F.gelu(t)),
        ("GELU", P("GELUParam", approximate=1), F.gelu(t, approximate="tanh")),
    ]
    for type_, p, want in cases:
        # float32 parameters (the proto's floats) are what both sides compute with
        np.testing.assert_allclose(run(type_, p, [x]), want.numpy(), rtol=1e-6, atol=1e-7,
                                   err_msg=type_)
    exact = run("GELU", P("GELUParam"), [x])
    np.testing.assert_allclose(exact, F.gelu(t).numpy(), rtol=1e-14, atol=1e-15)


def test_hard_sigmoid_defaults_are_onnx_not_pytorch():
    p = spec_pb2.HardSigmoidParam()
    assert p.alpha == pytest.approx(0.2) and p.beta == pytest.approx(0.5)


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_matches_torch(shared):
    x = rand(2, 3, 4, 4)
    p = P("PReLUParam", channel_shared=shared)
    (ws,) = get("PReLU").weights(p, [x.shape])
    assert ws.shape == ((1,) if shared else (3,))
    w = {"slope": np.random.default_rng(0).uniform(0.05, 0.45, ws.shape)}
    np.testing.assert_allclose(run("PReLU", p, [x], w), F.prelu(T(x), T(w["slope"])).numpy(),
                               rtol=1e-14)
    x2 = rand(3, 5)   # (N, C) too
    w2 = {"slope": np.full((1,) if shared else (5,), 0.3)}
    np.testing.assert_allclose(run("PReLU", p, [x2], w2), F.prelu(T(x2), T(w2["slope"])).numpy())


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_and_log_softmax_on_any_axis(axis):
    x = rand(2, 3, 4) * 3
    np.testing.assert_allclose(run("Softmax", P("SoftmaxParam", axis=axis), [x]),
                               F.softmax(T(x), dim=axis).numpy(), rtol=1e-13)
    np.testing.assert_allclose(run("LogSoftmax", P("SoftmaxParam", axis=axis), [x]),
                               F.log_softmax(T(x), dim=axis).numpy(), rtol=1e-13)


@pytest.mark.parametrize("other", [(2, 3, 1, 1), (2, 1, 4, 5), (2, 3, 4, 1), (2, 1, 1, 5),
                                   (2, 1, 1, 1), (2, 3, 4, 5)])
def test_eltwise_broadcasts_on_each_axis(other):
    a, b = rand(2, 3, 4, 5), rand(*other, seed=1) + 3.0   # b away from 0 for DIV
    E = spec_pb2.EltwiseParam
    ops = {E.SUM: torch.add, E.PROD: torch.mul, E.MAX: torch.maximum, E.SUB: torch.sub,
           E.DIV: torch.div}
    for op, fn in ops.items():
        p = P("EltwiseParam", operation=op)
        assert get("Eltwise").infer(p, [a.shape, b.shape]) == [(2, 3, 4, 5)]
        np.testing.assert_allclose(run("Eltwise", p, [a, b]), fn(T(a), T(b)).numpy(), rtol=1e-14)
        np.testing.assert_allclose(run("Eltwise", p, [b, a]), fn(T(b), T(a)).numpy(), rtol=1e-14)
    p = P("EltwiseParam", operation=E.SUM, coeff=[2.0, -0.5, 1.0])
    np.testing.assert_allclose(run("Eltwise", p, [a, b, b]), (2 * T(a) - 0.5 * T(b) + T(b)).numpy(),
                               rtol=1e-14)


def test_eltwise_refuses_what_does_not_broadcast():
    from zoo.layers import LayerError
    E = spec_pb2.EltwiseParam
    for shapes in ([(2, 3, 4), (2, 2, 4)], [(2, 3), (1, 3)], [(2, 3, 4), (2, 3)]):
        with pytest.raises(LayerError):
            get("Eltwise").infer(P("EltwiseParam"), shapes)
    with pytest.raises(LayerError, match="exactly 2"):
        get("Eltwise").infer(P("EltwiseParam", operation=E.SUB), [(2, 3)] * 3)


def test_scale_bias_parameter():
    x = rand(2, 3, 4, 4)
    p = P("ScaleParam", shape=[3, 1, 1], bias_term=True)
    assert [w.shape for w in get("Scale").weights(p, [x.shape])] == [(3, 1, 1), (3, 1, 1)]
    w = {"scale": np.array([1.0, 2.0, -1.0]).reshape(3, 1, 1), "bias": np.array([0.0, 1.0, 0.5]).reshape(3, 1, 1)}
    y = run("Scale", p, [x], w)
    np.testing.assert_allclose(y[:, 1], 2 * x[:, 1] + 1.0)
    np.testing.assert_allclose(y[:, 2], -x[:, 2] + 0.5)
    seq = rand(2, 5, 6)   # ViT's position embedding: (N, T, D) + (T, D)
    pos = {"bias": rand(5, 6, seed=4)}
    np.testing.assert_allclose(run("Bias", P("BiasParam", shape=[5, 6]), [seq], pos), seq + pos["bias"][None])
    cls = run("Parameter", P("ParameterParam", shape=[1, 6]), [seq], {"value": np.arange(6.0).reshape(1, 6)})
    assert cls.shape == (2, 1, 6) and (cls[1, 0] == np.arange(6.0)).all()
    from zoo.layers import LayerError
    with pytest.raises(LayerError, match="broadcast"):
        get("Scale").infer(P("ScaleParam", shape=[4, 1, 1]), [x.shape])


@pytest.mark.parametrize("axes,keep", [([2, 3], True), ([2, 3], False), ([-1], False), ([1, 3], True)])
def test_reduce_matches_torch(axes, keep):
    x = rand(2, 3, 4, 5)
    R = spec_pb2.ReduceParam
    for op, fn in ((R.MEAN, torch.mean), (R.SUM, torch.sum), (R.MAX, torch.amax)):
        p = P("ReduceParam", operation=op, axis=axes, keepdims=keep)
        y = run("Reduce", p, [x])
        want = fn(T(x), dim=tuple(axes), keepdim=keep).numpy()
        assert y.shape == want.shape == get("Reduce").infer(p, [x.shape])[0]
        np.testing.assert_allclose(y, want, rtol=1e-13)


def test_shape_ops_match_torch():
    x = rand(2, 3, 4, 5)
    t = T(x)
    np.testing.assert_array_equal(run("Transpose", P("TransposeParam", order=[0, 2, 3, 1]), [x]),
                                  t.permute(0, 2, 3, 1).numpy())
    parts = get("Slice").forward(P("SliceParam", axis=-1, size=[1, 3, 1]), [x], {})
    for got, want in zip(parts, torch.split(t, [1, 3, 1], dim=-1)):
        np.testing.assert_array_equal(got, want.numpy())
    assert get("Slice").infer(P("SliceParam", axis=1, size=[2, 1]), [x.shape]) == [(2, 2, 4, 5), (2, 1, 4, 5)]
    y = run("Squeeze", P("SqueezeParam", axis=[2, -1]), [x[:, :, :1, :1]])
    np.testing.assert_array_equal(y, t[:, :, :1, :1].squeeze(-1).squeeze(2).numpy())
    y = run("Unsqueeze", P("UnsqueezeParam", axis=[1, -1]), [x])
    assert y.shape == (2, 1, 3, 4, 5, 1)
    np.testing.assert_array_equal(run("Gather", P("GatherParam", axis=1, index=0), [x]), t[:, 0].numpy())
    np.testing.assert_array_equal(run("Gather", P("GatherParam", axis=2, index=-1), [x]), t[:, :, -1].numpy())


@pytest.mark.parametrize("axis", [-1, 2, 1])
def test_layer_norm_matches_torch(axis):
    x = rand(2, 3, 4, 5) * 2 + 1
    p = P("LayerNormParam", axis=axis, eps=1e-5)
    shape = x.shape[axis % 4:]
    assert [w.shape for w in get("LayerNorm").weights(p, [x.shape])] == [shape, shape]
    w = {"gamma": rand(*shape, seed=1), "beta": rand(*shape, seed=2)}
    want = F.layer_norm(T(x), shape, T(w["gamma"]), T(w["beta"]), eps=float(p.eps)).numpy()
    np.testing.assert_allclose(run("LayerNorm", p, [x], w), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(get("LayerNorm").forward_train(p, [x], w)[0], want, rtol=1e-12, atol=1e-12)


def test_matmul_matches_torch():
    q, k = rand(2, 3, 4, 5), rand(2, 3, 6, 5, seed=1)
    y = run("MatMul", P("MatMulParam", transpose_b=True, scale=0.125), [q, k])
    want = F.scaled_dot_product_attention(T(q), T(k), T(k), scale=0.125)   # softmax(q k^T / 8) k
    np.testing.assert_allclose(run("Softmax", P("SoftmaxParam", axis=-1), [y]) @ k, want.numpy(), rtol=1e-12)
    np.testing.assert_allclose(y, torch.matmul(T(q), T(k).transpose(-1, -2)).numpy() / 8, rtol=1e-13)
    a = rand(2, 7, 4)
    np.testing.assert_allclose(run("MatMul", P("MatMulParam", transpose_a=True), [a, a]),
                               torch.matmul(T(a).transpose(-1, -2), T(a)).numpy(), rtol=1e-13)
    assert get("MatMul").macs(P("MatMulParam", transpose_b=True), [q.shape, k.shape], [(2, 3, 4, 6)]) == 2 * 3 * 4 * 6 * 5


def test_inner_product_on_the_last_axis_of_4d():
    x = rand(2, 3, 4, 5)
    w = {"weight": rand(6, 5, seed=1), "bias": rand(6, seed=2)}
    p = P("InnerProductParam", num_output=6, axis=-1)
    assert get("InnerProduct").infer(p, [x.shape]) == [(2, 3, 4, 6)]
    np.testing.assert_allclose(run("InnerProduct", p, [x], w),
                               F.linear(T(x), T(w["weight"]), T(w["bias"])).numpy(), rtol=1e-13)
    from zoo.layers import LayerError
    with pytest.raises(LayerError, match="Flatten"):
        get("InnerProduct").infer(P("InnerProductParam", num_output=6), [x.shape])


@pytest.mark.parametrize("body,message", [
    ('convolution_param { num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 1 }', "kernel_size and kernel_h"),
    ('convolution_param { num_output: 2 kernel_h: 3 }', "kernel_h is set without kernel_w"),
    ('convolution_param { num_output: 2 kernel_size: 3 pad: 1 pad_top: 1 }', "padding is stated twice"),
    ('convolution_param { num_output: 2 kernel_size: 3 stride: 2 stride_w: 1 stride_h: 1 }', "stride and stride_h"),
    ('convolution_param { num_output: 2 kernel_size: 3 pad_left: -1 }', "padding must be >= 0"),
])
def test_convolution_forms_are_checked(body, message):
    import zoo
    from zoo.errors import SpecError
    text = ('name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [1, 2, 6, 6] } }\n'
            f'layer {{ name: "c" type: "Convolution" bottom: "x" {body} }}\n')
    with pytest.raises(SpecError, match=message):
        zoo.from_text(text)


def test_slice_needs_one_top_per_part():
    import zoo
    from zoo.errors import SpecError
    base = ('name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [1, 5] } }\n'
            'layer { name: "s" type: "Slice" bottom: "x" %s slice_param { size: [2, 3] } }\n')
    net = zoo.from_text(base % 'top: "a" top: "b"')
    assert net.shapes["a"] == (1, 2) and net.shapes["b"] == (1, 3) and net.outputs == ["a", "b"]
    with pytest.raises(SpecError, match="has 2 top"):
        zoo.from_text(base % "")


def test_vit_attention_as_written_by_make_modern_is_torch_multihead_attention():
    """specs/make_modern.py's attention (in_proj, Slice, heads, scaled MatMul, Softmax, MatMul,
    out_proj) computes nn.MultiheadAttention(batch_first=True) with the same weights."""
    import sys
    from pathlib import Path

    import zoo
    from zoo import reference
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "specs"))
    import make_modern
    d, heads, tokens = 8, 2, 5
    w = make_modern.Writer()
    w.lines += ['name: "mha"', f'layer {{ name: "x" type: "Input" input_param {{ shape: [2, {tokens}, {d}] }} }}']
    make_modern.attention(w, "att.", "x", d, heads, d // heads, tokens)
    net = zoo.from_text("\n".join(w.lines) + "\n")
    rng = np.random.default_rng(0)
    weights = {k: rng.standard_normal(ws.shape) for k, ws in net.weight_specs().items()}
    x = rng.standard_normal((2, tokens, d))
    got = reference.forward(net, weights, {"x": x})["att.out_proj"]
    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(T(weights["att.in_proj.weight"]))
        mha.in_proj_bias.copy_(T(weights["att.in_proj.bias"]))
        mha.out_proj.weight.copy_(T(weights["att.out_proj.weight"]))
        mha.out_proj.bias.copy_(T(weights["att.out_proj.bias"]))
        want, _ = mha(T(x), T(x), T(x), need_weights=False)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)   # scale 1/2: exact in float32


def test_every_layer_type_has_a_hand_computed_test():
    import inspect
    import sys
    src = inspect.getsource(sys.modules[__name__])
    for t in REGISTRY:
        if t != "Input":
            assert f'"{t}"' in src, f"no hand-computed test for {t}"
