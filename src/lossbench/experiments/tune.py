"""Equal-budget tuning: one Optuna study per grid configuration, then the tuned settings over the seeds.

Comparing losses at one shared learning rate favours whichever loss that rate happens to suit.
The protocol of Musgrave, Belongie and Lim 2020 ("A Metric Learning Reality Check", ECCV) gives
every configuration the same tuning budget on the validation split, then compares the tuned
settings over fresh seeds. A sweep document asks for it with a ``tune:`` section::

    tune:
      trials: 8                           # per configuration: each grid point, seeds aside
      metric: balanced_accuracy           # a validation metric (default report.metric, else the task's)
      space:
        optimizer.lr: {type: float, low: 0.01, high: 0.3, log: true}
        optimizer.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
        loss.gamma: {type: float, low: 0.5, high: 3.0}     # only configurations whose loss takes gamma
        model.name: [resnet20, resnet32]                   # a list is a categorical dimension

Every configuration of the grid (each loss x model ..., the ``seed`` axis aside) gets its own
study in ``<sweep>/tune.db`` (Optuna's SQLite storage) with the same budget. A trial is a run
folder under ``<sweep>/tune/``, trained like any cell (a ``lossbench train`` process on the
sweep's backend) with ``data.eval_split: val`` (or, for ``eval_split: test`` with ``data.holdout:
true``, the document's own data, judged on the held-out split) and the seed ``tune.seed``; the sweep reads each
epoch's metric from its ``metrics.csv`` and the pruner may stop it. Then the best trial's values
are re-run over the grid's seeds as the cells of a document ``<document>-tuned``, which the report
compares like any other (and, with ``untuned: true``, beside the same grid untuned).

Only the sweep's process writes ``tune.db``: trials report through their run folders, so cells
running in parallel (``--jobs``, or Ray tasks on other nodes) never write the database. A sweep
killed mid-study leaves its trials RUNNING; the next run marks them failed (``interrupted``, not
counted in the budget) and queues their parameters again, so the re-queued trial continues the
same run folder from its ``last.pt``. A sampler is seeded with ``tune.seed + trials so far``, so
the same history asks the same next trial whether or not the sweep was interrupted.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.config import validate_experiment
from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.cells import changed_setting
from lossbench.experiments.layout import (
    TUNE_DB, cell_name, digest, studies_path, trial_name, tune_dir, tuned_document,
)
from lossbench.experiments.plan import Cell, SweepPlan
from lossbench.experiments.progress import Progress
from lossbench.experiments import sweep
from lossbench.experiments.sweep import cell_outcome, run_cell, run_sweep
from lossbench.experiments.tune_plan import StudyPlan, Tuning, apply_params, import_optuna, plan_tuning, trial_cell

POLL_SECONDS = 1.0  # how often running trials' metrics.csv are read


def finished_before(cell: Cell) -> bool:
    """The cell's run folder already holds a finished run of exactly this experiment (a trial the sweep
    trained before it was killed, and did not get to record)."""
    return runfolder.is_finished(cell.run_dir) and changed_setting(cell) is None


def objective(cell: Cell, tuning: Tuning) -> float:
    """The tuned metric at the trial's best or final epoch (what the report reads for a cell)."""
    summary = json.loads((cell.run_dir / "summary.json").read_text(encoding="utf-8"))
    value = summary.get(tuning.epoch, {}).get(tuning.metric)
    return float(value) if isinstance(value, (int, float)) else math.nan


def epoch_values(cell: Cell, column: str) -> list[tuple[int, float]]:
    """(epoch, value) of every epoch the trial's metrics.csv holds so far."""
    path = cell.run_dir / "metrics.csv"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    out = []
    for row in rows:
        try:
            out.append((int(row["epoch"]), float(row[column])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


class StudyRun:
    """One configuration's Optuna study, driven from the sweep's process, the only one that writes tune.db."""

    def __init__(self, plan: StudyPlan, storage: Any) -> None:
        optuna = import_optuna()
        self.plan = plan
        tuning = plan.tuning
        if tuning.config.pruner == "median":
            pruner = optuna.pruners.MedianPruner(n_startup_trials=tuning.startup,
                                                 n_warmup_steps=tuning.config.warmup_epochs)
        elif tuning.config.pruner == "successive_halving":
            pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, tuning.config.warmup_epochs))
        else:
            pruner = optuna.pruners.NopPruner()
        self.study = optuna.create_study(storage=storage, study_name=plan.name, direction=tuning.direction,
                                         pruner=pruner, load_if_exists=True)
        self.requeue_interrupted()

    def requeue_interrupted(self) -> int:
        """Trials left RUNNING by a killed sweep: queue their values again (same run folder), mark them failed."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        queued = {t.user_attrs.get("run") for t in trials if t.state == TrialState.WAITING}
        stale = [t for t in trials if t.state == TrialState.RUNNING]
        for t in stale:  # killed anywhere after ask(): its run name may not be set, its values may be partial
            run = t.user_attrs.get("run") or self.run_name(t.number)
            # values drawn in part never reached a run folder: the next ask draws them again, as it would have
            if run not in queued and set(t.params) == set(self.plan.space):
                self.study.enqueue_trial(t.params, user_attrs={"run": run, "retry_of": t.number})
            for key, value in (("run", run), ("interrupted", True)):
                self.study._storage.set_trial_user_attr(t._trial_id, key, value)
            self.study.tell(t.number, state=TrialState.FAIL)
        return len(stale)

    def run_name(self, number: int) -> str:
        """The run folder (and cell) name of trial ``number``, unless it continues an interrupted one."""
        return trial_name(self.plan.name, number)

    def counted(self) -> int:
        """Trials that spent budget: finished, pruned or failed by their own error (not interrupted)."""
        return sum(t.state.is_finished() and not t.user_attrs.get("interrupted")
                   for t in self.study.get_trials(deepcopy=False))

    def ask(self, sweep_dir: Path) -> tuple[Any, Cell | str]:
        """The next trial and its cell (or the one-line reason its values make no valid experiment)."""
        optuna = import_optuna()
        tuning = self.plan.tuning
        asked = [t for t in self.study.get_trials(deepcopy=False)
                 if t.state.name != "WAITING" and not t.user_attrs.get("interrupted")]
        seed = tuning.seed + len(asked)  # a re-queued trial's retry neither draws nor shifts the seeds after it
        self.study.sampler = (optuna.samplers.RandomSampler(seed=seed) if tuning.config.sampler == "random"
                              else optuna.samplers.TPESampler(seed=seed, n_startup_trials=tuning.startup))
        trial = self.study.ask()
        run = trial.user_attrs.get("run") or self.run_name(trial.number)
        trial.set_user_attr("run", run)
        params = {key: dim.suggest(trial, key) for key, dim in self.plan.space.items()}
        try:
            return trial, trial_cell(self.plan, run, params, sweep_dir)
        except UserError as exc:
            return trial, str(exc)

    def best(self) -> Any:
        from optuna.trial import TrialState

        done = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        return self.study.best_trial if done else None


@dataclass
class ActiveTrial:
    """A trial whose cell is training: its per-epoch metric goes to Optuna, which may prune it."""

    run: StudyRun
    trial: Any
    cell: Cell
    stop_file: Path
    reported: int = 0
    pruned_at: int | None = None

    def watch(self, may_prune: bool = True) -> None:
        """Report the epochs metrics.csv gained; ask the pruner after each (never after the last epoch:
        stopping a trial that has finished training would only throw its result away)."""
        for epoch, value in epoch_values(self.cell, self.run.plan.tuning.metric):
            if epoch <= self.reported or self.pruned_at is not None:
                continue
            self.reported = epoch
            if math.isfinite(value):
                self.trial.report(value, epoch)
            if may_prune and epoch < self.cell.experiment.epochs and self.trial.should_prune():
                self.pruned_at = epoch
                self.stop_file.touch()


def _finish(active: ActiveTrial, status: str, error: str, seconds: float, log) -> None:
    """Tell the study how the trial ended: complete with its objective, pruned, or failed with its error."""
    from optuna.trial import TrialState

    active.watch(may_prune=False)
    active.stop_file.unlink(missing_ok=True)
    study, trial, tuning = active.run.study, active.trial, active.run.plan.tuning
    value = objective(active.cell, tuning) if status == "done" else math.nan
    if status == "done" and math.isfinite(value):
        study.tell(trial, value)
        outcome = f"{tuning.metric} {value:.4f}"
    elif status == "stopped":
        study.tell(trial, state=TrialState.PRUNED)
        outcome = f"pruned after epoch {active.pruned_at}"
    else:
        error = error or f"{tuning.metric} is {value} at the {tuning.epoch} epoch"
        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.FAIL)
        outcome = f"failed: {error}"
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    log(f"[tune {active.run.plan.label}] trial {trial.number} ({seconds:.1f}s) {outcome}; {shown}")


def _next_study(runs: list[StudyRun], active: dict[Future, ActiveTrial]) -> StudyRun | None:
    """The study furthest from its budget (counting trials in flight), so studies advance together."""
    in_flight = Counter(id(a.run) for a in active.values())
    left = [(r.counted() + in_flight[id(r)], i, r) for i, r in enumerate(runs)]
    left = [t for t in left if t[0] < t[2].plan.tuning.config.trials]
    return min(left, key=lambda t: t[:2])[2] if left else None


def _start(run: StudyRun, backend: Any, sweep_dir: Path, log) -> tuple[Future, ActiveTrial] | None:
    trial, cell = run.ask(sweep_dir)
    if isinstance(cell, str):  # its values make no valid experiment: a failed trial, like a diverged one
        from optuna.trial import TrialState

        trial.set_user_attr("error", cell)
        run.study.tell(trial, state=TrialState.FAIL)
        log(f"[tune {run.plan.label}] trial {trial.number} failed: {cell}")
        return None
    stop_file = tune_dir(sweep_dir) / f"{cell.name}.stop"
    stop_file.parent.mkdir(parents=True, exist_ok=True)
    stop_file.unlink(missing_ok=True)
    if finished_before(cell):
        future: Future = Future()
        future.set_result(("done", "", 0.0))
    else:
        future = backend.submit(run_cell, cell, sweep_dir, stop_file=stop_file)
    return future, ActiveTrial(run, trial, cell, stop_file)


def drive(runs: list[StudyRun], backend: Any, sweep_dir: Path, log) -> None:
    """Run every study to its budget, ``backend.jobs`` trials at a time, reporting epochs as they land; each
    finished trial's line says how long tuning has run and about how long is left."""
    active: dict[Future, ActiveTrial] = {}
    progress = Progress(sum(max(0, r.plan.tuning.config.trials - r.counted()) for r in runs), "trial", log,
                        jobs=backend.jobs)
    log = progress.done
    try:
        _drive(runs, backend, sweep_dir, log, active)
    except KeyboardInterrupt:
        progress.close()
        stop_trials(active, log)
        raise
    finally:
        progress.close()


def stop_trials(active: dict[Future, ActiveTrial], log) -> None:
    """Ctrl-C mid-study: end the training trials through their stop files, without telling the study. They stay
    RUNNING in tune.db, so the next sweep queues them again and they continue from their ``last.pt``."""
    for trial in active.values():
        trial.stop_file.touch()
    _, still_running = wait(active, timeout=sweep.STOP_POLL_SECONDS * 20)
    for future, trial in active.items():
        if future not in still_running:  # one still training keeps seeing its file; _start removes it next time
            trial.stop_file.unlink(missing_ok=True)
    log(f"tuning interrupted: {len(active)} running trial(s) stopped; run the sweep again: they continue from "
        "their last checkpoint and the studies go on where they stopped")


def _drive(runs: list[StudyRun], backend: Any, sweep_dir: Path, log, active: dict[Future, ActiveTrial]) -> None:
    """The loop of :func:`drive`: start trials while slots are free, finish those that ended, watch the others."""
    while True:
        while len(active) < backend.jobs and (run := _next_study(runs, active)) is not None:
            started = _start(run, backend, sweep_dir, log)
            if started is not None:
                active[started[0]] = started[1]
        if not active:
            return
        done, _ = wait(active, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        for future in done:
            finished = active.pop(future)
            _finish(finished, *cell_outcome(finished.cell, future), log)
            write_studies(sweep_dir, runs)
        for trial in active.values():
            trial.watch()


def tuned_cells(run: StudyRun, root: Path) -> tuple[list[Cell], str]:
    """The configuration's cells with the best trial's values (document ``<document>-tuned``), and, when the
    study found nothing, the one-line reason (the cells are then recorded as failed, not trained)."""
    best = run.best()
    params = {} if not run.plan.space else (best.params if best is not None else None)
    reason = ""
    if params is None:
        errors = [t.user_attrs["error"] for t in run.study.trials if t.user_attrs.get("error")]
        reason = (f"tuning: none of {run.counted()} trials of {run.plan.name} completed"
                  + (f" (first error: {errors[0]})" if errors else ""))
    document = tuned_document(run.plan.tuning.document)
    cells = []
    for cell in run.plan.cells:
        name = cell_name(document, {**cell.values, 'tuned': digest(params) if params is not None else 'none'})
        raw = apply_params(cell.experiment.model_dump(mode="json", exclude_none=True), params or {})
        raw["name"], raw["output_dir"] = name, str(root)
        cells.append(Cell(name, document, dict(cell.values), validate_experiment(raw, run.plan.tuning.source)))
    return cells, reason


def add_tuned_cells(plan: SweepPlan, runs: list[StudyRun]) -> set[str]:
    """Add every configuration's tuned cells to the plan (dropping untuned ones where ``untuned: false``);
    return the names of those to record as failed instead of training."""
    held: set[str] = set()
    tuned: dict[str, Cell] = {}  # untuned cell name -> its tuned twin
    for run in runs:
        cells, reason = tuned_cells(run, plan.sweep_dir)
        tuned.update({cell.name: twin for cell, twin in zip(run.plan.cells, cells)})
        plan.report.setdefault(cells[0].document, plan.report.get(run.plan.tuning.document) or {})
        for cell in cells if reason else []:
            held.add(cell.name)
            cell.run_dir.mkdir(parents=True, exist_ok=True)
            runfolder.atomic_write_text(cell.run_dir / "error.txt", reason + "\n")
    dropped = {r.plan.tuning.document for r in runs if not r.plan.tuning.config.untuned}
    # in the grid's order (e.g. every loss of seed 0 before seed 1), after the untuned cells
    plan.cells = [c for c in plan.cells if c.document not in dropped] + [tuned[c.name] for c in plan.cells
                                                                         if c.name in tuned]
    return held


def _trial_record(trial: Any) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
            "run": trial.user_attrs.get("run"), "error": trial.user_attrs.get("error"),
            "interrupted": bool(trial.user_attrs.get("interrupted"))}


def write_studies(sweep_dir: Path, runs: list[StudyRun]) -> None:
    """``tune/studies.json``: every study's settings, trials and best trial, what the report's tuning section reads."""
    documents: dict[str, Any] = {}
    for run in runs:
        tuning = run.plan.tuning
        doc = documents.setdefault(tuned_document(tuning.document), {
            "document": tuning.document, "untuned": tuning.config.untuned, "metric": tuning.metric,
            "direction": tuning.direction, "epoch": tuning.epoch, "trials": tuning.config.trials,
            "sampler": tuning.config.sampler, "seed": tuning.seed, "pruner": tuning.config.pruner,
            "startup_trials": tuning.startup, "warmup_epochs": tuning.config.warmup_epochs, "studies": []})
        best = run.best()
        doc["studies"].append({
            "name": run.plan.name, "label": run.plan.label, "values": run.plan.values,
            "space": {k: d.model_dump(exclude_none=True) for k, d in run.plan.space.items()},
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
            "trials": [_trial_record(t) for t in run.study.get_trials(deepcopy=False)],
        })
    runfolder.write_json(studies_path(sweep_dir), {"tuned_documents": documents})


#: the first bytes of every SQLite database file
SQLITE_HEADER = b"SQLite format 3\x00"


def open_studies(db: Path, studies: list[StudyPlan]) -> list[StudyRun]:
    """Each study's :class:`StudyRun` in the SQLite file ``db`` (created when absent or empty); a damaged file is
    one line saying what to do, and is never overwritten."""
    import sqlite3

    import sqlalchemy.exc

    optuna = import_optuna()

    def damaged(why: str) -> UserError:
        return UserError(f"{db}: the tuning studies' file is damaged ({why}); move it away to restart the studies "
                         f"(mv {db} {db}.damaged), or restore it from a copy")

    if db.is_file() and db.stat().st_size:
        with db.open("rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise damaged("not an SQLite database")
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}")
        return [StudyRun(study, storage) for study in studies]
    except (sqlalchemy.exc.DatabaseError, sqlite3.DatabaseError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise damaged(reason[:120]) from None


def run_studies(plan: SweepPlan, studies: list[StudyPlan], backend: Any, log) -> set[str]:
    """Run every study to its budget, then add the tuned cells to the plan (a :func:`run_sweep` ``prepare``)."""
    start = time.perf_counter()
    tune_dir(plan.sweep_dir).mkdir(parents=True, exist_ok=True)
    runs = open_studies(plan.sweep_dir / TUNE_DB, studies)
    budget = sum(s.tuning.config.trials for s in studies if s.space)
    left = sum(max(0, r.plan.tuning.config.trials - r.counted()) for r in runs if r.plan.space)
    log(f"tuning {plan.sweep_dir}: {len(runs)} studies, {budget} trials, {budget - left} already done, "
        f"{left} to run, {backend.describe()} -> {plan.sweep_dir / TUNE_DB}")
    drive([r for r in runs if r.plan.space], backend, plan.sweep_dir, log)
    write_studies(plan.sweep_dir, runs)
    held = add_tuned_cells(plan, runs)
    log(f"tuning finished in {time.perf_counter() - start:.0f}s; the tuned settings run over the seeds next")
    return held


def run_tuned_sweep(plan: SweepPlan, studies: list[StudyPlan] | None = None, backend: Any = None, jobs: int = 1,
                    log=print, rerun_changed: bool = False) -> list[dict[str, Any]]:
    """Tune every configuration of the plan's ``tune:`` documents (``studies``: :func:`plan_tuning`'s, when
    already checked), then run the sweep with the tuned cells; returns results.csv's rows."""
    studies = plan_tuning(plan) if studies is None else studies
    return run_sweep(plan, jobs, log, backend, prepare=lambda p, b, lg: run_studies(p, studies, b, lg),
                     rerun_changed=rerun_changed)
