"""`zoo bench --optimize`: each engine's fastest standard configuration beside the default,
verified in its own child before it is timed; a wrong optimised model is a `fail` with the
reason and no time."""

import pytest

from conftest import require_engine
from zoo import benchmark
from zoo import engines as E

NET = "mlp-mnist"
FAST = dict(threads=[1], batch=8, warmup=1, iters=2, min_time=0, max_time=0.5, peak=False)
OPTIMISED = {"torch", "tensorflow", "mxnet", "onnx"}      # engines with an optimised config
TIMED = ("median_s", "samples_per_s", "gflops")


def _installed(names):
    return [e for e in names if E.get(e).installed]


def test_optimize_gives_both_configurations_on_every_engine():
    engines = _installed(["torch", "tensorflow", "mxnet", "onnx", "caffe", "caffe-opencv"])
    if not engines:
        pytest.skip("no engine installed")
    rows = benchmark.bench([NET], engines, mode="both", optimize=True, **FAST)
    assert len(rows) == 2 * 2 * len(engines)
    for default, opt in zip(rows[::2], rows[1::2]):          # side by side: default first
        assert (default["config"], opt["config"]) == ("default", "optimized")
        assert (default["engine"], default["mode"]) == (opt["engine"], opt["mode"])
        where = f"{opt['engine']} {opt['mode']}"
        trains = E.get(opt["engine"]).train
        if opt["mode"] == "train" and not trains:
            assert default["status"] == opt["status"] == "skipped", where
            continue
        assert default["status"] == "ok", (where, default["reason"])
        if opt["engine"] in OPTIMISED:
            assert opt["status"] == "ok", (where, opt["reason"])
            v = opt["verification"]
            assert v["status"] == "pass" and v["worst_ratio"] <= 1, (where, v)
            assert any(c.startswith("forward ") for c in v["checked"]), v
            if opt["mode"] == "train":
                assert "loss" in v["checked"] and any(c.startswith("update ") for c in v["checked"]), v
            assert opt["enabled"] and all(isinstance(s, str) for s in opt["enabled"])
            assert opt["median_s"] > 0
        else:
            assert opt["status"] == "skipped", (where, opt)
            assert "no optimised configuration" in opt["reason"]
            assert all(opt.get(k) is None for k in TIMED)


@pytest.mark.parametrize("engine, mode, fault, what", [
    ("onnx", "infer", "perturb-optimized", "forward "),
    ("mxnet", "train", "perturb-optimized-step", "update "),
])
def test_a_wrong_optimised_model_fails_and_is_not_timed(monkeypatch, engine, mode, fault, what):
    """The optimised model's answers scaled by 1 + 1e-3 (runners/__main__.py's test hook),
    as a subtly wrong compiler would: its row fails with the reason and carries no time; the
    default configuration, untouched, is timed."""
    require_engine(engine)
    monkeypatch.setenv("ZOO_FAULT", f"{engine}:{fault}")
    default, opt = benchmark.bench([NET], [engine], mode=mode, optimize=True, **FAST)
    assert default["config"] == "default" and default["status"] == "ok", default["reason"]
    assert opt["config"] == "optimized" and opt["status"] == "fail", opt
    assert "failed verification" in opt["reason"] and what in opt["reason"], opt["reason"]
    assert opt["verification"]["status"] == "fail"
    if mode == "train":     # the oracle, asked when only the step's comparison failed, agrees
        assert opt["oracle_verification"]["status"] == "fail", opt["oracle_verification"]
    assert all(opt.get(k) is None for k in TIMED), opt


def test_without_optimize_rows_are_the_default_configuration_only():
    require_engine("onnx")
    [row] = benchmark.bench(["linreg"], ["onnx"], mode="infer", **FAST)
    assert row["config"] == "default" and row["status"] == "ok" and "verification" not in row


def test_a_blob_named_like_the_reference_arrays_is_refused_not_misread(tmp_path):
    # The optimised model's reference travels beside the batch under these prefixes; a spec
    # blob with one would be read as a reference array in the child.
    import zoo
    from zoo.errors import UsageError
    spec = tmp_path / "clash.prototxt"
    spec.write_text('name: "clash"\n'
                    'layer { name: "x" type: "Input" top: "__check_ref__:x" input_param { shape: [2, 3] } }\n'
                    'layer { name: "fc" type: "InnerProduct" bottom: "__check_ref__:x" top: "y" '
                    'inner_product_param { num_output: 2 } }\n')
    net = zoo.load(spec)
    with pytest.raises(UsageError, match="'__check_ref__:x' starts with a name --optimize uses"):
        benchmark.bench([net], ["onnx"], mode="infer", optimize=True, **FAST)


def _chaotic_runner(wrong: float):
    """A runner whose training step is ill-conditioned as ResNet-56's is: any change of the
    inputs at float32's rounding moves every update by up to 5% of the layer's largest (ReLU
    branches flipping), deterministically for the same inputs. Its 'optimised' step moves
    them the same way (a different rounding), plus `wrong` of the update (a real error)."""
    import hashlib

    import numpy as np

    import zoo
    from runners.base import Runner
    from zoo import weights as W

    class Chaotic(Runner):
        engine = "torch"

        def _step(self, inputs, seed, extra=0.0):
            start = W.load(self.dir / "weights.npz", self.net)
            rng = np.random.default_rng(seed)
            return [1.0], {k: w + 0.01 * (1 + extra) + 0.0005 * rng.uniform(-1, 1, w.shape)
                           for k, w in start.items()}

        def _default_step(self, inputs):
            h = hashlib.sha256(b"".join(np.ascontiguousarray(inputs[b]).tobytes() for b in sorted(inputs)))
            return self._step(inputs, int.from_bytes(h.digest()[:4], "little"))

        def train_step(self, inputs, steps=1):
            return self._step(inputs, 99, wrong)

    art = zoo.build("twolayer", "torch").path
    runner = Chaotic(art, options={"optimize": True})
    net = zoo.load("twolayer").with_batch(4)
    from zoo import data
    return runner, data.make(net, 0)


def test_an_ill_conditioned_step_is_judged_at_its_own_conditioning():
    """A difference the default configuration itself shows under a 2^-24 move of its inputs
    passes, at 2x that measured figure, and says so; a real error of 50% does not."""
    from zoo import compare
    runner, inputs = _chaotic_runner(0.0)
    diffs, note = runner._train_diffs(inputs, compare)
    assert all(d.ok for d in diffs), [(d.name, d.worst_ratio) for d in diffs if not d.ok]
    assert "ill-conditioned point" in note and "probe" in note, note
    runner, inputs = _chaotic_runner(0.5)
    diffs, note = runner._train_diffs(inputs, compare)
    assert not all(d.ok for d in diffs)
    assert max(d.worst_ratio for d in diffs) > 2, [(d.name, d.worst_ratio) for d in diffs]


def test_the_oracle_decides_a_step_only_the_in_child_comparison_failed(monkeypatch):
    """The optimised step is wrong in bench children only (runners/__main__.py's test hook),
    so bench's comparison with the default step fails while `zoo verify --optimize`, asked
    then, passes: the point is timed, and the row keeps both verdicts."""
    require_engine("mxnet")
    monkeypatch.setenv("ZOO_FAULT", "mxnet:perturb-optimized-step-bench")
    default, opt = benchmark.bench([NET], ["mxnet"], mode="train", optimize=True, **FAST)
    assert default["status"] == "ok", default["reason"]
    assert opt["status"] == "ok" and opt["median_s"] > 0, opt
    assert opt["oracle_verification"]["status"] == "pass", opt["oracle_verification"]
    v = opt["verification"]
    assert v["status"] == "pass" and "zoo verify --optimize" in v["tolerance"], v
    assert "update " in v["tolerance"], v     # the in-child verdict it overruled, quoted
