"""`zoo import` on broken and unusual models: each a small hand-made file; a clean refusal
(ImportRefused naming the file and the node or layer, nothing written) or a correct import.
Each refusal test is a cause the fuzzer (tests/fuzzing.py) found; and how the import writes:
--name, --force, the seeded-weights note, ONNX output names, the umask, a full disk."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import reference
from zoo import weights as W
from zoo.cache import NoSpace
from zoo.errors import ImportRefused, UsageError
from zoo.importers import ImportResult, import_model

shutil_usage = type(shutil.disk_usage("/"))
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from zoo.converters import caffe_pb2  # noqa: E402


def refused(tmp_path, model, match, **kw):
    """The import is refused with a message naming the model file; nothing is written."""
    out = tmp_path / "out"
    with pytest.raises(ImportRefused, match=match) as e:
        import_model(model, out, **kw)
    assert str(model) in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    return str(e.value)


# --- ONNX ------------------------------------------------------------------------------------
def onnx_model(tmp_path, nodes, inits=(), x_shape=(1, 3, 8, 8), opset=17, outputs=None, name="m.onnx"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    outputs = outputs or [nodes[-1].output[0]]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                for o in outputs], list(inits))
    path = tmp_path / name
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString())
    return path


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def test_onnx_node_without_its_input(tmp_path):
    """fuzz onnx:137: a Relu whose input was removed (IndexError in the mapper)."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r1"), helper.make_node("Relu", [], ["b"], name="r2")]
    msg = refused(tmp_path, onnx_model(tmp_path, nodes), r"Relu node 'r2': not a valid Relu of opset 17")
    assert "input size 0" in msg


def test_onnx_reshape_without_its_shape(tmp_path):
    """fuzz onnx:164: a Reshape with one input."""
    nodes = [helper.make_node("Reshape", ["x"], ["y"], name="rs")]
    refused(tmp_path, onnx_model(tmp_path, nodes), r"Reshape node 'rs': not a valid Reshape")


def test_onnx_pooling_without_kernel_shape(tmp_path):
    """fuzz onnx:158: a MaxPool without its required attribute."""
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="pool")]
    refused(tmp_path, onnx_model(tmp_path, nodes), r"MaxPool node 'pool'.*kernel_shape")


def test_onnx_attribute_of_the_wrong_type(tmp_path):
    w = const("w", np.zeros((4, 3, 3, 3)))
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", strides=2)]   # INT, not INTS
    refused(tmp_path, onnx_model(tmp_path, nodes, [w]), r"Conv node 'conv'.*strides")


def test_onnx_reshape_to_a_2d_shape_tensor(tmp_path):
    """fuzz onnx:38: the shape input is a 2-D tensor (TypeError converting it)."""
    shape = const("shape", [[1, 192]], np.int64)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs")]
    refused(tmp_path, onnx_model(tmp_path, nodes, [shape]), r"Reshape node 'rs': shape 'shape' is a int64 "
                                                            r"tensor of shape \[1, 2\], not a 1-D integer one")


def test_onnx_constant_of_a_string_type(tmp_path):
    k = helper.make_tensor("k", TensorProto.STRING, [1], [b"two"])
    nodes = [helper.make_node("Mul", ["x", "k"], ["y"], name="mul")]
    refused(tmp_path, onnx_model(tmp_path, nodes, [k]), r"Mul node 'mul': constant 'k' is of type .*not a real number")


def test_onnx_initializer_of_an_unknown_type(tmp_path):
    """fuzz onnx:8701: data_type 91 (KeyError in onnx's own conversion)."""
    w = const("w", np.zeros((4, 3)))
    w.data_type = 91
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    refused(tmp_path, onnx_model(tmp_path, nodes, [w], x_shape=(1, 4)),
            r"initializer 'w': data type 91 is not an ONNX tensor type")


def test_onnx_name_not_utf8(tmp_path):
    """fuzz onnx:2058: protobuf hands back bytes for a name that is not UTF-8."""
    path = onnx_model(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="relu")])
    data = path.read_bytes()
    assert data.count(b"relu") == 1
    path.write_bytes(data.replace(b"relu", b"re\xffu"))
    refused(tmp_path, path, r"a name in the model is not valid UTF-8 text")


def test_onnx_node_of_another_domain_is_not_mapped(tmp_path):
    """A custom domain's "Relu" is not ONNX's Relu."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.example")]
    path = tmp_path / "m.onnx"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                             helper.make_opsetid("com.example", 1)]).SerializeToString())
    refused(tmp_path, path, r"unsupported: com.example.Relu x1")


def test_onnx_conv_attributes_of_the_wrong_length(tmp_path):
    w = const("w", np.zeros((4, 3, 3, 3)))
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", strides=[2])]
    refused(tmp_path, onnx_model(tmp_path, nodes, [w]), r"Conv node 'conv': Conv attributes of the wrong length")


def test_onnx_lstm_weights_that_do_not_fit_hidden_size(tmp_path):
    seq = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
           helper.make_node("LSTM", ["xt", "W", "R"], ["y"], name="lstm", hidden_size=4)]
    inits = [const("W", np.zeros((1, 12, 3))), const("R", np.zeros((1, 12, 3)))]   # H = 3, not 4
    refused(tmp_path, onnx_model(tmp_path, seq, inits, x_shape=(1, 5, 3)),
            r"LSTM node 'lstm': LSTM weights W \[1, 12, 3\], R \[1, 12, 3\]")


def test_onnx_gemm_bias_not_one_per_output(tmp_path):
    inits = [const("w", np.zeros((4, 6))), const("b", np.zeros(5))]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")]
    refused(tmp_path, onnx_model(tmp_path, nodes, inits, x_shape=(1, 4)), r"Gemm node 'fc': Gemm bias of shape \[5\]")


def test_onnx_batchnorm_scale_of_the_wrong_size(tmp_path):
    c = 3
    bn = [const(n, np.ones(c)) for n in ("s", "b", "m", "v")] + [const("k", np.ones((1, 5, 1, 1)))]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], name="bn"),
             helper.make_node("Mul", ["bn", "k"], ["y"], name="scale")]
    refused(tmp_path, onnx_model(tmp_path, nodes, bn), r"Mul node 'scale': a per-channel constant of 5 values "
                                                        r"after a BatchNorm of 3 channels")


def test_onnx_softmax_of_opset_11_over_several_axes(tmp_path):
    """Before opset 13 Softmax(axis=1) of a 4-D tensor normalises over C*H*W at once: that is
    imported as Reshape, Softmax, Reshape (tests/test_import_old_opsets.py checks it against
    ONNX Runtime); over every axis (axis 0) it would mix the samples, and is refused."""
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=0)]
    refused(tmp_path, onnx_model(tmp_path, nodes, opset=11),
            r"Softmax node 'sm': Softmax of opset 11 over every axis, the batch axis included")
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="sm")]             # default axis 1 = last
    net = zoo.load(import_model(onnx_model(tmp_path, nodes, x_shape=(1, 10), opset=11), tmp_path / "ok"))
    x = np.random.default_rng(0).normal(size=(1, 10)).astype(np.float32)
    y = reference.forward(net, {}, {"x": x})[net.outputs[0]]
    np.testing.assert_allclose(y, np.exp(x) / np.exp(x).sum(), rtol=1e-6)


def test_onnx_output_names_are_kept(tmp_path):
    """The graph's output names are the spec's blob names (and the names of the layers that
    compute them, since a layer's top is its name; the others keep their node names)."""
    inits = [const("w", np.ones((4, 3))), const("b", np.arange(3))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),        # MatMul + Add: one layer
             helper.make_node("Add", ["h", "b"], ["logits"], name="bias"),
             helper.make_node("Relu", ["logits"], ["act"], name="relu")]
    res = import_model(onnx_model(tmp_path, nodes, inits, x_shape=(2, 4), outputs=["logits", "act"]),
                       tmp_path / "imp")
    net = zoo.load(res)
    assert net.outputs == ["act"] and net.shapes["logits"] == (2, 3)   # zoo's outputs: blobs nothing reads
    assert [(l.name, l.tops) for l in net.layers] == [("x", ["x"]), ("logits", ["logits"]), ("act", ["act"])]
    assert sorted(W.for_net(net)) == ["logits.bias", "logits.weight"]
    y = reference.forward(net, W.for_net(net), {"x": np.ones((2, 4), np.float32)})
    np.testing.assert_array_equal(y["logits"], np.full((2, 3), 4.0) + np.arange(3))


# --- Caffe -----------------------------------------------------------------------------------
NET = ('name: "small"\n'
       'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n'
       'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\n'
       'layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 3 } }\n'
       'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n')


def caffemodel(path, blobs: dict):
    net = caffe_pb2.NetParameter()
    for name, arrays in blobs.items():
        lp = net.layer.add(name=name)
        for a in arrays:
            b = lp.blobs.add()
            b.shape.dim.extend(np.shape(a))
            b.data.extend(np.asarray(a, np.float32).reshape(-1))
    path.write_bytes(net.SerializeToString())
    return path


def test_caffe_layer_without_bottoms(tmp_path):
    """fuzz caffe:42: an InnerProduct whose bottom line was deleted (IndexError)."""
    p = tmp_path / "n.prototxt"
    p.write_text(NET.replace('bottom: "flat" top: "fc"', 'top: "fc"'))
    refused(tmp_path, p, r"layer 'fc' \(InnerProduct\): has 0 bottoms, takes 1")


def test_caffe_layer_without_tops(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text(NET.replace('bottom: "fc" top: "prob"', 'bottom: "fc"'))
    refused(tmp_path, p, r"layer 'prob' \(Softmax\): has 0 tops, takes 1")


def test_caffe_input_without_a_shape(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text(NET.replace("input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } }", ""))
    refused(tmp_path, p, r"layer 'data' \(Input\): no input_param shape")


def test_caffe_input_of_too_many_axes(tmp_path):
    """fuzz caffe:2049: a dim line repeated 2000 times (zoo/net.py then could not print the
    element count: an integer of over 4300 digits)."""
    p = tmp_path / "n.prototxt"
    p.write_text(NET.replace("dim: 4 dim: 4", "dim: 4 " * 40))
    refused(tmp_path, p, r"input 'data' has 42 axes; a Caffe blob has at most 32")


def test_caffe_seeded_weights_over_the_memory_limit(tmp_path):
    """fuzz caffe:1359: a mutated num_output asked for 16 GiB of seeded weights."""
    p = tmp_path / "n.prototxt"
    p.write_text(NET.replace("num_output: 3", "num_output: 2147483647"))
    refused(tmp_path, p, r"seeded weights for its 70,866,960,351 parameters would take 776.0 GiB of memory, over "
                         r"the import limit of 1 GiB")


def test_caffe_inner_product_blob_that_does_not_fit(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text(NET)
    w = caffemodel(tmp_path / "w.caffemodel", {"fc": [np.zeros((4, 8)), np.zeros(3)]})
    refused(tmp_path, p, r"layer 'fc' \(InnerProduct\): weight blob \[4, 8\] does not fit num_output 3", weights=w)
    w = caffemodel(tmp_path / "w.caffemodel", {"fc": [np.zeros((3, 31)), np.zeros(3)]})
    refused(tmp_path, p, r"cannot import: layer 'fc': fc.weight is float32\[3, 31\], the spec needs "
                         r"float32\[3, 32\]", weights=w)


def test_caffe_batchnorm_without_its_scale_factor(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text(NET.replace('layer { name: "flat"', 'layer { name: "bn" type: "BatchNorm" bottom: "data" '
                             'top: "bn" }\nlayer { name: "flat"').replace('bottom: "data" top: "flat"',
                                                                          'bottom: "bn" top: "flat"'))
    w = caffemodel(tmp_path / "w.caffemodel", {"bn": [np.zeros(2), np.ones(2), np.zeros(0)],
                                               "fc": [np.zeros((3, 32)), np.zeros(3)]})
    refused(tmp_path, p, r"layer 'bn' \(BatchNorm\): the scale-factor blob has 0 values, not 1", weights=w)


def test_caffe_softmax_of_a_loss(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text(NET.replace('layer { name: "prob"', 'layer { name: "label" type: "Input" top: "label" '
                             'input_param { shape { dim: 1 } } }\nlayer { name: "loss" type: "SoftmaxWithLoss" '
                             'bottom: "fc" bottom: "label" top: "loss" }\nlayer { name: "prob"')
                 .replace('bottom: "fc" top: "prob"', 'bottom: "loss" top: "prob"'))
    refused(tmp_path, p, r"layer 'prob' \(Softmax\): an axis of a scalar")


V1_NET = ('name: "small"\ninput: "data"\ninput_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
          'layers { name: "flat" type: FLATTEN bottom: "data" top: "flat" }\n'
          'layers { name: "fc" type: INNER_PRODUCT bottom: "flat" top: "fc" inner_product_param { num_output: 3 } }\n'
          'layers { name: "relu" type: RELU bottom: "fc" top: "fc" }\n'
          'layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }\n')


def test_caffe_v1_layers_import_like_v2(tmp_path):
    """Old V1 `layers` (FLATTEN has no flatten_param there: it used to fail) import to the
    network of the same V2 prototxt, with the .caffemodel's weights."""
    (tmp_path / "v1.prototxt").write_text(V1_NET)
    (tmp_path / "v2.prototxt").write_text(NET.replace('layer { name: "prob"', 'layer { name: "relu" type: "ReLU" '
                                                      'bottom: "fc" top: "fc" }\nlayer { name: "prob"'))
    rng = np.random.default_rng(0)
    w = caffemodel(tmp_path / "w.caffemodel", {"fc": [rng.normal(size=(3, 32)), rng.normal(size=3)]})
    a = zoo.load(import_model(tmp_path / "v1.prototxt", tmp_path / "a", weights=w))
    b = zoo.load(import_model(tmp_path / "v2.prototxt", tmp_path / "b", weights=w))
    assert a.structure()[0] == b.structure()[0]
    assert [l.type for l in a.layers] == ["Input", "Flatten", "InnerProduct", "ReLU", "Softmax"]
    x = {"data": rng.normal(size=(1, 2, 4, 4)).astype(np.float32)}
    ya, yb = reference.forward(a, W.for_net(a), x), reference.forward(b, W.for_net(b), x)
    np.testing.assert_array_equal(ya[a.outputs[0]], yb[b.outputs[0]])


# --- how the import writes -------------------------------------------------------------------
def small_caffe(tmp_path) -> Path:
    p = tmp_path / "small.prototxt"
    p.write_text(NET)
    return p


def test_seeded_weights_are_told(tmp_path):
    res = import_model(small_caffe(tmp_path), tmp_path / "imp")
    assert isinstance(res, ImportResult) and os.fspath(res) == str(tmp_path / "imp" / "small.prototxt")
    assert len(res.notes) == 1 and "random weights made from seed 0" in res.notes[0]
    w = caffemodel(tmp_path / "w.caffemodel", {"fc": [np.zeros((3, 32)), np.zeros(3)]})
    assert import_model(small_caffe(tmp_path), tmp_path / "imp2", weights=w).notes == ()


def test_name_names_the_spec_and_its_files(tmp_path):
    res = import_model(small_caffe(tmp_path), tmp_path / "imp", name="mine")
    assert sorted(p.name for p in (tmp_path / "imp").iterdir()) == ["import.json", "mine.npz", "mine.prototxt"]
    assert zoo.load(res).name == "mine"
    with pytest.raises(UsageError, match="--name '../evil'"):
        import_model(small_caffe(tmp_path), tmp_path / "imp2", name="../evil")
    assert not (tmp_path / "imp2").exists()


def test_force_replaces_only_what_an_import_wrote(tmp_path):
    out = tmp_path / "imp"
    import_model(small_caffe(tmp_path), out)
    with pytest.raises(ImportRefused, match=r"an earlier import\); --force replaces it"):
        import_model(small_caffe(tmp_path), out)
    res = import_model(small_caffe(tmp_path), out, name="again", force=True)
    assert sorted(p.name for p in out.iterdir()) == ["again.npz", "again.prototxt", "import.json"]
    assert json.loads((out / "import.json").read_text())["source"] == str(tmp_path / "small.prototxt")
    zoo.load(res)
    (out / "notes.txt").write_text("mine")                       # the user's file: never deleted
    with pytest.raises(ImportRefused, match="holds files zoo did not write: notes.txt"):
        import_model(small_caffe(tmp_path), out, force=True)
    (out / "notes.txt").unlink()
    (out / "again.prototxt").write_text((out / "again.prototxt").read_text() + "# edited\n")
    with pytest.raises(ImportRefused, match="again.prototxt was changed since zoo wrote it"):
        import_model(small_caffe(tmp_path), out, force=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("x")
    with pytest.raises(ImportRefused, match="no readable import.json"):
        import_model(small_caffe(tmp_path), other, force=True)
    assert (other / "a.txt").read_text() == "x"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        res = import_model(small_caffe(tmp_path), tmp_path / "imp")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)   # noqa: E731
    assert mode(tmp_path / "imp") == 0o777 & ~mask
    for p in (res.spec, res.weights, tmp_path / "imp" / "import.json"):
        assert mode(p) == 0o666 & ~mask, p


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from zoo.importers import common

    def save_half(weights, path):            # writes part of the file, then the disk is full
        Path(path).write_bytes(b"PK\3\4" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(common.W, "save", save_half)
    with pytest.raises(NoSpace, match=rf"not enough disk space in {tmp_path}: .*needs about 1.0 MiB") as e:
        import_model(small_caffe(tmp_path), tmp_path / "imp")
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.prototxt"]


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    from zoo.importers import common
    monkeypatch.setattr(common.shutil, "disk_usage", lambda p: shutil_usage(total=10**9, used=10**9 - 1000, free=1000))
    with pytest.raises(NoSpace, match="1000 B free"):
        import_model(small_caffe(tmp_path), tmp_path / "imp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.prototxt"]


def test_an_out_inside_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImportRefused, match=r"cannot make .*file/imp: .*file is a file, not a folder"):
        import_model(small_caffe(tmp_path), tmp_path / "file" / "imp")
    assert (tmp_path / "file").read_text() == "x"


def test_cli_import_refuses_an_earlier_import(tmp_path):
    """A refusal reaches the command line as one line and exit status 2."""
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "import", str(small_caffe(tmp_path)), "--out",
                        str(tmp_path / "imp"), "--batch", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "import", str(small_caffe(tmp_path)), "--out",
                        str(tmp_path / "imp")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--force replaces it" in r.stderr
