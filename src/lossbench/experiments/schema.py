"""The sweep file's schema, in one place: what a sweep document adds to an experiment config.

- ``grid:`` dotted config keys to lists of values (``"a, b"`` zips keys); the cells are the product
  (:func:`parse_grid`). The ``seed`` axis is a grid key like any other: ``seed: [0, 1, 2]``.
- ``report:`` what the report compares (:class:`ReportOptions`), checked when the sweep is planned
  (:func:`plan_report_options`) and again when a report is built from a sweep folder
  (:func:`validate_report_options`, whose sweep.json may predate a rule).
- ``tune:`` an equal tuning budget per configuration (:class:`TuneConfig`, run by
  :mod:`lossbench.experiments.tune`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator

from lossbench.config import StrictModel, describe_validation_error
from lossbench.errors import UserError
from lossbench.experiments.report_metrics import is_report_metric, report_metrics
from lossbench.experiments.study_design import StudyOptions, resolve_contrasts

Epoch = Literal["best", "final"]
EPOCHS: tuple[str, ...] = get_args(Epoch)

# ---------------------------------------------------------------- grid:


#: one entry of a grid: its config keys (several when zipped) and its rows of values, one value per key
GridEntry = tuple[tuple[str, ...], list[tuple[Any, ...]]]


def entry_rows(key: str, values: Any, path: Path) -> GridEntry:
    """One grid entry checked: ``loss: [ce, focal]`` is one key with one value a row; ``"a, b": [[1, 2], ...]``
    zips the keys like ``pytest.mark.parametrize``, so settings that belong together are not crossed."""
    if not isinstance(values, list) or not values:
        raise UserError(f"{path}: grid.{key}: must be a non-empty list of values, got {values!r}")
    keys = tuple(k.strip() for k in str(key).split(","))
    if len(keys) == 1:
        return keys, [(value,) for value in values]
    if not all(keys):
        raise UserError(f"{path}: grid.{key}: an empty key name; zip keys as \"a, b\"")
    for i, row in enumerate(values, 1):
        if not isinstance(row, list) or len(row) != len(keys):
            size = f"has {len(row)} value{'s' * (len(row) != 1)}" if isinstance(row, list) else "is not a list"
            raise UserError(f"{path}: grid.{key}: row {i} {row!r} {size} for {len(keys)} keys; "
                            f"give each row as [{', '.join(keys)}]")
    return keys, [tuple(row) for row in values]


#: the most cells one document's grid may expand to (each is a training run; 10 keys of 10 values would be 10^10)
MAX_CELLS = 10_000


def parse_grid(doc: dict[str, Any], path: Path) -> list[GridEntry]:
    """The document's ``grid:`` (removed from ``doc``) as entries; the cells are the product of the entries' rows.
    The ``seed`` axis is an entry like any other (``seed: [0, 1, 2]``)."""
    grid = doc.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise UserError(f"{path}: grid: must map config keys to lists, e.g. grid: {{loss: [ce, focal]}}")
    entries: list[GridEntry] = []
    named: dict[str, str] = {}
    for key, values in grid.items():
        keys, rows = entry_rows(key, values, path)
        for k in keys:
            if k in named:
                raise UserError(f"{path}: grid: {k} is named twice (in grid.{named[k]} and grid.{key}); "
                                "name each config key once")
            named[k] = str(key)
        entries.append((keys, rows))
    cells = math.prod(len(rows) for _, rows in entries)
    if cells > MAX_CELLS:
        sizes = " x ".join(str(len(rows)) for _, rows in entries)
        raise UserError(f"{path}: grid: {sizes} = {cells} cells, more than a sweep may hold ({MAX_CELLS}); "
                        "split it into several sweeps or drop values")
    return entries


def values_per_key(entries: list[GridEntry]) -> dict[str, list[Any]]:
    """Each config key of the grid with the values its cells take (a zipped key's column of its rows)."""
    return {k: [row[j] for row in rows] for keys, rows in entries for j, k in enumerate(keys)}


# ---------------------------------------------------------------- report:


def default_epoch(eval_split: str) -> str:
    """final on the test split (choosing the best epoch on test is tuning on it), else best."""
    return "final" if eval_split == "test" else "best"


class ReportOptions(StudyOptions):
    """What the report of one sweep document compares, and at which epoch (``margin`` and ``contrasts``:
    :class:`lossbench.experiments.study_design.StudyOptions`)."""

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


def _parse_report(raw: Any, source: str) -> ReportOptions:
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
    options = _parse_report(raw, source)
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


def baseline_label(baseline: dict[str, Any] | None, configurations: dict[str, dict[str, Any]]) -> str:
    """The label of the configuration ``report.baseline`` names; the first configuration without one."""
    for label, values in configurations.items() if baseline else []:
        if all(str(values.get(k)) == str(v) for k, v in baseline.items()):
            return label
    return next(iter(configurations), "")


def plan_report_options(raw: Any, source: str, *, task: str, grid: dict[str, list[Any]],
                        eval_split: str, configurations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """:func:`validate_report_options` at plan time, with the epoch resolved and the contrasts resolved to
    pairs of configuration labels (``configurations``: label -> grid values); as sweep.json records it.

    Choosing each run's best epoch on the split its figures are measured on
    selects on the test set, so ``report.epoch: best`` with ``data.eval_split:
    test`` is refused. A contrast naming no configuration is refused here, before any training; declared
    contrasts are recorded as pairs of configuration labels, the default (``baseline``) is not recorded.
    """
    options = validate_report_options(raw, source, task=task, grid=grid)
    if options.epoch == "best" and eval_split == "test":
        raise UserError(f"{source}: report.epoch: best picks each run's best epoch on the test split "
                        "(data.eval_split: test), which tunes on the test set; use report.epoch: final")
    pairs = resolve_contrasts(options.contrasts, baseline_label(options.baseline, configurations), configurations,
                              source, posthoc=bool(options.posthoc_la))
    update: dict[str, Any] = {"epoch": options.epoch or default_epoch(eval_split)}
    if options.contrasts != "baseline":
        update["contrasts"] = pairs  # recorded as configuration labels; the default stays "each against baseline"
    dropped = {"contrasts"} if options.contrasts == "baseline" else set()
    return options.model_copy(update=update).model_dump(mode="json", exclude_none=True, exclude=dropped)


# ---------------------------------------------------------------- tune:


#: keys a search space may not hold, and why
FIXED_KEYS = {
    "seed": "the seed is what the tuned settings are re-run over",
    "data.eval_split": "it decides the split trials are judged on (validation, or held out)",
    "data.holdout": "it decides the split trials are judged on (validation, or held out)",
    "name": "it names the run folder", "output_dir": "it places the run folder",
    "device": "it is not a hyper-parameter",
}


class Dimension(StrictModel):
    """One axis of a search space: a float or int range (``log: true`` samples its logarithm) or choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="sample log(value) uniformly (needs low > 0)")
    step: float | None = Field(None, gt=0, description="grid step of the range (not with log)")
    choices: list[str | int | float | bool | None] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Dimension":
        if self.type == "categorical":
            if self.choices is None or self.low is not None or self.high is not None:
                raise ValueError("categorical takes choices: [...] (and no low / high)")
            return self
        if self.low is None or self.high is None or self.choices is not None:
            raise ValueError(f"{self.type} takes low and high (and no choices)")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log: true needs low > 0 and no step")
        if self.type == "int" and any(v is not None and v != int(v) for v in (self.low, self.high, self.step)):
            raise ValueError("int takes whole numbers for low, high and step")
        return self

    def extremes(self) -> list[Any]:
        """The values that bound what a trial may get: low and high, or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def suggest(self, trial: Any, key: str) -> Any:
        if self.type == "float":
            return trial.suggest_float(key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(key, self.choices)


class TuneConfig(StrictModel):
    """A document's ``tune:`` section: the search space, the equal budget, and how trials are judged."""

    trials: int = Field(20, ge=1, description="trials per configuration: the budget every configuration gets")
    space: dict[str, Dimension] = Field(min_length=1, description="dotted config key (or loss.PARAM) -> dimension")
    metric: str | None = Field(None, description="validation metric; default report.metric, else the task's main one")
    direction: Literal["auto", "maximize", "minimize"] = Field("auto", description="auto: minimize losses and ece")
    epoch: Literal["best", "final"] | None = Field(None, description="objective at each trial's best or final epoch; "
                                                                    "default report.epoch")
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(None, ge=0, description="sampler and trial training seed; default one past the grid's "
                                                     "largest seed, so the re-runs use fresh seeds")
    pruner: Literal["median", "successive_halving", "none"] = Field("median", description="stops trials on the "
                                                                                          "per-epoch metric")
    startup_trials: int | None = Field(None, ge=0, description="trials sampled at random and never pruned; default "
                                                               "a quarter of trials, at least 2, at most 10")
    warmup_epochs: int = Field(1, ge=0, description="epochs every trial trains before it can be pruned")
    untuned: bool = Field(True, description="also run the grid untuned, for the report's side-by-side comparison")

    @field_validator("space", mode="before")
    @classmethod
    def _lists_are_choices(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: {"type": "categorical", "choices": d} if isinstance(d, list) else d for k, d in v.items()}
        return v


class _TuneSection(StrictModel):
    tune: TuneConfig


def check_tune(raw: Any, where: str) -> TuneConfig:
    try:
        return _TuneSection.model_validate({"tune": raw}).tune
    except ValidationError as err:
        raise UserError(describe_validation_error(err, where, _TuneSection)) from None


