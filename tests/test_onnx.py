"""The ONNX converter and ONNX Runtime runner (issue: build and verify)."""

import hashlib
import json

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo import spec as S
from zoo import verifier
from zoo import weights as W


@pytest.fixture(autouse=True)
def _onnx():
    require_engine("onnx")


@pytest.mark.parametrize("name", S.zoo_names())
def test_full_checker_and_shape_inference_agree_with_zoo(name):
    import onnx
    from zoo.converters import onnx as conv
    net = zoo.load(name)
    model = conv.make_model(net, W.make(net))
    onnx.checker.check_model(model, full_check=True)
    conv.check_shapes(model, net)     # raises naming the layer on any disagreement


def test_build_writes_a_manifest_that_matches_the_files(tmp_path):
    import onnx
    import onnxruntime as ort
    d = tmp_path / "d"
    b = zoo.build("alexnet-r", "onnx", out=d)
    m = json.loads((d / "manifest.json").read_text())
    for key in ("spec_sha256", "weights_sha256", "seed", "engine", "engine_versions", "zoo_version", "files"):
        assert key in m
    for rel, digest in m["files"].items():
        assert hashlib.sha256((d / rel).read_bytes()).hexdigest() == digest
    onnx.checker.check_model(str(d / "model.onnx"), full_check=True)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"data": np.zeros((3, 3, 32, 32), np.float32)})[0]
    assert y.shape == (3, 10)
    assert not b.reused and zoo.build("alexnet-r", "onnx", out=d).reused
    assert not zoo.build("alexnet-r", "onnx", out=d, force=True).reused


def test_an_interrupted_build_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    from zoo import builds
    monkeypatch.setenv("ZOO_FAULT", "onnx:sigkill")
    with pytest.raises(builds.BuildFailed, match="SIGKILL"):
        zoo.build("linreg", "onnx", out=tmp_path / "d")
    assert not (tmp_path / "d").exists()
    assert list(tmp_path.iterdir()) == []


def _tamper(build_dir, initializer: str, fn):
    """Change one initializer of a built model.onnx and re-sign the manifest, as a converter
    bug would have written it."""
    import onnx
    from onnx import numpy_helper
    path = build_dir / "model.onnx"
    model = onnx.load(str(path))
    for i, t in enumerate(model.graph.initializer):
        if t.name == initializer:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t)), t.name))
    onnx.save(model, str(path))
    mf = build_dir / "manifest.json"
    m = json.loads(mf.read_text())
    m["files"]["model.onnx"] = hashlib.sha256(path.read_bytes()).hexdigest()
    mf.write_text(json.dumps(m))


def test_a_wrong_parameter_is_caught_and_its_layer_named():
    b = zoo.build("alexnet-r", "onnx")                      # the cached build verify will reuse
    _tamper(b.path, "conv2.weight", lambda w: np.ascontiguousarray(w.transpose(0, 1, 3, 2)))
    [r] = verifier.verify(["alexnet-r"], ["onnx"])
    assert r.status == "fail" and r.first_bad_layer == "conv2", r
    zoo.build("alexnet-r", "onnx", force=True)


def test_a_tampered_file_is_refused_by_the_runner_and_rebuilt_by_build():
    from zoo import isolation
    b = zoo.build("linreg", "onnx")
    (b.path / "model.onnx").write_bytes((b.path / "model.onnx").read_bytes() + b"\0")
    r = isolation.run("onnx", "forward", {"artifact": str(b.path)}, {"x": np.zeros((1, 2), np.float32)})
    assert r.status == "error" and "does not match its manifest hash" in r.reason
    again = zoo.build("linreg", "onnx")      # a damaged cached build is rebuilt, not reused
    assert not again.reused


def test_verify_json_keys(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "zoo.cli", "verify", "linreg", "mlp-mnist", "--engines", "onnx",
                        "--json", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 2
    for r in rows:
        for k in ("network", "engine", "mode", "status", "max_abs_err", "max_rel_err", "atol", "rtol",
                  "first_bad_layer", "reason"):
            assert k in r
        assert r["status"] == "pass"


def test_train_mode_is_skipped_not_passed_for_onnx():
    rs = verifier.verify(["linreg"], ["onnx"], mode="train")
    assert [r.status for r in rs] == ["skipped"] and "inference only" in rs[0].reason
    assert verifier.exit_status(rs) == 1


# --- issue 14: every layer-case row, in process ---------------------------------------------
from layer_cases import CASES  # noqa: E402


@pytest.mark.parametrize("case", list(CASES))
def test_layer_case_passes_the_checker_and_onnx_runtime_computes_the_reference(case):
    """Each row's model passes the full checker and ONNX's strict shape inference gives zoo's
    shape for every blob (check_shapes); ONNX Runtime, at batch 3 (the symbolic N), computes
    every network output within the default forward tolerance of the float64 reference."""
    import onnx
    import onnxruntime as ort
    from zoo import compare, data, reference
    from zoo import tolerances as T
    from zoo.converters import onnx as conv
    net = zoo.from_text(CASES[case], file=f"tests/layer_cases.py:{case}")
    weights = W.for_net(net, 0)
    model = conv.make_model(net, weights)
    onnx.checker.check_model(model, full_check=True)
    conv.check_shapes(model, net)
    net3 = net.with_batch(3)
    inputs = data.make(net3, 0, include_labels=False)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in sess.get_inputs()}
    got = dict(zip(net3.outputs, sess.run(list(net3.outputs), feeds)))
    ref = reference.forward(net3, weights, inputs, with_loss=False)
    for out in net3.outputs:
        d = compare.allclose(out, got[out], ref[out], T.FORWARD)
        assert d.ok, f"{case}: output {out!r}: {d}"
