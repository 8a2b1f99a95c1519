"""A sweep folder's tables: ``results.csv`` (one row per cell) and ``sweep.json`` (cells, grid keys, report
options by document name), written as cells end and read by the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.cells import cell_status
from lossbench.experiments.layout import RESULTS_CSV, SWEEP_JSON
from lossbench.experiments.plan import SweepPlan
from lossbench.experiments.study import given_cells


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k.removeprefix('val_')}": v for k, v in metrics.items() if not isinstance(v, (list, dict))}


def collect_results(plan: SweepPlan) -> list[dict[str, Any]]:
    """One row per cell: grid values, status, error, best and final metrics. A document with sequential seeds
    has rows only for the seeds its rounds have given so far, each saying how many seeds its configuration got
    and why it stopped (:func:`lossbench.experiments.study.given_cells`)."""
    return given_cells(plan, _all_rows(plan))


def _all_rows(plan: SweepPlan) -> list[dict[str, Any]]:
    rows = []
    for cell in plan.cells:
        status, error = cell_status(cell, plan.memo)
        row: dict[str, Any] = {"cell": cell.name, "document": cell.document, "task": cell.experiment.task,
                               "status": status, "error": error, "seed": cell.experiment.seed}
        row.update({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in cell.values.items()})
        if status == "done":
            summary = runfolder.read_summary(cell.run_dir)
            row["main_metric"] = summary["main_metric"]
            row["best_epoch"] = summary["best"].get("epoch")
            row.update(_flat("best_", summary["best"]))
            row.update(_flat("final_", summary["final"]))
            row["wall_seconds"] = round(summary.get("wall_seconds", float("nan")), 2)
        rows.append(row)
    return rows


def write_results(plan: SweepPlan) -> Path:
    """results.csv (one row per cell) and sweep.json (cells, grid keys, report options) of the plan."""
    path = plan.sweep_dir / RESULTS_CSV
    runfolder.write_csv(path, collect_results(plan))
    runfolder.write_json(plan.sweep_dir / SWEEP_JSON, {
        "grid_keys": plan.grid_keys, "report": plan.report, "sequential": plan.sequential,
        "cells": [{"name": c.name, "document": c.document, "values": c.values} for c in plan.cells],
    })
    return path


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_sweep(sweep_dir: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A sweep folder's sweep.json and results.csv rows."""
    meta_path, results_path = sweep_dir / SWEEP_JSON, sweep_dir / RESULTS_CSV
    if not meta_path.is_file() or not results_path.is_file():
        raise UserError(f"{sweep_dir}: not a sweep folder (no sweep.json / results.csv); run `lossbench sweep` first")
    meta = runfolder.read_json_record(meta_path, "run `lossbench sweep` on its config again to rewrite it "
                                                 "(finished cells are kept)")
    return meta, read_results(results_path)
