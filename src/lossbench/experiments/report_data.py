"""The data of a sweep report's tables: configurations over seeds, the baseline, and the statistics.

Cells of one document that differ only in ``seed`` form a :class:`SeedGroup` (a
configuration). Per document the report shows one table of configurations (each
metric's mean over seeds with its 95 % t-interval, clipped to the metric's range) and
the declared contrasts on the report's metric (:class:`lossbench.experiments.study.Study`,
built here from the document's options: verdicts, intervals, power). The tuning
section's side-by-side tables still compare with the baseline by :func:`compare` (a paired
t-test, Holm over the comparisons, :mod:`lossbench.experiments.stats`). Each cell's
config is read once, typed (:func:`cell_config`), and asked which split it evaluated
and whether it trained plain cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.config import Experiment, load_experiment, load_run_config
from lossbench.errors import UserError
from lossbench.experiments.layout import config_path
from lossbench.experiments.report_metrics import TABLE_METRICS, lower_is_better, metric_range
from lossbench.experiments.schema import ReportOptions, default_epoch, validate_report_options
from lossbench.experiments.stats import PairedComparison, compare_with_baseline, t_interval
from lossbench.experiments.study import Study, configuration_label, document_study
from lossbench.experiments.study_design import posthoc_label, resolve_contrasts
from lossbench.losses.spec import is_plain_loss
from lossbench.metrics import MAIN_METRIC

SPLIT_NAMES = {"val": "validation", "test": "test"}


@dataclass
class SeedGroup:
    """The cells of one document with the same grid values, one per seed: a configuration."""

    document: str
    task: str
    label: str
    values: dict[str, Any]
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def done(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r["status"] == "done"]


@dataclass
class DocumentSetup:
    """What one document's report compares: its seed groups, baseline, metric, epoch and evaluated split."""

    document: str
    task: str
    groups: list[SeedGroup]
    baseline: SeedGroup
    metric: str
    epoch: str
    eval_split: str
    posthoc_la: bool = False
    configs: dict[str, Experiment | None] = field(default_factory=dict)  # cell -> the config it ran (read once)
    study: Study | None = None  # the declared contrasts and how they are decided
    declared_contrasts: bool = False  # report.contrasts lists the pairs (else: each against the baseline)

    @property
    def best_on_test(self) -> bool:
        """True when each run's best epoch was chosen on the split its figures are measured on."""
        return self.epoch == "best" and self.eval_split == "test"


def row_value(row: Mapping[str, Any], key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except (TypeError, ValueError):
        return math.nan


def group_by_seed(meta: dict[str, Any], rows: list[dict[str, str]]) -> list[SeedGroup]:
    """Seed groups in grid order, each with its cells (one per seed)."""
    by_name = {r["cell"]: r for r in rows}
    groups: dict[tuple[str, str], SeedGroup] = {}
    for cell in meta["cells"]:
        values = {k: v for k, v in cell["values"].items() if k != "seed"}
        label = configuration_label(values, cell["document"])
        key = (cell["document"], label)
        row = by_name.get(cell["name"])
        if row is None:
            continue
        if key not in groups:
            groups[key] = SeedGroup(cell["document"], row["task"], label, values)
        groups[key].rows.append(row)
    return list(groups.values())


def document_grid(meta: dict[str, Any], document: str) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for cell in meta["cells"]:
        if cell["document"] == document:
            for key, value in cell["values"].items():
                if value not in grid.setdefault(key, []):
                    grid[key].append(value)
    return grid


def cell_config(sweep_dir: Path, cell: str) -> Experiment | None:
    """The experiment a cell ran, read once as the typed config: the sweep's copy in configs/, else the one its
    run folder recorded; None when neither can be read."""
    try:
        return load_experiment(config_path(sweep_dir, cell))
    except UserError:
        pass
    try:
        return load_run_config(sweep_dir / cell)
    except UserError:
        return None


def uses_plugins(sweep_dir: Path, cell: str) -> bool:
    """Whether a cell's config names ``plugins:`` (code a report does not import)."""
    exp = cell_config(sweep_dir, cell)
    return exp is not None and bool(exp.plugins)


def evaluated_split(configs: Mapping[str, Experiment | None]) -> str:
    """"test" when any cell evaluated the test split (its config's ``data.eval_split``), else "val"."""
    on_test = any(exp is not None and exp.data.eval_split == "test" for exp in configs.values())
    return "test" if on_test else "val"


def find_baseline(groups: list[SeedGroup], baseline: dict[str, Any] | None) -> SeedGroup:
    """The first seed group whose grid values match ``baseline``; the first group without one."""
    for g in groups if baseline else []:
        if all(str(g.values.get(k)) == str(v) for k, v in baseline.items()):
            return g
    return groups[0]


def setup_document(sweep_dir: Path, meta: dict[str, Any], groups: list[SeedGroup]) -> DocumentSetup:
    """The document's ``report:`` options from sweep.json, validated as at plan time, and resolved."""
    document, task = groups[0].document, groups[0].task
    stored = meta.get("report") or {}
    # sweeps planned before the fix keyed a single unnamed document's options as <stem>-0
    raw = stored.get(document, stored.get(f"{document}-0"))
    options: ReportOptions = validate_report_options(raw, str(sweep_dir / "sweep.json"), task=task,
                                                     grid=document_grid(meta, document))
    configs = {r["cell"]: cell_config(sweep_dir, r["cell"]) for g in groups for r in g.rows}
    split = evaluated_split(configs)
    baseline = find_baseline(groups, options.baseline)
    setup = DocumentSetup(document, task, groups, baseline, options.metric or MAIN_METRIC[task],
                          options.epoch or default_epoch(split), split, bool(options.posthoc_la), configs)
    configurations = {configuration_label(c["values"], document): {k: v for k, v in c["values"].items() if k != "seed"}
                      for c in meta["cells"] if c["document"] == document}
    pairs = resolve_contrasts(options.contrasts, baseline.label, configurations, str(sweep_dir / "sweep.json"),
                              posthoc=bool(options.posthoc_la))
    resolved = {"metric": setup.metric, "epoch": setup.epoch, "margin": options.margin}
    setup.study = document_study(resolved, task, pairs, (meta.get("sequential") or {}).get(document))
    setup.declared_contrasts = options.contrasts != "baseline"
    return setup


def values_by_seed(group: SeedGroup, metric: str, epoch: str) -> dict[int, float]:
    """seed -> the metric at ``epoch`` ("best" / "final") of each finished cell."""
    return {int(r["seed"]): row_value(r, f"{epoch}_{metric}") for r in group.done}


def mean_and_interval(values: list[float], metric: str) -> tuple[float, float, float]:
    """(mean, low, high) over the finite values: the 95 % t-interval clipped to the metric's range."""
    x = [v for v in values if math.isfinite(v)]
    if not x:
        return math.nan, math.nan, math.nan
    return (float(np.mean(x)), *t_interval(x, clip=metric_range(metric)))


def format_mean(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if math.isnan(low) else f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def metric_table(setup: DocumentSetup) -> tuple[list[str], list[list[str]]]:
    """Header and rows of mean [95 % interval] per metric; the best mean per column is marked with ★.

    A metric no finished run has (e.g. few-shot accuracy without few-shot classes) gets no column.
    """
    groups, epoch = setup.groups, setup.epoch
    stats = {m: [mean_and_interval([row_value(r, f"{epoch}_{m}") for r in g.done], m) for g in groups]
             for m in dict.fromkeys([*TABLE_METRICS[setup.task], setup.metric])}
    metrics = [m for m, s in stats.items() if m == setup.metric or any(math.isfinite(t[0]) for t in s)]
    best = {}
    for m in metrics:
        finite = [t[0] for t in stats[m] if math.isfinite(t[0])]
        if finite:
            best[m] = (min if lower_is_better(m) else max)(finite)
    body = []
    for i, g in enumerate(groups):
        cells = [g.label, str(len(g.done)), str(len(g.rows) - len(g.done))]
        for m in metrics:
            text = format_mean(*stats[m][i])
            cells.append(("★ " + text) if m in best and stats[m][i][0] == best[m] else text)
        body.append(cells)
    return ["configuration", "seeds", "failed", *metrics], body


def compare(setup: DocumentSetup, derived: Mapping[str, Mapping[int, float]] | None = None
            ) -> list[PairedComparison]:
    """Every configuration (and each ``derived`` one: label -> seed -> value) against the baseline.

    One Holm family: all of them, on the document's metric at its epoch.
    """
    others = {g.label: values_by_seed(g, setup.metric, setup.epoch) for g in setup.groups if g is not setup.baseline}
    others.update(derived or {})
    return compare_with_baseline(values_by_seed(setup.baseline, setup.metric, setup.epoch), others,
                                 value_range=metric_range(setup.metric),
                                 higher_is_better=not lower_is_better(setup.metric))


def _fmt_p(p: float) -> str:
    return "–" if math.isnan(p) else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")


def comparison_table(setup: DocumentSetup, comparisons: list[PairedComparison]
                     ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the baseline first, then each comparison with n, Δ, its interval, p, Holm p, verdict."""
    header = ["configuration", "paired seeds", f"Δ {setup.metric} vs baseline", "95 % interval of Δ", "p",
              "p (Holm)", "verdict"]
    body = [[setup.baseline.label, str(len(setup.baseline.done)), "baseline", "", "", "", ""]]
    for c in comparisons:
        diff = "–" if math.isnan(c.diff) else f"{c.diff:+.4f}"
        interval = "–" if math.isnan(c.low) else f"[{c.low:+.4f}, {c.high:+.4f}]"
        body.append([c.label, str(c.n), diff, interval, _fmt_p(c.p), _fmt_p(c.p_holm), c.verdict])
    return header, body


def method_sentence(setup: DocumentSetup) -> str:
    """Which split and epoch the document's tables are of, and how the configurations' table is made."""
    split = SPLIT_NAMES.get(setup.eval_split, setup.eval_split)
    epoch = ("each run's final epoch" if setup.epoch == "final"
             else f"each run's best epoch (chosen on the {split} split by the run's best_metric)")
    return (f"Evaluated on the {split} split at {epoch}. Configurations: mean over seeds with its 95 % "
            f"t-interval over n seeds, clipped to the metric's range; ★ marks the best mean per column.")


def failures(groups: list[SeedGroup]) -> list[list[str]]:
    return [[r["cell"], r["status"], r.get("error", "")] for g in groups for r in g.rows if r["status"] != "done"]


def trains_plain_ce(exp: Experiment | None) -> bool:
    """Whether a cell trained with plain ``ce`` (no parameters, no deferred re-weighting)."""
    return exp is not None and is_plain_loss(exp.loss, "ce") and exp.drw_epoch is None


#: a plain-CE configuration, its runs' metric under post-hoc logit adjustment (seed -> value), each run's result
PosthocGroup = tuple[SeedGroup, dict[int, float], list[Any]]


def posthoc_groups(sweep_dir: Path, setup: DocumentSetup) -> list[PosthocGroup]:
    """Each plain-CE configuration with its runs' ``setup.metric`` under post-hoc logit adjustment (seed ->
    value) and each run's :class:`PosthocResult`, at the report's epoch (``final``: last.pt; ``best``: best.pt)."""
    from lossbench.engine.inference.logit_adjustment import run_posthoc

    checkpoint = "last" if setup.epoch == "final" else "best"
    out = []
    for group in setup.groups:
        if not group.done or not all(trains_plain_ce(setup.configs.get(r["cell"])) for r in group.done):
            continue
        results = {int(r["seed"]): run_posthoc(sweep_dir / r["cell"], checkpoint) for r in group.done}
        values = {seed: float(res.metrics.get(setup.metric, math.nan)) for seed, res in results.items()}
        out.append((group, values, list(results.values())))
    return out


def posthoc_table(setup: DocumentSetup, adjusted: list[PosthocGroup]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each '+ post-hoc LA' configuration, its seeds, τ per seed, where τ was chosen, its metric."""
    body = []
    for group, values, results in adjusted:
        taus = ", ".join(f"{r.tau:g}" for r in results)
        where = sorted({r.chosen_on or "fixed (no held-out split)" for r in results})
        mean, low, high = mean_and_interval(list(values.values()), setup.metric)
        body.append([posthoc_label(group.label), str(len(values)), taus, ", ".join(where),
                     format_mean(mean, low, high)])
    return ["configuration", "seeds", "τ per seed", "τ chosen on", setup.metric], body
