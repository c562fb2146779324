"""Every engine verifies every layer-type row, forward and (if it trains) a training step,
against the float64 reference and oracle; one test per engine and row
(`pytest -k "mxnet and LRN"`). What an engine cannot express is read from its declaration
in zoo/engines.py, and each declared gap a row hits is shown to be real: without the
declaration, that engine refuses the row or gets it wrong."""

import dataclasses
import functools
import importlib

import numpy as np
import pytest

import zoo
from layer_cases import CASES
from zoo import compare, data, reference
from zoo import engines as E
from zoo import tolerances as T
from zoo import verifier
from zoo import weights as W
from zoo.errors import Unsupported

PAIRS = [(e, c) for c in CASES for e in E.ENGINES]


@functools.cache
def _net(case):
    return zoo.from_text(CASES[case], file=f"tests/layer_cases.py:{case}")


@pytest.mark.parametrize("engine", list(E.ENGINES))
def test_engine_is_installed(engine):
    why = E.get(engine).missing()
    if why:
        pytest.skip(f"engine {engine} not installed: {why}")
    # results and reports record which engine computed them (Caffe, built from source, too)
    assert E.get(engine).versions(), f"{engine} reports no version"


@pytest.fixture(scope="session")
def row_results(request):
    """Each row verified once, on every engine selected with it, so that the engines of a
    row share its float64 oracle (one PyTorch float64 build and training run per row)."""
    selected: dict[str, set[str]] = {}
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "originalname", "") == "test_layer":
            selected.setdefault(params["case"], set()).add(params["engine"])
    done: dict[str, dict] = {}

    def results(case: str) -> dict:
        if case not in done:
            engines = sorted(e for e in selected.get(case, ()) if E.get(e).installed)
            done[case] = {(r.engine, r.mode): r
                          for r in verifier.verify([_net(case)], engines, mode="both")} if engines else {}
        return done[case]
    return results


@pytest.mark.parametrize("engine,case", PAIRS, ids=[f"{e}-{c}" for e, c in PAIRS])
def test_layer(engine, case, row_results):
    eng = E.get(engine)
    if (why := eng.missing()) is not None:
        pytest.skip(f"engine {engine} not installed: {why}")
    gap = eng.unsupported(_net(case))
    results = row_results(case)
    problems = []
    for mode in ("forward", "train"):
        r = results[(engine, mode)]
        if gap is not None:
            expected = "skipped, unsupported"
            ok = r.status == "skipped" and r.reason.startswith(("unsupported", eng.note))
        elif mode == "train" and not eng.train:
            expected = "skipped: no training step"
            ok = r.status == "skipped" and r.reason == eng.note
        else:
            expected, ok = "pass", r.status == "pass"
        if not ok:
            problems.append(f"{engine} {mode}: expected {expected}, got {r.status}: {r.reason}")
    assert not problems, "\n".join(problems)


def _declared_gap(engine: str, case: str) -> bool:
    """A gap declared by hand (not merely a type the converter's registry lacks)."""
    eng, net = E.get(engine), _net(case)
    return eng.unsupported(net) is not None and dataclasses.replace(eng, gaps=()).unsupported(net) is None


GAP_PAIRS = [(e, c) for e, c in PAIRS if _declared_gap(e, c)]


@pytest.mark.parametrize("engine,case", GAP_PAIRS, ids=[f"{e}-{c}" for e, c in GAP_PAIRS])
def test_declared_gap_is_real(engine, case, monkeypatch, tmp_path):
    """With its gaps taken out of the declaration, the engine's converter refuses the row,
    or its runner fails on it or computes something else than the reference."""
    eng = E.get(engine)
    if (why := eng.missing()) is not None:
        pytest.skip(f"engine {engine} not installed: {why}")
    monkeypatch.setitem(E.ENGINES, engine, dataclasses.replace(eng, gaps=()))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    net = _net(case)
    try:
        art = zoo.build(net, engine, in_process=True)
    except Unsupported:
        return                                     # the converter itself refuses it
    netb = net.with_batch(verifier.DEFAULT_BATCH)
    inputs = data.make(netb, 0)
    runner = importlib.import_module(eng.runner).Runner(art.path, "cpu")
    try:
        runner.load()
        got = runner.forward(inputs)
    except Exception:                              # noqa: BLE001 - the engine cannot run it
        return
    ref = reference.forward(netb, W.for_net(net, 0), inputs)
    tol, _ = T.forward_tolerance(engine, net.name)
    diffs = [compare.allclose(o, np.asarray(got[o]), ref[o], tol) for o in netb.outputs]
    assert not all(d.ok for d in diffs), f"{engine} computes {case} correctly: its declared gap is stale"


def test_zoo_engines_gap_table_reads_the_declarations():
    def whats(name):
        return {row["what"] for row in E.get(name).gap_table()}
    assert {"Embedding", "LRN with k != 1", "training"} <= whats("caffe-opencv")
    assert "Pooling AVE with the VALID divisor (padded or CEIL)" in whats("caffe")
    assert "training" not in whats("caffe") and "training" in whats("onnx")
    assert not any(w.endswith("Loss") for w in whats("onnx"))   # it leaves the losses out
