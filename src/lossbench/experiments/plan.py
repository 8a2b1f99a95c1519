"""Planning a sweep: every document's grid expanded into validated cells before anything runs.

A sweep config is an experiment config (one or more ``---`` documents) with the
sections of :mod:`lossbench.experiments.schema`: a ``grid:`` whose product gives
the cells, and optional ``report:`` and ``tune:`` sections. Each cell is a normal
run folder inside the sweep folder (:mod:`lossbench.experiments.layout` names it).
Cells of a source whose images are worth caching once share them through the
data cache (``data.cache`` is turned on in a sweep unless the config sets it).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.config import Experiment, apply_overrides, document_name, read_documents, set_key, validate_experiment
from lossbench.errors import UserError
from lossbench.experiments.layout import cell_name
from lossbench.experiments.schema import GridEntry, parse_grid, plan_report_options, values_per_key
from lossbench.experiments.study import configuration_label
from lossbench.experiments.study_design import SeedRange, parse_seed_entry


@dataclass
class Cell:
    """One grid point of one experiment document: its run folder name, grid values and config."""

    name: str
    document: str
    values: dict[str, Any]
    experiment: Experiment

    @property
    def run_dir(self) -> Path:
        return self.experiment.run_dir


@dataclass
class SweepPlan:
    """Every cell of a sweep config, with the report options it carries."""

    sweep_dir: Path
    cells: list[Cell]
    grid_keys: list[str]
    report: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] = field(default_factory=dict)  # document -> its raw ``tune:`` section (experiments/tune.py)
    source: Path | None = None
    memo: dict[str, Any] = field(default_factory=dict)  # of changed_setting: data identities, recorded configs
    sequential: dict[str, dict[str, int]] = field(default_factory=dict)  # document -> its seed: {min, max}


def shares_cache(exp: Experiment) -> bool:
    """Whether the experiment's source declares its images worth caching once for every cell (decoded or
    generated)."""
    from lossbench.data import SOURCES

    return exp.data.source in SOURCES and SOURCES.get(exp.data.source).shares_cache


def with_shared_cache(exp: Experiment) -> Experiment:
    """``exp`` with ``data.cache`` on when its source shares a cache and the config left the key unset."""
    if "cache" in exp.data.model_fields_set or not shares_cache(exp):
        return exp
    return exp.model_copy(update={"data": exp.data.model_copy(update={"cache": True})})


def plan_cells(doc: dict[str, Any], document: str, grid: list[GridEntry], root: Path, path: Path) -> list[Cell]:
    """A document's cells: one validated experiment per row of the grid's product."""
    from lossbench.engine.selection import plan_selection
    from lossbench.plugins import load_experiment_code

    cells = []
    for combo in itertools.product(*(rows for _, rows in grid)):
        values = {k: v for (entry_keys, _), row in zip(grid, combo) for k, v in zip(entry_keys, row)}
        raw = copy.deepcopy(doc)
        for key, value in values.items():
            set_key(raw, key, value)
        name = cell_name(document, values)
        raw["name"], raw["output_dir"] = name, str(root)
        exp = with_shared_cache(validate_experiment(raw, f"{path} (cell {name})"))
        load_experiment_code(exp)  # a bad plugin or a typo in a grid's loss stops the sweep before any cell runs
        plan_selection(exp, None)  # so does choosing anything on the test split
        cells.append(Cell(name, document, values, exp))
    return cells


def _sequential_seeds(doc: dict[str, Any], path: Path) -> SeedRange | None:
    """A grid's ``seed: {min, max}`` (None for a list or no seed): the grid then lists every seed a configuration
    may run, 0 .. max - 1, and the sweep runs them in rounds (:mod:`lossbench.experiments.study`)."""
    grid = doc.get("grid")
    if not isinstance(grid, dict) or not isinstance(grid.get("seed"), dict):
        return None
    seeds = parse_seed_entry(grid["seed"], str(path))
    grid["seed"] = seeds.seeds
    return seeds


def plan_sweep(path: str | Path, overrides: list[str] | None = None, sweep_dir: str | Path | None = None) -> SweepPlan:
    """Expand every document's grid into validated cells (all errors surface before anything runs)."""
    path = Path(path)
    docs = read_documents(path)
    plan = SweepPlan(Path(sweep_dir) if sweep_dir else None, [], [], source=path)
    for i, doc in enumerate(docs):
        doc = apply_overrides(doc, list(overrides or []))
        seeds = _sequential_seeds(doc, path)
        grid = parse_grid(doc, path)
        doc_report = doc.pop("report", None)
        document = document_name(doc, path, i, len(docs))
        if (section := doc.pop("tune", None)) is not None:  # checked and run by experiments/tune.py
            plan.tune[document] = section
        if plan.sweep_dir is None:
            plan.sweep_dir = Path(doc.get("output_dir") or Experiment.model_fields["output_dir"].default) / path.stem
        keys = [k for entry_keys, _ in grid for k in entry_keys]
        plan.grid_keys += [k for k in keys if k not in plan.grid_keys]
        cells = plan_cells(doc, document, grid, plan.sweep_dir, path)
        plan.cells += cells
        on_test = any(c.experiment.data.eval_split == "test" for c in cells)
        configurations = {configuration_label(c.values, document): {k: v for k, v in c.values.items() if k != "seed"}
                          for c in cells}
        plan.report[document] = plan_report_options(doc_report, str(path), task=cells[-1].experiment.task,
                                                    grid=values_per_key(grid),
                                                    eval_split="test" if on_test else "val",
                                                    configurations=configurations)
        if seeds is not None:
            plan.sequential[document] = {"min": seeds.min, "max": seeds.max}
    names = [c.name for c in plan.cells]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: two documents give the same cell names; give each document its own name:")
    return plan
