"""Planning equal-budget tuning: a document's ``tune:`` section resolved, one study per grid configuration.

Every mistake surfaces here, before anything runs: the metric (never a test-split or
training metric), the space (no grid key, no fixed key, every extreme a valid
experiment; a ``loss.PARAM`` dimension applies to the configurations whose loss takes
it). Each study is named by :func:`lossbench.experiments.layout.cell_name` with a
fingerprint of what it tunes, so a changed space or metric starts a new study.
Trials are judged on the validation split (``data.eval_split: val``), or, for a
document evaluating the test split with ``data.holdout: true``, on its held-out
split: those trials keep the document's data, so they train on exactly what the
re-runs train on and the tuned table shares its data with an untuned one.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.config import RECORDED_KEYS, set_key, validate_experiment
from lossbench.errors import UserError
from lossbench.experiments.layout import cell_name, digest, tune_dir
from lossbench.experiments.plan import Cell, SweepPlan
from lossbench.experiments.report_metrics import lower_is_better
from lossbench.experiments.schema import FIXED_KEYS, Dimension, TuneConfig, check_tune


def import_optuna() -> Any:
    """The ``optuna`` module, or one line naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise UserError("a tune: section needs Optuna: pip install 'lossbench[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


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
    split: str = "val"  # what trials are judged on: val, or holdout (eval_split: test with data.holdout: true)


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
    from lossbench.losses.spec import Term, format_spec, parse_spec

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
    """An experiment's dump (``model_dump``: every key present) with a trial's values set (``loss.*`` keys rewrite
    the loss spec); ``raw`` is not changed."""
    raw = copy.deepcopy(raw)
    for key, value in params.items():
        if key.startswith("loss."):
            raw["loss"] = set_loss_param(raw["loss"], key, value)
        else:
            set_key(raw, key, value)
    return raw


def metric_column(name: str, task: str, where: str, split: str = "val") -> str:
    """The metrics.csv column a tuning metric names on the split trials are judged on (``split``: val or holdout);
    the test split, the other split's columns and training metrics are refused."""
    from lossbench.engine.monitor import metric_names

    text = str(name)
    on_test = split == "holdout" and text.startswith("val_")  # trials of eval_split: test evaluate test as val_*
    if text.startswith("test_") or on_test:
        bare = text.split("_", 1)[1]
        raise UserError(f"{where}: tune.metric: {name!r} is measured on the test split, and tuning on the test "
                        f"split is not allowed (trials are judged on the {split} split); use {bare!r}")
    if text.startswith("train_"):
        raise UserError(f"{where}: tune.metric: {name!r} is a training metric; tune on a validation metric "
                        f"such as {text[6:]!r}")
    if split == "val" and text.startswith("holdout_"):
        raise UserError(f"{where}: tune.metric: {name!r}: these trials have no held-out split (data.holdout needs "
                        f"data.eval_split: test); use {text[8:]!r}")
    bare = text.removeprefix(f"{split}_")
    known = [n for n in metric_names(task, 2) if n.startswith("val_")]
    if re.sub(r"_\d+$", "_0", f"val_{bare}") not in known:
        shown = ", ".join(n[4:] for n in known if not re.search(r"_\d+$", n))
        raise UserError(f"{where}: tune.metric: unknown metric {name!r}; choose one of {shown}")
    return f"{split}_{bare}"


def trial_split(cells: list[Cell], where: str) -> str:
    """What a document's trials are judged on: the held-out split when its cells evaluate the test split with
    ``data.holdout: true`` (trials then train on exactly the re-runs' training data), else the validation split."""
    from lossbench.engine.selection import selection_split

    splits = {selection_split(c.experiment.data) for c in cells}
    if len(splits) > 1:
        raise UserError(f"{where}: tune: the cells of one document differ in data.eval_split / data.holdout, so "
                        "their trials would be judged on different splits; give each its own document")
    return "holdout" if splits == {"holdout"} else "val"


def resolve_tuning(plan: SweepPlan, document: str) -> Tuning:
    """A document's ``tune:`` section checked, with metric, direction, epoch, seed and startup resolved."""
    from lossbench.metrics import MAIN_METRIC

    where = str(plan.source)
    config = check_tune(plan.tune[document], where)
    cells = [c for c in plan.cells if c.document == document]
    options = plan.report.get(document) or {}
    task = cells[0].experiment.task
    split = trial_split(cells, where)
    metric = metric_column(config.metric or options.get("metric") or MAIN_METRIC[task], task, where, split)
    direction = config.direction
    if direction == "auto":
        direction = "minimize" if lower_is_better(metric.removeprefix(f"{split}_")) else "maximize"
    seed = config.seed if config.seed is not None else 1 + max(c.experiment.seed for c in cells)
    startup = config.startup_trials if config.startup_trials is not None else min(10, max(2, config.trials // 4))
    return Tuning(document, where, config, metric, direction, config.epoch or options.get("epoch", "best"),
                  seed, startup, split)


def _check_value(base: dict[str, Any], key: str, value: Any, where: str) -> None:
    """A trial at this extreme of the space (or with this choice) must be a valid experiment whose model, data
    source and loss the registries know (and, for a loss parameter, a valid loss)."""
    from lossbench.data import SOURCES
    from lossbench.losses import build_loss, check_spec
    from lossbench.models import check_model

    try:
        exp = validate_experiment(apply_params(base, {key: value}), "@")
        check_model(exp.model, exp.task, "@: model")
        SOURCES.get(exp.data.source, "@: data.source")
        check_spec(exp.loss, "@: loss")
        if key.startswith("loss."):
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
        if key.startswith("loss.") and not loss_key_applies(base["loss"], key):
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
            if tuning.split == "val":  # trials read the validation split, never the test split
                base["data"]["eval_split"] = "val"
            space = _space_for(tuning, base, plan.grid_keys)
            label = ", ".join(f"{k}={v}" for k, v in values.items()) or document
            fingerprint = digest([{k: v for k, v in base.items() if k not in RECORDED_KEYS},
                                   {k: d.model_dump() for k, d in space.items()}, tuning.metric, tuning.direction,
                                   tuning.epoch, tuning.config.sampler, tuning.config.pruner, tuning.startup,
                                   tuning.config.warmup_epochs])
            name = cell_name(document, values, fingerprint)
            doc_studies.append(StudyPlan(name, tuning, label, values, cells, base, space))
        unused = [k for k in tuning.config.space if not any(k in s.space for s in doc_studies)]
        if unused:
            raise UserError(f"{tuning.source}: tune.space.{unused[0]}: no loss of {document} takes this parameter; "
                            "see `lossbench list losses`")
        studies += doc_studies
    return studies


def trial_cell(study: StudyPlan, run: str, params: dict[str, Any], sweep_dir: Path) -> Cell:
    raw = apply_params(study.base, params)
    raw["name"], raw["output_dir"] = run, str(tune_dir(sweep_dir))
    return Cell(run, study.tuning.document, {}, validate_experiment(raw, f"{study.tuning.source} (trial {run})"))


