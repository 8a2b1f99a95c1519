"""experiments/contrasts.py: the verdicts of declared contrasts, with their power, and the forest plot."""

import io
import math

import numpy as np
import pytest
from scipy import stats as sps

from lossbench.experiments.contrasts import compare_contrasts, configurations_still_needed
from lossbench.experiments.forest import plot_forest
from lossbench.experiments.power import minimum_detectable_effect, paired_power, seeds_needed
from lossbench.experiments.report_contrasts import contrast_table
from lossbench.experiments.sequential import Design
from lossbench.experiments.stats import holm_adjust

SEEDS = range(6)
BASE = {s: 70 + s for s in SEEDS}
VALUES = {
    "ce": BASE,
    "focal": {s: BASE[s] + 5 + 0.3 * (-1) ** s for s in SEEDS},  # clearly better
    "ldam": {s: BASE[s] + 0.1 * (s % 3 - 1) for s in SEEDS},  # practically the same
    "noisy": {s: BASE[s] + (3.0 if s % 2 else -2.5) for s in SEEDS},  # cannot tell
}
PAIRS = [("focal", "ce"), ("ldam", "ce"), ("noisy", "ce")]


def by_label(results):
    return {r.a: r for r in results}


def test_margin_gives_better_equivalent_inconclusive():
    out = by_label(compare_contrasts(VALUES, PAIRS, margin=1.0))
    assert (out["focal"].verdict, out["ldam"].verdict, out["noisy"].verdict) == ("better", "equivalent", "inconclusive")
    assert out["focal"].diff == pytest.approx(5.0) and out["focal"].n == 6


def test_without_a_margin_the_fixed_design_is_the_t_test_with_holm():
    out = compare_contrasts(VALUES, PAIRS)
    assert [r.verdict for r in out] == ["better", "not significant", "not significant"]
    diffs = [np.array([VALUES[a][s] - VALUES[b][s] for s in SEEDS]) for a, b in PAIRS]
    p = [sps.ttest_1samp(d, 0).pvalue for d in diffs]
    assert [r.p for r in out] == pytest.approx(p)
    assert [(r.p < r.level) for r in out] == list(holm_adjust(p) < 0.05)
    # the focal contrast is rejected first, so the two others are tested at alpha / 2
    assert [r.level for r in out] == pytest.approx([0.05 / 3, 0.025, 0.025])
    focal = out[0]
    t = sps.t.isf(focal.level / 2, 5) * diffs[0].std(ddof=1) / math.sqrt(6)
    assert (focal.low, focal.high) == pytest.approx((5.0 - t, 5.0 + t))


def test_power_beside_each_comparison_uses_its_level():
    out = by_label(compare_contrasts(VALUES, PAIRS, margin=1.0))
    noisy = out["noisy"]
    sd = float(np.std([VALUES["noisy"][s] - BASE[s] for s in SEEDS], ddof=1))
    assert noisy.mde == pytest.approx(minimum_detectable_effect(sd, 6, noisy.level))
    assert noisy.seeds_needed == seeds_needed(1.0, sd, noisy.level) and noisy.seeds_needed > 6
    # with a margin no contrast passes its level on unless both its questions are answered: Bonferroni here
    assert noisy.level == pytest.approx(0.05 / 3)
    # equivalence p of TOST: the larger one-sided p
    d = np.array([VALUES["ldam"][s] - BASE[s] for s in SEEDS])
    se = d.std(ddof=1) / math.sqrt(6)
    expected = max(sps.t.sf((d.mean() + 1) / se, 5), sps.t.cdf((d.mean() - 1) / se, 5))
    assert out["ldam"].p_equivalence == pytest.approx(expected)


def test_seeds_needed_detect_the_observed_difference_or_the_margin_when_it_is_smaller():
    """A difference far beyond the margin is decided by the seeds that detect it, not by those that detect the
    margin; one below the margin needs about the seeds that detect the margin (an interval narrower than it)."""
    rng = np.random.default_rng(0)
    wide = {s: 70 + 3 * rng.standard_normal() for s in SEEDS}
    values = {"ce": BASE, "far": {s: BASE[s] + 10 + wide[s] - 70 for s in SEEDS},
              "near": {s: BASE[s] + 0.2 + (wide[s] - 70) for s in SEEDS}}
    out = by_label(compare_contrasts(values, [("far", "ce"), ("near", "ce")], margin=1.0))
    sd = float(np.std([wide[s] for s in SEEDS], ddof=1))
    far, near = out["far"], out["near"]
    assert abs(far.diff) > 1.0 > abs(near.diff)
    assert far.seeds_needed == max(seeds_needed(abs(far.diff), sd, far.level), 3)
    assert near.seeds_needed == seeds_needed(1.0, sd, near.level)
    assert far.seeds_needed < near.seeds_needed  # with the margin as the target both would say the same
    without = by_label(compare_contrasts(values, [("near", "ce")]))["near"]  # no margin: the observed difference
    assert without.seeds_needed == seeds_needed(abs(near.diff), sd, without.level)


def test_a_sequential_look_gives_its_own_mde_and_the_first_look_that_would_decide():
    """At an early look of a sequential design the threshold is the design's boundary, far above the t quantile:
    the MDE is that look's, and 'seeds needed' the first look whose boundary detects the difference with 80 %
    power; where no look up to the design's last does, the seeds of a fixed design, flagged as a new study."""
    design = Design(5, 10, margin=1.0)
    five = {k: {s: v[s] for s in range(5)} for k, v in VALUES.items()}
    five["half"] = {s: BASE[s] + 2.5 + (1.0 if s % 2 else -1.0) for s in range(5)}  # 2.3 +- 1.1: 3 more seeds
    pairs = [("half", "ce"), ("noisy", "ce")]
    out = by_label(compare_contrasts(five, pairs, sequential=design))
    half, noisy = out["half"], out["noisy"]
    assert not half.decided and not noisy.decided
    sd = float(np.std([five["half"][s] - BASE[s] for s in range(5)], ddof=1))
    bounds = design.boundaries(half.level / 2, 2)
    assert half.mde == pytest.approx(minimum_detectable_effect(sd, 5, half.level, critical=bounds[5]))
    assert half.mde > 1.5 * minimum_detectable_effect(sd, 5, half.level)  # the first look is far stricter
    first = next(n for n in range(5, 11) if paired_power(half.diff, sd, n, half.level, bounds[n]) >= 0.8)
    assert half.seeds_needed == first and not half.needed_beyond_design
    noisy_sd = float(np.std([five["noisy"][s] - BASE[s] for s in range(5)], ddof=1))
    assert noisy.needed_beyond_design and noisy.seeds_needed == seeds_needed(1.0, noisy_sd, noisy.level) > 10
    header, body = contrast_table([half, noisy], "m", "points", fixed=False)
    assert [dict(zip(header, b))["seeds needed"] for b in body] == [str(first), f"{noisy.seeds_needed} (new study)"]


def test_two_seeds_give_no_p_value_only_too_few_seeds_and_the_seeds_needed():
    two = {k: {s: v[s] for s in (0, 1)} for k, v in VALUES.items()}
    for r in compare_contrasts(two, PAIRS, margin=1.0):
        assert r.verdict == "too few seeds" and math.isnan(r.p) and math.isnan(r.p_equivalence)
        assert r.seeds_needed is not None and r.seeds_needed >= 3 and not r.decided


def test_lower_is_better_turns_the_words():
    out = compare_contrasts(VALUES, [("focal", "ce")], higher_is_better=False)
    assert out[0].verdict == "worse"


def test_sequential_design_decides_and_says_which_configurations_need_seeds():
    design = Design(3, 10, margin=1.0)
    three = {k: {s: v[s] for s in range(4)} for k, v in VALUES.items()}
    out = compare_contrasts(three, PAIRS, sequential=design)
    assert all(math.isnan(r.p) for r in out)  # a sequential verdict comes from the boundaries
    decided = {r.a for r in out if r.decided}
    assert "focal" in decided and "noisy" not in decided
    assert configurations_still_needed(out, 10) == {"ce", "noisy"} | {r.a for r in out if not r.decided}
    assert configurations_still_needed(out, 4) == set()


def test_forest_plot_draws_every_contrast():
    out = compare_contrasts(VALUES, PAIRS, margin=1.0)
    png = plot_forest(out, "balanced_accuracy", margin=1.0, title="t")
    assert png.startswith(b"\x89PNG")
    image = pytest.importorskip("matplotlib.image").imread(io.BytesIO(png))
    assert image.shape[0] > 150 and image.shape[1] > 400
    assert plot_forest([], "x") == b""
    two = {k: {s: v[s] for s in (0, 1)} for k, v in VALUES.items()}
    assert plot_forest(compare_contrasts(two, PAIRS), "x").startswith(b"\x89PNG")  # no interval, no crash


def test_report_rows_give_power_beside_each_verdict_and_no_p_below_three_seeds():
    from lossbench.experiments.report_contrasts import contrast_table, legend_text, method_text, points_scale, scaled

    assert points_scale((0.0, 1.0)) == 100 and points_scale((-1.0, 1.0)) == 1
    fractions = {k: {s: v / 100 for s, v in per.items()} for k, per in VALUES.items()}
    out = compare_contrasts(scaled(fractions, 100), PAIRS, margin=1.0)
    header, body = contrast_table(out, "balanced_accuracy", "points", fixed=True)
    row = dict(zip(header, body[0]))
    assert row["verdict"] == "better, decided at 6 seeds" and row["Δ balanced_accuracy (a − b, points)"] == "+5.00"
    assert row["α used"] == "0.0167" and row["seeds needed"] == "3" and row["p"] == "< 0.0001"
    assert dict(zip(header, body[1]))["verdict"].startswith("equivalent")
    two = {k: {s: v[s] for s in (0, 1)} for k, v in VALUES.items()}
    header, body = contrast_table(compare_contrasts(two, PAIRS, margin=1.0), "m", "points", fixed=True)
    for row in (dict(zip(header, b)) for b in body):
        assert row["p"] == "–" and row["interval of Δ"] == "–" and row["verdict"] == "too few seeds"
        assert row["seeds needed"].isdigit()
    text = method_text("balanced_accuracy", "points", 1.0, (3, 10))
    assert "±1 points" in text and "from 3 to at most 10" in text
    legend = legend_text("points", 1.0, True)
    assert "within ±1 points, your margin" in legend and "O'Brien-Fleming" in legend
