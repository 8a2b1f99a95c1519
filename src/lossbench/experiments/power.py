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
"""

from __future__ import annotations

import math

from scipy import optimize, stats

POWER = 0.8
#: seeds_needed looks no further: a difference that needs more seeds is "more than this many"
MAX_SEEDS = 10_000


def paired_power(diff: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test of ``n`` pairs at level ``alpha`` when the true mean difference is
    ``diff`` and the SD of the differences is ``sd``.

    With t = mean / (s / sqrt n), n - 1 degrees of freedom and critical value
    c = t_{1 - alpha/2, n-1}, t follows the noncentral t with noncentrality
    diff / sd * sqrt(n): power = P(t > c) + P(t < -c). NaN for n < 2 or an SD
    that is not positive and finite.
    """
    if n < 2 or not (sd > 0 and math.isfinite(sd)) or not math.isfinite(diff):
        return math.nan
    df = n - 1
    crit = stats.t.isf(alpha / 2, df)
    ncp = abs(diff) / sd * math.sqrt(n)
    upper = float(stats.nct.sf(crit, df, ncp))
    lower = float(stats.nct.cdf(-crit, df, ncp))  # the wrong-sign tail; scipy gives NaN where it is below ~1e-17
    return upper + (0.0 if math.isnan(lower) else lower)


def minimum_detectable_effect(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest true |mean difference| the two-sided paired t-test of ``n`` pairs at ``alpha`` detects with
    probability ``power``, in the units of ``sd``; NaN where :func:`paired_power` is."""
    if n < 2 or not (sd > 0 and math.isfinite(sd)):
        return math.nan

    def short(effect: float) -> float:
        return paired_power(effect * sd, sd, n, alpha) - power

    high = 1.0
    while short(high) < 0:  # power rises with the effect to 1: double until it is past ``power``
        high *= 2
    return float(optimize.brentq(short, 0.0, high, xtol=1e-10) * sd)


def seeds_needed(diff: float, sd: float, alpha: float, power: float = POWER) -> int | None:
    """The smallest number of paired seeds n >= 2 whose two-sided paired t-test at ``alpha`` detects a true mean
    difference ``diff`` with probability ``power`` when the differences have SD ``sd``; None when it cannot be
    said (no SD, a zero difference) or would take more than :data:`MAX_SEEDS`."""
    if not (sd > 0 and math.isfinite(sd)) or not math.isfinite(diff) or diff == 0:
        return None
    if paired_power(diff, sd, MAX_SEEDS, alpha) < power:
        return None
    low, high = 1, 2  # power(low) < power <= power(high), power rising with n
    while paired_power(diff, sd, high, alpha) < power:
        low, high = high, min(2 * high, MAX_SEEDS)
    while high - low > 1:
        mid = (low + high) // 2
        if paired_power(diff, sd, mid, alpha) >= power:
            high = mid
        else:
            low = mid
    return high
