"""What converters/caffe.py writes for issue 14's vocabulary, read back from the files it
writes (Caffe's own schema), and that every declared Caffe gap is the converter's refusal.
The rows in tests/layer_cases.py run these files on real Caffe and OpenCV
(tests/test_engines.py); these tests pin the file contents and the refusals, in milliseconds."""

import pytest
from google.protobuf import text_format

import zoo
from layer_cases import CASES
from zoo import engines as E
from zoo import weights as W
from zoo.converters import caffe as C
from zoo.converters import caffe_pb2
from zoo.errors import Unsupported


def _build(case, tmp_path):
    net = zoo.from_text(CASES[case], file=f"layer_cases:{case}")
    meta = C.build(net, W.for_net(net, 0), tmp_path)
    files = {}
    for name in (C.DEPLOY, C.TRAIN_VAL):
        files[name] = text_format.Parse((tmp_path / name).read_text(), caffe_pb2.NetParameter())
    return net, meta, files


def _layers(param, type_):
    return [lp for lp in param.layer if lp.type == type_]


def test_per_axis_convolution_and_pooling_use_the_per_axis_fields(tmp_path):
    _, _, f = _build("Convolution-per-axis", tmp_path)
    cp = _layers(f[C.DEPLOY], "Convolution")[0].convolution_param
    assert (cp.kernel_h, cp.kernel_w, cp.stride_h, cp.stride_w, cp.pad_h, cp.pad_w) == (3, 1, 2, 1, 1, 0)
    assert list(cp.dilation) == [1, 2] and not cp.kernel_size
    _, _, f = _build("Pooling-per-axis", tmp_path)
    pp = _layers(f[C.DEPLOY], "Pooling")[0].pooling_param
    assert (pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w, pp.pad_h, pp.pad_w) == (3, 2, 2, 1, 1, 0)


@pytest.mark.parametrize("case", ["Convolution-asymmetric-pad", "Pooling-MAX-asymmetric-ceil"])
def test_asymmetric_pads_are_refused_and_declared(case, tmp_path):
    with pytest.raises(Unsupported, match="symmetrically"):
        _build(case, tmp_path)
    net = zoo.from_text(CASES[case])
    for engine in ("caffe", "caffe-opencv"):
        assert "symmetrically" in E.get(engine).unsupported(net)


def test_se_multiply_is_scale_with_a_second_bottom(tmp_path):
    _, _, f = _build("Eltwise-SE-broadcast", tmp_path)
    deploy = f[C.DEPLOY]
    scale = [lp for lp in _layers(deploy, "Scale") if lp.name == "se"][0]
    assert scale.bottom[0] == "c" and scale.scale_param.axis == 0
    reshape = [lp for lp in deploy.layer if lp.top[0] == scale.bottom[1]][0]
    assert reshape.type == "Reshape" and list(reshape.reshape_param.shape.dim) == [0, 6]
    squeeze = [lp for lp in deploy.layer if lp.name == "sq"][0]   # MEAN over (H, W)
    assert squeeze.type == "Pooling" and squeeze.pooling_param.global_pooling


def test_learned_scale_blob_is_reshaped_and_read_back(tmp_path):
    net, meta, f = _build("Scale-Bias", tmp_path)
    s = _layers(f[C.DEPLOY], "Scale")[0].scale_param
    b = _layers(f[C.DEPLOY], "Bias")[0].bias_param
    assert (s.axis, s.num_axes, s.bias_term) == (1, 1, True) and (b.axis, b.num_axes) == (2, 2)
    model = caffe_pb2.NetParameter.FromString((tmp_path / C.WEIGHTS).read_bytes())
    blob = [ml for ml in model.layer if ml.name == "s"][0].blobs[0]
    assert list(blob.shape.dim) == [6]
    layer, i, transform = meta["names"]["s.scale"]
    import numpy as np
    got = C.from_caffe(transform, np.zeros(6, np.float32))
    assert got.shape == (6, 1, 1) and (layer, i) == ("s", 0)


def test_hard_swish_trains_through_layers_with_a_backward_pass(tmp_path):
    """brocolli-caffe's HardSwish has an empty backward: train_val composes it."""
    _, _, f = _build("HardSwish", tmp_path)
    assert _layers(f[C.DEPLOY], "HardSwish")
    train = f[C.TRAIN_VAL]
    assert not _layers(train, "HardSwish")
    assert _layers(train, "Power") and _layers(train, "ReLU6")[0].relu6_param.threshold == 1.0
    assert [lp.top[0] for lp in train.layer if lp.name == "a"] == ["a"]


@pytest.mark.parametrize("case", ["GELU", "LogSoftmax", "MatMul-attention", "LayerNorm",
                                  "Parameter-Concat-Gather", "Eltwise-broadcast-axes"])
def test_what_caffe_cannot_express_is_declared_with_its_reason(case):
    net = zoo.from_text(CASES[case])
    why = E.get("caffe").unsupported(net)
    assert why is not None and "has no converter" not in why, why


def test_gap_table_names_the_reasons():
    rows = {r["what"]: r["why"] for r in E.get("caffe").gap_table()}
    assert "GELU" in rows["GELU"] and "Convolution with asymmetric pads" in rows
    assert not any("has no converter" in why for why in rows.values())
    ocv = {r["what"] for r in E.get("caffe-opencv").gap_table()}
    assert {"Bias", "Clip with max != 6", "PReLU channel_shared"} <= ocv
