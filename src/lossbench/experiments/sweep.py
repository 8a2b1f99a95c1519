"""Sweeps: expand a config's ``grid:`` into cells, run each as its own process, collect results.

A sweep config is an experiment config (one or more ``---`` documents) with a
``grid:`` mapping of dotted config keys to lists, and an optional ``report:``
mapping (``baseline: {loss: ce}``). The product of the lists gives the cells;
each cell is a normal run folder inside the sweep folder, trained by a
``lossbench train`` subprocess, so a crash, NaN or out-of-memory in one cell
is recorded as that cell's one-line error while the others go on. Where those
processes run is the backend's business (experiments/backends.py: this
machine's pool, or Ray tasks on a cluster).

Re-running a sweep skips finished cells (``summary.json``) whose run folder
recorded exactly what the sweep would run now (the experiment of
``config.yaml`` and the identity of its data's files,
:func:`lossbench.data.cache.data_identity`); a finished cell trained on
another config or other data stops the sweep in one line naming the cell and
what changed, unless ``rerun_changed`` (``--rerun-changed``) trains it again.
It continues unchanged cells that were interrupted mid-run (``last.pt`` but no
summary) with ``train --resume``, and retries failed and changed cells from
the start. A lock file
keeps two sweeps from writing one folder. Cells of a file-based source share
the decoded images through the data cache (``data.cache`` defaults to true in
a sweep unless the config sets it).
"""

from __future__ import annotations

import copy
import csv
import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.config import (
    RECORDED_KEYS, Experiment, document_name, load_run_config, read_documents, set_key, validate_experiment,
)
from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.backends import LocalBackend
from lossbench.experiments.report_options import plan_report_options

LOCK_NAME = ".sweep.lock"
STOP_POLL_SECONDS = 0.5  # how often a cell that may be stopped (a tuning trial) looks for its stop file


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


def _slug(values: dict[str, Any]) -> str:
    text = "__".join(f"{k.split('.')[-1]}-{v}" for k, v in values.items()) or "base"
    text = re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")[:80]
    digest = hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{text}-{digest}"


def _grid(doc: dict[str, Any], path: Path) -> list[tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
    """The grid's entries as (config keys, rows of values); the cells are the product of the entries' rows.

    A plain key (``loss: [ce, focal]``) is one key with one value a row. A key
    naming several config keys, comma-separated, zips them like
    ``pytest.mark.parametrize``: ``"loss, drw_epoch": [[ce, null], [ce, 7]]``
    is two rows, so settings that belong together are not crossed.
    """
    grid = doc.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise UserError(f"{path}: grid: must map config keys to lists, e.g. grid: {{loss: [ce, focal]}}")
    entries: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
    named: dict[str, str] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: grid.{key}: must be a non-empty list of values, got {values!r}")
        keys = tuple(k.strip() for k in str(key).split(","))
        if len(keys) == 1:
            rows = [(value,) for value in values]
        else:
            if not all(keys):
                raise UserError(f"{path}: grid.{key}: an empty key name; zip keys as \"a, b\"")
            for i, row in enumerate(values, 1):
                if not isinstance(row, list) or len(row) != len(keys):
                    size = (f"has {len(row)} value{'s' * (len(row) != 1)}" if isinstance(row, list)
                            else "is not a list")
                    raise UserError(f"{path}: grid.{key}: row {i} {row!r} {size} for {len(keys)} keys; "
                                    f"give each row as [{', '.join(keys)}]")
            rows = [tuple(row) for row in values]
        for k in keys:
            if k in named:
                raise UserError(f"{path}: grid: {k} is named twice (in grid.{named[k]} and grid.{key}); "
                                "name each config key once")
            named[k] = str(key)
        entries.append((keys, rows))
    return entries


def _values_per_key(entries: list[tuple[list[str], list[tuple[Any, ...]]]]) -> dict[str, list[Any]]:
    """Each config key of the grid with the values its cells take (a zipped key's column of its rows)."""
    return {k: [row[j] for row in rows] for keys, rows in entries for j, k in enumerate(keys)}


def _shares_cache(source: Any) -> bool:
    """Whether ``source`` declares its images worth caching once for every cell (decoded or generated)."""
    from lossbench.data import SOURCES

    return isinstance(source, str) and source in SOURCES and SOURCES.get(source).shares_cache


def plan_sweep(path: str | Path, overrides: list[str] | None = None, sweep_dir: str | Path | None = None) -> SweepPlan:
    """Expand every document's grid into validated cells (all errors surface before anything runs)."""
    from lossbench.config import apply_overrides
    from lossbench.losses import check_spec

    path = Path(path)
    docs = read_documents(path)
    cells: list[Cell] = []
    grid_keys: list[str] = []
    report: dict[str, Any] = {}
    tune: dict[str, Any] = {}
    root: Path | None = Path(sweep_dir) if sweep_dir else None
    for i, doc in enumerate(docs):
        doc = apply_overrides(doc, list(overrides or []))
        grid = _grid(doc, path)
        keys = [k for entry_keys, _ in grid for k in entry_keys]
        data = doc.get("data")
        if isinstance(data, dict) and _shares_cache(data.get("source", "synthetic")) \
                and "cache" not in data and "data.cache" not in keys:
            data["cache"] = True  # decode once, shared by every cell (and by later sweeps)
        doc_report = doc.pop("report", None)
        document = document_name(doc, path, i, len(docs))
        if (section := doc.pop("tune", None)) is not None:  # checked and run by experiments/tune.py
            tune[document] = section
        if root is None:
            root = Path(doc.get("output_dir") or "runs") / path.stem
        grid_keys += [k for k in keys if k not in grid_keys]
        for combo in itertools.product(*(rows for _, rows in grid)):
            values = {k: v for (entry_keys, _), row in zip(grid, combo) for k, v in zip(entry_keys, row)}
            raw = copy.deepcopy(doc)
            for key, value in values.items():
                set_key(raw, key, value)
            name = f"{document}--{_slug(values)}"
            raw["name"], raw["output_dir"] = name, str(root)
            exp = validate_experiment(raw, f"{path} (cell {name})")
            check_spec(exp.loss, exp.where("loss"))  # a typo in a grid's loss stops the sweep before any cell runs
            cells.append(Cell(name, document, values, exp))
        on_test = any(c.experiment.data.eval_split == "test" for c in cells if c.document == document)
        report[document] = plan_report_options(doc_report, str(path), task=cells[-1].experiment.task,
                                               grid=_values_per_key(grid), eval_split="test" if on_test else "val")
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: two documents give the same cell names; give each document its own name:")
    return SweepPlan(root, cells, grid_keys, report, tune, path)


class SweepLock:
    """An exclusive ``flock`` on the sweep folder; a second sweep refuses with one line."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> "SweepLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            reason = getattr(exc, "strerror", None) or exc
            raise UserError(f"{self.path.parent}: cannot write the sweep folder ({reason}); "
                            "choose a writable --out or output_dir") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise UserError(
                f"{self.path.parent}: another lossbench sweep (pid {holder}) is using this folder; "
                "wait for it to finish or choose another folder"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


#: keys that do not change what a run computes: where it and its caches live, what it records, its trackers
OUTCOME_NEUTRAL_KEYS = frozenset({*RECORDED_KEYS, "name", "output_dir", "data.cache", "data.cache_dir", "tracking",
                                  "tracking_uri", "tracking_experiment"})


def _first_difference(recorded: Any, now: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """``(dotted key, recorded value, value now)`` of the first setting that differs, outcome-neutral keys aside."""
    if key in OUTCOME_NEUTRAL_KEYS:
        return None
    if isinstance(recorded, dict) and isinstance(now, dict):
        for k in [*recorded, *(k for k in now if k not in recorded)]:
            found = _first_difference(recorded.get(k), now.get(k), f"{key}.{k}" if key else str(k))
            if found:
                return found
        return None
    return None if recorded == now else (key, recorded, now)


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _recorded_change(cell: Cell) -> tuple[str | None, str | None]:
    """(what differs between the config the cell's folder recorded and the cell's, the recorded data identity)."""
    try:
        recorded = load_run_config(cell.run_dir)
    except UserError as exc:
        return f"its config.yaml cannot be read ({str(exc)[:100]})", None
    found = _first_difference(recorded.model_dump(mode="json"), cell.experiment.model_dump(mode="json"))
    if found:
        key, old, new = found
        return f"{key} was {_shown(old)} and the config now gives {_shown(new)}", None
    return None, recorded.data_identity


def changed_setting(cell: Cell, memo: dict[str, Any] | None = None) -> str | None:
    """What differs between the run the cell's folder recorded and the run the sweep would start now
    (None: nothing). ``memo`` (a plan's) keeps what was read and hashed: each recorded config while its file is
    unchanged, and the data's identity for every cell that shares the data."""
    from lossbench.data.cache import data_identity

    memo = {} if memo is None else memo
    config = cell.run_dir / "config.yaml"
    try:
        stamp = config.stat()
    except OSError:
        return "its config.yaml is missing"
    key = f"config {config} {stamp.st_mtime_ns} {stamp.st_size}"
    if key not in memo:
        memo[key] = _recorded_change(cell)
    change, identity = memo[key]
    if change is not None or identity is None:  # None: generated data, or a run from before identities
        return change
    key = json.dumps(["data", cell.experiment.data.model_dump(mode="json"), str(cell.experiment.output_dir)])
    if key not in memo:
        memo[key] = data_identity(cell.experiment)
    if memo[key] != identity:
        return f"the files under data.root ({cell.experiment.data.root}) changed since it trained"
    return None


def cell_status(cell: Cell, memo: dict[str, Any] | None = None) -> tuple[str, str]:
    """('done' | 'failed' | 'changed' | 'pending', error line) from what the cell's run folder holds: done only
    when it finished the very run the sweep would start now."""
    finished = runfolder.is_finished(cell.run_dir)
    change = changed_setting(cell, memo) if finished else None
    if finished and change is None:
        return "done", ""
    error = cell.run_dir / "error.txt"
    if error.is_file():
        return "failed", error.read_text(encoding="utf-8").strip()
    if finished:
        return "changed", f"finished, but {change}"
    return "pending", ""


def resumable(cell: Cell) -> bool:
    """True when the cell's run stopped part-way without an error of its own (killed): it has
    ``last.pt`` and no summary, and either no ``error.txt`` or one saying it was killed."""
    run = cell.run_dir
    if runfolder.is_finished(run) or not (run / "last.pt").is_file() or not (run / "config.yaml").is_file():
        return False
    error = run / "error.txt"
    if error.is_file() and not error.read_text(encoding="utf-8").startswith("killed by signal"):
        return False
    return changed_setting(cell) is None  # continue only the same run: a changed config or data starts it again


def changed_cells(plan: SweepPlan, cells: list[Cell], rerun_changed: bool) -> list[Cell]:
    """The finished ``cells`` that would run differently now, to train again (``rerun_changed``); otherwise one
    line naming the first of them, what changed and the flag that retrains them."""
    changed = [(c, why) for c in cells if runfolder.is_finished(c.run_dir)
               and (why := changed_setting(c, plan.memo)) is not None]
    if changed and not rerun_changed:
        cell, why = changed[0]
        more = f" (and {len(changed) - 1} more finished cells changed)" if len(changed) > 1 else ""
        raise UserError(f"{plan.sweep_dir}: cell {cell.name} finished, but {why}{more}; its results are not "
                        f"this config's: retrain changed cells with lossbench sweep {plan.source or 'CONFIG'} "
                        "--rerun-changed, or choose another --out")
    return [c for c, _ in changed]


def _death_signal_setter() -> Any:
    """A ``preexec_fn`` that makes the cell's process get SIGKILL when the sweep's thread that started it
    dies (Linux ``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan training into a folder the next
    sweep will use; None elsewhere.

    libc is looked up here, in the sweep, not in the forked child: with ``--jobs`` other threads may hold
    the dynamic loader's lock at fork time, and the child must only call an already resolved function.
    """
    if sys.platform != "linux":
        return None
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sigkill = int(signal.SIGKILL)
    return lambda: prctl(1, sigkill)  # 1 = PR_SET_PDEATHSIG


def _error_line(stderr: str, returncode: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("lossbench: error:"):
            return line.removeprefix("lossbench: error:").strip()
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return lines[-1] if lines else f"exited with code {returncode}"


def _run_process(command: list[str], log: Any, env: dict[str, str], preexec: Any, stop_file: Path | None
                 ) -> tuple[int, str, bool]:
    """(return code, stderr, stopped) of one training process; it is ended (SIGTERM) once ``stop_file`` exists,
    and killed when this call is interrupted (a cancelled Ray task), so it never outlives its cell."""
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=preexec)
    stopped = False
    try:
        while True:
            try:
                _, stderr = proc.communicate(timeout=None if stop_file is None else STOP_POLL_SECONDS)
                return proc.returncode, stderr, stopped
            except subprocess.TimeoutExpired:
                if not stopped and stop_file is not None and stop_file.exists():
                    proc.terminate()
                    stopped = True
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def run_cell(cell: Cell, sweep_dir: Path, threads: int, gpu: int | None, stop_file: Path | None = None
             ) -> tuple[str, str, float]:
    """Train one cell in a subprocess; returns (status, error line, seconds).

    With ``stop_file`` (a tuning trial that may be pruned) the process is ended once that file
    appears, and the status is ``stopped``: the run folder keeps the epochs it finished.
    """
    config_path = sweep_dir / "configs" / f"{cell.name}.yaml"
    runfolder.write_yaml(config_path, cell.experiment.model_dump(mode="json", exclude_none=True))
    log_path = sweep_dir / "logs" / f"{cell.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), LOSSBENCH_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    start = time.perf_counter()
    fresh = [sys.executable, "-m", "lossbench", "train", str(config_path), "--overwrite"]
    attempts = [[sys.executable, "-m", "lossbench", "train", "--resume", str(cell.run_dir)], fresh] \
        if resumable(cell) else [fresh]
    (cell.run_dir / "error.txt").unlink(missing_ok=True)
    preexec = _death_signal_setter()
    with log_path.open("a", encoding="utf-8") as log:
        for i, command in enumerate(attempts):
            log.write(f"$ {' '.join(command[1:])}\n")
            log.flush()
            returncode, stderr, stopped = _run_process(command, log, env, preexec, stop_file)
            log.write(stderr)
            if returncode == 0 or returncode < 0 or i == len(attempts) - 1:
                break
            # the interrupted run could not be continued (e.g. its checkpoint is damaged): start it again
            log.write(f"resume failed ({_error_line(stderr, returncode)}); starting the cell again\n")
    seconds = time.perf_counter() - start
    if returncode == 0 and runfolder.is_finished(cell.run_dir):
        return "done", "", seconds
    if stopped:
        return "stopped", "", seconds
    error = _error_line(stderr, returncode).removeprefix(f"{config_path}: ")  # the row names the cell already
    runfolder.atomic_write_text(cell.run_dir / "error.txt", error + "\n")
    return "failed", error, seconds


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k.removeprefix('val_')}": v for k, v in metrics.items() if not isinstance(v, (list, dict))}


def collect_results(plan: SweepPlan) -> list[dict[str, Any]]:
    """One row per cell: grid values, status, error, best and final metrics."""
    rows = []
    for cell in plan.cells:
        status, error = cell_status(cell, plan.memo)
        row: dict[str, Any] = {"cell": cell.name, "document": cell.document, "task": cell.experiment.task,
                               "status": status, "error": error, "seed": cell.experiment.seed}
        row.update({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in cell.values.items()})
        if status == "done":
            summary = json.loads((cell.run_dir / runfolder.SUMMARY).read_text(encoding="utf-8"))
            row["main_metric"] = summary["main_metric"]
            row["best_epoch"] = summary["best"].get("epoch")
            row.update(_flat("best_", summary["best"]))
            row.update(_flat("final_", summary["final"]))
            row["wall_seconds"] = round(summary.get("wall_seconds", float("nan")), 2)
        rows.append(row)
    return rows


def write_results(plan: SweepPlan) -> Path:
    path = plan.sweep_dir / "results.csv"
    runfolder.write_csv(path, collect_results(plan))
    runfolder.write_json(plan.sweep_dir / "sweep.json", {
        "grid_keys": plan.grid_keys, "report": plan.report,
        "cells": [{"name": c.name, "document": c.document, "values": c.values} for c in plan.cells],
    })
    return path


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cell_outcome(cell: Cell, future: Future) -> tuple[str, str, float]:
    """(status, error line, seconds) of a finished cell; a call that raised (a lost Ray worker) fails the cell."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - recorded as the cell's error, the other cells go on
        error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[-1]}"[:300]
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        runfolder.atomic_write_text(cell.run_dir / "error.txt", error + "\n")
        return "failed", error, 0.0


def run_cells(plan: SweepPlan, cells: list[Cell], backend: Any, log: Callable[[str], Any]) -> None:
    """Train ``cells`` on ``backend`` (as many at a time as it runs); results.csv is rewritten as each one ends."""
    futures = {backend.submit(run_cell, cell, plan.sweep_dir): cell for cell in cells}
    for n, future in enumerate(as_completed(futures), 1):
        cell = futures[future]
        status, error, seconds = cell_outcome(cell, future)
        write_results(plan)
        detail = f"error: {error}" if error else "ok"
        log(f"[{n}/{len(cells)}] {status} {cell.name} ({seconds:.1f}s) {detail}")


def cells_to_run(plan: SweepPlan, rerun_changed: bool, held: set[str] = frozenset()) -> list[Cell]:
    """The plan's cells that are not done, ``held`` ones aside; with ``rerun_changed``, finished cells that
    would run differently now lose their old results first, so they are never reported as done again."""
    for cell in changed_cells(plan, plan.cells, rerun_changed):
        runfolder.clear_previous_run(cell.run_dir)
    return [c for c in plan.cells if c.name not in held and cell_status(c, plan.memo)[0] != "done"]


def run_sweep(plan: SweepPlan, jobs: int = 1, log=print, backend: Any = None,
              prepare: Callable[[SweepPlan, Any, Callable], set[str] | None] | None = None,
              rerun_changed: bool = False) -> list[dict[str, Any]]:
    """Run every unfinished cell on ``backend`` (default: this machine, ``jobs`` at a time), keep results.csv
    current, return its rows.

    A finished cell whose recorded config or data differs from what it would run now stops the sweep before
    anything runs (:func:`changed_cells`), or, with ``rerun_changed``, loses its old results and trains again.
    ``prepare(plan, backend, log)`` runs first, under the sweep's lock: tuning
    (:func:`lossbench.experiments.tune.run_studies`) runs its studies there and adds the tuned cells to
    ``plan.cells``; it returns the names of cells to record but not train (a study that found nothing).
    """
    started = time.perf_counter()
    changed_cells(plan, plan.cells, rerun_changed)  # a refusal before the lock and tuning leaves no byte changed
    own = backend is None
    backend = LocalBackend(jobs) if own else backend
    try:
        with SweepLock(plan.sweep_dir):
            held = (prepare(plan, backend, log) or set()) if prepare is not None else set()
            todo = cells_to_run(plan, rerun_changed, held)
            done = sum(cell_status(c, plan.memo)[0] == "done" for c in plan.cells)
            log(f"sweep {plan.sweep_dir}: {len(plan.cells)} cells, {done} already done, {len(todo)} to run, "
                f"{backend.describe()}")
            write_results(plan)
            run_cells(plan, todo, backend, log)
            rows = collect_results(plan)
            write_results(plan)
    finally:
        if own:
            backend.close()
    failed = [r for r in rows if r["status"] != "done"]
    log(f"sweep finished in {time.perf_counter() - started:.0f}s: {len(rows) - len(failed)} done, "
        f"{len(failed)} failed -> {plan.sweep_dir / 'results.csv'}")
    return rows
