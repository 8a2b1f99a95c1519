"""The forest plot of a document's declared contrasts: what a reader looks at first.

One row per contrast a - b: a dot per paired seed, the mean difference with its
interval (the one the verdict is read from, :mod:`lossbench.experiments.contrasts`),
the equivalence margin shaded around 0 and the verdict written at the right.
PNG bytes (matplotlib, Agg), embedded in report.html and saved for report.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lossbench.experiments.contrasts import ContrastResult
from lossbench.plots import figure_png, plt

VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue"}


def _verdict_text(result: ContrastResult) -> str:
    text = result.verdict + (f" ({result.note})" if result.note else "")
    return text + (f", n = {result.n}" if result.n else "")


def _limits(results: Sequence[ContrastResult], margin: float | None) -> tuple[float, float]:
    """An x range holding every dot, every finite interval end and the margin, with a little room."""
    points = [x for r in results for x in (*r.differences, r.low, r.high) if math.isfinite(x)]
    if margin is not None:
        points += [-margin, margin]
    if not points:
        return -1.0, 1.0
    low, high = min(*points, 0.0), max(*points, 0.0)
    pad = 0.08 * (high - low or 1.0)
    return low - pad, high + pad


def plot_forest(results: Sequence[ContrastResult], metric: str, margin: float | None = None,
                title: str = "") -> bytes:
    """The forest plot of ``results`` as PNG bytes; b"" when there is no contrast."""
    if not results:
        return b""
    fig, ax = plt.subplots(figsize=(8.5, 0.75 * len(results) + 1.4))
    left, right = _limits(results, margin)
    if margin is not None:
        ax.axvspan(-margin, margin, color="tab:blue", alpha=0.12, lw=0, label=f"margin ±{margin:g}")
    ax.axvline(0.0, color="0.3", lw=0.8)
    rng = np.random.default_rng(0)  # the same vertical jitter of the dots in every report
    for row, result in enumerate(results):
        y = len(results) - 1 - row
        colour = VERDICT_COLOURS.get(result.verdict, "0.35")
        if result.differences:
            ax.scatter(result.differences, y + rng.uniform(-0.12, 0.12, len(result.differences)), s=14,
                       color="0.55", zorder=2)
        if math.isfinite(result.diff):
            if not (math.isnan(result.low) or math.isnan(result.high)):  # no interval without a spread
                ax.plot([max(result.low, left), min(result.high, right)], [y, y], color=colour, lw=2.2, zorder=3)
            ax.plot(result.diff, y, "D", color=colour, ms=7, zorder=4)
        ax.annotate(_verdict_text(result), (1.01, y), xycoords=("axes fraction", "data"), va="center",
                    fontsize=9, color=colour)
    ax.set_yticks(range(len(results)), [r.label for r in reversed(results)], fontsize=9)
    ax.set_ylim(-0.7, len(results) - 0.3)
    ax.set_xlim(left, right)
    ax.set_xlabel(f"Δ {metric} (a − b): dots are seeds, ◆ the mean with its interval")
    if margin is not None:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return figure_png(fig, crop=True)
