"""Property-based fuzzing of the untrusted-input paths (specs, JSON, weights, ONNX, Caffe).

hypothesis picks (kind, seed) cases; tests/fuzzing.py derives a mutated input from each and
runs validate/show/convert/import on it in a sandboxed worker with a memory bound and a time
limit. Every outcome must be a clean acceptance or a clean refusal (ZooError). Long runs:
`benchmarks/fuzz.py --cases 5000`.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import require_engine
from fuzzing import KINDS, Sandbox

CASES_PER_KIND = 60


@pytest.fixture(scope="module")
def sandbox():
    require_engine("onnx")
    with Sandbox() as sb:
        yield sb


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_inputs_are_accepted_or_refused_cleanly(sandbox, kind):
    bad = []

    @settings(max_examples=CASES_PER_KIND, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def case(seed):
        o = sandbox.run(kind, seed)
        if not o.clean:
            bad.append(f"{kind}:{seed} {o.status}: {o.detail}")

    case()
    assert not bad, "\n".join(bad[:5])
    assert sandbox.peak_extra_rss < sandbox.memory_bound


def test_the_sandbox_reports_a_defect():
    """The harness itself: an internal error and a hang are reported, not swallowed."""
    import fuzzing

    with Sandbox(time_limit=2) as sb:
        original = fuzzing.run_case
        try:
            fuzzing.run_case = lambda *a: (_ for _ in ()).throw(KeyError("boom"))
            assert sb.run("prototxt", 1).status == "internal"
        finally:
            fuzzing.run_case = original
    with Sandbox(time_limit=1) as sb:
        try:
            fuzzing.run_case = lambda *a: __import__("time").sleep(30)
            o = sb.run("prototxt", 2)
            assert (o.status, o.detail) == ("hang", f"case took longer than {fuzzing.WALL_FACTOR} s")
            fuzzing.run_case = lambda *a: [None for _ in iter(int, 1)]     # spins on the CPU
            o = sb.run("prototxt", 3)
            assert o.status == "hang"      # by its CPU time, or on a loaded machine its wall time
            assert o.detail in ("case used more than 1 s of CPU", f"case took longer than {fuzzing.WALL_FACTOR} s")
        finally:
            fuzzing.run_case = original
