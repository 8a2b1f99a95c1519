"""Statistics of a sweep: is one configuration better than the baseline, and how sure are we?

Pure functions on numbers (no formatting, no files), used by the report and by
``benchmarks/quality_table.py`` so both print the same figures:

- :func:`paired_differences`: other - baseline over the seeds both finished;
- :func:`paired_t_test`: two-sided paired t-test on those differences
  (Student 1908; equal to ``scipy.stats.ttest_rel`` on the pairs);
- :func:`t_interval`: the 95 % Student-t interval of a mean, clipped to the
  range the quantity can take (a mean accuracy lies in [0, 1], a difference of
  accuracies in [-1, 1]);
- :func:`holm_adjust`: Holm-Bonferroni adjusted p-values (Holm 1979), which
  keep the chance of any false "better" among m comparisons at alpha;
- :func:`verdict`: "better" / "worse" / "not significant", or "too few seeds"
  below :data:`MIN_PAIRS` pairs, where a t-test has too few degrees of freedom
  to be worth a verdict;
- :func:`compare_with_baseline`: all of the above for a family of comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
#: paired seeds a verdict needs: with 2 pairs the t-test has 1 degree of freedom, and its 95 % interval
#: is mean ± 12.7 standard errors; a "significant" p there is an accident of two nearly equal differences
MIN_PAIRS = 3


def finite_mean(values: Sequence[Sequence[float]] | np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over the finite entries along ``axis``; NaN where there is none (no empty-slice warning)."""
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    count = finite.sum(axis=axis)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(np.shape(total), math.nan), where=count > 0)


def paired_differences(base: Mapping[Hashable, float], other: Mapping[Hashable, float]) -> np.ndarray:
    """``other[s] - base[s]`` for every seed ``s`` both have with a finite value, in sorted seed order."""
    seeds = sorted(s for s in set(base) & set(other) if math.isfinite(base[s]) and math.isfinite(other[s]))
    return np.array([other[s] - base[s] for s in seeds], dtype=float)


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())))


def paired_t_test(differences: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the paired t-test that the mean difference is 0.

    t = mean(d) / (s_d / sqrt(n)) with n - 1 degrees of freedom. NaN for fewer
    than 2 differences. Differences without spread have no t-statistic: 1.0
    when they are all 0 (nothing differs), NaN otherwise (untestable).
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return math.nan
    if _is_constant(d):
        return 1.0 if np.all(d == 0) else math.nan
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    return float(2 * stats.t.sf(abs(t), d.size - 1))


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE,
               clip: tuple[float, float] | None = None) -> tuple[float, float]:
    """Student-t interval of the mean, mean ± t_{(1+c)/2, n-1} · s / sqrt(n), clipped to ``clip``.

    (NaN, NaN) for fewer than 2 values. Clipping keeps the interval inside the
    range the quantity can take; it never moves the mean.
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return math.nan, math.nan
    mean = float(x.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    low, high = mean - half, mean + half
    if clip is not None:
        low, high = max(low, clip[0]), min(high, clip[1])
    return low, high


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the
    adjusted value of p_(i) is max over j <= i of min(1, (m - j + 1) · p_(j)).
    Rejecting where the adjusted p < alpha is Holm's step-down procedure. NaN
    entries (comparisons with no test) stay NaN and do not count towards m.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def verdict(n: int, p_adjusted: float, diff: float, *, higher_is_better: bool = True,
            alpha: float = ALPHA, min_pairs: int = MIN_PAIRS) -> str:
    """"better", "worse" or "not significant" at ``alpha`` on the adjusted p; no verdict below ``min_pairs``.
    "not significant", not "no difference": a p above alpha is no evidence of equality (few seeds, wide
    intervals); the interval says how large a difference the data still allow."""
    if n < min_pairs:
        return f"too few seeds (n = {n})"
    if math.isnan(p_adjusted):
        return "untestable (the same difference on every seed)"
    if p_adjusted >= alpha:
        return "not significant"
    return "better" if (diff > 0) == higher_is_better else "worse"


@dataclass(frozen=True)
class PairedComparison:
    """One configuration against the baseline on one metric, over the seeds both finished."""

    label: str
    n: int
    diff: float
    low: float
    high: float
    p: float
    p_holm: float
    verdict: str


def compare_with_baseline(
    base: Mapping[Hashable, float],
    others: Mapping[str, Mapping[Hashable, float]],
    *,
    value_range: tuple[float, float] = (-math.inf, math.inf),
    higher_is_better: bool = True,
    confidence: float = CONFIDENCE,
    alpha: float = ALPHA,
    min_pairs: int = MIN_PAIRS,
) -> list[PairedComparison]:
    """Every configuration of ``others`` (label -> seed -> value) against ``base`` (seed -> value).

    The family of the Holm correction is all of ``others``: add derived
    configurations (e.g. a post-hoc adjusted model) to it, not after it. A
    difference of values in [lo, hi] lies in [lo - hi, hi - lo], and its
    interval is clipped there.
    """
    diffs = {label: paired_differences(base, values) for label, values in others.items()}
    p = {label: paired_t_test(d) for label, d in diffs.items()}
    adjusted = dict(zip(p, holm_adjust(list(p.values()))))
    width = value_range[1] - value_range[0]
    out = []
    for label, d in diffs.items():
        mean = float(d.mean()) if d.size else math.nan
        low, high = t_interval(d, confidence, clip=(-width, width))
        out.append(PairedComparison(label, int(d.size), mean, low, high, p[label], float(adjusted[label]),
                                    verdict(d.size, adjusted[label], mean, higher_is_better=higher_is_better,
                                            alpha=alpha, min_pairs=min_pairs)))
    return out
