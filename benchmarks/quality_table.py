"""The quality tables of BENCHMARKS.md, printed from a finished (or partly finished) sweep folder.

    PYTHONPATH=src python benchmarks/quality_table.py /work/lt-run/fashion_mnist_lt_cpu
    PYTHONPATH=src python benchmarks/quality_table.py /work/seg-run/fashion_mnist_scenes

One Markdown row per configuration: seeds finished, then the report's epoch
values (``report.epoch`` of the sweep, final for the long-tail recipes) as
mean ± std over seeds: for classification balanced accuracy (= top-1 on a
balanced test set), macro-F1, many / medium / few-shot accuracy; for
segmentation mIoU, foreground mIoU, mean Dice and pixel accuracy; then the report's comparison with the
baseline (CE) on its metric, from the same functions as ``lossbench report``:
the paired difference Δ, its 95 % paired t-interval clipped to the metric's
range, the paired t-test's p, its Holm-Bonferroni adjusted p and the verdict
(which needs 3 paired seeds). With ``--posthoc-la`` (or the sweep's
``report.posthoc_la``) each plain-CE configuration also gets a "+ post-hoc LA"
row: the same runs scored with logits - tau * log(prior), tau chosen on the
held-out split (lossbench.engine.inference.logit_adjustment); those rows join
the Holm family. A second table gives each class's recall (classification) or
IoU (segmentation), mean over the finished seeds, with its training count.
Cells not finished are listed under the tables. Figures are percentages.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from lossbench.experiments.report_data import compare, group_by_seed, posthoc_groups, setup_document, values_by_seed
from lossbench.experiments.results import load_sweep
from lossbench.experiments.stats import ALPHA, MIN_PAIRS

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


def signed_pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:+.2f}"


def p_value(p: float) -> str:
    return "–" if math.isnan(p) else ("< 0.001" if p < 1e-3 else f"{p:.3f}")


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
    """Each class's recall / IoU at the report's epoch, mean over the finished seeds (training count in brackets)."""
    first = next((sweep_dir / r["cell"] / "summary.json" for g in setup.groups for r in g.done), None)
    if first is None or not first.is_file():
        return
    summary = json.loads(first.read_text(encoding="utf-8"))
    names, counts, what = summary["class_names"], summary["class_counts"], PER_CLASS[setup.task]
    unit = "training images" if setup.task == "classification" else "training pixels"
    print(f"\nPer-class {'recall' if what == 'recall' else 'IoU'} at the {setup.epoch} epoch, %, mean over the "
          f"finished seeds ({unit} in brackets; counts of the first finished seed):\n")
    print("| configuration | seeds | " + " | ".join(f"{n} ({c})" for n, c in zip(names, counts)) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for g in setup.groups:
        if not g.done:
            continue
        means = []
        for k in range(len(names)):
            x = [v for v in values_by_seed(g, f"{what}_{k}", setup.epoch).values() if math.isfinite(v)]
            means.append(f"{100 * np.mean(x):.0f}" if x else "–")
        print(f"| {row_label(g.values)} | {len(g.done)} | " + " | ".join(means) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--posthoc-la", action="store_true", help="add '+ post-hoc LA' rows for plain-CE runs "
                        "even when the sweep's report options do not ask for them")
    args = parser.parse_args(argv)
    meta, rows = load_sweep(args.sweep_dir)
    groups = group_by_seed(meta, rows)
    setup = setup_document(args.sweep_dir, meta, [g for g in groups if g.document == groups[0].document])
    base, epoch, metric = setup.baseline, setup.epoch, setup.metric
    columns = COLUMNS[setup.task]
    adjusted = posthoc_groups(args.sweep_dir, setup) if args.posthoc_la or setup.posthoc_la else []
    comparisons = {c.label: c for c in compare(setup, {f"{g.label} + post-hoc LA": v for g, v, _ in adjusted})}
    tested = sum(math.isfinite(c.p) for c in comparisons.values())
    print(f"{epoch}-epoch metrics, %, mean ± std over seeds; Δ: paired difference in {metric} vs {base.label} over "
          f"the seeds both finished, with its 95 % paired t-interval (clipped to the metric's range), paired t-test "
          f"p and its Holm-Bonferroni adjustment over the {tested} tested comparisons; verdict at α = {ALPHA} on "
          f"the adjusted p, with at least {MIN_PAIRS} paired seeds\n")
    print("| loss | seeds | " + " | ".join(title for _, title in columns)
          + f" | Δ vs {base.label} | 95 % interval | p | p_Holm | verdict |")
    print("|---|---:|" + "---:|" * (len(columns) + 4) + "---|")
    rows_out = [(row_label(g.values), g.label, len(g.done),
                 [list(values_by_seed(g, m, epoch).values()) for m, _ in columns]) for g in setup.groups]
    for g, _, results in adjusted:
        taus = "/".join(f"{r.tau:g}" for r in results)
        rows_out.append((f"{row_label(g.values)} + post-hoc LA (τ {taus})", f"{g.label} + post-hoc LA",
                         len(results), [[float(r.metrics.get(m, math.nan)) for r in results] for m, _ in columns]))
    for label, key, n, values in rows_out:
        if key == base.label:
            tail = ["baseline", "", "", "", ""]
        else:
            c = comparisons[key]
            interval = "–" if math.isnan(c.low) else f"[{signed_pct(c.low)}, {signed_pct(c.high)}]"
            tail = [signed_pct(c.diff), interval, p_value(c.p), p_value(c.p_holm), c.verdict]
        print(f"| {label} | {n} | " + " | ".join([pct(v) for v in values] + tail) + " |")
    print_per_class(args.sweep_dir, setup)
    missing = [r["cell"] for g in setup.groups for r in g.rows if r["status"] != "done"]
    if missing:
        print(f"\nNot finished ({len(missing)}): " + ", ".join(missing))


if __name__ == "__main__":
    main()
