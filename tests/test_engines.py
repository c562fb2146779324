"""Every engine verifies every layer-type row it supports, forward and (if it trains) a
training step, against the float64 reference. Driven by the registries: adding an engine or
a layer-type row adds tests here."""

import pytest

import zoo
from conftest import require_engine
from layer_cases import CASES
from zoo import engines as E
from zoo import verifier

ROWS = [(e, c) for e in E.ENGINES for c in CASES]


@pytest.mark.parametrize("engine,case", ROWS, ids=[f"{e}-{c}" for e, c in ROWS])
def test_layer_case(engine, case):
    require_engine(engine)
    net = zoo.from_text(CASES[case], file=f"tests/layer_cases.py:{case}")
    results = verifier.verify([net], [engine], mode="both")
    for r in results:
        if r.status == "skipped":
            assert r.mode == "train" and not E.get(engine).train or r.reason.startswith("unsupported"), r.reason
            continue
        assert r.status == "pass", f"{r.mode}: {r.reason}"
