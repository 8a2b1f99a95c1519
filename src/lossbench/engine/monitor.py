"""Monitoring a metric across epochs: which epoch is best (best.pt) and when to stop early.

(Copies of the metrics for TensorBoard and MLflow are :mod:`lossbench.engine.trackers`.)

A metric is any metrics.csv column (``val_macro_f1``, ``val_iou_2``,
``val_loss``, ``train_loss``); a bare name means its validation value.
Losses are minimized and everything else maximized unless a mode says otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lossbench.errors import UserError
from lossbench.metrics import MAIN_METRIC, SHOT_METRICS, metrics_from_confusion


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


def metric_names(task: str, num_classes: int) -> list[str]:
    """Every column of metrics.csv a tracker may watch."""
    main = MAIN_METRIC[task]
    val = flat_metrics("val_", metrics_from_confusion(torch.eye(num_classes), task))
    shots = [f"val_{name}" for name in SHOT_METRICS] if task == "classification" else []
    return ["train_loss", f"train_{main}", "val_loss", *val, *shots]


def resolve_metric(name: str, names: list[str], key: str) -> str:
    """``name`` as a metrics.csv column; a bare name means its validation value (``miou`` -> ``val_miou``)."""
    for candidate in (name, f"val_{name}"):
        if candidate in names:
            return candidate
    raise UserError(f"{key}: unknown metric {name!r}; choose one of {', '.join(names)}")


def metric_mode(name: str, mode: str) -> str:
    """``auto``: losses are minimized, every other metric maximized."""
    return mode if mode != "auto" else ("min" if name.endswith("loss") else "max")
