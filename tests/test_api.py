"""The public Python API (issue 20): every call the `zoo` command makes is a function of the
`zoo` module with a real signature and a docstring; `import zoo` imports no engine; the
module's own example runs as written."""

import inspect
import os
import subprocess
import sys
import textwrap

import pytest

import zoo
from conftest import require_engine

PUBLIC = ["load", "list_networks", "show", "validate", "convert", "build", "verify", "bench",
          "import_model", "list_engines"]
ENGINE_MODULES = ("torch", "tensorflow", "keras", "mxnet", "onnxruntime", "onnx", "caffe", "cv2")


@pytest.mark.parametrize("name", PUBLIC)
def test_each_public_function_has_a_real_signature_and_a_docstring(name):
    fn = getattr(zoo, name)
    assert fn.__module__ == "zoo" and name in zoo.__all__
    kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
    assert not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}, name
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 80 and "See zoo." not in doc, doc


@pytest.mark.parametrize("public,implementation", [
    ("build", "zoo.builds:build"), ("verify", "zoo.verifier:verify"),
    ("bench", "zoo.benchmark:bench"), ("import_model", "zoo.importers:import_model"),
    ("show", "zoo.api:show"), ("validate", "zoo.api:validate"), ("convert", "zoo.api:convert"),
    ("load", "zoo.net:load")])
def test_the_public_signature_offers_every_parameter_of_the_implementation(public, implementation):
    """Same parameters, order and defaults (the engines list is `engines`, not `engines_`), so
    that the wrapper loses nothing when the implementation grows."""
    import importlib
    module, name = implementation.split(":")
    impl = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    mine = inspect.signature(getattr(zoo, public)).parameters
    rename = {"engines_": "engines", "path": "name_or_path"} if public != "import_model" else {}
    assert [rename.get(p, p) for p in impl] == list(mine), (list(impl), list(mine))
    assert [p.default for p in impl.values()] == [p.default for p in mine.values()]


def test_import_zoo_and_its_light_calls_import_no_engine():
    code = textwrap.dedent(f"""
        import sys, zoo
        before = [m for m in {ENGINE_MODULES!r} if m in sys.modules]
        zoo.list_networks(); zoo.show("alexnet-r", 2); zoo.validate(["linreg"])
        zoo.convert("linreg", "json"); zoo.load("resnet-56"); zoo.list_engines()
        print(before, [m for m in {ENGINE_MODULES!r} if m in sys.modules])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[] []", r.stdout + r.stderr


def test_list_engines_is_what_zoo_engines_prints():
    rows = zoo.list_engines()
    assert [r["engine"] for r in rows] == list(zoo.engines.ENGINES)
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "engines", "--json"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    import json
    assert json.loads(r.stdout) == json.loads(json.dumps(rows))
    onnx = next(r for r in rows if r["engine"] == "onnx")
    assert onnx["train"] is False and "LSTM" in onnx["layer_types"]
    assert any(g["what"] == "training" for g in onnx["gaps"])
    opencv = next(r for r in rows if r["engine"] == "caffe-opencv")
    assert {"Embedding", "LRN with k != 1"} <= {g["what"] for g in opencv["gaps"]}


def test_the_modules_example_runs_as_written(tmp_path):
    """The example in zoo's docstring, run line by line in a fresh process (own cache)."""
    require_engine("onnx")
    lines = [l.strip().split("  #")[0] for l in zoo.__doc__.splitlines() if l.startswith("    ")]
    assert lines[0] == "import zoo" and any("zoo.verify" in l for l in lines), lines
    # each expression's value is printed, as an interactive session shows it
    code = "\n".join(l if "=" in l.split("(")[0] or l.startswith("import") else f"print(repr({l}))"
                     for l in lines)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "ZOO_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, code + "\n" + r.stderr[-2000:]
    shown = r.stdout.splitlines()
    assert shown[:2] == ["3", "['pass']"], r.stdout
    assert float(shown[2]) > 0


def test_verify_and_bench_take_engines_by_name_and_report_progress():
    require_engine("onnx")
    seen = []
    results = zoo.verify(["linreg"], engines=["onnx"], mode="both", progress=seen.append)
    assert [(r.mode, r.status) for r in results] == [("forward", "pass"), ("train", "skipped")]
    assert seen == results
    rows = zoo.bench(["linreg"], engines=["onnx"], mode="infer", batch=2, iters=2, warmup=0,
                     min_time=0.0, progress=seen.append)
    assert rows[0]["status"] == "ok" and rows[0]["median_s"] > 0 and seen[-1] is rows[0]


def test_build_and_import_model_round_trip(tmp_path):
    require_engine("onnx")
    b = zoo.build("softmax-mnist", "onnx", out=tmp_path / "built")
    assert not b.reused and (b.path / "model.onnx").is_file()
    assert zoo.build("softmax-mnist", "onnx", out=tmp_path / "built").reused
    result = zoo.import_model(b.path / "model.onnx", tmp_path / "imported")
    spec = result.spec
    assert spec.parent == tmp_path / "imported" and spec.is_file() and str(result) == str(spec)
    assert (tmp_path / "imported" / "import.json").is_file() and result.notes == ()
    assert zoo.load(spec).params == zoo.load("softmax-mnist").params == 7850
    assert zoo.validate([spec]) == [(str(spec), None)]
