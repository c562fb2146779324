"""zoo/stats.py: the median's confidence interval holds its coverage, warm-up ends when the
timings stop falling, sampling stops at the asked width or the time limit, and a busy machine
or a wide interval is said, not hidden."""

import random

import pytest

from zoo import stats as S


class FakeClock:
    """A clock that a fake step advances by the durations it is given."""

    def __init__(self, durations):
        self.now, self.durations = 0.0, iter(durations)

    def __call__(self):
        return self.now

    def step(self):
        self.now += next(self.durations)


def test_median_ci_ranks_match_the_binomial_tables():
    assert S.median_ci_ranks(5) is None            # 2 / 2^5 = 6.25% > 5%: no 95% interval
    assert S.median_ci_ranks(6) == (0, 5)
    assert S.median_ci_ranks(10) == (1, 8)         # x_(2)..x_(9), 97.9%
    assert S.median_ci_ranks(100) == (39, 60)      # x_(40)..x_(61), the textbook pair
    lo, hi = S.median_ci_ranks(10_000)             # normal approximation: about +-98 ranks
    assert 4895 <= lo <= 4905 and hi == 9999 - lo


@pytest.mark.parametrize("n", [6, 15, 40, 250])
def test_the_median_ci_covers_the_true_median_at_least_95_percent(n):
    rng = random.Random(n)
    true_median = 1.0        # lognormal(0, 0.3): skewed like timings, median exactly 1
    trials, covered = 2000, 0
    for _ in range(trials):
        lo, hi = S.median_ci([rng.lognormvariate(0.0, 0.3) for _ in range(n)])
        covered += lo <= true_median <= hi
    assert covered / trials >= 0.94, covered / trials     # 95% nominal, 2000 trials: sd 0.5%


def test_summary_reports_percentiles_mean_cv_and_ci():
    times = [0.010 + 0.001 * i for i in range(11)]        # 10..20 ms
    s = S.summary(times)
    assert s["median_s"] == pytest.approx(0.015) and s["mean_s"] == pytest.approx(0.015)
    assert s["p10_s"] == pytest.approx(0.011) and s["p90_s"] == pytest.approx(0.019)
    assert s["p99_s"] == pytest.approx(0.0199) and s["min_s"] == 0.010 and s["max_s"] == 0.020
    assert s["cv"] == pytest.approx(0.2211, rel=1e-3)
    # n = 11: x_(2)..x_(10) (2 * P(B <= 1) = 1.2%; x_(3)..x_(9) would miss 6.5% of the time)
    assert s["ci_low_s"] == pytest.approx(0.011) and s["ci_high_s"] == pytest.approx(0.019)
    assert s["ci_rel_width"] == pytest.approx(0.008 / 0.015) and s["iters"] == 11


def test_warm_up_lasts_while_timings_fall_then_sampling_stops_at_the_asked_width():
    # 10 slow iterations falling from 2.0 to 1.1, then steady 1.0 +- 1%
    rng = random.Random(0)
    falling = [2.0 - 0.1 * i for i in range(10)]
    steady = [1.0 + rng.uniform(-0.01, 0.01) for _ in range(10_000)]
    clock = FakeClock(falling + steady)
    out = S.sample(clock.step, S.Settings(warmup=2, iters=5, min_time=0, ci_width=0.01,
                                          max_time=1e9, warmup_max_time=1e9), clock)
    assert out["warmup_settled"] and out["warmup_iters"] >= 10     # not before the fall ended
    assert out["warmup_iters"] <= 10 + 2 * 3                         # and soon after it
    assert out["stopped_by"] == "ci" and out["ci_rel_width"] <= 0.01
    assert 1.0 - 0.01 <= out["median_s"] <= 1.0 + 0.01
    assert all(t < 1.02 for t in out["times_s"])                      # no warm-up in the timing


def test_noisy_timings_stop_at_max_time_and_are_flagged():
    rng = random.Random(1)
    clock = FakeClock([rng.choice([0.1, 0.3]) for _ in range(100_000)])
    settings = S.Settings(iters=5, min_time=0, ci_width=0.01, max_time=5.0, warmup_max_time=1.0)
    out = S.sample(clock.step, settings, clock)
    assert out["stopped_by"] == "max_time" and 5.0 <= out["elapsed_s"] < 5.4
    reasons = S.noise_reasons(out, settings.ci_width)
    assert any("95% CI of the median" in r for r in reasons), reasons


def test_the_fixed_method_takes_exactly_its_counts():
    clock = FakeClock([0.5] * 100)
    out = S.sample(clock.step, S.Settings(method="fixed", warmup=2, iters=5, min_time=0), clock)
    assert out["warmup_iters"] == 2 and out["iters"] == 5 and out["stopped_by"] == "iters"
    assert any("too few" in r for r in S.noise_reasons(out, 0.1))     # 5 < 6: no interval


def test_a_busy_machine_is_flagged_only_when_others_take_the_cores_the_point_needs():
    assert S.busy_reason(0.1, 2, 2) == ""
    assert S.busy_reason(0.9, 1, 2) == ""                 # one core left for one thread
    assert "busy machine" in S.busy_reason(1.0, 2, 2)      # the case of the newcomer's report
    assert "busy machine" in S.busy_reason(1.9, 1, 2)
    assert S.busy_reason(None, 2, 2) == ""


def test_load_measures_other_processes_cpu_time_not_our_own():
    import time
    load = S.Load.start()
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.process_time() - cpu0 < 0.3:              # this process: 0.3 s of CPU time
        pass
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    out = load.stop()
    # our own CPU time is counted as ours (whatever share of a core the machine gave us)...
    assert out["own_cores"] == pytest.approx(cpu / wall, abs=0.1)
    # ...and not as other processes' load
    assert out["others_cores"] is not None and out["others_cores"] >= 0


def test_between_processes_reports_the_spread_and_flags_it():
    b = S.between_processes([1.0, 1.3, 0.9])
    assert b["between_rel_range"] == pytest.approx(0.4) and b["between_min_s"] == 0.9
    point = {"ci_rel_width": 0.02, "iters": 50, **b}
    assert any("separate processes" in r for r in S.noise_reasons(point, 0.1))
