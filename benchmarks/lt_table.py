"""The long-tail quality table of BENCHMARKS.md, printed from a finished (or partly finished) sweep folder.

    PYTHONPATH=src python benchmarks/lt_table.py /work/lt-run/fashion_mnist_lt_cpu

One Markdown row per loss: seeds finished, then the report's epoch values
(``report.epoch`` of the sweep, final for the long-tail recipes) as mean ± std
over seeds: balanced accuracy (= top-1 on the balanced test set), macro-F1,
many / medium / few-shot accuracy, and the paired difference in balanced
accuracy against the baseline (CE) with its paired t-test p-value. Cells not
finished are listed under the table. Figures are percentages.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lossbench.experiments.report import _baseline, _by_seed, _load, _num, group_configs, mean_ci, paired_comparison

COLUMNS = [("balanced_accuracy", "top-1 = bal. acc."), ("macro_f1", "macro-F1"),
           ("many_shot_accuracy", "many"), ("medium_shot_accuracy", "medium"), ("few_shot_accuracy", "few")]


def pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    meta, rows = _load(args.sweep_dir)
    configs = group_configs(meta, rows)
    document = configs[0].document
    options = (meta.get("report") or {}).get(document, {})
    epoch = options.get("epoch", "best")
    base = _baseline(configs, options.get("baseline"))
    print(f"{epoch}-epoch metrics, %, mean ± std over seeds; Δ: paired difference in balanced accuracy vs "
          f"{base.label} over shared seeds, paired t-test p\n")
    print("| loss | seeds | " + " | ".join(title for _, title in COLUMNS) + f" | Δ vs {base.label} | p |")
    print("|---|---:|" + "---:|" * (len(COLUMNS) + 2))
    for c in configs:
        cells = [pct(*mean_ci([_num(r, f"{epoch}_{m}") for r in c.done])[:2]) for m, _ in COLUMNS]
        if c is base:
            diff, p = "baseline", ""
        else:
            cmp = paired_comparison(_by_seed(base, "balanced_accuracy", epoch), _by_seed(c, "balanced_accuracy", epoch))
            diff = "–" if math.isnan(cmp["diff"]) else f"{100 * cmp['diff']:+.2f}"
            p = "" if math.isnan(cmp["p"]) else f"{cmp['p']:.3f}"
        label = str(c.values.get("loss", c.label))
        print(f"| `{label}` | {len(c.done)} | " + " | ".join(cells) + f" | {diff} | {p} |")
    missing = [r["cell"] for c in configs for r in c.rows if r["status"] != "done"]
    if missing:
        print(f"\nNot finished ({len(missing)}): " + ", ".join(missing))


if __name__ == "__main__":
    main()
