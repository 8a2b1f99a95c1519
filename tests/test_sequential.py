"""experiments/sequential.py: its boundaries, its procedure, and item 6 of issue 21, the proof by simulation
that adding seeds until the answer is known keeps every error rate at alpha (statistics only, no training).

The simulated studies follow the sweep's rule: every configuration starts with min seeds; after each round the
verdicts of the declared contrasts are computed and one seed is added to each configuration some undecided
contrast still needs, until all are decided or max is reached. `pytest -s` prints the measured rates."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from lossbench.experiments.power import paired_power
from lossbench.experiments.sequential import Design, decide_batch, holm_boundaries, holm_levels, t_boundaries, t_paths

ALPHA = 0.05
STUDIES = 6000


def allowed(rate_at: float = ALPHA, studies: int = STUDIES) -> float:
    """alpha plus three Monte-Carlo standard errors."""
    return rate_at + 3 * math.sqrt(rate_at * (1 - rate_at) / studies)


def run_studies(values: np.ndarray, contrasts: list[tuple[int, int]], design: Design):
    """values: studies x configurations x max seeds (drawn up front: a seed's result does not depend on when it
    runs). Returns the final decisions and the seeds each configuration got."""
    studies, configs, most = values.shape
    seeds = np.full((studies, configs), design.min_seeds)
    while True:
        n = np.stack([np.minimum(seeds[:, a], seeds[:, b]) for a, b in contrasts], 1)
        d = np.stack([values[:, a] - values[:, b] for a, b in contrasts], 1)
        decisions = decide_batch(np.where(np.arange(most) < n[..., None], d, np.nan), [design] * len(contrasts))
        open_ = ~decisions.decided & (n < design.max_seeds)
        need = np.zeros((studies, configs), dtype=bool)
        for k, (a, b) in enumerate(contrasts):
            need[:, a] |= open_[:, k]
            need[:, b] |= open_[:, k]
        if not need.any():
            return decisions, seeds
        seeds = seeds + need


def test_boundaries_single_look_is_the_t_quantile_and_first_look_is_exact():
    assert t_boundaries(5, 5, 0.025) == pytest.approx((sps.t.isf(0.025, 4),))
    b = t_boundaries(3, 10, 0.025, "pocock")
    assert b[0] == pytest.approx(sps.t.isf(0.025 * math.log(1 + (math.e - 1) * 0.3), 2))
    assert len(b) == 8


@pytest.mark.parametrize(("spending", "seeds"), [("pocock", (3, 10)), ("obrien-fleming", (3, 10))])
def test_boundaries_spend_their_level_on_fresh_sequences_and_are_nested(spending, seeds):
    rng = np.random.default_rng(99)  # not the boundaries' own sequences
    low, high = seeds
    t, _, _ = t_paths(rng.standard_normal((50_000, high)), None)
    table = holm_boundaries(low, high, holm_levels(ALPHA, 3), spending)
    assert list(table) == sorted(table, reverse=True) and len(table) == 5  # 0.05/k and 0.05/2k, k <= 3
    previous = None
    for level, bounds in table.items():
        b = np.full(high + 1, np.inf)
        b[low:] = bounds
        rate = np.mean((t >= b).any(axis=1))
        assert rate <= level + 4 * math.sqrt(level / 50_000)
        assert rate >= 0.8 * level  # nesting costs a little at most
        # a smaller level never has a lower boundary: Holm's recycling keeps a rejection at a/k at a/(k-1)
        assert previous is None or np.all(np.asarray(bounds) >= np.asarray(previous))
        previous = bounds


def test_t_paths_match_the_t_statistic_and_stop_at_the_data():
    d = np.array([[0.1, 0.3, 0.2, np.nan]])
    t, lower, upper = t_paths(d, 0.5)
    x = d[0, :3]
    se = x.std(ddof=1) / math.sqrt(3)
    assert t[0, 3] == pytest.approx(x.mean() / se)
    assert (lower[0, 3], upper[0, 3]) == pytest.approx(((x.mean() - 0.5) / se, (x.mean() + 0.5) / se))
    assert np.isnan(t[0, :2]).all() and np.isnan(t[0, 4])
    assert np.isnan(t_paths(np.array([[0.2, 0.2, 0.2]]), None)[0][0, 3])  # no spread: no statistic, no verdict


def test_fixed_design_is_the_t_test_and_holm():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1, (4000, 2, 6))
    design = Design(6, 6)
    dec = decide_batch(d, [design, design])
    p = 2 * sps.t.sf(np.abs(d.mean(-1) / (d.std(-1, ddof=1) / math.sqrt(6))), 5)
    small = np.minimum(p[:, 0], p[:, 1])
    holm = np.stack([p[:, k] <= np.where(p[:, k] == small, ALPHA / 2, np.where(small <= ALPHA / 2, ALPHA, 0))
                     for k in range(2)], 1)
    assert np.array_equal(dec.sign != 0, holm)
    assert np.array_equal(dec.sign[dec.sign != 0], np.sign(d.mean(-1))[dec.sign != 0])


@pytest.mark.parametrize("margin", [None, 1.0])
def test_null_any_false_better_or_worse_stays_at_alpha(margin):
    """Issue 21 item 6: true difference 0, configurations with SDs 0.5, 1 and 2, two contrasts sharing a
    baseline, seeds from 3 to 10."""
    rng = np.random.default_rng(21)
    values = rng.normal(0, 1, (STUDIES, 3, 10)) * np.array([1.0, 0.5, 2.0])[None, :, None]
    decisions, seeds = run_studies(values, [(1, 0), (2, 0)], Design(3, 10, margin=margin))
    rate = (decisions.sign != 0).any(axis=1).mean()
    print(f"\n[null, margin={margin}] any false better/worse: {rate:.4f} (allowed {allowed():.4f}); "
          f"mean seeds per configuration {seeds.mean():.2f}")
    assert rate <= allowed()


def test_alternative_two_sd_decides_with_fewer_seeds_than_the_fixed_design_of_the_same_power():
    rng = np.random.default_rng(22)
    base = rng.normal(0, 1, (STUDIES, 1, 10))
    values = np.concatenate([base, base + rng.normal(2.0, 1.0, (STUDIES, 1, 10))], axis=1)
    decisions, seeds = run_studies(values, [(1, 0)], Design(3, 10))
    power = (decisions.sign[:, 0] > 0).mean()
    fixed = next(n for n in range(3, 100) if paired_power(2.0, 1.0, n, ALPHA) >= power)
    mean_seeds = seeds[:, 1].mean()
    print(f"\n[difference 2 SD] better: {power:.4f}, mean seeds {mean_seeds:.2f}; a fixed design needs {fixed} "
          f"seeds for that power")
    assert power > 0.99 and mean_seeds < fixed


def test_equivalence_at_the_margin_stays_at_alpha_and_is_reached_early_at_zero():
    rng = np.random.default_rng(23)
    design = Design(3, 10, margin=1.0)
    diffs = np.concatenate([rng.normal(1.0, 0.5, (STUDIES // 2, 1, 10)), rng.normal(-1.0, 0.5, (STUDIES // 2, 1, 10))])
    values = np.concatenate([np.zeros_like(diffs), diffs], axis=1)
    decisions, _ = run_studies(values, [(1, 0)], design)
    false_rate = decisions.equivalent.mean()
    # at d = 0 equivalence is true: how often and how early it is found, against fixed TOST designs
    values = np.concatenate([np.zeros_like(diffs), rng.normal(0.0, 0.5, diffs.shape)], axis=1)
    decisions, seeds = run_studies(values, [(1, 0)], design)
    power, mean_seeds = decisions.equivalent.mean(), seeds[:, 1].mean()
    fresh = rng.normal(0.0, 0.5, (STUDIES, 1, 10))
    fixed_power = {n: decide_batch(fresh[..., :n], [Design(n, n, margin=1.0)]).equivalent.mean() for n in range(3, 11)}
    fixed = next((n for n, p in fixed_power.items() if p >= power), 11)
    print(f"\n[difference = margin] false equivalent: {false_rate:.4f} (allowed {allowed():.4f})"
          f"\n[difference 0, SD margin / 2] equivalent: {power:.4f}, mean seeds {mean_seeds:.2f}; a fixed TOST design "
          f"needs {fixed} seeds for that power")
    assert false_rate <= allowed()
    assert mean_seeds < fixed


def test_passing_on_the_level_of_a_better_but_not_equivalent_contrast_would_inflate_the_error():
    """Contrast 1 is clearly non-zero but exactly at the margin (its equivalence null is true), contrast 2 has
    no difference. Passing contrast 1's level on once it is "better" tests contrast 2 at the full alpha while
    contrast 1's equivalence was tested at alpha / 2: about 0.07 any-false rate. The procedure keeps 0.05."""
    rng = np.random.default_rng(24)
    d = np.concatenate([rng.normal(1.0, 0.05, (STUDIES, 1, 10)), rng.normal(0.0, 1.0, (STUDIES, 1, 10))], axis=1)
    decisions = decide_batch(d, [Design(3, 10, margin=1.0)] * 2)
    rate = (decisions.equivalent[:, 0] | (decisions.sign[:, 1] != 0)).mean()
    print(f"\n[worst case for recycling] any false verdict: {rate:.4f} (allowed {allowed():.4f})")
    assert (decisions.sign[:, 0] > 0).mean() > 0.99
    assert rate <= allowed()


def test_spending_choice_obrien_fleming_keeps_the_power_pocock_saves_a_seed():
    """Why DEFAULT_SPENDING is O'Brien-Fleming-type: at a difference the fixed 10-seed design detects with
    80 % power, Pocock-type spending loses much of that power; at 2 SD it saves about one seed."""
    rng = np.random.default_rng(25)
    base = rng.normal(0, 1, (STUDIES, 1, 10))
    noise = rng.normal(0, 1, (STUDIES, 1, 10))
    measured = {}
    for spending in ("obrien-fleming", "pocock"):
        for effect in (1.0, 2.0):
            values = np.concatenate([base, base + effect + noise], axis=1)
            decisions, seeds = run_studies(values, [(1, 0)], Design(3, 10, spending=spending))
            measured[spending, effect] = ((decisions.sign[:, 0] > 0).mean(), seeds[:, 1].mean())
            print(f"\n[{spending}, difference {effect:g} SD] better: {measured[spending, effect][0]:.4f}, "
                  f"mean seeds {measured[spending, effect][1]:.2f}", end="")
    print(f"\n[fixed design, 10 seeds, difference 1 SD] power {paired_power(1.0, 1.0, 10, ALPHA):.4f}")
    assert measured["obrien-fleming", 1.0][0] > measured["pocock", 1.0][0] + 0.1
    assert measured["pocock", 2.0][1] < measured["obrien-fleming", 2.0][1]
