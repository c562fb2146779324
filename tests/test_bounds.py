"""Input that chooses zoo's memory and time: every size bounded before it is allocated,
regular files only, validation linear; and `zoo validate` checking all it can."""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import spec as S
from zoo import weights as W
from zoo.errors import ImportRefused, SpecError

OK_HEAD = 'name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [2, 3, 8, 8] } }\n'
# The child's own peak: ru_maxrss would start at the (large) pytest process's peak, see zoo/memory.py.
PEAK_MB = "from zoo.memory import peak_rss_mb; print(int(peak_rss_mb()))"


def validate(*paths, timeout=60):
    """`zoo validate` in a child process: (exit status, the stderr lines)."""
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "validate", *map(str, paths)],
                       capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    return r.returncode, [l for l in r.stderr.splitlines() if l.strip()]


def refused(path, *words, timeout=60):
    code, lines = validate(path, timeout=timeout)
    assert code == 2 and len(lines) == 1, lines
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


def linreg_with_weights(folder: Path, weights_name: str = "w.npz") -> Path:
    net = zoo.load("linreg")
    spec = folder / "linreg.prototxt"
    spec.write_text(S.to_prototxt(net.proto) + f'weights: "{weights_name}"\n')
    return spec


def npz_member(path: Path, name: str, header: dict, data: bytes = b"", compress=False) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        with z.open(name, "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(data)


# --- validation is linear in the number of layers ----------------------------------------

def chain(n: int, reverse: bool) -> str:
    layers = ['layer { name: "l0" type: "Input" input_param { shape: [2, 4] } }']
    layers += [f'layer {{ name: "l{i}" type: "ReLU" bottom: "l{i - 1}" }}' for i in range(1, n)]
    return 'name: "chain"\n' + "\n".join(layers[::-1] if reverse else layers) + "\n"


def test_30000_layers_in_reverse_order_validate():
    # main's recursive sort copied the chain at every step: gigabytes, then SystemError
    net = zoo.net.from_text(chain(30_000, reverse=True), file="chain.prototxt")
    assert len(net.layers) == 30_000 and net.layers[0].name == "l0"
    assert net.outputs == ["l29999"]


def test_validation_time_grows_linearly():
    def cpu(n):
        text = chain(n, reverse=True)
        proto, source = S.parse_prototxt(text, "chain.prototxt")
        t = time.process_time()
        zoo.net.Net(proto, source)
        return time.process_time() - t
    small, large = cpu(2_000), cpu(16_000)
    assert large < 8 * small * 3, (small, large)   # 8x the layers: far below 64x


def test_cycle_is_named_iteratively():
    text = OK_HEAD + "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "r{(i + 1) % 5000}" }}\n'
                             for i in range(5000))
    with pytest.raises(SpecError, match="cycle: r0 -> r1 -> r2"):
        zoo.net.from_text(text, file="c.prototxt")


# --- shape arithmetic cannot wrap ---------------------------------------------------------

def test_flatten_past_the_blob_limit_is_refused_not_wrapped(tmp_path):
    p = tmp_path / "wrap.prototxt"
    p.write_text('name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [1, 4611686018427387906, 4] } }\n'
                 'layer { name: "f" type: "Flatten" bottom: "x" }\n')
    refused(p, ":2:", "layer 'x' (Input)", "2**48")


def test_weight_past_the_limit_is_refused(tmp_path):
    p = tmp_path / "w.prototxt"
    p.write_text('name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [2, 1048576] } }\n'
                 'layer { name: "fc" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 1099511627776 } }\n')
    refused(p, ":3:", "layer 'fc'", "2**48")


# --- non-finite training values -----------------------------------------------------------

@pytest.mark.parametrize("train", ["lr: inf", "momentum: nan", "weight_decay: -inf"])
def test_non_finite_training_values_are_refused(train, tmp_path):
    proto = zoo.load("linreg").proto
    field, value = train.split(": ")
    setattr(proto.train, field, float(value))
    p = tmp_path / "t.prototxt"
    p.write_text(S.to_prototxt(proto))
    assert f"{field}: {value}" in p.read_text()
    refused(p, str(p), "training values must be finite", f"train.{field}")


def test_non_finite_layer_value_and_json_overflow_are_refused(tmp_path):
    p = tmp_path / "eps.prototxt"
    p.write_text(OK_HEAD + 'layer { name: "bn" type: "BatchNorm" bottom: "x" batch_norm_param { eps: nan } }\n')
    refused(p, ":3:", "layer 'bn'", "batch_norm_param.eps is nan")
    d = json.loads(zoo.convert("linreg", "json"))
    d["train"]["momentum"] = "BIG"
    j = tmp_path / "t.json"
    j.write_text(json.dumps(d).replace('"BIG"', "1e999"))     # Python's json makes it inf
    refused(j, str(j), "momentum")


def test_zero_batch_in_train_is_refused(tmp_path):
    proto = zoo.load("linreg").proto
    proto.train.batch_cpu = 0
    p = tmp_path / "b.prototxt"
    p.write_text(S.to_prototxt(proto))
    refused(p, "train.batch_cpu must be > 0")


# --- regular files only, reads bounded ----------------------------------------------------

def test_validate_dev_zero_is_refused_without_reading_it():
    line = refused("/dev/zero", "not a regular file", timeout=20)
    assert line.startswith("/dev/zero:")


def test_fifo_as_spec_is_refused(tmp_path):
    os.mkfifo(tmp_path / "spec.prototxt")
    refused(tmp_path / "spec.prototxt", "a FIFO", timeout=20)


def test_fifo_as_weights_is_refused(tmp_path):
    spec = linreg_with_weights(tmp_path)
    os.mkfifo(tmp_path / "w.npz")
    refused(spec, "w.npz", "a FIFO", timeout=20)
    with pytest.raises(SpecError, match="a FIFO"):
        W.for_net(zoo.load(spec))


def test_fifo_as_onnx_model_and_external_data_are_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from zoo.importers import import_model
    os.mkfifo(tmp_path / "m.onnx")
    with pytest.raises(ImportRefused, match="not a regular file"):
        import_model(tmp_path / "m.onnx", tmp_path / "out1")
    ext = tmp_path / "ext"
    ext.mkdir()
    os.mkfifo(ext / "w.bin")
    model = _relu_model(onnx, extra_init=True)
    t = model.graph.initializer[0]
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="w.bin")
    (ext / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ImportRefused, match="a FIFO"):
        import_model(ext / "m.onnx", tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_weights_symlink_outside_the_spec_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    W.save(W.make(zoo.load("linreg")), outside / "w.npz")
    inside = tmp_path / "spec"
    inside.mkdir()
    spec = linreg_with_weights(inside)
    os.symlink(outside / "w.npz", inside / "w.npz")
    refused(spec, str(spec), "outside the spec's folder")
    with pytest.raises(SpecError, match="outside the spec's folder"):
        W.for_net(zoo.load(spec))


# --- .npz members checked before they are decompressed ------------------------------------

def test_compressed_bomb_is_refused_by_its_header(tmp_path):
    spec = linreg_with_weights(tmp_path)
    zeros = bytes(2**24)
    with zipfile.ZipFile(tmp_path / "w.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("fc.weight.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (2**28,)})
            for _ in range(64):          # 1 GiB of zeros, about 1 MB compressed
                f.write(zeros)
        z.writestr("fc.bias.npy", b"")
    assert (tmp_path / "w.npz").stat().st_size < 2**21
    code = ("import sys, zoo; from zoo import weights as W\n"
            "try: W.for_net(zoo.load(sys.argv[1]))\n"
            "except zoo.errors.SpecError as e: print(e)\n" + PEAK_MB)
    r = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=120)
    message, peak_mb = r.stdout.splitlines()
    assert "fc.weight is float32[268435456], the spec needs float32[1, 2]" in message
    assert int(peak_mb) < 400, peak_mb           # main decompressed all of it: 1.1 GB
    refused(spec, "fc.weight is float32[268435456]")


def test_header_declaring_2_to_40_elements_is_refused(tmp_path):
    npz_member(tmp_path / "huge.npz", "fc.weight.npy",
               {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}, b"\0" * 64)
    with pytest.raises(SpecError, match="fc.weight: the archive says 192 bytes, its header 4398046511232"):
        W.load(tmp_path / "huge.npz")            # no spec: the declared size still disagrees
    spec = linreg_with_weights(tmp_path, "huge.npz")
    refused(spec, "huge.npz")


def test_pickle_in_an_npz_member_is_refused(tmp_path):
    w = W.make(zoo.load("linreg"))
    np.savez(tmp_path / "w.npz", **{**w, "fc.bias": np.array([{"evil": 1}], dtype=object)})
    spec = linreg_with_weights(tmp_path)
    refused(spec, "w.npz", "fc.bias holds Python objects (a pickle)")
    with pytest.raises(SpecError, match="pickle"):
        W.load(tmp_path / "w.npz")


def test_not_a_zip_is_a_clean_refusal(tmp_path):
    np.save(tmp_path / "w.npz", np.zeros(3, np.float32))        # a .npy under an .npz name
    (tmp_path / "w.npz.npy").rename(tmp_path / "w.npz")
    refused(linreg_with_weights(tmp_path), "w.npz", "cannot read weights")


def test_weights_load_round_trip_keeps_values_and_layout(tmp_path):
    w = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
         "b.weight": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))}
    W.save(w, tmp_path / "w.npz")
    back = W.load(tmp_path / "w.npz")
    assert all(np.array_equal(back[k], w[k]) and back[k].flags.writeable for k in w)


# --- zoo validate checks what build would find --------------------------------------------

def test_validate_refuses_a_missing_weights_file(tmp_path):
    spec = linreg_with_weights(tmp_path)
    refused(spec, str(spec), "weights 'w.npz': no such file")


def test_validate_refuses_wrong_shapes_and_missing_arrays(tmp_path):
    spec = linreg_with_weights(tmp_path)
    w = W.make(zoo.load("linreg"))
    W.save({**w, "fc.weight": np.zeros((2, 2), np.float32)}, tmp_path / "w.npz")
    refused(spec, "w.npz", "fc.weight is float32[2, 2], the spec needs float32[1, 2]")
    W.save({"fc.weight": w["fc.weight"]}, tmp_path / "w.npz")
    refused(spec, "w.npz", "missing ['fc.bias']")
    W.save(w, tmp_path / "w.npz")
    assert validate(spec) == (0, [])


def test_validate_refuses_float_labels_for_softmax_loss(tmp_path):
    p = tmp_path / "s.prototxt"
    p.write_text(S.to_prototxt(zoo.load("softmax-mnist").proto).replace("dtype: INT64", ""))
    refused(p, "layer 'loss' (SoftmaxWithLoss)", "'label'", "must be INT64", "FLOAT32")


def test_int64_blob_into_a_float_layer_is_refused():
    text = ('name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [2, 3] dtype: INT64 } }\n'
            'layer { name: "r" type: "ReLU" bottom: "x" }\n')
    with pytest.raises(SpecError, match="layer 'r' .*'x' is INT64"):
        zoo.net.from_text(text, file="i.prototxt")


# --- ONNX constant folding bounded -------------------------------------------------------

def _relu_model(onnx, extra_init=False, nodes=()):
    from onnx import TensorProto, helper
    inits = [helper.make_tensor("k", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])] if extra_init else []
    graph = helper.make_graph(
        [*nodes, helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _big_constant(onnx, out="big"):
    from onnx import TensorProto, helper
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [256, 1024, 1024])
    return helper.make_node("ConstantOfShape", ["shape_c"], [out], name="fill"), \
        helper.make_node("Constant", [], ["shape_c"], value=shape)


def test_unused_huge_constant_is_never_folded(tmp_path):
    onnx = pytest.importorskip("onnx")
    fill, shape = _big_constant(onnx)
    model = _relu_model(onnx, nodes=[shape, fill])
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    assert (tmp_path / "m.onnx").stat().st_size < 300
    code = ("import sys; from zoo.importers import import_model\n"
            "import_model(sys.argv[1], sys.argv[2])\n" + PEAK_MB)
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.onnx"), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) < 500, r.stdout     # main: 1.1 GB for the unused fill
    assert [l.type for l in zoo.load(tmp_path / "out" / "g.prototxt").layers] == ["Input", "ReLU"]


def test_used_huge_constant_is_refused_before_allocation(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    fill, shape = _big_constant(onnx)
    model = _relu_model(onnx, nodes=[shape, fill])
    model.graph.node.append(helper.make_node("Add", ["y", "big"], ["z"], name="add"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    from zoo.importers import import_model
    with pytest.raises(ImportRefused, match="ConstantOfShape node 'fill': folding it would make "
                                            "268435456 elements, over the limit"):
        import_model(tmp_path / "m.onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- messages -----------------------------------------------------------------------------

def test_missing_brace_points_at_the_unclosed_block(tmp_path):
    p = tmp_path / "b.prototxt"
    p.write_text(OK_HEAD + 'layer { name: "r" type: "ReLU" bottom: "x"\n'
                 'layer { name: "s" type: "ReLU" bottom: "r" }\n')
    line = refused(p, f"{p}:3:", "not closed", "line 4", "missing '}'")
    assert "has no field named" not in line


def test_unclosed_brace_at_the_end(tmp_path):
    p = tmp_path / "e.prototxt"
    p.write_text(OK_HEAD + 'layer { name: "r" type: "ReLU" bottom: "x"\n')
    refused(p, f"{p}:3:", "never closed")


def test_bottom_typo_suggests_the_blob(tmp_path):
    p = tmp_path / "typo.prototxt"
    p.write_text(OK_HEAD + 'layer { name: "relu1" type: "ReLU" bottom: "x" }\n'
                 'layer { name: "r2" type: "ReLU" bottom: "rleu1" }\n')
    refused(p, ":4:", "bottom 'rleu1' is not produced", "did you mean 'relu1'?")


def test_batch_error_names_the_file():
    with pytest.raises(SpecError) as e:
        zoo.load("linreg").with_batch(0)
    assert str(e.value).startswith(str(S.resolve("linreg"))) and "<spec>" not in str(e.value)


def test_name_rule_accepts_mixed_case_and_states_the_rule():
    text = 'name: "LeNet28"\nlayer { name: "x" type: "Input" input_param { shape: [2] } }\n' \
           'layer { name: "r" type: "ReLU" bottom: "x" }\n'
    assert zoo.net.from_text(text).name == "LeNet28"    # importers keep a model's own name
    with pytest.raises(SpecError, match="a letter or digit, then letters, digits"):
        zoo.net.from_text(text.replace("LeNet28", "Le Net"))


def test_a_blob_with_thousands_of_huge_axes_is_refused_in_one_line():
    """Its element count has more digits than Python prints (ValueError): the message must
    not try to."""
    dims = ", ".join(["1000000"] * 2000)
    text = (f'name: "x"\nlayer {{ name: "d" type: "Input" input_param {{ shape: [1, {dims}] }} }}\n'
            'layer { name: "r" type: "ReLU" bottom: "d" }\n')
    with pytest.raises(SpecError, match="2001 axes"):
        zoo.from_text(text, file="huge.prototxt")
