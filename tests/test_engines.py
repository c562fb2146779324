"""Every engine verifies every layer-type row, forward and (if it trains) a training step,
against the float64 reference and oracle. Driven by the registries: a new engine or a new
layer-type row adds tests here. One verify call per row shares the row's float64 oracle."""

import pytest

import zoo
from layer_cases import CASES
from zoo import engines as E
from zoo import verifier

# (engine, case) -> why the engine cannot express it (a known gap is data, not a deleted test)
KNOWN_UNSUPPORTED = {
    ("caffe", "ave_pool_floor_valid"): "Caffe's average pooling always counts padding",
    ("caffe-opencv", "ave_pool_floor_valid"): "Caffe's average pooling always counts padding",
    ("caffe-opencv", "embedding_lstm"): "OpenCV's Caffe importer has no Embed layer",
    ("caffe-opencv", "lrn"): "OpenCV's Caffe importer ignores lrn_param.k (always 1)",
}


@pytest.mark.parametrize("engine", list(E.ENGINES))
def test_engine_is_installed(engine):
    why = E.get(engine).missing()
    if why:
        pytest.skip(f"engine {engine} not installed: {why}")


@pytest.mark.parametrize("case", list(CASES))
def test_layer_case_on_every_engine(case):
    net = zoo.from_text(CASES[case], file=f"tests/layer_cases.py:{case}")
    results = verifier.verify([net], None, mode="both")
    problems = []
    for r in results:
        if r.status == "skipped":
            if r.reason.startswith("not installed"):
                continue                                   # reported by test_engine_is_installed
            if r.mode == "train" and not E.get(r.engine).train:
                continue
            if r.reason.startswith("unsupported") and (r.engine, case) in KNOWN_UNSUPPORTED:
                continue
        if r.status != "pass":
            problems.append(f"{r.engine} {r.mode}: {r.status}: {r.reason}")
    for (engine, c), why in KNOWN_UNSUPPORTED.items():
        if c == case and E.get(engine).installed:
            r = next(r for r in results if r.engine == engine and r.mode == "forward")
            if r.status != "skipped":
                problems.append(f"{engine} was expected unsupported ({why}) but is {r.status}")
    assert not problems, "\n".join(problems)
