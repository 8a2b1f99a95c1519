"""Power of the paired t-test: how large a difference a comparison could detect, and with how many seeds.

Pure functions on numbers, exact under normal paired differences: the power of
the two-sided paired t-test comes from the noncentral t distribution
(``scipy.stats.nct``), not from a normal approximation, which overstates the
power of the few seeds a sweep has (at n = 3 the t-test has 2 degrees of
freedom).

- :func:`paired_power`: P(reject) of the two-sided paired t-test at level
  ``alpha`` for a true mean difference ``diff``, paired SD ``sd`` and ``n`` pairs;
- :func:`minimum_detectable_effect`: the smallest true difference detected with
  ``power`` (80 %) at that alpha, SD and n (a fixed design of n seeds);
- :func:`seeds_needed`: the smallest number of paired seeds that detects a
  given difference with that power.

Each takes the critical value a look rejects beyond (``critical``) in place of
the fixed design's t quantile: a sequential design's boundary at that number of
seeds (:meth:`lossbench.experiments.sequential.Design.boundaries`), stricter at
its early looks, gives the power of that look alone (a lower bound on the
design's power by then, which earlier looks can only add to).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy import optimize, stats

POWER = 0.8
#: seeds_needed looks no further: a difference that needs more seeds is "more than this many"
MAX_SEEDS = 10_000


def paired_power(diff: float, sd: float, n: int, alpha: float, critical: float | None = None) -> float:
    """Power of the two-sided paired t-test of ``n`` pairs at level ``alpha`` when the true mean difference is
    ``diff`` and the SD of the differences is ``sd``.

    With t = mean / (s / sqrt n), n - 1 degrees of freedom and critical value
    c = t_{1 - alpha/2, n-1} (or ``critical``), t follows the noncentral t with
    noncentrality diff / sd * sqrt(n): power = P(t > c) + P(t < -c). NaN for
    n < 2 or an SD that is not positive and finite; 0 for an infinite ``critical``
    (a number of seeds a design does not look at).
    """
    if n < 2 or not (sd > 0 and math.isfinite(sd)) or not math.isfinite(diff):
        return math.nan
    df = n - 1
    crit = stats.t.isf(alpha / 2, df) if critical is None else critical
    if math.isinf(crit):
        return 0.0
    ncp = abs(diff) / sd * math.sqrt(n)
    upper = float(stats.nct.sf(crit, df, ncp))
    lower = float(stats.nct.cdf(-crit, df, ncp))  # the wrong-sign tail; scipy gives NaN where it is below ~1e-17
    return upper + (0.0 if math.isnan(lower) else lower)


def minimum_detectable_effect(sd: float, n: int, alpha: float, power: float = POWER,
                              critical: float | None = None) -> float:
    """The smallest true |mean difference| the two-sided paired t-test of ``n`` pairs at ``alpha`` (rejecting
    beyond ``critical`` if given) detects with probability ``power``, in the units of ``sd``; NaN where
    :func:`paired_power` is, or where ``critical`` is infinite."""
    if n < 2 or not (sd > 0 and math.isfinite(sd)) or (critical is not None and not math.isfinite(critical)):
        return math.nan

    def short(effect: float) -> float:
        return paired_power(effect * sd, sd, n, alpha, critical) - power

    high = 1.0
    while short(high) < 0:  # power rises with the effect to 1: double until it is past ``power``
        high *= 2
    return float(optimize.brentq(short, 0.0, high, xtol=1e-10) * sd)


def seeds_needed(diff: float, sd: float, alpha: float, power: float = POWER,
                 critical: Callable[[int], float] | None = None, max_seeds: int = MAX_SEEDS) -> int | None:
    """The smallest number of paired seeds n >= 2 whose two-sided paired t-test at ``alpha`` detects a true mean
    difference ``diff`` with probability ``power`` when the differences have SD ``sd``; ``critical(n)``: the
    critical value of the look at n seeds (a sequential design's boundary; it must not rise with n), instead of
    the t quantile. None when it cannot be said (no SD, a zero difference) or would take more than
    ``max_seeds``."""
    if not (sd > 0 and math.isfinite(sd)) or not math.isfinite(diff) or diff == 0:
        return None

    def enough(n: int) -> bool:
        return paired_power(diff, sd, n, alpha, None if critical is None else critical(n)) >= power

    if not enough(max_seeds):
        return None
    low, high = 1, 2  # power(low) < power <= power(high), power rising with n
    while not enough(high):
        low, high = high, min(2 * high, max_seeds)
    while high - low > 1:
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return high
