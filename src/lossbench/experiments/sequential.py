"""Verdicts of declared contrasts that stay valid when seeds are added until the answer is known.

Each contrast (configuration a against configuration b) has paired differences
d_1, d_2, ... (a - b on each seed both finished, in seed order) and asks up to
two questions:

- superiority, H0: mean d = 0, two-sided: rejected upwards "better", downwards
  "worse" (for a metric where lower is better the sign is turned first);
- with a margin, equivalence, H0: |mean d| >= margin, by two one-sided tests
  (TOST): rejected "equivalent".

**Looks.** A design with ``min_seeds`` m and ``max_seeds`` M looks at every n
from m to M (one look at n for a fixed design). Under H0 with normal
differences the whole sequence of paired t statistics T_n = mean_n / (s_n /
sqrt n) has a law that does not depend on the SD, so its one-sided boundaries
c_m..c_M at a level g (P(T_n >= c_n at some look) = g) are computed once by
simulating standard-normal sequences (:func:`t_boundaries`, a fixed random
seed, cached), the level spent over the looks by a Lan-DeMets spending function
of the information fraction n / M (:data:`SPENDING`). The default is the
O'Brien-Fleming type: with seeds 3..10 it detects a 1-SD difference in 74 % of
simulated studies (Pocock type: 58 %; the fixed 10-seed design: 80 %) and a
2-SD one after 6.2 seeds on average (Pocock: 5.2), measured by
``pytest -s tests/test_sequential.py -k spending_choice``. A test rejects once its
statistic crosses its boundary at any look so far; looks the data has not
reached, or that a resume jumped over, are only chances not taken, so stopping
early or late never raises the error. The first look's boundary is the exact t
quantile; for a fixed design the test is the ordinary paired t-test / TOST.

**Family-wise error.** The family is exactly the declared contrasts. Within a
contrast the two null hypotheses (d = 0 and |d| >= margin) are disjoint, so at
most one is true: both are tested at the contrast's level g (superiority as
two one-sided tests at g / 2, equivalence as TOST at g). Across contrasts the
levels follow Holm's step-down in the group-sequential form of Maurer & Bretz
(2013): with k contrasts that still have a hypothesis not rejected, each such
hypothesis is tested at g = alpha / k against the level-g boundaries over all
of its looks so far; a contrast whose hypotheses are all rejected passes its
level on and the others are checked again, until nothing new is rejected.
(This is the closed test of the Bonferroni tests of every set of hypotheses
that can be true together; a contrast found "better" but not "equivalent"
keeps its level, because its equivalence null may still be true: passing its
level on would inflate the error, so it is not done.) Without a margin this
is Holm's procedure. The suite checks the error rates by simulation
(tests/test_sequential.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_PAIRS = 3
#: simulated standard-normal sequences per set of boundaries, and their fixed random seed
PATHS = 200_000
PATHS_SEED = 20_130_521


def pocock_spent(level: float, t: float) -> float:
    """Lan-DeMets Pocock-type spending: the level spent by information fraction t, level * ln(1 + (e - 1) t)."""
    return level * math.log(1 + (math.e - 1) * t)


def obrien_fleming_spent(level: float, t: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending of a one-sided level: 2 - 2 Phi(z_{1 - level/2} / sqrt t)."""
    return float(2 * stats.norm.sf(stats.norm.isf(level / 2) / math.sqrt(t)))


SPENDING: dict[str, Callable[[float, float], float]] = {"pocock": pocock_spent, "obrien-fleming": obrien_fleming_spent}
DEFAULT_SPENDING = "obrien-fleming"


@lru_cache(maxsize=256)
def t_boundaries(min_seeds: int, max_seeds: int, level: float, spending: str = DEFAULT_SPENDING,
                 floor: tuple[float, ...] | None = None) -> tuple[float, ...]:
    """One-sided boundaries c_n, n = min_seeds..max_seeds, of the paired t statistic at ``level``: under H0
    P(T_n >= c_n for some look n) = level, the look at n spending spent(n / max) - spent(previous look).

    The first look's boundary is the t quantile of its share; the others come from :data:`PATHS` simulated
    standard-normal sequences (T is pivotal under H0), each the value the share of the sequences that have not
    crossed yet exceeds. inf where a look's share is below one sequence (it can reject nothing). ``floor``: no
    boundary below it (the boundaries of a larger level, :func:`holm_boundaries`); a look it raises spends
    less, and the later looks spend what it left (the last one may leave some: conservative, never more).
    """
    spent = SPENDING[spending]
    shares = [spent(level, n / max_seeds) for n in range(min_seeds, max_seeds + 1)]
    floor = floor or (-math.inf,) * len(shares)
    first = max(float(stats.t.isf(shares[0], min_seeds - 1)), floor[0])
    if min_seeds == max_seeds:
        return (first,)
    rng = np.random.default_rng(PATHS_SEED)
    total = rng.standard_normal(PATHS)
    squares = total * total
    alive = np.ones(PATHS, dtype=bool)
    bounds = []
    for n in range(2, max_seeds + 1):
        x = rng.standard_normal(PATHS)
        total += x
        squares += x * x
        if n < min_seeds:
            continue
        mean = total / n
        t = mean / np.sqrt((squares - n * mean * mean) / (n - 1) / n)
        bound = first if n == min_seeds else max(
            _share_bound(t[alive], round(shares[n - min_seeds] * PATHS) - int((~alive).sum())), floor[n - min_seeds])
        bounds.append(bound)
        alive &= ~(t >= bound)
    return tuple(bounds)


def _share_bound(t: np.ndarray, cross: int) -> float:
    """The value exactly ``cross`` of ``t`` reach (midway between the cross-th and the next largest); inf for
    none."""
    if cross < 1:
        return math.inf
    if cross >= t.size:
        return -math.inf
    top = np.sort(np.partition(t, t.size - cross - 1)[t.size - cross - 1:])
    return float((top[0] + top[1]) / 2)


def holm_levels(alpha: float, contrasts: int) -> tuple[float, ...]:
    """Every one-sided level Holm's steps use for ``contrasts`` contrasts, largest first: alpha / k (each test of
    TOST) and alpha / 2k (each side of superiority), k = 1..contrasts."""
    return tuple(sorted({alpha / k / h for k in range(1, contrasts + 1) for h in (1, 2)}, reverse=True))


@lru_cache(maxsize=64)
def holm_boundaries(min_seeds: int, max_seeds: int, levels: tuple[float, ...], spending: str = DEFAULT_SPENDING
                    ) -> dict[float, tuple[float, ...]]:
    """:func:`t_boundaries` of each of ``levels`` (largest first), each no lower than the one of the level
    before: a statistic that crosses at a smaller level crosses at every larger one, which Holm's step-down
    needs (a rejection stays a rejection when a level is passed on). Simulated boundaries of nearby levels
    could otherwise cross each other where a look's share is a few sequences."""
    out: dict[float, tuple[float, ...]] = {}
    floor = None
    for level in levels:
        floor = out[level] = t_boundaries(min_seeds, max_seeds, level, spending, floor)
    return out


@dataclass(frozen=True)
class Design:
    """How a study's contrasts are decided: looks from ``min_seeds`` to ``max_seeds`` paired seeds (equal: a
    fixed design), the family-wise ``alpha``, the spending function and the equivalence ``margin`` (None: no
    equivalence question)."""

    min_seeds: int
    max_seeds: int
    alpha: float = ALPHA
    margin: float | None = None
    spending: str = DEFAULT_SPENDING

    def boundaries(self, level: float, contrasts: int) -> np.ndarray:
        """The one-sided boundaries at ``level``, one of the :func:`holm_levels` of ``contrasts`` contrasts, per
        number of pairs n = 0..max_seeds (inf where no look)."""
        table = holm_boundaries(self.min_seeds, self.max_seeds, holm_levels(self.alpha, contrasts), self.spending)
        out = np.full(self.max_seeds + 1, math.inf)
        out[self.min_seeds:] = table[level]
        return out


def t_paths(d: np.ndarray, margin: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired t statistics after each pair, for differences ``d`` (..., N) padded with NaN after the last
    pair: T_n = mean_n / se_n and the TOST statistics (mean_n - margin) / se_n, (mean_n + margin) / se_n, each
    (..., N + 1) indexed by n (NaN for n < 2, past the data, and where the differences have no spread)."""
    d = np.asarray(d, dtype=float)
    n = np.arange(1, d.shape[-1] + 1)
    shifted = d - d[..., :1]  # the variance of d - d_1 is that of d, without cancellation
    mean_shifted = np.cumsum(shifted, axis=-1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (np.cumsum(shifted * shifted, axis=-1) - n * mean_shifted ** 2) / (n - 1)
        mean = mean_shifted + d[..., :1]
        scale = np.maximum(np.abs(mean), np.sqrt(np.cumsum(d * d, axis=-1) / n))
        se = np.where(var > 1e-24 * scale * scale, np.sqrt(np.maximum(var, 0) / n), np.nan)
        se[..., 0] = np.nan
        pad = np.full(d.shape[:-1] + (1,), np.nan)
        width = 0.0 if margin is None else margin
        return tuple(np.concatenate([pad, x], axis=-1)
                     for x in (mean / se, (mean - width) / se, (mean + width) / se))


def first_crossing(above: np.ndarray) -> np.ndarray:
    """The first n at which ``above`` (..., N + 1) is True, as an int; a large number where it never is."""
    never = np.iinfo(np.int64).max // 2
    return np.where(above.any(axis=-1), above.argmax(axis=-1), never)


@dataclass
class Crossings:
    """For one level: the first look each contrast's tests reject at (arrays over studies x contrasts)."""

    up: np.ndarray  # superiority, upwards (d > 0)
    down: np.ndarray  # superiority, downwards (d < 0)
    equivalent: np.ndarray  # both one-sided tests of TOST (the later of the two)


def crossings(paths: tuple[np.ndarray, np.ndarray, np.ndarray], bounds2: np.ndarray, bounds1: np.ndarray
              ) -> Crossings:
    """Where the statistics cross the two-sided superiority boundaries ``bounds2`` (each side at half the
    level) and the TOST boundaries ``bounds1`` (each one-sided test at the level), per number of pairs."""
    t, t_minus, t_plus = paths
    with np.errstate(invalid="ignore"):
        up, down = first_crossing(t >= bounds2), first_crossing(t <= -bounds2)
        equivalent = np.maximum(first_crossing(t_minus <= -bounds1), first_crossing(t_plus >= bounds1))
    return Crossings(up, down, equivalent)


@dataclass
class Decisions:
    """What the procedure decided, per study and contrast (arrays of shape studies x contrasts)."""

    n: np.ndarray  # paired seeds
    sign: np.ndarray  # +1: superiority rejected upwards (d > 0), -1: downwards, 0: not rejected
    equivalent: np.ndarray  # equivalence (TOST) rejected: |d| < margin
    level: np.ndarray  # the level the contrast was last tested at: alpha / (contrasts still open then)
    decided_at: np.ndarray  # paired seeds at the first look that rejected (0: none)

    @property
    def decided(self) -> np.ndarray:
        return (self.sign != 0) | self.equivalent


def _level_crossings(paths, designs: Sequence[Design], level: float, width: int) -> Crossings:
    def bounds(g: float) -> np.ndarray:
        out = np.full((len(designs), width), math.inf)
        for k, design in enumerate(designs):
            b = design.boundaries(g, len(designs))[:width]
            out[k, :b.size] = b
        return out

    return crossings(paths, bounds(level / 2), bounds(level))


def decide_batch(d: np.ndarray, designs: Sequence[Design]) -> Decisions:
    """Run the procedure of this module on differences ``d`` (studies x contrasts x pairs, NaN after each
    contrast's last pair), contrast k under ``designs[k]`` (one shared alpha and margin)."""
    d = np.asarray(d, dtype=float)
    alpha, margin = designs[0].alpha, designs[0].margin
    studies, count = d.shape[:2]
    paths = t_paths(d, margin)
    per_level = [_level_crossings(paths, designs, alpha / m, d.shape[-1] + 1) for m in range(1, count + 1)]
    up_all, down_all, eq_all = (np.stack([getattr(c, name) for c in per_level])
                                for name in ("up", "down", "equivalent"))
    never = np.iinfo(np.int64).max // 2
    sign = np.zeros((studies, count), dtype=int)
    equivalent = np.zeros((studies, count), dtype=bool)
    level = np.full((studies, count), alpha / count)
    decided_at = np.zeros((studies, count), dtype=int)
    rows = np.arange(studies)
    while True:
        open_ = (sign == 0) | ((margin is not None) & ~equivalent)
        still = np.maximum(open_.sum(axis=1), 1)  # contrasts with a hypothesis not rejected: Holm's divisor
        level = np.where(open_, alpha / still[:, None], level)
        up, down, eq = (x[still - 1, rows] for x in (up_all, down_all, eq_all))
        crossed = np.minimum(up, down)
        new_sign = np.where(sign != 0, sign, np.where(crossed < never, np.where(up < down, 1, -1), 0))
        new_eq = equivalent | ((eq < never) & (margin is not None))
        first = np.minimum(np.where(new_sign != 0, crossed, never), np.where(new_eq, eq, never))
        decided_at = np.where((decided_at == 0) & (first < never), first, decided_at)
        if np.array_equal(new_sign, sign) and np.array_equal(new_eq, equivalent):
            break
        sign, equivalent = new_sign, new_eq
    return Decisions(np.isfinite(d).sum(axis=-1), sign, equivalent, level, decided_at)
