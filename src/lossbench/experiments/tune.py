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
sweep's backend) with ``data.eval_split: val`` and the seed ``tune.seed``; the sweep reads each
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

import copy
import csv
import hashlib
import json
import math
import re
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from lossbench.config import (
    RECORDED_KEYS, StrictModel, describe_validation_error, set_key, validate_experiment,
)
from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.sweep import (
    Cell, SweepPlan, _slug, cell_outcome, changed_setting, run_cell, run_sweep,
)

TUNE_DB = "tune.db"
TUNE_DIR = "tune"  # trial run folders, their stop files, and studies.json (what the report reads)
STUDIES_JSON = "studies.json"
POLL_SECONDS = 1.0  # how often running trials' metrics.csv are read
#: keys a search space may not hold, and why
FIXED_KEYS = {
    "seed": "the seed is what the tuned settings are re-run over",
    "data.eval_split": "trials always evaluate the validation split",
    "name": "it names the run folder", "output_dir": "it places the run folder",
    "device": "it is not a hyper-parameter",
}


def import_optuna() -> Any:
    """The ``optuna`` module, or one line naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise UserError("a tune: section needs Optuna: pip install 'lossbench[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


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


@dataclass
class Tuning:
    """One document's ``tune:`` section, with its defaults resolved."""

    document: str
    source: str
    config: TuneConfig
    metric: str  # the metrics.csv column, e.g. val_balanced_accuracy
    direction: str
    epoch: str
    seed: int
    startup: int


@dataclass
class StudyPlan:
    """One configuration's study: its cells (one per seed), a trial's config before its values, its space."""

    name: str
    tuning: Tuning
    label: str
    values: dict[str, Any]
    cells: list[Cell]
    base: dict[str, Any]
    space: dict[str, Dimension] = field(default_factory=dict)


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:6]


# ---------------------------------------------------------------- loss parameters inside a spec


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def format_spec(terms: list[Any]) -> str:
    """A spec string that :func:`lossbench.losses.spec.parse_spec` reads back as ``terms``."""
    text = ""
    for term in terms:
        call = term.name + (f"({', '.join(f'{k}={_literal(v)}' for k, v in term.params.items())})"
                            if term.params else "")
        weight = abs(term.weight)
        part = call if weight == 1 else f"{weight!r} * {call}"
        text = (f"-{part}" if term.weight < 0 else part) if not text else \
            f"{text} {'-' if term.weight < 0 else '+'} {part}"
    return text


def _loss_key(key: str) -> tuple[str | None, str]:
    """``loss.gamma`` -> (None, 'gamma'); ``loss.focal.gamma`` -> ('focal', 'gamma')."""
    parts = key.split(".")[1:]
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise UserError(f"tune.space.{key}: write loss.PARAM or loss.LOSS.PARAM, e.g. loss.gamma or loss.focal.gamma")


def _takes(term: Any, name: str | None, param: str) -> bool:
    from lossbench.losses import LOSSES, loss_parameters

    if name is not None and term.name != name:
        return False
    try:
        return param in loss_parameters(LOSSES.get(term.name))
    except UserError:
        return False


def set_loss_param(spec: Any, key: str, value: Any) -> str:
    """``spec`` with the parameter ``key`` names (``loss.gamma`` / ``loss.focal.gamma``) set to ``value`` in
    every term whose loss takes it, written back as a spec string."""
    from lossbench.losses.spec import Term, parse_spec

    name, param = _loss_key(key)
    terms = [Term(t.name, {**t.params, param: value}, t.weight) if _takes(t, name, param) else t
             for t in parse_spec(spec)]
    return format_spec(terms)


def loss_key_applies(spec: Any, key: str) -> bool:
    """Whether some term of ``spec`` takes the parameter ``key`` names."""
    from lossbench.losses.spec import parse_spec

    name, param = _loss_key(key)
    try:
        return any(_takes(t, name, param) for t in parse_spec(spec))
    except UserError:
        return False


def apply_params(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A raw config with a trial's values set (``loss.*`` keys rewrite the loss spec); ``raw`` is not changed."""
    raw = copy.deepcopy(raw)
    for key, value in params.items():
        if key.startswith("loss."):
            raw["loss"] = set_loss_param(raw.get("loss", "ce"), key, value)
        else:
            set_key(raw, key, value)
    return raw


# ---------------------------------------------------------------- planning (every mistake before anything runs)


def metric_column(name: str, task: str, where: str) -> str:
    """The metrics.csv column a tuning metric names; the test split and training metrics are refused."""
    from lossbench.engine.monitor import metric_names

    text = str(name)
    if text.startswith("test_"):
        raise UserError(f"{where}: tune.metric: {name!r} is measured on the test split, and tuning on the test "
                        f"split is not allowed (trials evaluate data.eval_split: val); use {text[5:]!r}")
    if text.startswith("train_"):
        raise UserError(f"{where}: tune.metric: {name!r} is a training metric; tune on a validation metric "
                        f"such as {text[6:]!r}")
    column = text if text.startswith("val_") else f"val_{text}"
    known = [n for n in metric_names(task, 2) if n.startswith("val_")]
    if re.sub(r"_\d+$", "_0", column) not in known:
        shown = ", ".join(n[4:] for n in known if not re.search(r"_\d+$", n))
        raise UserError(f"{where}: tune.metric: unknown metric {name!r}; choose one of {shown}")
    return column


def _check_tune(raw: Any, where: str) -> TuneConfig:
    try:
        return _TuneSection.model_validate({"tune": raw}).tune
    except ValidationError as err:
        raise UserError(describe_validation_error(err, where, _TuneSection)) from None


def resolve_tuning(plan: SweepPlan, document: str) -> Tuning:
    """A document's ``tune:`` section checked, with metric, direction, epoch, seed and startup resolved."""
    from lossbench.experiments.report_options import LOWER_IS_BETTER
    from lossbench.metrics import MAIN_METRIC

    where = str(plan.source)
    config = _check_tune(plan.tune[document], where)
    cells = [c for c in plan.cells if c.document == document]
    options = plan.report.get(document) or {}
    task = cells[0].experiment.task
    metric = metric_column(config.metric or options.get("metric") or MAIN_METRIC[task], task, where)
    direction = config.direction
    if direction == "auto":
        lower = metric.endswith("loss") or metric.removeprefix("val_") in LOWER_IS_BETTER
        direction = "minimize" if lower else "maximize"
    seed = config.seed if config.seed is not None else 1 + max(c.experiment.seed for c in cells)
    startup = config.startup_trials if config.startup_trials is not None else min(10, max(2, config.trials // 4))
    return Tuning(document, where, config, metric, direction, config.epoch or options.get("epoch", "best"),
                  seed, startup)


def _check_value(base: dict[str, Any], key: str, value: Any, where: str) -> None:
    """A trial at this extreme of the space must be a valid experiment (and, for a loss parameter, a valid loss)."""
    try:
        exp = validate_experiment(apply_params(base, {key: value}), "@")
        if key.startswith("loss."):
            from lossbench.losses import build_loss

            build_loss(exp.loss, 3, exp.task, [30, 20, 10])
    except UserError as exc:
        why = str(exc).removeprefix("@: ")
        raise UserError(f"{where}: tune.space.{key}: {value!r} does not fit this experiment ({why}); "
                        "change the range") from None


def _space_for(tuning: Tuning, base: dict[str, Any], grid_keys: list[str]) -> dict[str, Dimension]:
    """The dimensions of the space that apply to a configuration, each checked at its extremes."""
    space = {}
    for key, dim in tuning.config.space.items():
        if key in FIXED_KEYS:
            raise UserError(f"{tuning.source}: tune.space.{key}: cannot be tuned ({FIXED_KEYS[key]}); tune other keys")
        if key in grid_keys:
            raise UserError(f"{tuning.source}: tune.space.{key}: is a grid key, and each grid configuration gets "
                            "its own study; tune keys the grid does not set")
        if key.startswith("loss.") and not loss_key_applies(base.get("loss", "ce"), key):
            continue
        for value in dim.extremes():
            _check_value(base, key, value, tuning.source)
        space[key] = dim
    return space


def configurations(cells: list[Cell]) -> list[tuple[dict[str, Any], list[Cell]]]:
    """The grid's configurations in grid order: values without the seed, and their cells (one per seed)."""
    groups: dict[str, tuple[dict[str, Any], list[Cell]]] = {}
    for cell in cells:
        values = {k: v for k, v in cell.values.items() if k != "seed"}
        groups.setdefault(json.dumps(values, sort_keys=True, default=str), (values, []))[1].append(cell)
    return list(groups.values())


def plan_tuning(plan: SweepPlan) -> list[StudyPlan]:
    """Every study of the sweep's ``tune:`` sections, checked; a UserError names the file and key otherwise."""
    import_optuna()
    studies = []
    for document in plan.tune:
        tuning = resolve_tuning(plan, document)
        doc_studies = []
        for values, cells in configurations([c for c in plan.cells if c.document == document]):
            base = cells[0].experiment.model_dump(mode="json", exclude_none=True)
            base = {k: v for k, v in base.items() if k not in ("name", "output_dir")} | {"seed": tuning.seed}
            base["data"]["eval_split"] = "val"  # trials read the validation split, never the test split
            space = _space_for(tuning, base, plan.grid_keys)
            label = ", ".join(f"{k}={v}" for k, v in values.items()) or document
            fingerprint = _digest([{k: v for k, v in base.items() if k not in RECORDED_KEYS},
                                   {k: d.model_dump() for k, d in space.items()}, tuning.metric, tuning.direction,
                                   tuning.epoch, tuning.config.sampler, tuning.config.pruner, tuning.startup,
                                   tuning.config.warmup_epochs])
            name = f"{document}--{_slug(values)}--{fingerprint}"
            doc_studies.append(StudyPlan(name, tuning, label, values, cells, base, space))
        unused = [k for k in tuning.config.space if not any(k in s.space for s in doc_studies)]
        if unused:
            raise UserError(f"{tuning.source}: tune.space.{unused[0]}: no loss of {document} takes this parameter; "
                            "see `lossbench list losses`")
        studies += doc_studies
    return studies


# ---------------------------------------------------------------- running the studies


def trial_cell(study: StudyPlan, run: str, params: dict[str, Any], sweep_dir: Path) -> Cell:
    raw = apply_params(study.base, params)
    raw["name"], raw["output_dir"] = run, str(sweep_dir / TUNE_DIR)
    return Cell(run, study.tuning.document, {}, validate_experiment(raw, f"{study.tuning.source} (trial {run})"))


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
        return f"{self.plan.name}--t{number:03d}"

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
    stop_file = sweep_dir / TUNE_DIR / f"{cell.name}.stop"
    stop_file.parent.mkdir(parents=True, exist_ok=True)
    stop_file.unlink(missing_ok=True)
    if finished_before(cell):
        future: Future = Future()
        future.set_result(("done", "", 0.0))
    else:
        future = backend.submit(run_cell, cell, sweep_dir, stop_file=stop_file)
    return future, ActiveTrial(run, trial, cell, stop_file)


def drive(runs: list[StudyRun], backend: Any, sweep_dir: Path, log) -> None:
    """Run every study to its budget, ``backend.jobs`` trials at a time, reporting epochs as they land."""
    active: dict[Future, ActiveTrial] = {}
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
    document = f"{run.plan.tuning.document}-tuned"
    cells = []
    for cell in run.plan.cells:
        name = f"{document}--{_slug({**cell.values, 'tuned': _digest(params) if params is not None else 'none'})}"
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
        doc = documents.setdefault(f"{tuning.document}-tuned", {
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
    runfolder.write_json(sweep_dir / TUNE_DIR / STUDIES_JSON, {"tuned_documents": documents})


def run_studies(plan: SweepPlan, studies: list[StudyPlan], backend: Any, log) -> set[str]:
    """Run every study to its budget, then add the tuned cells to the plan (a :func:`run_sweep` ``prepare``)."""
    optuna = import_optuna()
    start = time.perf_counter()
    (plan.sweep_dir / TUNE_DIR).mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(plan.sweep_dir / TUNE_DB).resolve()}")
    runs = [StudyRun(study, storage) for study in studies]
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
