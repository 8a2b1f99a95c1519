"""What each seed of a sweep draws for itself, and per-class results by training frequency (issue 21 item 7).

With ``data.imbalance_order: permuted`` every seed deals the long-tail frequencies to other classes, so a
class's recall averaged over seeds mixes head and tail. :func:`rank_table` lines each run's per-class values
up by that run's own frequency rank (its ``split.json`` ``frequency_ranks``, else its training counts), head
to tail, before averaging over seeds. The many / medium / few-shot accuracies need nothing here: every run
computes them from its own training counts (:func:`lossbench.metrics.shot_accuracies`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lossbench.experiments.report_data import DocumentSetup, SeedGroup, format_mean, mean_and_interval
from lossbench.experiments.report_metrics import PER_CLASS_FIGURE


def _read(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def is_permuted(setup: DocumentSetup) -> bool:
    """Whether any cell of the document drew which classes are rare by its seed."""
    return any(exp is not None and exp.data.imbalance_order == "permuted" for exp in setup.configs.values())


def head_to_tail(summary: dict[str, Any], split: dict[str, Any] | None) -> list[int]:
    """A run's classes from its most to its least frequent in training: its recorded frequency ranks, else its
    training class counts (ties by class index)."""
    ranks = (split or {}).get("frequency_ranks")
    counts = summary["class_counts"]
    if isinstance(ranks, list) and len(ranks) == len(counts):
        return sorted(range(len(counts)), key=lambda k: ranks[k])
    return sorted(range(len(counts)), key=lambda k: (-counts[k], k))


def runs_by_rank(sweep_dir: Path, group: SeedGroup, epoch: str, key: str) -> list[tuple[list[int], list[float]]]:
    """Per finished run of ``group``: (training counts, per-class ``key`` at ``epoch``), both head to tail."""
    runs = []
    for row in group.done:
        summary = _read(sweep_dir / row["cell"] / "summary.json")
        if summary is None or not summary.get(epoch):
            continue
        order = head_to_tail(summary, _read(sweep_dir / row["cell"] / "split.json"))
        runs.append(([summary["class_counts"][k] for k in order],
                     [summary[epoch].get(f"val_{key}_{k}", math.nan) for k in order]))
    return runs


def rank_table(sweep_dir: Path, setup: DocumentSetup) -> tuple[list[str], list[list[str]]] | None:
    """Per-class recall (IoU) by training frequency rank, head to tail: one row a rank, the training images of
    that rank (mean over seeds) and each configuration's mean with its 95 % t interval over seeds."""
    key = PER_CLASS_FIGURE[setup.task]
    columns = [(g.label, runs_by_rank(sweep_dir, g, setup.epoch, key)) for g in setup.groups]
    columns = [(label, runs) for label, runs in columns if runs]
    if not columns:
        return None
    k = len(columns[0][1][0][0])
    body = []
    for rank in range(k):
        counts = [counts[rank] for _, runs in columns for counts, _ in runs]
        row = [str(rank + 1), f"{sum(counts) / len(counts):.0f}"]
        for _, runs in columns:
            values = [v[rank] for _, v in runs if math.isfinite(v[rank])]
            row.append(format_mean(*mean_and_interval(values, key)) if values else "–")
        body.append(row)
    return ["rank (1 = head)", "train images", *(label for label, _ in columns)], body


def seed_draws_sentence(sweep_dir: Path, setup: DocumentSetup) -> str:
    """What every seed of the document draws for itself, from its first finished cell's config and split.json."""
    cell = next((r["cell"] for g in setup.groups for r in g.done), None)
    exp = setup.configs.get(cell) if cell is not None else None
    if exp is None:
        return ""
    split = _read(sweep_dir / cell / "split.json") or {}
    drawn = ["its own order of training batches"]
    if exp.data.imbalance_ratio > 1:
        drawn.insert(0, "its own long-tail subsample of the training images")
    if split.get("generated_holdout"):
        drawn.append("its own held-out split")
    if split.get("generated_val"):
        drawn.append("its own validation split")
    text = f"Every seed draws {', '.join(drawn[:-1])} and {drawn[-1]}" if len(drawn) > 1 else \
        f"Every seed draws {drawn[0]}"
    if is_permuted(setup):
        return (text + ", and which classes are rare (data.imbalance_order: permuted): the counts above are one "
                "seed's, and the per-class results are shown by each run's own frequency rank, head to tail. The "
                "many-, medium- and few-shot accuracies group each run's classes by that run's own training counts.")
    return text + "; the same seed gives every configuration the same data, so the comparisons are paired."
