"""The metrics a sweep report and tuning know: table columns, per-class figures, ranges and direction."""

from __future__ import annotations

import math
import re

#: the columns of the report's configuration table, per task
TABLE_METRICS = {
    "classification": ("balanced_accuracy", "accuracy", "macro_f1", "quadratic_kappa", "ece",
                       "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"),
    "segmentation": ("miou", "dice", "pixel_accuracy"),
}
#: per-class columns (``recall_3``), per task
PER_CLASS_METRICS = {"classification": ("recall",), "segmentation": ("iou", "per_class_dice")}
LOWER_IS_BETTER = frozenset({"ece", "loss"})
#: the values a metric can take; every other metric a report knows lies in [0, 1]
METRIC_RANGES = {"quadratic_kappa": (-1.0, 1.0), "loss": (0.0, math.inf)}


def metric_range(name: str) -> tuple[float, float]:
    """The interval a metric's values lie in (intervals are clipped to it)."""
    return METRIC_RANGES.get(name, (0.0, 1.0))


def lower_is_better(name: str) -> bool:
    """Whether smaller values of metric ``name`` (``val_`` prefix or not) are better."""
    name = name.removeprefix("val_")
    return name.endswith("loss") or name in LOWER_IS_BETTER


def report_metrics(task: str) -> list[str]:
    """Every metric ``report.metric`` may name for a task (per-class ones as ``recall_<k>``)."""
    return [*TABLE_METRICS[task], "loss", *(f"{m}_<k>" for m in PER_CLASS_METRICS[task])]


def is_report_metric(name: str, task: str) -> bool:
    per_class = "|".join(PER_CLASS_METRICS[task])
    return name in TABLE_METRICS[task] or name == "loss" or re.fullmatch(rf"(?:{per_class})_\d+", name) is not None
