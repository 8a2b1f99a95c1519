"""A training run's state: everything that decides its next epoch, and how ``last.pt`` holds it.

:class:`RunState` is what :mod:`lossbench.engine.fit` steps and checkpoints.
On the CPU a run resumed from its ``last.pt`` ends bit for bit where an
uninterrupted one does, because the checkpoint holds every input of the next
epoch: weights, optimizer, scheduler, fp16 scaler, EMA, the RNG states of
Python, NumPy, torch and the loader of every rank, the best-epoch and
early-stopping monitors, and the metric rows so far.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossbench.engine import runfolder
from lossbench.engine.monitor import MetricMonitor
from lossbench.engine.optim import Scheduler
from lossbench.engine.rng import set_rng_state
from lossbench.errors import UserError

#: what last.pt must hold for an exact resume
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "scaler", "ema", "epoch", "stage", "stopped_early",
                             "rng", "best_tracker", "stopper", "rows", "best", "best_cm"})
#: what a checkpoint that does not fit the run's config raises while it is loaded
_MISFIT = (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError)


def read_last_checkpoint(path: Path) -> dict[str, Any]:
    """The content of a run's ``last.pt``; a UserError when it is unreadable or not a lossbench checkpoint."""
    try:
        checkpoint = runfolder.load_checkpoint(path)
    except Exception as exc:  # a truncated or foreign file: say which and stop
        raise UserError(f"{path}: cannot read the checkpoint ({exc.__class__.__name__}); it cannot be resumed") \
            from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEYS - set(checkpoint):
        what = (f"missing {', '.join(sorted(CHECKPOINT_KEYS - set(checkpoint)))}" if isinstance(checkpoint, dict)
                else f"it holds a {type(checkpoint).__name__}")
        raise UserError(f"{path}: not a lossbench training checkpoint ({what}); it cannot be resumed, "
                        "train the run again with --overwrite")
    return checkpoint


@contextlib.contextmanager
def _restoring(path: Path) -> Iterator[None]:
    """Turn a checkpoint that does not fit the model or optimizer built from config.yaml into one UserError."""
    try:
        yield
    except _MISFIT as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise UserError(f"{path}: checkpoint does not fit this run's config.yaml ({first}); it cannot be resumed, "
                        "train the run again with --overwrite") from None


@dataclass
class RunState:
    """The model's objects and the run's progress: what ``last.pt`` saves and a resume restores.

    ``model``, ``ema`` and ``scaler`` live for the whole run; ``optimizer``
    and ``scheduler`` are the current stage's. ``epoch`` epochs are done, the
    last of them in stage ``stage``; ``rows`` are metrics.csv's; ``best``
    holds the best epoch's metrics and ``best_cm`` its confusion matrix, as
    chosen by ``best_monitor`` (None: nothing is chosen, they follow the final epoch); ``final_cm`` is the last epoch's confusion matrix; ``stopper`` watches for early stopping.
    """

    model: nn.Module
    generators: list[torch.Generator]
    best_monitor: MetricMonitor | None
    stopper: MetricMonitor | None = None
    ema: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Scheduler | None = None
    epoch: int = 0
    stage: int | None = None
    stopped_early: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None})
    best_cm: list[list[int]] | None = None
    final_cm: list[list[int]] | None = None

    def checkpoint(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """What ``last.pt`` holds after the current epoch; ``rng`` is every rank's RNG state, in rank order."""
        def state_of(obj: Any) -> Any:
            return obj.state_dict() if obj is not None else None

        return {
            "model": self.model.state_dict(), "optimizer": state_of(self.optimizer),
            "scheduler": state_of(self.scheduler), "scaler": state_of(self.scaler), "ema": state_of(self.ema),
            "epoch": self.epoch, "stage": self.stage, "stopped_early": self.stopped_early, "rng": rng,
            "best_tracker": state_of(self.best_monitor), "stopper": state_of(self.stopper),
            "rows": self.rows, "best": self.best, "best_cm": self.best_cm,
            "final_cm": self.final_cm,
        }

    def restore(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Take the run-wide part of ``checkpoint`` (read from ``path``): weights, EMA, scaler, monitors, progress."""
        with _restoring(path):
            self.model.load_state_dict(checkpoint["model"])
            if self.ema is not None:
                self.ema.load_state_dict(checkpoint["ema"])
            if self.scaler is not None:
                self.scaler.load_state_dict(checkpoint["scaler"])
            if self.best_monitor is not None and checkpoint["best_tracker"] is not None:
                self.best_monitor.load_state_dict(checkpoint["best_tracker"])
            if self.stopper is not None and checkpoint.get("stopper") is not None:
                self.stopper.load_state_dict(checkpoint["stopper"])
            self.rows, self.best, self.best_cm = list(checkpoint["rows"]), dict(checkpoint["best"]), checkpoint["best_cm"]
            self.final_cm = checkpoint.get("final_cm")  # absent from checkpoints written before it was kept
            self.epoch, self.stopped_early, self.stage = checkpoint["epoch"], checkpoint["stopped_early"], checkpoint["stage"]
        evaluated = [row for row in self.rows if "val_loss" in row]  # eval_every may skip epochs
        for monitor in (m for m in (self.best_monitor, self.stopper) if m is not None and evaluated):
            if monitor.name not in evaluated[-1]:  # e.g. a run that chose on the test split before holdout_* existed
                raise UserError(f"{path}: the run's recorded epochs have no {monitor.name} column to choose on; it "
                                "cannot be resumed, train it again with --overwrite")

    def restore_stage(self, checkpoint: dict[str, Any], path: Path, index: int, rank: int) -> None:
        """Take the part of ``checkpoint`` for the first stage a resume runs (stage ``index``): the optimizer and
        scheduler when the checkpoint was written in that stage, and this rank's RNG states."""
        with _restoring(path):
            if self.stage == index:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
                if self.scheduler is not None:
                    self.scheduler.load_state_dict(checkpoint["scheduler"])
            set_rng_state(checkpoint["rng"][min(rank, len(checkpoint["rng"]) - 1)], self.generators)

    def record_best(self, epoch: int, row: dict[str, Any], confusion: list[list[int]] | None, main: str,
                    model: nn.Module, selected_on: str | None = None) -> dict[str, Any] | None:
        """Offer the epoch's ``row`` to the best-epoch monitor; the content of a new best.pt, or None.

        ``confusion`` is the epoch's confusion matrix (None for sigmoid
        outputs), ``model`` the network evaluated (the EMA when there is one); best.pt records ``selected_on``, the split
        it was chosen on. Without a monitor nothing is
        chosen: the epoch's values are kept (the final epoch's, at the end) and no best.pt is written.
        """
        values = {k: v for k, v in row.items() if k.startswith(("val_", "holdout_"))}
        if self.best_monitor is None:
            self.best, self.best_cm = {"epoch": epoch, **values, main: row[f"val_{main}"]}, confusion
            return None
        name = self.best_monitor.name
        if not self.best_monitor.update(row[name]):
            return None
        self.best = {"epoch": epoch, **values, main: row[f"val_{main}"], name: row[name]}
        self.best_cm = confusion
        return {"model": model.state_dict(), "epoch": epoch, name: row[name], "selected_on": selected_on}

    def record_stopping(self, row: dict[str, Any], patience: int) -> None:
        """Offer the epoch's ``row`` to the early-stopping monitor (if any); set ``stopped_early``."""
        if self.stopper is not None:
            self.stopper.update(row[self.stopper.name])
            self.stopped_early = self.stopper.bad_epochs >= patience
