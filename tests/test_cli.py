"""The `zoo` command: list, show, convert, engines, build."""

import json
import subprocess
import sys

import zoo
import zoo.engines
import zoo.spec


def run(*args):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True)


def test_list_json_has_every_network_with_the_keys():
    r = run("list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {x["name"] for x in rows} == set(zoo.spec.zoo_names())
    for x in rows:
        for k in ("name", "params", "flops", "inputs", "outputs", "layers"):
            assert k in x


def test_list_imports_no_engine():
    code = ("import sys, zoo.cli, zoo.api; zoo.api.list_networks(); "
            "print([m for m in ('torch', 'tensorflow', 'mxnet', 'onnxruntime', 'onnx', 'caffe', 'cv2', 'keras') "
            "if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_show_totals_agree_with_list():
    listed = {x["name"]: x for x in json.loads(run("list", "--json").stdout)}
    for name in ("alexnet-r", "resnet-56", "lstm-32"):
        shown = json.loads(run("show", name, "--json").stdout)
        assert shown["params"] == listed[name]["params"] == sum(r["params"] for r in shown["layer_table"])
        assert shown["flops"] == listed[name]["flops"]
        assert shown["flops"] == sum(r["flops"] for r in shown["layer_table"] if r["inference"])


def test_show_prints_a_table():
    r = run("show", "alexnet-r")
    assert r.returncode == 0 and "conv1" in r.stdout and "85,098" in r.stdout and "1×32×15×15" in r.stdout


def test_convert_round_trip(tmp_path):
    r = run("convert", "alexnet-r", "--to", "json", "--out", str(tmp_path / "a.json"))
    assert r.returncode == 0, r.stderr
    assert zoo.load(tmp_path / "a.json").params == 85_098


def test_engines_lists_every_engine():
    r = run("engines", "--json")
    names = {x["engine"] for x in json.loads(r.stdout)}
    assert names == set(zoo.engines.ENGINES)


def test_unknown_engine_is_a_clear_error():
    r = run("build", "linreg", "--engine", "nope")
    assert r.returncode == 1 and "unknown engine 'nope'" in r.stderr and "Traceback" not in r.stderr
