"""Monitoring a metric across epochs: which epoch is best (best.pt) and when to stop early.

(Copies of the metrics for TensorBoard and MLflow are :mod:`lossbench.engine.trackers`.)

A metric is any metrics.csv column (``val_macro_f1``, ``val_iou_2``,
``val_loss``, ``train_loss``); a bare name means its validation value.
Which columns exist and whether each is maximized or minimized (``auto``
mode) come from the table of metric facts, :data:`lossbench.metrics.METRICS`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from lossbench.errors import UserError
from lossbench.metrics import MAIN_METRIC, METRICS, MetricFacts, metric_facts, task_metrics


def flat_metrics(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as metrics.csv columns: per-class lists become ``<prefix><name>_<class>``."""
    row: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "confusion_matrix":
            continue
        if isinstance(value, list):
            row.update({f"{prefix}{key}_{i}": v for i, v in enumerate(value)})
        else:
            row[f"{prefix}{key}"] = value
    return row


class MetricMonitor:
    """Best value of a metric so far and epochs since it improved by more than ``min_delta``."""

    def __init__(self, name: str, mode: str, min_delta: float = 0.0) -> None:
        self.name, self.mode, self.min_delta = name, mode, min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def update(self, value: float) -> bool:
        """Record an epoch's value; True when it is the new best (the first value always is; NaN never wins)."""
        if self.best is None:
            improved = True
        elif math.isnan(value):
            improved = False
        elif math.isnan(self.best):
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


def metric_columns(facts: MetricFacts, prefix: str, num_classes: int) -> list[str]:
    """The metrics.csv columns of one metric: ``<prefix><name>``, or one per class ``<prefix><name>_<k>``."""
    if facts.per_class:
        return [f"{prefix}{facts.name}_{k}" for k in range(num_classes)]
    return [f"{prefix}{facts.name}"]


def metric_names(task: str, num_classes: int) -> list[str]:
    """Every column of metrics.csv a monitor may watch: the training loss and main metric, every validation metric."""
    val = [column for facts in task_metrics(task) for column in metric_columns(facts, "val_", num_classes)]
    return ["train_loss", f"train_{MAIN_METRIC[task]}", *val]


def resolve_metric(name: str, names: list[str], key: str) -> str:
    """``name`` as a metrics.csv column; a bare name means its validation value (``miou`` -> ``val_miou``)."""
    for candidate in (name, f"val_{name}"):
        if candidate in names:
            return candidate
    raise UserError(f"{key}: unknown metric {name!r}; choose one of {', '.join(names)}")


def column_facts(column: str) -> MetricFacts:
    """The facts of the metric a metrics.csv column holds (``val_recall_3`` -> recall, ``train_loss`` -> loss)."""
    name = re.sub(r"^(?:train|val)_", "", column)
    per_class = re.fullmatch(r"(.+)_\d+", name)
    if per_class and name not in {m.name for m in METRICS}:
        name = per_class.group(1)
    return metric_facts(name)


def metric_mode(name: str, mode: str) -> str:
    """``auto``: ``max`` for a metric whose higher values are better, ``min`` otherwise (losses, ece)."""
    if mode != "auto":
        return mode
    return "max" if column_facts(name).higher_is_better else "min"
