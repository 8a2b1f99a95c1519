"""What a run chooses (best.pt, early stopping, the plateau scheduler) and on which split: never the test split.

The split a run chooses on (:func:`selection_split`):

- ``data.eval_split: val``: the validation split evaluated every epoch (metrics.csv's ``val_*`` columns);
- ``data.eval_split: test`` with ``data.holdout: true``: the held-out split, evaluated every epoch beside the
  test split when something is chosen on it (``holdout_*`` columns; ``val_*`` are then the test split's);
- ``data.eval_split: test`` without a holdout: none. Nothing is chosen: ``best_metric``,
  ``early_stopping`` and ``scheduler: plateau`` on a test-split column are refused in one line naming the
  key, no best.pt is written, and the run's "best" values are those of its final epoch.

A bare metric name means its value on the selection split (``macro_f1`` -> ``val_macro_f1`` or
``holdout_macro_f1``); ``train_*`` columns may be watched anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from lossbench.config import DataConfig, Experiment
from lossbench.data import DataBundle
from lossbench.engine.monitor import MetricMonitor, metric_mode, metric_names
from lossbench.errors import UserError
from lossbench.metrics import MAIN_METRIC

#: the metrics.csv prefix of each split a run can choose on
PREFIXES = {"val": "val_", "holdout": "holdout_"}


def selection_split(data: DataConfig) -> str | None:
    """``"val"``, ``"holdout"`` or None: the split a run with this data section may choose on (the module says)."""
    if data.eval_split == "val":
        return "val"
    return "holdout" if data.holdout else None


def evaluated_split(data: DataConfig) -> str:
    """The true name of the split evaluated every epoch (metrics.csv's ``val_*`` columns): val or test."""
    return "test" if data.eval_split == "test" else "val"


def recorded_selection_split(best_meta: dict[str, Any], data: DataConfig) -> str:
    """The split a run's best.pt was chosen on: as best.pt records it, else (runs trained before it did) the
    split evaluated every epoch, which was the test split under ``eval_split: test``."""
    return best_meta["selected_on"] if "selected_on" in best_meta else evaluated_split(data)


def _direction(column: str, mode: str) -> str:
    """:func:`metric_mode` of a column: a held-out split's column goes the way of its validation twin."""
    return metric_mode(f"val_{column.removeprefix('holdout_')}" if column.startswith("holdout_") else column, mode)


@dataclass(frozen=True)
class Selection:
    """The metrics.csv columns a run chooses with, all off the test split.

    ``split``: :func:`selection_split`; ``best``: the column choosing best.pt (None: nothing is chosen, the
    final epoch is reported); ``stopper``: early stopping's column; ``monitors``: each stage's plateau
    column (None for other schedulers).
    """

    split: str | None
    best: str | None
    stopper: str | None
    monitors: tuple[str | None, ...]

    def best_monitor(self, exp: Experiment) -> MetricMonitor | None:
        """The monitor choosing best.pt (None when nothing is chosen)."""
        return MetricMonitor(self.best, _direction(self.best, exp.best_mode)) if self.best is not None else None

    def stopper_monitor(self, exp: Experiment) -> MetricMonitor | None:
        """The monitor of ``early_stopping`` (None without it)."""
        es = exp.early_stopping
        if es is None or self.stopper is None:
            return None
        return MetricMonitor(self.stopper, _direction(self.stopper, es.mode), es.min_delta)

    def plateau_mode(self, index: int, exp: Experiment) -> str:
        """Whether stage ``index``'s plateau scheduler maximizes or minimizes its column ("max" without one)."""
        column = self.monitors[index]
        if column is None:
            return "max"
        return _direction(column, exp.best_mode if column == self.best else "auto")

    @staticmethod
    def holdout_loader(data: DataBundle, exp: Experiment) -> DataLoader:
        """The held-out split in order, as the engine evaluates it every epoch."""
        return DataLoader(data.holdout, batch_size=exp.batch_size, shuffle=False, num_workers=exp.data.num_workers)

    @property
    def chosen_on(self) -> str | None:
        """The split best.pt is chosen on (val, holdout or train, from its column), None when nothing is chosen;
        what summary.json and best.pt record as ``selected_on``."""
        return None if self.best is None else self.best.split("_", 1)[0]

    @property
    def evaluates_holdout(self) -> bool:
        """Whether the held-out split must be evaluated every epoch (something is chosen on it)."""
        return any(c is not None and c.startswith("holdout_") for c in (self.best, self.stopper, *self.monitors))


def column_names(task: str, num_classes: int, split: str | None) -> list[str]:
    """metrics.csv's columns: :func:`metric_names`, plus the held-out split's when the run chooses on it."""
    names = metric_names(task, num_classes)
    if split == "holdout":
        names += [f"holdout_{n.removeprefix('val_')}" for n in names if n.startswith("val_")]
    return names


def _column(name: str, split: str | None, names: list[str] | None) -> str | None:
    """``name`` as a metrics.csv column (a bare name on the selection split); None when ``names`` lacks it.
    Without ``names`` (before the data is read) the column is inferred from the name alone."""
    prefixed = f"{PREFIXES.get(split or '', 'val_')}{name}"
    if names is None:
        return name if name.startswith(("train_", "val_", "holdout_")) else prefixed
    return next((c for c in (name, prefixed) if c in names), None)


def _resolve(exp: Experiment, name: str, key: str, split: str | None, names: list[str] | None) -> str:
    """``name`` as a column off the test split; one line naming ``key`` when it is unknown or on the test split."""
    column = _column(name, split, names)
    if column is None:
        choices = ", ".join(n for n in names or () if not (exp.data.eval_split == "test" and n.startswith("val_")))
        raise UserError(f"{exp.where(key)}: unknown metric {name!r}; choose one of {choices}")
    if exp.data.eval_split == "test" and column.startswith("val_"):
        fix = (f"use holdout_{column.removeprefix('val_')}" if split == "holdout" else
               "set data.holdout: true to choose on a held-out split, or remove it")
        raise UserError(f"{exp.where(key)}: {name} is measured on the test split here (data.eval_split: test), "
                        f"and nothing may be chosen on it; {fix}")
    return column


def plan_selection(exp: Experiment, num_classes: int | None) -> Selection:
    """The columns of :class:`Selection` for ``exp``; a key that would choose on the test split is refused.

    ``num_classes`` None (the data not read yet) checks only the split of each column, not that it exists.
    """
    split = selection_split(exp.data)
    names = column_names(exp.task, num_classes, split) if num_classes is not None else None
    main = MAIN_METRIC[exp.task]
    best = None
    if split is not None or exp.best_metric is not None:
        best = _resolve(exp, exp.best_metric or main, "best_metric", split, names)
    stopper = None
    if exp.early_stopping is not None:
        metric = exp.early_stopping.metric or exp.best_metric or main
        key = "early_stopping.metric" if exp.early_stopping.metric else "early_stopping"
        stopper = _resolve(exp, metric, key, split, names)
    monitors = []
    for i in range(len(exp.resolved_stages())):
        sched = exp.stage_scheduler(i)
        key = f"stages.{i}.scheduler" if exp.stages else "scheduler"
        if sched.name == "plateau":
            monitors.append(_resolve(exp, sched.monitor or best or main,
                                     f"{key}.monitor" if sched.monitor else f"{key}: plateau", split, names))
        else:
            if sched.monitor is not None:  # unused, but a typo is still one
                _resolve(exp, sched.monitor, f"{key}.monitor", split, names)
            monitors.append(None)
    return Selection(split, best, stopper, tuple(monitors))


def best_line(summary: dict[str, Any]) -> str:
    """The console's last line about a run: its best epoch and where it was chosen, or its final epoch."""
    best, name, main = summary["best"], summary.get("best_metric"), summary.get("main_metric")
    where = summary.get("selected_on", "val")
    if name is None:
        value = best.get(f"val_{main}", float("nan"))
        return (f"{summary['name']}: final test {main} {value:.4f} at epoch {best['epoch']}; nothing chosen "
                f"(data.eval_split: test without data.holdout, no best.pt) -> {summary['run_dir']}")
    line = f"{summary['name']}: best {name} {best[name]:.4f} at epoch {best['epoch']}"
    if where == "holdout" and f"val_{main}" in best:
        line += f" (chosen on the holdout split; test {main} there {best[f'val_{main}']:.4f})"
    return f"{line} -> {summary['run_dir']}"


def figure_title(exp: Experiment, epoch: int | None, best: str | None) -> str:
    """The title of a run's confusion_matrix.png: the split it shows, its epoch and how that epoch was chosen."""
    split = evaluated_split(exp.data)
    if best is None:
        return f"{exp.name}: {split}, final epoch {epoch} (nothing chosen on the test split)"
    return f"{exp.name}: {split}, epoch {epoch} (best {best})"
