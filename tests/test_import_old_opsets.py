"""Import of older ONNX models (opsets 7 to 13, as the model zoos and older exporters wrote
them): small hand-made graphs at their old opsets, each imported and compared in float64
with ONNX Runtime's run of the same file, and the zoo layer it became checked."""

import numpy as np
import pytest

import zoo
from zoo import reference
from zoo import weights as W
from zoo.errors import ImportRefused
from zoo.importers import import_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

R = np.random.default_rng(7)
IR_FOR_OPSET = {7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7}   # what the exporters of the day wrote


def _model(tmp_path, nodes, x_shape, consts=None, opset=9, inits_as_inputs=False, outputs=("y",)):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    if inits_as_inputs:     # before IR 4 every initializer was also a graph input
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph(nodes, "old", inputs, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = IR_FOR_OPSET[opset]
    path = tmp_path / f"old{opset}.onnx"
    onnx.save(m, str(path))
    return path


def _n(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


def _like_onnxruntime(path, x_shape, tol=1e-5) -> str:
    x = R.standard_normal(x_shape).astype(np.float32)
    want = ort.InferenceSession(str(path)).run(["y"], {"x": x})[0]
    spec = import_model(path, path.parent / f"{path.stem}-out", batch=x_shape[0])
    net = zoo.load(spec)
    got = reference.forward(net, W.for_net(net), {net.data_inputs[0]: x.astype(np.float64)})[net.outputs[0]]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    return spec.spec.read_text()


def _f(*shape):
    return R.standard_normal(shape).astype(np.float32)


CASES = {
    # opset 7/8 LeNet-style: the weights are graph inputs too; Gemm with transB and a Flatten
    "initializers-as-inputs": (7, [_n("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                                   _n("Relu", ["c"], ["r"]), _n("Flatten", ["r"], ["f"], axis=1),
                                   _n("Gemm", ["f", "fw", "fb"], transB=1)],
                               (2, 2, 4, 4), {"w": _f(3, 2, 3, 3), "b": _f(3), "fw": _f(5, 48), "fb": _f(5)},
                               dict(inits_as_inputs=True), ["Convolution", "Flatten", "InnerProduct"]),
    "sum-of-many": (8, [_n("Relu", ["x"], ["a"]), _n("Sigmoid", ["x"], ["b"]), _n("Tanh", ["x"], ["c"]),
                        _n("Sum", ["a", "b", "c", "x"])], (2, 3, 4), {}, {}, ["Eltwise"]),
    # old torch exports of an affine per channel: Unsqueeze(axes attribute) of a vector, Mul, Add
    "unsqueeze-scale-shift": (9, [_n("Unsqueeze", ["g"], ["gu"], axes=[1, 2]), _n("Mul", ["x", "gu"], ["m"]),
                                  _n("Unsqueeze", ["h"], ["hu"], axes=[1, 2]), _n("Add", ["m", "hu"])],
                              (2, 3, 4, 4), {"g": _f(3), "h": _f(3)}, {}, ["Scale", "Bias"]),
    "reshape-shape-initializer": (9, [_n("Reshape", ["x", "s"])], (2, 3, 4, 4),
                                  {"s": np.array([2, 12, 4], np.int64)}, {}, ["Reshape"]),
    "reshape-0-minus1-is-flatten": (11, [_n("Reshape", ["x", "s"], ["r"]), _n("Softmax", ["r"], axis=1)],
                                    (2, 3, 2, 2), {"s": np.array([0, -1], np.int64)}, {}, ["Flatten"]),
    "flatten": (9, [_n("Flatten", ["x"], axis=1)], (2, 3, 2, 2), {}, {}, ["Flatten"]),
    "lrn": (7, [_n("LRN", ["x"], size=5, alpha=1e-3, beta=0.75, bias=2.0)], (2, 7, 3, 3), {}, {}, ["LRN"]),
    "avgpool-count-include-pad": (10, [_n("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[1, 1, 1, 1], count_include_pad=1)],
                                  (2, 2, 7, 7), {}, {}, ["avg_divisor: PADDED"]),
    "avgpool-exclude-pad": (7, [_n("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
                            (2, 2, 7, 7), {}, {}, ["avg_divisor: VALID"]),
    "avgpool-ceil": (10, [_n("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
                     (2, 2, 8, 8), {}, {}, ["round_mode: CEIL"]),
    "dropout-mask-opset7": (7, [_n("Dropout", ["x"], ["d", "mask"], ratio=0.3), _n("Relu", ["d"])],
                            (2, 5), {}, {}, ["Dropout"]),
    "dropout-mask-opset12": (12, [_n("Dropout", ["x", "ratio"], ["d", "mask"]), _n("Relu", ["d"])],
                             (2, 5), {"ratio": np.array(0.4, np.float32)}, {}, ["Dropout"]),
    "softmax-2d-coercion-axis1": (11, [_n("Softmax", ["x"], axis=1)], (2, 3, 2, 2), {}, {}, ["Softmax"]),
    "softmax-2d-coercion-axis2": (9, [_n("Softmax", ["x"], axis=2)], (2, 3, 2, 4), {}, {}, ["Softmax"]),
    "softmax-2d-last-axis": (11, [_n("Softmax", ["x"], axis=1)], (2, 6), {}, {}, ["Softmax"]),
    "softmax-opset13-one-axis": (13, [_n("Softmax", ["x"], axis=1)], (2, 3, 2, 2), {}, {}, ["Softmax"]),
    "batchnorm-opset7": (7, [_n("BatchNormalization", ["x", "s", "b", "mu", "var"], epsilon=1e-3)], (2, 3, 4, 4),
                         {"s": _f(3), "b": _f(3), "mu": _f(3), "var": np.abs(_f(3)) + 0.5}, {}, ["BatchNorm"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_old_opset_graph_imports_like_onnxruntime(case, tmp_path):
    opset, nodes, shape, consts, kw, types = CASES[case]
    text = _like_onnxruntime(_model(tmp_path, nodes, shape, consts, opset=opset, **kw), shape)
    for t in types:
        assert (f'type: "{t}"' if ":" not in t else t) in text, (t, text)


def test_softmax_coercion_on_other_engines(tmp_path):
    """The spelled-out 2-D coercion (Reshape, Softmax, Reshape) verifies on the engines too."""
    path = _model(tmp_path, [_n("Softmax", ["x"], axis=1)], (2, 3, 2, 2), opset=11)
    spec = import_model(path, tmp_path / "out", batch=2)
    results = zoo.verify([spec], engines=["torch", "onnx"], mode="forward", batch=2)
    assert [r.status for r in results] == ["pass", "pass"], [(r.engine, r.reason) for r in results]


def test_dropout_mask_that_is_read_is_refused(tmp_path):
    """A Dropout mask is all ones at inference; zoo has no such blob, so a graph that reads it
    is refused with the reason (and nothing written)."""
    nodes = [_n("Dropout", ["x"], ["d", "mask"], ratio=0.3), _n("Cast", ["mask"], ["mc"], to=TensorProto.FLOAT),
             _n("Mul", ["d", "mc"])]
    path = _model(tmp_path, nodes, (2, 5), opset=9)
    with pytest.raises(ImportRefused, match="Dropout whose mask is used"):
        import_model(path, tmp_path / "out", batch=2)
    assert not (tmp_path / "out").exists()
