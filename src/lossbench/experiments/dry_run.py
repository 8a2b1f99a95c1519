"""``lossbench sweep --dry-run``: the plan, each cell's state, and what running it would cost, from finished cells.

Nothing is trained or written. The estimate is per document (its cells are alike): the mean training time
its finished cells recorded (``wall_seconds`` of their summary.json) times its cells left, spread over the
cells run at a time; a document with no finished cell has no estimate, said so. Process start-up, data
set-up and the report come on top.
"""

from __future__ import annotations

import math
from collections import defaultdict

from lossbench.engine import runfolder
from lossbench.experiments.cells import cell_status
from lossbench.experiments.plan import Cell, SweepPlan
from lossbench.experiments.progress import clock_text


def recorded_seconds(cell: Cell) -> float | None:
    """The training seconds a finished cell's summary.json recorded, if it holds a finite number."""
    try:
        seconds = float(runfolder.read_summary(cell.run_dir).get("wall_seconds"))
    except Exception:  # noqa: BLE001 - a damaged or older summary: no figure from this cell
        return None
    return seconds if math.isfinite(seconds) else None


def dry_run_lines(plan: SweepPlan, jobs: int) -> list[str]:
    """What ``lossbench sweep --dry-run`` prints: a header, one line per cell (its state, its recorded seconds when
    finished), then the estimate of what is left."""
    seconds: dict[str, list[float]] = defaultdict(list)
    left: dict[str, int] = defaultdict(int)
    lines = []
    for cell in plan.cells:
        status = cell_status(cell, plan.memo)[0]
        took = recorded_seconds(cell) if status == "done" else None
        if took is not None:
            seconds[cell.document].append(took)
        left[cell.document] += status != "done"
        lines.append(f"  {status:<8} {cell.name}" + (f" ({took:.1f}s)" if took is not None else ""))
    todo = sum(left.values())
    header = (f"sweep {plan.sweep_dir} (dry run): {len(plan.cells)} cells, {len(plan.cells) - todo} done, "
              f"{todo} to run, {jobs} at a time")
    return [header, *lines, *estimate_lines(seconds, left, jobs)]


def estimate_lines(seconds: dict[str, list[float]], left: dict[str, int], jobs: int) -> list[str]:
    """The estimate: per document with cells left, its mean recorded seconds times those cells; then the total."""
    if not any(left.values()):
        return ["estimate: nothing left to run"]
    lines, total = [], 0.0
    for document, count in left.items():
        if count and seconds[document]:
            mean = sum(seconds[document]) / len(seconds[document])
            total += mean * count
            lines.append(f"  {document}: {count} cells left x {mean:.1f}s (mean of {len(seconds[document])} finished)")
        elif count:
            lines.append(f"  {document}: {count} cells left, none finished yet: not counted")
    if total == 0:
        return ["estimate: none yet, no finished cell of a document with cells left", *lines]
    return [f"estimate: about {clock_text(total / jobs)} of training at {jobs} at a time "
            "(plus start-up, data set-up and the report)", *lines]
