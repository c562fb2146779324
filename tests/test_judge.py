"""The scale-aware forward judge (zoo/magnitude.py, zoo/tolerances.py): correct engines pass
on networks with real-scale weights, each deliberate conversion break still fails at its
layer, the per-layer drift numbers and figure, and the default rule for layer types that
declare none."""

import shutil
from pathlib import Path

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo import compare, data, drift, magnitude, reference, verifier
from zoo import engines as E
from zoo import tolerances as T
from zoo import weights as W
from zoo.errors import UsageError

DATA = Path(__file__).parent / "data"
CONV1_GAIN = 50.0   # N(0,1) inputs -> conv1 outputs of an ImageNet image's magnitude


def he_weights(net, seed: int = 0) -> dict[str, np.ndarray]:
    """He initialisation (N(0, 2 / fan_in)) for every weight, small biases, conv1 scaled."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, ws in net.weight_specs().items():
        if ws.name == "weight":
            fan_in = int(np.prod(ws.shape[1:]))
            w = rng.standard_normal(ws.shape) * np.sqrt(2.0 / fan_in)
            out[key] = w * (CONV1_GAIN if key == "conv1.weight" else 1.0)
        else:
            out[key] = rng.uniform(-0.1, 0.1, ws.shape)
    return {k: v.astype(np.float32) for k, v in out.items()}


def real_scale(tmp_path, spec: str):
    """The spec copied beside its He-initialised .npz (the `weights:` it names)."""
    shutil.copy(DATA / spec, tmp_path / spec)
    net = zoo.load(tmp_path / spec)
    W.save(he_weights(net), tmp_path / net.proto.weights)
    return zoo.load(tmp_path / spec)


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))   # broken builds stay in here


def _float32_engine(net, weights, inputs):
    """NumPy in float32, layer by layer: a correct engine with its own rounding."""
    blobs = {}
    for layer in net.deploy_layers:
        if layer.kind.is_input:
            blobs[layer.tops[0]] = inputs[layer.tops[0]]
            continue
        w = {ws.name: weights[f"{layer.name}.{ws.name}"] for ws in layer.weights}
        ys = layer.kind.forward(layer.p, [blobs[b] for b in layer.bottoms], w)
        for t, y in zip(layer.tops, ys):
            blobs[t] = np.asarray(y).astype(np.float32)
    return blobs


def _judged(net, weights, rules=None):
    netb = net.with_batch(2)
    inputs = data.make(netb, 0)
    ref = reference.forward(netb, weights, inputs)
    bound = reference.bounds(netb, weights, ref)
    got = _float32_engine(netb, weights, inputs)
    return [compare.within_bound(t, got[t], ref[t], bound[t]) for t in got if t not in inputs]


def test_float32_numpy_passes_with_every_rule_and_with_the_default(tmp_path, monkeypatch):
    net = real_scale(tmp_path, "bvlc_alexnet_he_small.prototxt")
    weights = W.for_net(net)
    diffs = _judged(net, weights)
    assert all(d.ok for d in diffs), [(d.name, d.worst_ratio) for d in diffs if not d.ok]
    # every type without its rule: the default (measured on the layer's own forward) must
    # hold for any type, so it holds for these
    monkeypatch.setattr(magnitude, "RULES", {})
    diffs = _judged(net, weights)
    assert all(d.ok for d in diffs), [(d.name, d.worst_ratio) for d in diffs if not d.ok]


def test_bound_follows_the_terms_not_the_result():
    """A sum that cancels to ~0 is allowed the rounding of its terms, a fixed atol is not."""
    net = zoo.from_text('name: "c" layer { name: "data" type: "Input" input_param { shape: [1, 4] } }\n'
                        'layer { name: "fc" type: "InnerProduct" bottom: "data" '
                        'inner_product_param { num_output: 1 bias_term: false } }')
    netb = net.with_batch(1)
    x = {"data": np.array([[1e4, -1e4, 3.0, 0.0]], np.float32)}
    w = {"fc.weight": np.ones((1, 4), np.float32)}
    ref = reference.forward(netb, w, x)
    bound = reference.bounds(netb, w, ref)["fc"]
    assert ref["fc"][0, 0] == 3.0
    assert np.isclose(bound[0, 0], T.ROUNDING_K * 2.0**-24 * 20003)   # k u (|1e4| + |-1e4| + 3)
    # float32 may sum 1e4 - 1e4 + 3 with an error of ulp(1e4) ~ 1e-3: allowed here, while
    # atol + rtol |3| = 3.1e-4 would call that engine wrong
    assert compare.within_bound("fc", ref["fc"] + 2.0**-10, ref["fc"], bound).ok
    assert not compare.within_bound("fc", ref["fc"] + 0.1, ref["fc"], bound).ok


def test_real_scale_alexnet_passes_on_every_engine(tmp_path):
    net = real_scale(tmp_path, "bvlc_alexnet_he_small.prototxt")
    installed = [e for e in E.ENGINES if E.get(e).installed]
    results = verifier.verify([net], installed, layers=True)
    bad = [(r.engine, r.status, r.reason) for r in results if r.status not in ("pass", "skipped")]
    assert not bad, bad
    passed = [r for r in results if r.status == "pass"]
    assert passed and all(r.layers and all(row["ok"] for row in r.layers) for r in passed)
    worst = max(r.needed_factor for r in passed)
    print(f"real-scale AlexNet: worst output ratio {worst:.3g} (margin {1 / worst:.3g}x); "
          f"worst blob ratio {max(row['ratio'] for r in passed for row in r.layers):.3g}")
    ref_scale = float(np.abs(reference.forward(net.with_batch(2), W.for_net(net),
                                               data.make(net.with_batch(2), 0))["fc8"]).max())
    assert ref_scale > 10, ref_scale                   # real-scale logits, not values near 1
    png = drift.plot(results, tmp_path / "drift.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _broken(net, engine, module, name, fake, monkeypatch):
    require_engine(engine)
    import importlib
    conv = importlib.import_module(f"zoo.converters.{module}")
    monkeypatch.setattr(conv, name, fake)
    zoo.build(net, engine, in_process=True)             # the broken converter's build
    [r] = verifier.verify([net], [engine])               # reuses that build
    return r


def _swap_hw(w):        # a converter that wrote OIHW as OIWH: the kernel transposed
    return np.ascontiguousarray(w.transpose(3, 2, 1, 0))


BREAKS = {
    "conv layout (kernel transposed)": ("tensorflow", "tensorflow", "conv_to_keras", _swap_hw, "conv1"),
    "flatten layout (CHW rows kept)": ("tensorflow", "tensorflow", "dense_to_keras",
                                       lambda w, flat: np.ascontiguousarray(w.T), "fc6"),
    "LRN alpha not divided by n": ("tensorflow", "tensorflow", "lrn_window_weight",
                                   lambda alpha, n: alpha, "norm1"),
}


@pytest.mark.parametrize("what", list(BREAKS))
def test_deliberate_break_fails_at_its_layer(what, tmp_path, monkeypatch):
    engine, module, name, fake, layer = BREAKS[what]
    net = real_scale(tmp_path, "bvlc_alexnet_he_small.prototxt")
    r = _broken(net, engine, module, name, fake, monkeypatch)
    print(f"{what}: {r.status}, ratio {r.needed_factor}, first bad layer {r.first_bad_layer}: {r.reason}")
    assert r.status == "fail" and r.first_bad_layer == layer, r


def test_gate_order_break_fails_at_the_lstm(monkeypatch):
    from layer_cases import CASES

    def swap_g_o(a):
        i, f, g, o = np.split(a, 4, axis=0)
        return np.concatenate([i, f, o, g], axis=0)
    r = _broken(zoo.from_text(CASES["Embedding-LSTM"]), "tensorflow", "tensorflow",
                "lstm_gates_to_keras", swap_g_o, monkeypatch)
    assert r.status == "fail" and r.first_bad_layer == "lstm", r


GELU_NET = """name: "g"
layer { name: "data" type: "Input" input_param { shape: [2, 64] } }
layer { name: "fc" type: "InnerProduct" bottom: "data" inner_product_param { num_output: 512 } }
layer { name: "gelu" type: "GELU" bottom: "fc" %s }
"""


@pytest.mark.parametrize("form", ["NONE", "TANH"])
def test_gelu_rule_passes_torch_float32_gelu_and_fails_the_other_form(form):
    """GELU's own rule (its slope over the interval, zoo/magnitude.py): torch's float32 GELU of
    the spec's form passes at every element; the other form (the approximation where the spec
    says erf, or the reverse: a converter's likeliest GELU mistake) fails."""
    require_engine("torch")
    import torch
    assert "GELU" in magnitude.RULES
    net = zoo.from_text(GELU_NET % f"gelu_param {{ approximate: {form} }}")
    netb = net.with_batch(2)
    weights = he_weights(net)
    inputs = {"data": 3.0 * data.make(netb, 0)["data"]}     # pre-activations into both tails
    ref = reference.forward(netb, weights, inputs)
    bound = reference.bounds(netb, weights, ref)["gelu"]
    fc = torch.from_numpy(inputs["data"]) @ torch.from_numpy(weights["fc.weight"]).T \
        + torch.from_numpy(weights["fc.bias"])
    assert float(fc.abs().max()) > 4.0
    forms = {f: torch.nn.functional.gelu(fc, approximate="none" if f == "NONE" else "tanh").numpy()
             for f in ("NONE", "TANH")}
    right = compare.within_bound("gelu", forms.pop(form), ref["gelu"], bound)
    [wrong] = [compare.within_bound("gelu", got, ref["gelu"], bound) for got in forms.values()]
    print(f"{form}: right form at {right.worst_ratio:.3g} of the bound, other form at {wrong.worst_ratio:.3g}")
    assert right.ok and not wrong.ok, (right, wrong)


def test_plot_refuses_a_non_png_name(tmp_path):
    with pytest.raises(UsageError):
        drift.plot([], tmp_path / "drift.svg")


def test_float64_bound_is_the_same_rule_with_float64_roundoff():
    """Exact mode (--dtype float64): the bound is k * 2^-53 times the same terms, so the
    2^-10 error float32 may make in 1e4 - 1e4 + 3 is far outside what float64 may."""
    net = zoo.from_text('name: "c" layer { name: "data" type: "Input" input_param { shape: [1, 4] } }\n'
                        'layer { name: "fc" type: "InnerProduct" bottom: "data" '
                        'inner_product_param { num_output: 1 bias_term: false } }')
    netb = net.with_batch(1)
    x = {"data": np.array([[1e4, -1e4, 3.0, 0.0]], np.float64)}
    w = {"fc.weight": np.ones((1, 4), np.float32)}
    ref = reference.forward(netb, w, x)
    bound = reference.bounds(netb, w, ref, dtype="float64")["fc"]
    assert np.isclose(bound[0, 0], T.ROUNDING_K * 2.0**-53 * 20003)
    flush = T.flush("float64")
    assert compare.within_bound("fc", ref["fc"] + 2.0**-40, ref["fc"], bound, flush).ok
    assert not compare.within_bound("fc", ref["fc"] + 2.0**-10, ref["fc"], bound, flush).ok


def test_float64_bounds_scale_every_rule_by_the_roundoff_ratio(tmp_path):
    """With inputs exact in both dtypes, every rule is linear in u (real-scale AlexNet: conv
    with groups, LRN, max pooling, ReLU, inner products, softmax): float64's bound is
    float32's times 2^-29, blob by blob."""
    net = real_scale(tmp_path, "bvlc_alexnet_he_small.prototxt")
    weights = W.for_net(net)
    netb = net.with_batch(2)
    ref = reference.forward(netb, weights, data.make(netb, 0))
    b32 = reference.bounds(netb, weights, ref)
    b64 = reference.bounds(netb, weights, ref, dtype="float64")
    for blob, b in b32.items():     # float32's kept as float32, rounded up: within 2 ulps
        assert b.dtype == np.float32 and b64[blob].dtype == np.float64
        assert np.all(b * 2.0**-29 >= b64[blob]), blob
        assert np.allclose(b64[blob], b * 2.0**-29, rtol=2.0**-22, atol=0), blob
