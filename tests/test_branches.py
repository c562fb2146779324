"""The branch-matched oracle (zoo/branches.py): which layers and branches it reads, which
differing decisions it accepts (within the forward bound of the kink) and which it refuses,
that the float64 oracle really steps with the branches it is given, and that every training
engine exposes the forward pass its step takes."""

from pathlib import Path

import numpy as np
import pytest

from conftest import require_engine
from zoo import branches, isolation
from zoo import net as N
from zoo import verifier as V
from zoo.builds import build

SPEC = Path(__file__).parent / "data" / "branchy.prototxt"


@pytest.fixture(scope="module")
def problem():
    p = V._prepare(N.load(SPEC), 4, 0)
    p.train_reference = branches.TrainReference(p.netb, p.weights, p.inputs)
    return p


def reference_codes(p) -> dict:
    return {l.name: branches.codes(l, p.train_reference.blobs[l.tops[0]])
            for l in branches.kink_layers(p.netb)}


def test_it_reads_every_branch_of_relu_and_clip(problem):
    assert [l.name for l in branches.kink_layers(problem.netb)] == ["relu1", "clip2"]
    codes = reference_codes(problem)
    assert set(np.unique(codes["relu1"])) == {branches.BELOW, branches.LINEAR}
    assert set(np.unique(codes["clip2"])) == {branches.BELOW, branches.LINEAR, branches.ABOVE}
    assert branches.check(problem.netb, problem.train_reference, codes).flips == 0


def test_a_flip_within_the_bound_of_the_kink_is_accepted_one_beyond_is_not(problem):
    ref = problem.train_reference
    x, bound = ref.blobs["bn2"], ref.bounds["bn2"]
    # a reference input moved to half its bound above Clip's upper kink: float32 may land
    # on either side of it, so the engine's "linear" there is legitimate
    i = np.unravel_index(np.argmax(x), x.shape)
    near = branches.TrainReference.__new__(branches.TrainReference)
    near.blobs, near.bounds = {**ref.blobs, "bn2": x.copy()}, ref.bounds
    near.blobs["bn2"][i] = 0.5 + 0.5 * bound[i]
    codes = reference_codes(problem)
    codes["clip2"][i] = branches.LINEAR
    ok = branches.check(problem.netb, near, codes)
    assert (ok.flips, ok.ok, ok.where) == (1, True, "clip2") and 0.4 < ok.worst < 0.6
    # the same decision where the reference is far above the kink is an engine error
    bad = branches.check(problem.netb, ref, codes)
    assert bad.flips == 1 and not bad.ok and bad.worst > 1e3, bad


def test_the_oracle_steps_with_the_branches_it_is_given(problem):
    require_engine("torch")
    oracle = V._oracle(problem, 0, 900)
    assert "error" not in oracle, oracle

    def step(codes):
        res = isolation.run("torch", "train", {"artifact": oracle["artifact"], "steps": 1},
                            branches.oracle_inputs(problem.inputs, [codes]), timeout=900)
        assert res.ok, res.reason
        return res.arrays

    same = step(reference_codes(problem))
    for k, w in oracle["weights"].items():
        # its own branches: its own step, to float64's summation order (the forced output's
        # gradient reaches BatchNorm in another memory order than Hardtanh's: 1 ulp)
        np.testing.assert_allclose(same[k], w, rtol=1e-12, atol=1e-15, err_msg=k)
    codes = reference_codes(problem)
    x = problem.train_reference.blobs["bn1"]
    codes["relu1"][np.unravel_index(np.argmax(x), x.shape)] = branches.BELOW
    moved = step(codes)
    assert np.max(np.abs(moved["conv1.weight"] - oracle["weights"]["conv1.weight"])) > 1e-6


@pytest.mark.parametrize("engine", ["torch", "tensorflow", "mxnet", "caffe"])
def test_each_training_engine_exposes_its_training_forward(problem, engine):
    """BatchNorm on the batch's statistics (the inference forward would differ by far more
    than rounding: the running statistics are not the batch's), in the spec's layout."""
    require_engine(engine)
    art = build(problem.net, engine)
    layers = branches.kink_layers(problem.netb)
    res = isolation.run(engine, "train_forward", {"artifact": str(art.path),
                                                   "expose": [l.tops[0] for l in layers]},
                        problem.inputs, timeout=900)
    assert res.ok, res.reason
    for l in layers:
        want = problem.train_reference.blobs[l.tops[0]]
        assert np.max(np.abs(res.arrays[l.tops[0]] - want)) <= 1e-5 * np.max(np.abs(want)), l.name
        assert np.max(np.abs(problem.ref[l.tops[0]] - want)) > 1e-2 * np.max(np.abs(want))
    codes = {l.name: branches.codes(l, res.arrays[l.tops[0]]) for l in layers}
    assert branches.check(problem.netb, problem.train_reference, codes).ok


def test_a_spec_blob_under_the_codes_prefix_is_refused_not_misread():
    with pytest.raises(ValueError, match="starts with '__branch__:'"):
        branches.oracle_inputs({"__branch__:relu1": np.zeros(2)}, [{"relu1": np.zeros(2, np.int8)}])


def _train_forward(engine, artifact, p, after_steps):
    res = isolation.run(engine, "train_forward", {"artifact": str(artifact), "after_steps": after_steps,
                                                   "expose": [l.tops[0] for l in branches.kink_layers(p.netb)]},
                        p.inputs, timeout=900)
    assert res.ok, res.reason
    return res.arrays


def test_the_oracle_forces_each_step_with_that_steps_branches(problem):
    """Two-step comparisons: step 2's codes act in step 2 only."""
    require_engine("torch")
    oracle = V._oracle(problem, 0, 900)

    def run(codes, steps):
        res = isolation.run("torch", "train", {"artifact": oracle["artifact"], "steps": steps},
                            branches.oracle_inputs(problem.inputs, codes), timeout=900)
        assert res.ok, res.reason
        return res.arrays

    plain = run([], 2)
    after = _train_forward("torch", oracle["artifact"], problem, 1)    # the oracle's own step 2
    own = [reference_codes(problem),
           {l.name: branches.codes(l, after[l.tops[0]]) for l in branches.kink_layers(problem.netb)}]
    for k, w in run(own, 2).items():          # its own branches in both steps: its own steps
        np.testing.assert_allclose(w, plain[k], rtol=1e-12, atol=1e-15, err_msg=k)
    flipped = [own[0], {k: v.copy() for k, v in own[1].items()}]
    flat = flipped[1]["relu1"].reshape(-1)
    flat[np.argmax(flat == branches.LINEAR)] = branches.BELOW     # one unit, in step 2 only
    assert np.max(np.abs(run(flipped, 2)["conv1.weight"] - plain["conv1.weight"])) > 1e-9
    for k, w in run(flipped, 1).items():      # step 1 never sees step 2's codes
        np.testing.assert_allclose(w, oracle["weights"][k], rtol=1e-12, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("engine", ["torch", "tensorflow", "mxnet", "caffe"])
def test_each_training_engine_exposes_the_forward_of_its_second_step(problem, engine):
    """After one step, the engine's training forward is at the weights that step left (which
    come back with it): the float64 training forward at those weights, not at the build's."""
    require_engine(engine)
    arrays = _train_forward(engine, build(problem.net, engine).path, problem, 1)
    moved = branches.weights_of(arrays)
    assert moved and set(moved) <= set(problem.weights)
    ref = branches.TrainReference(problem.netb, {**problem.weights, **{k: v.astype(np.float64)
                                                                      for k, v in moved.items()}},
                                  problem.inputs)
    for l in branches.kink_layers(problem.netb):
        got, want, before = arrays[l.tops[0]], ref.blobs[l.tops[0]], problem.train_reference.blobs[l.tops[0]]
        assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want)), l.name
        assert np.max(np.abs(got - before)) > 1e-3 * np.max(np.abs(want)), l.name   # it did move
