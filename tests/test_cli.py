"""The `zoo` command: list, show, convert, engines, build; exit statuses and usage errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
import zoo.engines
import zoo.spec
from conftest import require_engine


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


def test_unknown_engine_is_a_clear_usage_error():
    r = run("build", "linreg", "--engine", "nope")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == f"zoo: unknown engine 'nope'; engines: {', '.join(zoo.engines.ENGINES)}\n"


# The rule: usage errors and bad input exit 2 with one line, failed checks exit 1, success 0.
USAGE_ERRORS = [
    (["show", "linreg", "--batch", "0"], "--batch must be an integer >= 1, not 0"),
    (["show", "no-such-net"], "no-such-net: no zoo network or file named 'no-such-net'"),
    (["convert", "linreg", "--to", "yaml"], "--to must be json or prototxt, not 'yaml'"),
    (["build", "linreg", "--engine", "onnx,torch"], "--engine takes one engine, not 'onnx,torch'"),
    (["build", "linreg", "--engine", "onnx", "--opset", "0"], "--opset must be an integer >= 1, not 0"),
    (["verify", "linreg", "--engines", "onnx,banana"], "unknown engine 'banana'; engines: "),
    (["verify", "linreg", "--mode", "sideways"], "--mode must be forward, train or both, not 'sideways'"),
    (["verify", "linreg", "--device", "banana"], "--device must be cpu, gpu or gpuN (e.g. gpu0), not 'banana'"),
    (["verify", "linreg", "--atol", "-1"], "--atol must be a finite number >= 0, not -1.0"),
    (["verify", "linreg", "--rtol", "nan"], "--rtol must be a finite number >= 0, not nan"),
    (["verify", "linreg", "--batch", "0"], "--batch must be an integer >= 1, not 0"),
    (["verify", "linreg", "--threads", "0"], "--threads must be an integer >= 1, not 0"),
    (["verify", "linreg", "--timeout", "0"], "--timeout must be a number of seconds > 0, not 0.0"),
    (["bench", "linreg", "--engines", "banana"], "unknown engine 'banana'; engines: "),
    (["bench", "linreg", "--mode", "forward"], "--mode must be train, infer or both, not 'forward'"),
    (["bench", "linreg", "--device", "gpu-1"], "--device must be cpu, gpu or gpuN (e.g. gpu0), not 'gpu-1'"),
    (["bench", "linreg", "--batch", "0"], "--batch must be an integer >= 1, not 0"),
    (["bench", "linreg", "--threads", "1,x"], "--threads must be an integer >= 1, not 'x'"),
    (["bench", "linreg", "--iters", "0"], "--iters must be an integer >= 1, not 0"),
    (["bench", "linreg", "--warmup", "-1"], "--warmup must be an integer >= 0, not -1"),
    (["bench", "linreg", "--min-time", "-1"], "--min-time must be a finite number >= 0, not -1.0"),
    (["bench", "linreg", "--timeout", "-1"], "--timeout must be a number of seconds > 0, not -1.0"),
    (["import", "/nonexistent/m.onnx", "--out", "/nonexistent/d"], "/nonexistent/m.onnx: "),
]


def run_in_process(monkeypatch, capsys, *args):
    """`zoo ARGS` in this process (fast: the usage errors come before any engine starts)."""
    import zoo.cli
    monkeypatch.setattr(sys, "argv", ["zoo", *args])
    try:
        zoo.cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args,message", USAGE_ERRORS, ids=[" ".join(a[:1] + a[2:]) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_with_one_line(monkeypatch, capsys, args, message):
    code, out, err = run_in_process(monkeypatch, capsys, *args)
    assert code == 2, (code, err)
    assert err.startswith(f"zoo: {message}") and err.count("\n") == 1, err
    assert "<spec>" not in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["verify", "--batch", "abc"], ["build", "linreg"], ["nosuch"],
                                  ["show"], ["list", "--nope"]])
def test_typers_own_usage_errors_exit_2(args):
    r = run(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_a_valid_file_that_is_not_a_spec_exits_2_naming_it(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "a" type: "Banana" }\n')
    r = run("show", str(bad))
    assert r.returncode == 2 and r.stderr.startswith(f"zoo: {bad}:") and "<spec>" not in r.stderr, r.stderr


def test_a_failed_check_exits_1_and_success_exits_0():
    require_engine("onnx")
    ok = run("verify", "linreg", "--engines", "onnx")
    assert ok.returncode == 0, ok.stderr
    env = {**os.environ, "ZOO_FAULT": "onnx:raise"}
    failed = subprocess.run([sys.executable, "-m", "zoo.cli", "verify", "linreg", "--engines", "onnx"],
                            capture_output=True, text=True, env=env)
    assert failed.returncode == 1, failed.stderr
    # the engine's own error is the reason, not a warning line printed before it
    assert "RuntimeError: fault injected by ZOO_FAULT" in failed.stderr and "WARNING" not in failed.stderr


def test_the_command_module_is_not_a_symlink():
    import cli
    import zoo.cli
    path = Path(zoo.cli.__file__)
    assert not path.is_symlink() and zoo.cli.main is cli.main


def test_list_shows_the_macs_its_title_promises():
    r = run("list")
    assert r.returncode == 0, r.stderr
    assert "MACs and FLOPs per sample" in r.stdout and "MACs" in r.stdout.splitlines()[2]
    import cli
    alexnet = next(x for x in json.loads(run("list", "--json").stdout) if x["name"] == "alexnet-r")
    row = next(l for l in r.stdout.splitlines() if "alexnet-r" in l)
    assert f" {cli._num(alexnet['macs'])} " in row and f" {cli._num(alexnet['flops'])} " in row, row


# --- zoo cache (issue 18): list with totals, prune to a bound, clear; in a cache of the test's own

@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """Three small builds in a cache of this test's own: linreg for onnx and caffe-opencv
    (sharing one weights file), softmax-mnist for onnx, used longest ago."""
    require_engine("onnx")
    require_engine("caffe-opencv")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zoo"))
    monkeypatch.setenv("ZOO_CACHE_LIMIT", "1G")
    builds = {(n, e): zoo.build(n, e, in_process=True)
              for n, e in [("softmax-mnist", "onnx"), ("linreg", "onnx"), ("linreg", "caffe-opencv")]}
    now = __import__("time").time()
    for age, b in zip((300, 200, 100), builds.values()):
        os.utime(b.path, (now - age, now - age))
    return builds


def test_cache_lists_builds_with_totals_per_engine_and_network(own_cache):
    from zoo import cache
    r = run("cache", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert listed["root"] == str(cache.root()) and listed["limit_bytes"] == 2**30
    assert listed["usage_bytes"] == cache.usage()
    assert {(b["network"], b["engine"]) for b in listed["builds"]} == set(own_cache)
    size = {(b["network"], b["engine"]): b["bytes"] for b in listed["builds"]}
    assert listed["engines"]["onnx"] == size["softmax-mnist", "onnx"] + size["linreg", "onnx"]
    assert listed["engines"]["caffe-opencv"] == size["linreg", "caffe-opencv"]
    weights = (own_cache["linreg", "onnx"].path / "weights.npz").stat().st_size
    # linreg's two builds share one weights file: counted once in the network's total
    assert listed["networks"]["linreg"] == size["linreg", "onnx"] + size["linreg", "caffe-opencv"] - weights
    assert not any(b["in_use"] for b in listed["builds"])
    assert run("cache", "list", "--json").stdout == r.stdout


def test_cache_says_which_builds_are_in_use_and_clear_keeps_them(own_cache):
    from zoo import cache
    held = own_cache["linreg", "onnx"]
    with cache.lease(held.path):
        shown = run("cache")
        assert shown.returncode == 0, shown.stderr
        assert "1.0 GiB (ZOO_CACHE_LIMIT=1G); 3 builds, 1 in use" in shown.stdout, shown.stdout
        row = next(l for l in shown.stdout.splitlines() if held.path.name in l)
        assert "in use" in row and "onnx" in row and "linreg" in row
        assert all(k in shown.stdout for k in ("softmax-mnist", "caffe-opencv", "total", "per network"))
        cleared = run("cache", "clear")
        assert cleared.returncode == 0, cleared.stderr
        assert "removed 2 builds" in cleared.stdout and "in 1 build (1 in use, kept)" in cleared.stdout
        assert held.path.is_dir() and [e.path for e in cache.entries()] == [held.path]
    cleared = run("cache", "clear")
    assert "removed 1 build," in cleared.stdout and "in 0 builds" in cleared.stdout, cleared.stdout
    assert cache.entries() == [] and cache.usage() == 0


def test_cache_prune_evicts_the_least_recently_used_down_to_the_limit(own_cache):
    from zoo import cache
    r = run("cache", "prune", "--limit", "20K")      # softmax-mnist alone is 64 KiB
    assert r.returncode == 0, r.stderr
    assert "pruned 1 build," in r.stdout and "of 20.0 KiB in 2 builds" in r.stdout, r.stdout
    assert not own_cache["softmax-mnist", "onnx"].path.exists()
    assert {(e.network, e.engine) for e in cache.entries()} == {("linreg", "onnx"), ("linreg", "caffe-opencv")}
    assert "pruned 0 builds" in run("cache", "prune").stdout       # under ZOO_CACHE_LIMIT: nothing


@pytest.mark.parametrize("args,message", [
    (["cache", "prune", "--limit", "lots"], "--limit must be a size (e.g. 4G, 500M, 2048K or a number of bytes), not 'lots'"),
    (["cache", "clear", "--now"], None)])
def test_cache_usage_errors_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zoo"))
    r = run(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    if message:
        assert r.stderr == f"zoo: {message}\n"
    assert not (tmp_path / "zoo").exists()          # nothing was created for a refused command
