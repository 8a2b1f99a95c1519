"""The sweep report: which configuration is better, and is the difference real?

``build_report(sweep_dir)`` reads ``sweep.json``, ``results.csv`` and each cell's run
folder, and writes ``report.html`` (self-contained: images embedded as base64) and
``report.md`` (images in ``report_files/``). This module puts the sections in order;
the tables' data come from :mod:`~lossbench.experiments.report_data`, the figures from
:mod:`~lossbench.experiments.report_figures`, the tuning section from
:mod:`~lossbench.experiments.tuning_report`, and :mod:`~lossbench.experiments.report_render`
renders the page. Every figure, table, curve marker, confusion matrix and per-class bar
is of the same epoch: ``report.epoch`` (:mod:`lossbench.experiments.schema`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from lossbench.engine import runfolder
from lossbench.experiments.layout import REPORT_FILES
from lossbench.experiments.report_data import (
    SPLIT_NAMES, DocumentSetup, PosthocGroup, SeedGroup, compare, comparison_table, failures, group_by_seed,
    mean_and_interval, method_sentence, metric_table, posthoc_groups, posthoc_table, setup_document, uses_plugins,
    values_by_seed,
)
from lossbench.experiments.report_figures import (
    evaluated_counts, finished_summaries, per_class_label, plot_class_counts, plot_confusions, plot_curves,
    plot_per_class, plot_segmentation_examples,
)
from lossbench.experiments.forest import plot_forest
from lossbench.experiments.report_contrasts import contrast_table, legend_text, method_text, seeds_table, unit_name
from lossbench.experiments.report_metrics import lower_is_better, metric_range
from lossbench.experiments.report_ranks import is_permuted, rank_table, seed_draws_sentence
from lossbench.experiments.report_render import ReportPage, render_html, render_markdown
from lossbench.experiments.results import load_sweep
from lossbench.experiments.contrasts import ContrastResult
from lossbench.experiments.study import Study, study_state
from lossbench.experiments.study_design import is_posthoc_label, posthoc_label


def _data_section(doc: ReportPage, sweep_dir: Path, setup: DocumentSetup, n: int) -> None:
    first = next((s for g in setup.groups for s in finished_summaries(sweep_dir, g)), None)
    if first is None:
        return
    split = SPLIT_NAMES.get(setup.eval_split, setup.eval_split)
    doc.heading("Data", 3)
    val = evaluated_counts(first) or ["–"] * len(first["class_names"])
    doc.table(["class", "train", split], [
        [name, str(t), str(v)] for name, t, v in zip(first["class_names"], first["class_counts"], val)
    ])
    doc.image(plot_class_counts(first, f"{setup.document}: class counts", split), f"{n}-class-counts.png",
              f"{setup.document}: class counts per split")
    sentence = seed_draws_sentence(sweep_dir, setup)
    if sentence:
        doc.para(sentence)


def contrast_results(setup: DocumentSetup, adjusted: list[PosthocGroup]
                     ) -> tuple[Study, list[ContrastResult], list[str]]:
    """The verdicts the report gives: the document's study (each '+ post-hoc LA' row against the baseline joins
    the default family), its declared contrasts' results, and the post-hoc labels they name that have no values
    (post-hoc logit adjustment scores only runs of plain ce)."""
    study = setup.study
    values = {g.label: values_by_seed(g, setup.metric, setup.epoch) for g in setup.groups}
    derived = {posthoc_label(g.label): v for g, v, _ in adjusted}
    if not setup.declared_contrasts:
        study = replace(study, pairs=study.pairs + tuple((label, setup.baseline.label) for label in derived))
    missing = sorted({label for pair in study.pairs for label in pair if is_posthoc_label(label)} - set(derived))
    return study, study.compare({**values, **derived, **{label: {} for label in missing}}), missing


def _contrasts_section(doc: ReportPage, setup: DocumentSetup, adjusted: list[PosthocGroup], n: int) -> None:
    """The forest plot, the table of the declared contrasts and, with sequential seeds, how many seeds each
    configuration got and why it stopped."""
    study, results, missing = contrast_results(setup, adjusted)
    if missing:
        doc.warning(f"report.contrasts names {', '.join(missing)}, but post-hoc logit adjustment scores only runs "
                    "of plain ce; those contrasts have no values.")
    unit = unit_name(metric_range(setup.metric))
    doc.heading(f"Comparisons on {setup.metric}", 3)
    doc.image(plot_forest(results, f"{setup.metric} ({unit})", study.margin), f"{n}-forest.png",
              f"{setup.document}: each contrast's difference per seed, its mean and interval, and the verdict")
    doc.para(legend_text(unit, study.margin, study.seeds is not None))
    doc.para(method_text(setup.metric, unit, study.margin, study.seeds, not study.higher_is_better))
    doc.table(*contrast_table(results, setup.metric, unit, fixed=study.seeds is None))
    if study.seeds is not None:
        cells = [(g.values | {"seed": int(r["seed"])}, r) for g in setup.groups for r in g.rows]
        state = study_state(cells, study, setup.document)
        doc.table(*seeds_table(state.ran, state.reasons))


def _tables_section(doc: ReportPage, sweep_dir: Path, setup: DocumentSetup, n: int) -> None:
    adjusted = posthoc_groups(sweep_dir, setup) if setup.posthoc_la else []
    doc.para(method_sentence(setup))
    if setup.best_on_test:
        doc.warning("Warning: each run's best epoch was selected on the test split (data.eval_split: test with "
                    "report.epoch: best), so every figure below is optimistically biased: the epoch was chosen on "
                    "the data it is measured on. Set report.epoch: final and run `lossbench report` again.")
    _contrasts_section(doc, setup, adjusted, n)
    doc.heading(f"Metrics ({setup.epoch} epoch{', selected on the test split' if setup.best_on_test else ''})", 3)
    doc.table(*metric_table(setup))
    if setup.posthoc_la:
        _posthoc_section(doc, setup, adjusted)
    fails = failures(setup.groups)
    if fails:
        doc.heading("Failed cells", 3)
        doc.table(["cell", "status", "error"], fails)


def _posthoc_section(doc: ReportPage, setup: DocumentSetup, adjusted: list[PosthocGroup]) -> None:
    """How each '+ post-hoc LA' row was made: tau per seed and the split it was chosen on."""
    doc.heading("Post-hoc logit adjustment", 3)
    if not adjusted:
        doc.para("report.posthoc_la is set, but no finished configuration trained with plain ce.")
        return
    doc.para(f"Rows marked '+ post-hoc LA' score the same runs with logits − τ·log(training prior) (Menon et al. "
             f"2021), at the {setup.epoch} epoch; τ is chosen by balanced accuracy on a split the figures are not "
             "measured on (the held-out split of data.holdout: true), else fixed at the paper's τ = 1.")
    doc.table(*posthoc_table(setup, adjusted))


def _segmentation_examples(doc: ReportPage, sweep_dir: Path, setup: DocumentSetup, n: int) -> None:
    sign = -1 if lower_is_better(setup.metric) else 1
    scored = [(sign * mean_and_interval(list(values_by_seed(g, setup.metric, setup.epoch).values()),
                                        setup.metric)[0], g) for g in setup.groups if g.done]
    scored = [(score, g) for score, g in scored if math.isfinite(score)]
    best = max(scored, key=lambda t: t[0])[1] if scored else setup.baseline
    base = setup.baseline
    picks = [("best " + best.label, best)] + ([("baseline " + base.label, base)] if best is not base else [])
    doc.heading(f"{SPLIT_NAMES.get(setup.eval_split, setup.eval_split).capitalize()} examples", 3)
    with_plugins = [(title, g) for title, g in picks if g.done and uses_plugins(sweep_dir, g.done[0]["cell"])]
    for title, group in with_plugins:
        doc.para(f"No examples of {title}: its runs use plugins, and a report imports no code a config names; "
                 f"draw them with lossbench predict {sweep_dir / group.done[0]['cell']} IMAGES.")
    picks = [pick for pick in picks if pick not in with_plugins]
    doc.image(plot_segmentation_examples(sweep_dir, picks, setup.epoch), f"{n}-examples.png",
              f"{setup.document}: evaluated images with true and predicted masks ({setup.epoch} epoch; best "
              "configuration and baseline)")


def _figures_section(doc: ReportPage, sweep_dir: Path, setup: DocumentSetup, n: int) -> None:
    curves = plot_curves(sweep_dir, setup.groups, setup.metric)
    if curves:
        doc.heading("Training curves", 3)
        doc.image(curves, f"{n}-curves.png", f"{setup.document}: loss and {setup.metric} per epoch")
    confusions = plot_confusions(sweep_dir, setup.groups, setup.epoch)  # none for sigmoid outputs
    if confusions:
        doc.heading(f"Normalized confusion matrices of the {setup.epoch} epoch (rows: true class; summed over "
                    "seeds)", 3)
        doc.image(confusions, f"{n}-confusion.png", f"{setup.document}: confusion matrices")
    elif setup.task == "classification" and any(g.done for g in setup.groups):
        doc.para(f"No confusion matrices: the runs recorded none of their {setup.epoch} epoch (runs trained "
                 "before lossbench kept the final epoch's matrix).")
    per_class = plot_per_class(sweep_dir, setup.groups, setup.epoch)
    if per_class:
        doc.heading(f"Per class ({setup.epoch} epoch)", 3)
        doc.image(per_class, f"{n}-per-class.png",
                  f"{setup.document}: {per_class_label(setup.task)}")
    by_rank = rank_table(sweep_dir, setup) if is_permuted(setup) else None
    if by_rank is not None:
        doc.heading(f"Per class by training frequency, head to tail ({setup.epoch} epoch, each run's own ranks)", 3)
        doc.table(*by_rank)
    if setup.task == "segmentation":
        _segmentation_examples(doc, sweep_dir, setup, n)


def _tuning_section(doc: ReportPage, sweep_dir: Path, setup: DocumentSetup, setups: list[DocumentSetup]) -> None:
    """A tuned document's studies and trial history, and the untuned comparison beside the tuned one
    (experiments/tuning_report.py); nothing for a document that was not tuned."""
    from lossbench.experiments.tuning_report import tuning_blocks

    by_doc = {s.document: s.groups for s in setups}

    def table(groups: list[SeedGroup], base: SeedGroup) -> tuple[list[str], list[list[str]]]:
        other = replace(setup, document=groups[0].document, groups=groups, baseline=base)
        return comparison_table(other, compare(other))

    for kind, *args in tuning_blocks(sweep_dir, setup.document, by_doc, setup.baseline, table):
        getattr(doc, kind)(*args)


def build_report(sweep_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html and report.md for a sweep folder; returns their paths."""
    sweep_dir = Path(sweep_dir)
    meta, rows = load_sweep(sweep_dir)
    groups = group_by_seed(meta, rows)
    setups = [setup_document(sweep_dir, meta, [g for g in groups if g.document == d])
              for d in dict.fromkeys(g.document for g in groups)]
    doc = ReportPage(sweep_dir / REPORT_FILES)
    doc.heading(f"lossbench report: {sweep_dir.name}", 1)
    done = sum(r["status"] == "done" for r in rows)
    doc.para(f"{len(rows)} cells, {done} finished, {len(rows) - done} failed or pending. Each document below says "
             "which split and epoch its figures are of, and how its configurations are compared with the baseline.")
    for n, setup in enumerate(setups):
        doc.heading(f"{setup.document} ({setup.task})")
        _data_section(doc, sweep_dir, setup, n)
        _tables_section(doc, sweep_dir, setup, n)
        _tuning_section(doc, sweep_dir, setup, setups)
        _figures_section(doc, sweep_dir, setup, n)
    md_path, html_path = sweep_dir / "report.md", sweep_dir / "report.html"
    runfolder.atomic_write_text(md_path, render_markdown(doc))
    runfolder.atomic_write_text(html_path, render_html(doc, sweep_dir.name))
    return html_path, md_path
