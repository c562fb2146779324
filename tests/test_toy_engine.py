"""Adding an engine is one converter module, one runner module and one declaration: the toy
engine in tests/toy_engine/ is added through those alone, and verify runs it in its own
child processes like any engine, its gaps and device rule read from its declaration."""

import os
from pathlib import Path

import pytest

import zoo
from layer_cases import CASES
from zoo import engines as E
from zoo import verifier

TESTS = Path(__file__).parent


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """The toy engine declared here and, through ZOO_EXTRA_ENGINES, in every child."""
    monkeypatch.setattr(E, "ENGINES", dict(E.ENGINES))        # gone again after the test
    monkeypatch.setenv("ZOO_EXTRA_ENGINES", "toy_engine")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    import toy_engine
    return E.register(toy_engine.ENGINE)


def test_toy_engine_verifies_forward_and_says_why_not_train(toy):
    results = verifier.verify(["linreg", "twolayer"], ["numpy"], mode="both")
    got = {(r.network, r.mode): r for r in results}
    for network in ("linreg", "twolayer"):
        fwd, train = got[(network, "forward")], got[(network, "train")]
        assert fwd.status == "pass", fwd.reason
        assert fwd.max_abs_err < 1e-5, fwd          # float32 outputs of the float64 reference
        assert train.status == "skipped" and train.reason == toy.note, train


def test_toy_engine_gap_comes_from_its_converter_registry(toy):
    net = zoo.from_text(CASES["Embedding-LSTM"])
    why = toy.unsupported(net)
    assert why and "LSTM" in why and "toy_engine.converter" in why
    assert {"what": "LSTM", "why": "toy_engine.converter has no converter for it"} in toy.gap_table()
    assert toy.unsupported(zoo.load("linreg")) is None
    [fwd] = verifier.verify([net], ["numpy"])
    assert fwd.status == "skipped" and fwd.reason.startswith("unsupported") and "LSTM" in fwd.reason, fwd


def test_toy_engine_gpu_request_is_refused_as_declared(toy):
    [fwd] = verifier.verify(["linreg"], ["numpy"], device="gpu0")
    assert fwd.status == "skipped" and toy.cpu_only in fwd.reason, fwd
