"""A sweep document's ``report:`` options and the metrics a report knows, defined once.

The options are validated twice by the same code: when the sweep is planned
(:func:`plan_report_options`, so a bad ``report.baseline`` fails before any cell
trains) and when a report is built from a sweep folder
(:func:`validate_report_options`, whose sweep.json may predate a rule).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError

from lossbench.config import StrictModel, describe_validation_error
from lossbench.errors import UserError

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
Epoch = Literal["best", "final"]
EPOCHS: tuple[str, ...] = get_args(Epoch)


def metric_range(name: str) -> tuple[float, float]:
    """The interval a metric's values lie in (intervals are clipped to it)."""
    return METRIC_RANGES.get(name, (0.0, 1.0))


def report_metrics(task: str) -> list[str]:
    """Every metric ``report.metric`` may name for a task (per-class ones as ``recall_<k>``)."""
    return [*TABLE_METRICS[task], "loss", *(f"{m}_<k>" for m in PER_CLASS_METRICS[task])]


def is_report_metric(name: str, task: str) -> bool:
    per_class = "|".join(PER_CLASS_METRICS[task])
    return name in TABLE_METRICS[task] or name == "loss" or re.fullmatch(rf"(?:{per_class})_\d+", name) is not None


def default_epoch(eval_split: str) -> str:
    """final on the test split (choosing the best epoch on test is tuning on it), else best."""
    return "final" if eval_split == "test" else "best"


class ReportOptions(StrictModel):
    """What the report of one sweep document compares, and at which epoch."""

    baseline: dict[str, Any] | None = Field(
        None, description="grid values of the configuration the others are compared with, e.g. {loss: ce}; "
        "default: the first configuration of the grid")
    metric: str | None = Field(None, description="metric compared with the baseline; default balanced_accuracy / miou")
    epoch: Epoch | None = Field(
        None, description="each run's best epoch or its final one; default final when data.eval_split is test, "
        "else best")
    posthoc_la: bool | None = Field(
        None, description="add a '+ post-hoc LA' row for each plain-CE configuration: its runs scored with "
        "logits - tau * log(training prior) (Menon et al. 2021), tau chosen on the held-out split "
        "(data.holdout: true), else the paper's tau = 1; classification only; default false")


class _Document(StrictModel):
    report: ReportOptions


def _parse(raw: Any, source: str) -> ReportOptions:
    if raw is None:
        return ReportOptions()
    if not isinstance(raw, dict):
        raise UserError(f"{source}: report: must be a mapping such as {{baseline: {{loss: ce}}}}")
    if raw.get("epoch") not in (None, *EPOCHS):
        raise UserError(f"{source}: report.epoch: {raw['epoch']!r}; use best (each run's best epoch) "
                        "or final (its last epoch)")
    try:
        return _Document.model_validate({"report": raw}).report
    except ValidationError as err:
        raise UserError(describe_validation_error(err, source, _Document)) from None


def _check_baseline(baseline: dict[str, Any] | None, grid: dict[str, list[Any]], source: str) -> None:
    for key, value in (baseline or {}).items():
        if key == "seed" or key not in grid:
            keys = ", ".join(k for k in grid if k != "seed") or "none besides seed"
            raise UserError(f"{source}: report.baseline: {key!r} is not a grid key of this document "
                            f"(grid keys: {keys}); name the baseline by grid values, e.g. {{loss: ce}}")
        if str(value) not in {str(v) for v in grid[key]}:
            raise UserError(f"{source}: report.baseline: {key}={value} names no configuration of the grid; "
                            f"{key} is one of {', '.join(str(v) for v in grid[key])}")


def validate_report_options(raw: Any, source: str, *, task: str, grid: dict[str, list[Any]]) -> ReportOptions:
    """The options of one document, each checked against its grid and task; one line naming the key if not."""
    options = _parse(raw, source)
    _check_baseline(options.baseline, grid, source)
    if options.posthoc_la and task != "classification":
        raise UserError(f"{source}: report.posthoc_la: post-hoc logit adjustment is for classification; this "
                        f"document trains {task} runs, remove report.posthoc_la")
    if options.metric is not None:
        name = options.metric.removeprefix("val_")
        if not is_report_metric(name, task):
            raise UserError(f"{source}: report.metric: {options.metric!r} is not a metric of {task} runs; "
                            f"choose one of {', '.join(report_metrics(task))}")
        options = options.model_copy(update={"metric": name})
    return options


def plan_report_options(raw: Any, source: str, *, task: str, grid: dict[str, list[Any]],
                        eval_split: str) -> dict[str, Any]:
    """:func:`validate_report_options` at plan time, with the epoch resolved; as sweep.json records it.

    Choosing each run's best epoch on the split its figures are measured on
    selects on the test set, so ``report.epoch: best`` with ``data.eval_split:
    test`` is refused.
    """
    options = validate_report_options(raw, source, task=task, grid=grid)
    if options.epoch == "best" and eval_split == "test":
        raise UserError(f"{source}: report.epoch: best picks each run's best epoch on the test split "
                        "(data.eval_split: test), which tunes on the test set; use report.epoch: final")
    options = options.model_copy(update={"epoch": options.epoch or default_epoch(eval_split)})
    return options.model_dump(mode="json", exclude_none=True)
