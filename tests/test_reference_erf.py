"""The reference's vectorised erf (zoo/layers/activations.py, Cephes' rational functions)
against the C library's math.erf: every branch (|x| <= 1, 1 < |x| < 8, 8 <= |x| < 27, the
saturated tail) within 4 units in the last place, and the special values."""

import math

import numpy as np

from zoo.layers.activations import erf


def test_erf_within_four_ulp_of_math_erf_on_every_branch():
    xs = np.concatenate([np.linspace(-30.0, 30.0, 600_001),
                         np.random.default_rng(0).standard_normal(200_000) * 3.0,
                         [1.0, -1.0, np.nextafter(1.0, 2.0), 8.0, np.nextafter(8.0, 0.0), 27.0,
                          1e-300, 5e-324, 0.3]])
    got = erf(xs)
    want = np.array([math.erf(v) for v in xs])
    ulp = np.abs(got - want) / np.spacing(np.maximum(np.abs(want), 1e-300))
    assert ulp.max() <= 4.0, (ulp.max(), xs[ulp.argmax()])


def test_erf_special_values_and_shape():
    got = erf(np.array([[np.nan, -np.inf], [np.inf, -0.0]]))
    assert got.shape == (2, 2)
    assert np.isnan(got[0, 0]) and got[0, 1] == -1.0 and got[1, 0] == 1.0
    assert got[1, 1] == 0.0 and math.copysign(1.0, got[1, 1]) == -1.0
    assert erf(np.float64(0.5)) == math.erf(0.5)
