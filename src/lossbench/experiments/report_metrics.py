"""The metrics a sweep report shows and compares, read from the table of metric facts
(:data:`lossbench.metrics.METRICS`): direction, range, per-class or not, display name."""

from __future__ import annotations

import re

from lossbench.errors import UserError
from lossbench.metrics import MetricFacts, metric_facts, task_metrics

#: the columns of the report's configuration table, per task: the report's choice among the table's metrics
TABLE_METRICS = {
    "classification": ("balanced_accuracy", "accuracy", "macro_f1", "quadratic_kappa", "ece",
                       "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"),
    "segmentation": ("miou", "dice", "pixel_accuracy"),
}
#: the metric of the report's per-class figure, per task
PER_CLASS_FIGURE = {"classification": "recall", "segmentation": "iou"}


def facts_of(name: str) -> MetricFacts:
    """The facts of a report's metric name: ``val_`` prefix or not, a per-class one as ``recall_3``."""
    name = name.removeprefix("val_")
    try:
        return metric_facts(name)
    except UserError:
        per_class = re.fullmatch(r"(.+)_\d+", name)
        if per_class is None:
            raise
        return metric_facts(per_class.group(1))


def metric_range(name: str) -> tuple[float, float]:
    """The interval a metric's values lie in (intervals are clipped to it)."""
    return facts_of(name).value_range


def lower_is_better(name: str) -> bool:
    """Whether smaller values of metric ``name`` are better (losses, ece)."""
    return not facts_of(name).higher_is_better


def report_metrics(task: str) -> list[str]:
    """Every metric ``report.metric`` may name for a task (per-class ones as ``recall_<k>``)."""
    return [f"{m.name}_<k>" if m.per_class else m.name for m in task_metrics(task)]


def is_report_metric(name: str, task: str) -> bool:
    """Whether runs of ``task`` record metric ``name`` (``recall_3``: class 3's recall)."""
    for m in task_metrics(task):
        if name == m.name and not m.per_class or m.per_class and re.fullmatch(rf"{m.name}_\d+", name):
            return True
    return False
