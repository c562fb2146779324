"""zoo/options.py: options that would make a check meaningless are refused with one line."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zoo import engines, options
from zoo.errors import UsageError


@given(st.floats(min_value=0, allow_infinity=False))
def test_every_finite_non_negative_tolerance_is_kept(x):
    assert options.tolerance("atol", x) == x


@given(st.one_of(st.floats(max_value=-1e-300), st.just(math.nan), st.just(math.inf)))
def test_negative_nan_or_infinite_tolerances_are_refused(x):
    with pytest.raises(UsageError, match="^atol must be a finite number >= 0"):
        options.tolerance("atol", x)


@pytest.mark.parametrize("value", [0, -1, 1.5, "x", True, math.nan])
def test_counts_must_be_integers_of_at_least_one(value):
    with pytest.raises(UsageError) as e:
        options.positive_int("--batch", value)
    assert str(e.value).startswith("--batch must be an integer >= 1") and "\n" not in str(e.value)


def test_counts_pass_and_none_means_the_default():
    assert options.positive_int("threads", 4) == 4 and options.positive_int("threads", "2") == 2
    assert options.positive_int("threads", None) is None and options.tolerance("rtol", None) is None
    assert options.positive_ints("--threads", "1, 2,4") == [1, 2, 4]
    for bad in ("1,,2", "1,0", "a", ""):
        with pytest.raises(UsageError, match="--threads must be"):
            options.positive_ints("--threads", bad)
    assert options.non_negative_int("--warmup", 0) == 0
    with pytest.raises(UsageError, match="--warmup must be an integer >= 0"):
        options.non_negative_int("--warmup", -1)


@pytest.mark.parametrize("value", [0, -5, math.nan, math.inf, "soon"])
def test_timeouts_must_be_positive_seconds(value):
    with pytest.raises(UsageError, match="^timeout must be"):
        options.timeout(value)


def test_devices_are_cpu_or_a_gpu_and_gpu_means_gpu0():
    assert [options.device(d) for d in ("cpu", "gpu", "gpu0", "gpu3", "GPU1")] == \
        ["cpu", "gpu0", "gpu0", "gpu3", "gpu1"]
    for bad in ("banana", "cuda", "gpu-1", "gpu0,gpu1", "", None):
        with pytest.raises(UsageError, match="device must be cpu, gpu or gpuN"):
            options.device(bad)


def test_unknown_engines_are_refused_with_the_list():
    assert options.engine_names("onnx, torch,onnx") == ["onnx", "torch"]
    assert options.engine_names(["torch"]) == ["torch"] and options.engine_names(None) == list(engines.ENGINES)
    with pytest.raises(UsageError) as e:
        options.engine_names("torch,banana")
    assert str(e.value) == f"unknown engine 'banana'; engines: {', '.join(engines.ENGINES)}"
    with pytest.raises(UsageError, match="no engine named"):
        options.engine_names(" , ")


def test_modes_and_other_choices():
    assert options.mode("both", ("forward", "train", "both")) == "both"
    with pytest.raises(UsageError, match=r"^mode must be forward, train or both, not 'infer'$"):
        options.mode("infer", ("forward", "train", "both"))
    with pytest.raises(UsageError, match=r"^--to must be json or prototxt, not 'yaml'$"):
        options.mode("yaml", ("json", "prototxt"), "--to")
