"""The declared contrasts of a sweep: one verdict per pair of configurations, with what it would take.

:func:`compare_contrasts` takes each configuration's metric per seed and the
declared pairs (a, b) and gives, per pair, Δ = a - b over the seeds both
finished: its mean and interval, the verdict of
:mod:`lossbench.experiments.sequential` (better / worse / equivalent /
inconclusive with a margin; better / worse / not significant without; "too few
seeds" below :data:`MIN_PAIRS`), the level it was tested at (alpha over the
contrasts still open: Holm's step), the minimum detectable effect of the look at
the current seeds (80 % power at that level, from the SD of the paired
differences; the look's threshold is the t quantile of a fixed design or the
sequential design's boundary, far stricter at its first looks) and the seeds
that would decide it if the observed difference is the true one: the first look
that detects the observed difference with 80 % power at that level, or the
margin where the difference is smaller than the margin (an equivalence verdict
needs the interval narrower than the margin, about the seeds that detect the
margin) (:mod:`.power`): a difference ten times the margin does not need the
seeds of a one-margin difference. Where no look of a sequential design reaches
that power, the seeds given are a fixed design's (a new study), flagged.

The interval is the one the superiority verdict is read from: the intersection
over the looks so far of the repeated confidence intervals mean_n ± c_n · se_n,
c_n the superiority boundary of the contrast's level (for a fixed design with one
contrast, the ordinary 95 % t-interval), clipped to the range a difference can
take; it covers the true difference with probability >= 1 - level however the
seeds stopped.
p-values are given for fixed designs with at least 3 pairs only: in a
sequential design the verdict comes from the boundaries, not from a p-value.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lossbench.experiments.power import MAX_SEEDS, minimum_detectable_effect, seeds_needed
from lossbench.experiments.sequential import MIN_PAIRS, Design, Decisions, decide_batch
from lossbench.experiments.stats import paired_differences, paired_t_test


@dataclass(frozen=True)
class ContrastResult:
    """One declared contrast a - b on one metric, over the seeds both configurations finished."""

    a: str
    b: str
    differences: tuple[float, ...]  # a - b per paired seed, in seed order
    diff: float
    low: float
    high: float
    verdict: str  # better | worse | equivalent | inconclusive | not significant | too few seeds
    note: str  # e.g. "better by less than the margin" beside "equivalent"; "" when there is nothing to add
    level: float  # the alpha this contrast was tested at (its Holm step)
    decided_at: int  # paired seeds at the look that decided it; 0: not decided
    mde: float  # smallest difference the look at n seeds detects with 80 % power at ``level`` (n >= 3): a fixed
    # design's t-test, or a sequential design's boundary at n
    seeds_needed: int | None  # paired seeds whose look detects |diff|, or the margin where |diff| is smaller, with
    # 80 % power at ``level`` (the seeds that would decide it if diff is the true difference); MAX_SEEDS + 1: more
    p: float  # two-sided paired t-test (fixed designs with >= 3 pairs; else NaN)
    p_equivalence: float  # TOST's p (the larger one-sided p), fixed designs with a margin and >= 3 pairs
    needed_beyond_design: bool = False  # a sequential design's looks cannot reach seeds_needed's power: the number
    # is that of a fixed design (a new study), more than the design's max_seeds would give

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def decided(self) -> bool:
        return self.decided_at > 0

    @property
    def label(self) -> str:
        return f"{self.a} vs {self.b}"


def _padded(diffs: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((1, len(diffs), max(width, 1)), np.nan)
    for k, d in enumerate(diffs):
        out[0, k, :min(d.size, width)] = d[:width]
    return out


def _needed(target: float, sd: float, level: float, bounds: np.ndarray | None) -> tuple[int | None, bool]:
    """(seeds needed, whether beyond the design): with a sequential design's two-sided ``bounds`` per number of
    seeds, the first look whose boundary detects ``target`` with 80 % power; when none of its looks does, the
    seeds of a fixed design, flagged. Never below the :data:`MIN_PAIRS` a verdict needs; MAX_SEEDS + 1 for "more
    than MAX_SEEDS"; None where it cannot be said (no spread yet, nothing to detect)."""
    if bounds is not None:
        n = seeds_needed(target, sd, level, critical=lambda k: float(bounds[k]), max_seeds=bounds.size - 1)
        if n is not None:
            return max(n, MIN_PAIRS), False
    n = seeds_needed(target, sd, level)
    if n is None:
        n = MAX_SEEDS + 1 if sd > 0 and math.isfinite(sd) and target > 0 else None
    return (None if n is None else max(n, MIN_PAIRS)), bounds is not None and n is not None


def _tost_p(d: np.ndarray, margin: float) -> float:
    """p of the two one-sided t-tests of H0: |mean d| >= margin (the larger of the two)."""
    se = d.std(ddof=1) / math.sqrt(d.size)
    if not se > 0:
        return math.nan
    df = d.size - 1
    return float(max(stats.t.sf((d.mean() + margin) / se, df), stats.t.cdf((d.mean() - margin) / se, df)))


def verdict_words(sign: int, equivalent: bool, n: int, margin: float | None, higher_is_better: bool
                  ) -> tuple[str, str]:
    """(verdict, note) from the procedure's outcome for one contrast."""
    if n < MIN_PAIRS:
        return "too few seeds", ""
    direction = "" if sign == 0 else ("better" if (sign > 0) == higher_is_better else "worse")
    if equivalent:
        return "equivalent", f"{direction} by less than the margin" if direction else ""
    if direction:
        return direction, ""
    return ("inconclusive" if margin is not None else "not significant"), ""


def _interval(d: np.ndarray, design: Design, bounds: np.ndarray, width: float) -> tuple[float, float]:
    """The intersection over the looks so far of mean_n ± c_n · s_n / sqrt(n), c_n = ``bounds[n]`` the
    superiority boundary of the contrast's level: every look's interval covers the true difference at once with
    probability >= 1 - level, so their intersection does too, and it excludes 0 exactly when superiority was
    rejected at that level."""
    low, high, looked = -width, width, False
    for n in range(max(design.min_seeds, 2), min(d.size, design.max_seeds) + 1):
        sd = d[:n].std(ddof=1)
        if sd > 0 and np.isfinite(bounds[n]):
            half = bounds[n] * sd / math.sqrt(n)
            low, high, looked = max(low, d[:n].mean() - half), min(high, d[:n].mean() + half), True
    return (float(low), float(high)) if looked else (math.nan, math.nan)


def compare_contrasts(
    values: Mapping[str, Mapping[Hashable, float]],
    pairs: Sequence[tuple[str, str]],
    *,
    sequential: Design | None = None,
    alpha: float = 0.05,
    margin: float | None = None,
    higher_is_better: bool = True,
    value_range: tuple[float, float] = (-math.inf, math.inf),
) -> list[ContrastResult]:
    """Every declared pair (a, b) of ``values`` (label -> seed -> value): Δ = a - b and its verdict.

    ``sequential``: the design whose looks the seeds were added under (its alpha and margin are used); None: a
    fixed design, each contrast tested once at its number of pairs. The Holm family is exactly ``pairs``.
    """
    diffs = [paired_differences(values[b], values[a]) for a, b in pairs]
    if sequential is not None:
        alpha, margin = sequential.alpha, sequential.margin
        designs = [sequential] * len(pairs)
    else:
        designs = [Design(max(d.size, MIN_PAIRS), max(d.size, MIN_PAIRS), alpha, margin) for d in diffs]
    width = max(design.max_seeds for design in designs) if designs else 1
    decisions: Decisions = decide_batch(_padded(diffs, width), designs) if pairs else None
    span = value_range[1] - value_range[0]
    out = []
    for k, ((a, b), d, design) in enumerate(zip(pairs, diffs, designs)):
        level = float(decisions.level[0, k])
        sign, equivalent = int(decisions.sign[0, k]), bool(decisions.equivalent[0, k])
        verdict, note = verdict_words(sign, equivalent, d.size, margin, higher_is_better)
        sd = float(d.std(ddof=1)) if d.size >= 2 else math.nan
        mean = float(d.mean()) if d.size else math.nan
        bounds = design.boundaries(level / 2, len(pairs))  # each side of superiority at half the level
        low, high = _interval(d, design, bounds, span)
        target = abs(mean) if margin is None else max(abs(mean), margin)
        needed, beyond = _needed(target, sd, level, bounds if sequential is not None else None)
        fixed = sequential is None and d.size >= MIN_PAIRS
        out.append(ContrastResult(
            a, b, tuple(float(x) for x in d), mean, low, high, verdict, note, level,
            int(decisions.decided_at[0, k]) if d.size >= MIN_PAIRS else 0,
            minimum_detectable_effect(sd, d.size, level, critical=float(bounds[min(d.size, design.max_seeds)]))
            if d.size >= MIN_PAIRS else math.nan,
            needed,
            paired_t_test(d) if fixed else math.nan,
            _tost_p(d, margin) if fixed and margin is not None else math.nan,
            beyond))
    return out


def configurations_still_needed(results: Sequence[ContrastResult], max_seeds: int) -> set[str]:
    """The configurations some undecided contrast still needs another seed of (none past ``max_seeds``)."""
    return {label for r in results if not r.decided and r.n < max_seeds for label in (r.a, r.b)}


def verdict_legend(margin: float | None, sequential: bool, alpha: float = 0.05, unit: str = "") -> str:
    """What the verdicts mean and how their errors are controlled, in two sentences for a student."""
    width = "" if margin is None else f"±{margin:g}{' ' + unit if unit else ''}"
    first = ("Better / worse: the difference is surely not zero; "
             + (f"equivalent: it surely lies within {width}, your margin; inconclusive: the seeds cannot tell yet"
                if margin is not None else "not significant: the seeds cannot tell, which does not mean equal")
             + " ('seeds needed' says how many would).")
    second = (f"The chance that any verdict here is wrong is at most {alpha * 100:g} %: each comparison is tested at "
              f"its share of it (α used, Holm's method over the declared contrasts)")
    second += (", with thresholds made stricter for every look at the data (O'Brien-Fleming-type alpha spending), "
               "so adding seeds until the answer is known does not raise it." if sequential else ".")
    return f"{first} {second}"
