"""experiments/power.py against statsmodels' TTestPower (an independent implementation) and by simulation."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from lossbench.experiments.power import minimum_detectable_effect, paired_power, seeds_needed

TTestPower = pytest.importorskip("statsmodels.stats.power").TTestPower


@pytest.mark.parametrize(("diff", "sd", "n", "alpha"), [
    (1.0, 1.0, 3, 0.05), (2.0, 1.0, 4, 0.05), (0.5, 2.1, 10, 0.025), (-3.0, 2.0, 5, 0.0125), (0.0, 1.0, 6, 0.05),
])
def test_power_matches_statsmodels(diff, sd, n, alpha):
    expected = TTestPower().power(effect_size=abs(diff) / sd, nobs=n, alpha=alpha, alternative="two-sided")
    assert paired_power(diff, sd, n, alpha) == pytest.approx(expected, rel=1e-9)


def test_power_is_the_rejection_rate_of_the_paired_t_test():
    rng = np.random.default_rng(0)
    d = rng.normal(1.5, 1.0, (200_000, 4))
    t = d.mean(1) / (d.std(1, ddof=1) / 2)
    rate = np.mean(np.abs(t) > sps.t.isf(0.025, 3))
    assert rate == pytest.approx(paired_power(1.5, 1.0, 4, 0.05), abs=4 * math.sqrt(0.25 / 200_000))


@pytest.mark.parametrize(("sd", "n", "alpha"), [(1.0, 3, 0.05), (2.1, 3, 0.005), (0.7, 10, 0.025)])
def test_minimum_detectable_effect_matches_statsmodels(sd, n, alpha):
    effect = TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8, alternative="two-sided")
    mde = minimum_detectable_effect(sd, n, alpha)
    assert mde == pytest.approx(effect * sd, rel=1e-5)
    assert paired_power(mde, sd, n, alpha) == pytest.approx(0.8, abs=1e-8)


def test_the_issue_example_three_seeds_and_ten_comparisons():
    # BENCHMARKS.md's long-tailed table: 3 seeds, SD 2.1 points, Holm's strictest step alpha / 10
    assert minimum_detectable_effect(2.1, 3, 0.005) == pytest.approx(21, abs=1.5)


@pytest.mark.parametrize(("diff", "sd", "alpha"), [(1.0, 1.0, 0.05), (0.5, 2.1, 0.025), (2.0, 1.0, 0.0125)])
def test_seeds_needed_matches_statsmodels(diff, sd, alpha):
    n = TTestPower().solve_power(effect_size=diff / sd, alpha=alpha, power=0.8, alternative="two-sided")
    assert seeds_needed(diff, sd, alpha) == math.ceil(n)
    k = seeds_needed(diff, sd, alpha)
    assert paired_power(diff, sd, k, alpha) >= 0.8 > paired_power(diff, sd, k - 1, alpha)


def test_undefined_cases():
    assert math.isnan(paired_power(1.0, 0.0, 5, 0.05)) and math.isnan(paired_power(1.0, 1.0, 1, 0.05))
    assert math.isnan(minimum_detectable_effect(math.nan, 5, 0.05))
    assert seeds_needed(0.0, 1.0, 0.05) is None and seeds_needed(1.0, math.nan, 0.05) is None
    assert seeds_needed(1e-4, 1.0, 0.05) is None  # more than MAX_SEEDS


def test_a_looks_own_critical_value_is_the_rejection_rate_beyond_it():
    """A sequential design's boundary at n seeds (here 3.5, above t_{0.975, 4} = 2.78) in place of the t quantile:
    the power is the simulated rate of |t| beyond it; the MDE and the seeds needed follow it."""
    rng = np.random.default_rng(1)
    d = rng.normal(1.5, 1.0, (200_000, 5))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(5))
    rate = np.mean(np.abs(t) > 3.5)
    assert paired_power(1.5, 1.0, 5, 0.05, critical=3.5) == pytest.approx(rate, abs=4 * math.sqrt(0.25 / 200_000))
    assert paired_power(1.5, 1.0, 5, 0.05, critical=sps.t.isf(0.025, 4)) == pytest.approx(
        paired_power(1.5, 1.0, 5, 0.05), rel=1e-12)
    assert paired_power(1.5, 1.0, 5, 0.05, critical=math.inf) == 0.0  # a number of seeds the design never looks at
    mde = minimum_detectable_effect(1.0, 5, 0.05, critical=3.5)
    assert mde > minimum_detectable_effect(1.0, 5, 0.05) and paired_power(mde, 1.0, 5, 0.05, 3.5) == pytest.approx(0.8)
    assert math.isnan(minimum_detectable_effect(1.0, 5, 0.05, critical=math.inf))
    bounds = {n: (math.inf if n < 4 else 6.0 - 0.4 * n) for n in range(1, 11)}  # looks at 4..10, falling
    k = seeds_needed(1.0, 1.0, 0.05, critical=bounds.__getitem__, max_seeds=10)
    assert paired_power(1.0, 1.0, k, 0.05, bounds[k]) >= 0.8 > paired_power(1.0, 1.0, k - 1, 0.05, bounds[k - 1])
    assert seeds_needed(0.3, 1.0, 0.05, critical=bounds.__getitem__, max_seeds=10) is None  # beyond the last look
