"""The quality tables of BENCHMARKS.md, printed from a finished (or partly finished) sweep folder.

    PYTHONPATH=src python benchmarks/quality_table.py /work/lt-run/fashion_mnist_lt_cpu
    PYTHONPATH=src python benchmarks/quality_table.py /work/seg-run/fashion_mnist_scenes

One Markdown row per configuration: seeds finished, then the report's epoch
values (``report.epoch`` of the sweep, final for the long-tail recipes) as
mean ± std over seeds: for classification balanced accuracy (= top-1 on a
balanced test set), macro-F1, many / medium / few-shot accuracy; for
segmentation mIoU, foreground mIoU, mean Dice and pixel accuracy. With
``--posthoc-la`` (or the sweep's ``report.posthoc_la``) each plain-CE
configuration also gets a "+ post-hoc LA" row: the same runs scored with
logits - tau * log(prior), tau chosen on the held-out split
(lossbench.engine.inference.logit_adjustment).
Then the report's declared contrasts, computed by the report's own function
(``lossbench.experiments.report.contrast_results``: the sweep's design, fixed
or sequential, its margin and its Holm family), so this table never gives a
verdict the report does not. A last table gives each class's recall
(classification) or IoU (segmentation), mean over the finished seeds, with its
training count; where every seed draws which classes are rare
(``data.imbalance_order: permuted``), by each run's own frequency rank instead
(the report's lining up, ``lossbench.experiments.report_ranks``). Cells not
finished are listed under the tables. Figures are percentages (differences in
points).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from lossbench.experiments.report import contrast_results
from lossbench.experiments.report_contrasts import contrast_table, legend_text, unit_name
from lossbench.experiments.report_data import group_by_seed, posthoc_groups, setup_document, values_by_seed
from lossbench.experiments.report_metrics import metric_range
from lossbench.experiments.report_ranks import is_permuted, runs_by_rank
from lossbench.experiments.results import load_sweep

COLUMNS = {
    "classification": [("balanced_accuracy", "top-1 = bal. acc."), ("macro_f1", "macro-F1"),
                       ("many_shot_accuracy", "many"), ("medium_shot_accuracy", "medium"),
                       ("few_shot_accuracy", "few")],
    "segmentation": [("miou", "mIoU"), ("fg_miou", "fg mIoU"), ("dice", "mean Dice"),
                     ("pixel_accuracy", "pixel acc.")],
}
PER_CLASS = {"classification": "recall", "segmentation": "iou"}


def pct(values: list[float]) -> str:
    """mean ± sample std of the finite values, in percent; the mean alone for one value."""
    x = np.array([v for v in values if math.isfinite(v)])
    if not x.size:
        return "–"
    return f"{100 * x.mean():.2f}" + (f" ± {100 * x.std(ddof=1):.2f}" if x.size > 1 else "")


def whole_pct(values: list[float]) -> str:
    """The mean of the finite values in whole percent, "–" when there is none."""
    x = [v for v in values if math.isfinite(v)]
    return f"{100 * np.mean(x):.0f}" if x else "–"


def row_label(values: dict) -> str:
    """The loss, with what else the grid changes: DRW, the cosine head, the prior bias."""
    parts = [f"`{values.get('loss')}`"]
    if values.get("drw_epoch") not in (None, "None"):
        parts.append(f"DRW from epoch {values['drw_epoch']}")
    if values.get("model.head") == "cosine":
        parts.append("cosine head")
    if values.get("model.bias_prior") not in (None, "None"):
        parts.append(f"prior bias {values['model.bias_prior']}")
    return ", ".join(parts)


def print_per_class(sweep_dir: Path, setup) -> None:
    """Each class's recall / IoU at the report's epoch, mean over the finished seeds (training count in brackets);
    by each run's own frequency rank where every seed draws which classes are rare."""
    if is_permuted(setup):
        print_per_rank(sweep_dir, setup)
        return
    first = next((sweep_dir / r["cell"] / "summary.json" for g in setup.groups for r in g.done), None)
    if first is None or not first.is_file():
        return
    summary = json.loads(first.read_text(encoding="utf-8"))
    names, counts, what = summary["class_names"], summary["class_counts"], PER_CLASS[setup.task]
    unit = "training images" if setup.task == "classification" else "training pixels"
    print(f"\nPer-class {'recall' if what == 'recall' else 'IoU'} at the {setup.epoch} epoch, %, mean over the "
          f"finished seeds ({unit} in brackets; counts of the first finished seed):\n")
    body = []
    for g in setup.groups:
        if not g.done:
            continue
        means = [whole_pct(list(values_by_seed(g, f"{what}_{k}", setup.epoch).values())) for k in range(len(names))]
        body.append([row_label(g.values), str(len(g.done))] + means)
    markdown_table(["configuration", "seeds"] + [f"{n} ({c})" for n, c in zip(names, counts)], body)


def print_per_rank(sweep_dir: Path, setup) -> None:
    """Recall / IoU by training frequency rank, head to tail (each run's own ranks, as the report lines them up),
    mean over the finished seeds; the column titles give each rank's training count, mean over the runs."""
    what = PER_CLASS[setup.task]
    columns = [(g, runs_by_rank(sweep_dir, g, setup.epoch, what)) for g in setup.groups if g.done]
    columns = [(g, runs) for g, runs in columns if runs]
    if not columns:
        return
    every_run = [counts for _, runs in columns for counts, _ in runs]
    mean_counts = [np.mean([counts[k] for counts in every_run]) for k in range(len(every_run[0]))]
    unit = "training images" if setup.task == "classification" else "training pixels"
    print(f"\nPer-class {'recall' if what == 'recall' else 'IoU'} at the {setup.epoch} epoch by each run's own "
          f"training frequency rank (1 = most frequent), %, mean over the finished seeds ({unit} in brackets):\n")
    body = []
    for g, runs in columns:
        means = [whole_pct([values[k] for _, values in runs]) for k in range(len(mean_counts))]
        body.append([row_label(g.values), str(len(runs))] + means)
    markdown_table(["configuration", "seeds"] + [f"{k + 1} ({c:.0f})" for k, c in enumerate(mean_counts)], body)


def markdown_table(header: list[str], body: list[list[str]], left: tuple[int, ...] = (0,)) -> None:
    """A Markdown table, numbers right-aligned, the columns ``left`` (words) left-aligned."""
    print("| " + " | ".join(header) + " |")
    print("|" + "".join("---|" if k in left else "---:|" for k in range(len(header))))
    for row in body:
        print("| " + " | ".join(row) + " |")


def print_metrics(setup, adjusted) -> None:
    """One row per configuration (and per '+ post-hoc LA' scoring): seeds, then mean ± std of each column."""
    columns = COLUMNS[setup.task]
    rows = [(row_label(g.values), len(g.done), [list(values_by_seed(g, m, setup.epoch).values()) for m, _ in columns])
            for g in setup.groups]
    for g, _, results in adjusted:
        taus = "/".join(f"{r.tau:g}" for r in results)
        rows.append((f"{row_label(g.values)} + post-hoc LA (τ {taus})", len(results),
                     [[float(r.metrics.get(m, math.nan)) for r in results] for m, _ in columns]))
    print(f"{setup.epoch}-epoch metrics, %, mean ± std over the finished seeds (baseline: {setup.baseline.label})\n")
    markdown_table(["loss", "seeds"] + [title for _, title in columns],
                   [[label, str(n)] + [pct(v) for v in values] for label, n, values in rows])


def print_contrasts(setup, adjusted) -> None:
    """The report's contrasts table and its legend (lossbench.experiments.report)."""
    study, results, _ = contrast_results(setup, adjusted)
    unit = unit_name(metric_range(setup.metric))
    print(f"\nThe report's declared contrasts on {setup.metric}: "
          + legend_text(unit, study.margin, study.seeds is not None) + "\n")
    header, body = contrast_table(results, setup.metric, unit, fixed=study.seeds is None)
    markdown_table(header, body, left=(0, len(header) - 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--posthoc-la", action="store_true", help="add '+ post-hoc LA' rows for plain-CE runs "
                        "even when the sweep's report options do not ask for them")
    parser.add_argument("--first-seeds", type=int, metavar="N", help="only seeds 0..N-1: a sequential sweep's "
                        "look at N seeds as the report gave it then")
    args = parser.parse_args(argv)
    meta, rows = load_sweep(args.sweep_dir)
    if args.first_seeds is not None:
        rows = [r for r in rows if int(r["seed"]) < args.first_seeds]
    groups = group_by_seed(meta, rows)
    setup = setup_document(args.sweep_dir, meta, [g for g in groups if g.document == groups[0].document])
    adjusted = posthoc_groups(args.sweep_dir, setup) if args.posthoc_la or setup.posthoc_la else []
    print_metrics(setup, adjusted)
    print_contrasts(setup, adjusted)
    print_per_class(args.sweep_dir, setup)
    missing = [r["cell"] for g in setup.groups for r in g.rows if r["status"] != "done"]
    if missing:
        print(f"\nNot finished ({len(missing)}): " + ", ".join(missing))


if __name__ == "__main__":
    main()
