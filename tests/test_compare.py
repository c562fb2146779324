"""zoo/compare.py judges large arrays a slice at a time; with a tiny slice the results must be
those of the whole-array formulas, wherever the worst element, a zero bound or a non-finite
value falls."""

import numpy as np
import pytest

from zoo import compare


@pytest.fixture(autouse=True)
def small_slices(monkeypatch):
    monkeypatch.setattr(compare, "CHUNK", 7)      # a 50-element array is 8 slices


def arrays(seed=0, n=50):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((5, n // 5))
    got = (ref + 1e-6 * rng.standard_normal(ref.shape)).astype(np.float32)
    return ref, got


@pytest.mark.parametrize("flush", [compare.FLUSH, 2.0**-1022])    # float64's: not a float32
@pytest.mark.parametrize("at", [0, 6, 7, 33, 49])
def test_within_bound_is_the_whole_array_rule(at, flush):
    ref, got = arrays()
    got.reshape(-1)[at] += 0.5                          # the worst element, in any slice
    bound = (np.abs(ref) * 1e-5).astype(np.float32)
    bound.reshape(-1)[(at + 10) % 50] = 0.0             # a zero bound: the flush floor
    d = compare.within_bound("b", got, ref, bound, flush)
    err = np.abs(got.astype(np.float64) - ref)
    ratio = np.max(err / (bound.astype(np.float64) + flush))
    assert (d.max_abs_err, d.worst_ratio) == (err.max(), ratio)
    assert d.max_rel_err == err.max() / np.abs(ref).max() and not d.ok


@pytest.mark.parametrize("at", [0, 20, 49])
@pytest.mark.parametrize("scale", [None, 0.01])
def test_update_close_is_the_whole_array_rule(at, scale):
    ref, got = arrays(1)
    start = ref - 1e-3
    start.reshape(-1)[at] -= 0.2                        # the largest update, in any slice
    got.reshape(-1)[(at + 3) % 50] += 1e-4
    d = compare.update_close("w", got, ref, start, 1e-3, 2, scale)
    biggest = np.abs(ref - start).max() if scale is None else scale
    err = np.abs(got.astype(np.float64) - ref)
    ratio = np.max(err / (np.abs(ref) * (2 * 2.0**-23) + 1e-3 * biggest))
    assert (d.max_abs_err, d.worst_ratio, d.max_rel_err) == (err.max(), ratio, err.max() / biggest)
    assert d.ok == (ratio <= 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_value_in_a_late_slice_fails_both(bad):
    ref, got = arrays(2)
    got.reshape(-1)[-1] = bad
    for d in (compare.within_bound("b", got, ref, np.ones_like(ref)),
              compare.update_close("w", got, ref, ref - 1e-3, 1e-3, 1)):
        assert not d.ok and d.reason == "non-finite values"


def test_transposed_and_broadcast_inputs_are_judged_elementwise():
    ref, got = arrays(3)
    d = compare.within_bound("b", got.T, ref.T, 1e-3)      # a scalar bound, strided arrays
    err = np.abs(got.astype(np.float64) - ref)
    assert d.ok and d.max_abs_err == err.max() and d.worst_ratio == np.max(err / (1e-3 + compare.FLUSH))
