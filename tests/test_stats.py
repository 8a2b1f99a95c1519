"""experiments/stats.py against scipy, statsmodels and the formulas written out."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from lossbench.experiments.stats import (
    compare_with_baseline,
    finite_mean,
    holm_adjust,
    paired_differences,
    paired_t_test,
    t_interval,
    verdict,
)


def test_paired_differences_use_only_seeds_both_finished():
    base = {0: 0.5, 1: 0.6, 2: 0.7, 3: math.nan}
    other = {1: 0.65, 2: 0.72, 3: 0.9, 4: 0.8, 0: math.nan}
    assert paired_differences(base, other) == pytest.approx([0.05, 0.02])
    assert paired_differences({}, other).size == 0


@pytest.mark.parametrize("seed", range(5))
def test_paired_t_test_matches_scipy_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    n = 3 + seed
    base = rng.uniform(0.5, 0.8, n)
    other = base + rng.normal(0.02, 0.03, n)
    expected = sps.ttest_rel(other, base).pvalue
    assert paired_t_test(other - base) == pytest.approx(expected, rel=1e-10)


def test_paired_t_test_degenerate_cases():
    assert math.isnan(paired_t_test([0.1]))
    assert paired_t_test([0.0, 0.0, 0.0]) == 1.0  # nothing differs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns of catastrophic cancellation here; we do not
        assert math.isnan(paired_t_test([0.1, 0.1, 0.1]))  # a constant difference has no t-statistic


def test_t_interval_matches_scipy_and_is_clipped():
    x = [0.61, 0.64, 0.70]
    low, high = t_interval(x)
    assert (low, high) == pytest.approx(sps.t.interval(0.95, 2, loc=np.mean(x), scale=sps.sem(x)))
    # mean 0.98 of three accuracies: the t-interval reaches past 1, the clipped one stops there
    y = [0.99, 1.0, 0.95]
    raw = t_interval(y)
    assert raw[1] > 1
    assert t_interval(y, clip=(0.0, 1.0)) == pytest.approx((raw[0], 1.0))
    assert all(math.isnan(v) for v in t_interval([0.5]))


def test_holm_by_hand():
    # sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.2 (x1 = 0.2); monotone running max
    assert holm_adjust([0.03, 0.2, 0.01, 0.02]) == pytest.approx([0.06, 0.2, 0.04, 0.06])
    # capped at 1, and a p-value without a test (NaN) neither gets one nor counts towards m
    adjusted = holm_adjust([0.4, math.nan, 0.3])
    assert adjusted[0] == pytest.approx(0.6) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.6)
    assert holm_adjust([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([]).size == 0


def holm_written_out(p):
    """Holm (1979): p_(i) adjusted = max_{j <= i} min(1, (m - j + 1) p_(j)), j, i 1-based over ascending p."""
    order = np.argsort(p, kind="stable")
    m = len(p)
    out = np.empty(m)
    for i in range(1, m + 1):
        out[order[i - 1]] = max(min(1.0, (m - j + 1) * p[order[j - 1]]) for j in range(1, i + 1))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_holm_matches_statsmodels_and_the_formula(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, 2 + seed) ** (1 + seed % 3)
    assert holm_adjust(p) == pytest.approx(holm_written_out(p), rel=1e-12)
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    reject, adjusted, _, _ = multitest.multipletests(p, alpha=0.05, method="holm")
    assert holm_adjust(p) == pytest.approx(adjusted, rel=1e-12)
    assert list(holm_adjust(p) < 0.05) == list(reject)


def test_verdict_needs_three_pairs_and_the_adjusted_p():
    assert verdict(2, 0.0001, 0.3) == "too few seeds (n = 2)"
    assert verdict(0, math.nan, math.nan) == "too few seeds (n = 0)"
    assert verdict(3, 0.01, 0.02) == "better"
    assert verdict(3, 0.01, -0.02) == "worse"
    assert verdict(3, 0.01, -0.02, higher_is_better=False) == "better"  # e.g. calibration error went down
    assert verdict(5, 0.05, 0.02) == "not significant"  # p must be below alpha
    assert verdict(3, math.nan, 0.02).startswith("untestable")


def test_compare_with_baseline_corrects_over_the_family_and_clips_the_interval():
    base = {0: 0.60, 1: 0.62, 2: 0.65, 3: 0.61}
    others = {
        "a": {0: 0.70, 1: 0.71, 2: 0.76, 3: 0.72},
        "b": {0: 0.605, 1: 0.63, 2: 0.64, 3: 0.60},
        "two seeds": {0: 0.10, 1: 0.95},
        "derived": {0: 0.66, 1: 0.66, 2: 0.72, 3: 0.66},
    }
    out = {c.label: c for c in compare_with_baseline(base, others, value_range=(0.0, 1.0))}
    raw = {k: sps.ttest_rel([v[s] for s in sorted(v)], [base[s] for s in sorted(v)]).pvalue for k, v in others.items()}
    assert {k: c.p for k, c in out.items()} == pytest.approx(raw)
    assert [out[k].p_holm for k in others] == pytest.approx(list(holm_written_out(np.array(list(raw.values())))))
    a = out["a"]
    assert (a.n, a.diff) == (4, pytest.approx(0.1025))
    assert (a.low, a.high) == pytest.approx(sps.t.interval(0.95, 3, loc=0.1025, scale=sps.sem([0.1, 0.09, 0.11, 0.11])))
    assert a.verdict == "better" and out["b"].verdict == "not significant"
    two = out["two seeds"]
    assert two.verdict == "too few seeds (n = 2)"
    assert (two.low, two.high) == pytest.approx((-1.0, 1.0))  # ± 5.3 unclipped: a difference of accuracies


def test_finite_mean_is_quiet_on_all_nan_columns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = finite_mean([[1.0, math.nan, math.nan], [3.0, 2.0, math.nan]])
    assert got[:2] == pytest.approx([2.0, 2.0]) and math.isnan(got[2])
