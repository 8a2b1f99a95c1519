"""The report's section on declared contrasts: the forest plot, one row per contrast and the legend.

Pure formatting of :class:`lossbench.experiments.contrasts.ContrastResult` (no
files): the report assembly puts the figure above the tables. A metric whose
values are fractions (range [0, 1]: accuracies, IoU, Dice, ECE) is compared in
points (x 100), the unit ``report.margin`` is given in.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

from lossbench.experiments.contrasts import ContrastResult, verdict_legend
from lossbench.experiments.power import MAX_SEEDS


def points_scale(value_range: tuple[float, float]) -> float:
    """100 for a metric of fractions (compared in points, as report.margin is given), else 1."""
    return 100.0 if tuple(value_range) == (0.0, 1.0) else 1.0


def unit_name(value_range: tuple[float, float]) -> str:
    return "points" if points_scale(value_range) == 100.0 else "metric units"


def scaled(values: Mapping[str, Mapping[Hashable, float]], scale: float) -> dict[str, dict[Hashable, float]]:
    """Each configuration's value per seed times ``scale``."""
    return {label: {seed: v * scale for seed, v in per_seed.items()} for label, per_seed in values.items()}


def _num(x: float, unit: str, sign: bool = False) -> str:
    """Points with two decimals; other units with three significant digits (a loss difference may be 0.0003)."""
    if not math.isfinite(x):
        return "–"
    spec = ".2f" if unit == "points" else ".3g"
    return f"{x:+{spec}}" if sign else f"{x:{spec}}"


def _alpha(level: float) -> str:
    return f"{level:.3g}"


def _verdict_cell(r: ContrastResult) -> str:
    text = r.verdict + (f" ({r.note})" if r.note else "")
    return text + (f", decided at {r.decided_at} seeds" if r.decided else "")


def contrast_table(results: Sequence[ContrastResult], metric: str, unit: str, fixed: bool
                   ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: contrast, paired seeds, Δ, its interval, α used, p (fixed designs, >= 3 pairs), MDE,
    seeds needed, verdict."""
    header = ["contrast (a vs b)", "paired seeds", f"Δ {metric} (a − b, {unit})", "interval of Δ", "α used",
              "p", "MDE (80 % power)", "seeds needed", "verdict"]
    body = []
    for r in results:
        interval = f"[{_num(r.low, unit, True)}, {_num(r.high, unit, True)}]" if math.isfinite(r.low) else "–"
        p = "–" if not fixed or math.isnan(r.p) else ("< 0.0001" if r.p < 1e-4 else f"{r.p:.4f}")
        needed = ("–" if r.seeds_needed is None else f"> {MAX_SEEDS}" if r.seeds_needed > MAX_SEEDS
                  else str(r.seeds_needed)) + (" (new study)" if r.needed_beyond_design else "")
        body.append([r.label, str(r.n), _num(r.diff, unit, True), interval, _alpha(r.level), p, _num(r.mde, unit),
                     needed, _verdict_cell(r)])
    return header, body


def seeds_table(ran: Mapping[str, int], reasons: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each configuration's seeds and why it got no more."""
    return ["configuration", "seeds run", "stopped because"], [[label, str(n), reasons.get(label, "")]
                                                               for label, n in ran.items()]


def method_text(metric: str, unit: str, margin: float | None, sequential: tuple[int, int] | None,
                lower_is_better: bool = False) -> str:
    """What the contrasts table holds and how its columns are made, above it."""
    seeds = (f" Seeds were added in rounds, from {sequential[0]} to at most {sequential[1]} per configuration, only "
             "while a contrast that needs the configuration was undecided." if sequential else "")
    band = f" The shaded band of the figure is the margin ±{margin:g} {unit}." if margin is not None else ""
    direction = " (lower is better: a negative Δ is better)" if lower_is_better else ""
    return (f"Declared contrasts on {metric}{direction} in {unit}: Δ = a − b over the seeds both finished.{seeds} "
            "The interval is the one the verdict is read from (at α used, over every look at the data); MDE is the "
            "smallest difference this look at these seeds would detect with 80 % power at α used, from the spread "
            "of the paired differences" + (" (early looks use stricter thresholds, so their MDE is larger)"
                                           if sequential else "")
            + "; 'seeds needed' is about how many paired seeds would decide the contrast if the difference measured "
            "so far is the true one (those that detect it, or the margin where it is smaller)"
            + (", '(new study)' where no look of this design, up to its last seed, would: the seeds a fixed "
               "design would need" if sequential else "")
            + f"; p is given for a fixed list of seeds only.{band}")


def legend_text(unit: str, margin: float | None, sequential: bool, alpha: float = 0.05) -> str:
    """The two-sentence legend of the verdicts (:func:`lossbench.experiments.contrasts.verdict_legend`)."""
    return verdict_legend(margin, sequential, alpha, unit)
