"""When a run writes its checkpoints: ``last.pt`` every ``checkpoint_every`` epochs and after its last epoch,
a new ``best.pt`` together with the next ``last.pt``; ``metrics.csv`` every epoch.

How a file is written (temp file, fsync, rename; a new best.pt committed only after the last.pt that
names it) is :func:`lossbench.engine.runfolder.save_epoch`'s business; this module only decides when.
A best epoch that falls between two checkpoints is kept in memory (a copy of its weights) until the
next one, so best.pt and last.pt on disk always agree. A kill loses the epochs since the last
checkpoint, best included; the resume trains them again bit for bit and finds the same best.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lossbench.engine import runfolder


def _copied(best: dict[str, Any]) -> dict[str, Any]:
    """``best`` with its weights cloned: the live tensors move on with the next epoch's training."""
    return {**best, "model": {k: v.detach().clone() for k, v in best["model"].items()}}


class CheckpointSchedule:
    """Which epochs write ``last.pt``: every ``every``-th, the run's last (``epochs``) and an early stop's."""

    def __init__(self, every: int, epochs: int) -> None:
        self.every, self.epochs = every, epochs
        self._held: dict[str, Any] | None = None

    def is_due(self, epoch: int, stopped_early: bool) -> bool:
        return epoch % self.every == 0 or epoch >= self.epochs or stopped_early

    def best_to_write(self, best: dict[str, Any] | None, due: bool) -> dict[str, Any] | None:
        """The best.pt content to write with this epoch's last.pt (``due``), else None while a new ``best``
        (the epoch's, or None) is held for the next checkpoint."""
        if best is not None:
            self._held = best if due else _copied(best)
        if not due:
            return None
        best, self._held = self._held, None
        return best


def write_epoch(run_dir: Path, rows: list[dict[str, Any]], last: dict[str, Any] | None,
                best: dict[str, Any] | None) -> None:
    """The epoch's files: metrics.csv, and with ``last`` (a checkpoint epoch) last.pt and any best.pt held."""
    if last is not None:
        runfolder.save_epoch(run_dir, rows, last, best)
    else:
        runfolder.write_csv(run_dir / "metrics.csv", rows)
