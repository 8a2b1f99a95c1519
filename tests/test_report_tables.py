"""The report's tables, epoch and split rules on sweep folders written by hand (no training)."""

import csv
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helper import markdown_table
from scipy import stats as sps

from lossbench.errors import UserError
from lossbench.experiments.report import build_report
from lossbench.experiments.report_data import compare, group_by_seed, setup_document
from lossbench.experiments.report_figures import per_class_values, summed_confusion
from lossbench.experiments.results import load_sweep
from lossbench.experiments.stats import holm_adjust

CLASSES = ["a", "b", "c"]
BEST_CM = [[8, 0, 0], [0, 8, 0], [0, 0, 8]]
FINAL_CM = [[5, 3, 0], [0, 6, 2], [1, 1, 6]]


def _cell(root: Path, document: str, loss: str, seed: int, value: float | None, eval_split: str) -> dict:
    name = f"{document}--loss-{loss}_seed-{seed}"
    (root / "configs").mkdir(parents=True, exist_ok=True)
    config = {"name": name, "task": "classification", "loss": loss, "seed": seed, "data": {"eval_split": eval_split}}
    (root / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(config))
    row = {"cell": name, "document": document, "task": "classification", "status": "failed", "error": "boom",
           "seed": seed, "loss": loss}
    if value is None:
        return row
    run = root / name
    run.mkdir()
    final = {"val_balanced_accuracy": value, "val_few_shot_accuracy": math.nan,
             **{f"val_recall_{k}": FINAL_CM[k][k] / 8 for k in range(3)}}
    best = {"epoch": 1, "val_balanced_accuracy": 1.0, "val_few_shot_accuracy": math.nan,
            **{f"val_recall_{k}": 1.0 for k in range(3)}}
    summary = {"task": "classification", "class_names": CLASSES, "class_counts": [40, 20, 4], "best": best,
               "final": final, "best_confusion_matrix": BEST_CM, "final_confusion_matrix": FINAL_CM}
    (run / "summary.json").write_text(json.dumps(summary))
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "train_loss", "train_balanced_accuracy", "val_loss",
                                    "val_balanced_accuracy", "val_few_shot_accuracy"])
        writer.writeheader()
        writer.writerow({"epoch": 1, "train_loss": 1.0, "train_balanced_accuracy": 0.5, "val_loss": 0.9,
                         "val_balanced_accuracy": 1.0, "val_few_shot_accuracy": "nan"})
        writer.writerow({"epoch": 2, "train_loss": 0.8, "train_balanced_accuracy": 0.6, "val_loss": 0.7,
                         "val_balanced_accuracy": value, "val_few_shot_accuracy": "nan"})
    row.update(status="done", error="", best_balanced_accuracy=1.0, final_balanced_accuracy=value,
               best_few_shot_accuracy="nan", final_few_shot_accuracy="nan")
    return row


def write_sweep(root: Path, documents: dict[str, dict[str, list[float | None]]], report: dict | None = None,
                eval_split: str = "val") -> Path:
    """A sweep folder: per document, loss -> final balanced accuracy per seed (None: the cell failed)."""
    cells, rows = [], []
    for document, losses in documents.items():
        for loss, values in losses.items():
            for seed, value in enumerate(values):
                row = _cell(root, document, loss, seed, value, eval_split)
                cells.append({"name": row["cell"], "document": document, "values": {"loss": loss, "seed": seed}})
                rows.append(row)
    (root / "sweep.json").write_text(json.dumps({"grid_keys": ["loss", "seed"], "cells": cells,
                                                 "report": report or {}}))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (root / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    return root


def quiet_report(root: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_report(root)
    return (root / "report.md").read_text()


def setup_of(root: Path):
    meta, rows = load_sweep(root)
    return setup_document(root, meta, group_by_seed(meta, rows))


CONTRASTS = "contrast (a vs b) | paired seeds"


def test_two_seeds_give_no_verdict_and_no_p(tmp_path):
    root = write_sweep(tmp_path, {"doc": {"ce": [0.60, 0.62], "focal": [0.70, 0.7201]}},
                       {"doc": {"baseline": {"loss": "ce"}, "epoch": "final"}})
    md = quiet_report(root)
    row = markdown_table(md, CONTRASTS)["loss=focal vs loss=ce"]
    n, diff, interval, alpha, p, mde, needed, verdict = row
    assert (n, diff, interval, p, verdict) == ("2", "+10.00", "–", "–", "too few seeds")  # no p-value at all
    assert needed.isdigit() and int(needed) >= 3 and mde == "–"  # what it would take, from the 2 pairs' spread
    assert not re.search(r"(?<!not )significant", md)  # only the legend's "not significant", no claim


def test_three_seeds_holm_verdicts_alpha_used_and_clipped_intervals(tmp_path):
    base = np.array([0.90, 0.93, 0.94])
    configs = {"good": base + [0.05, 0.051, 0.049], "mid": base + [0.04, 0.07, 0.05], "same": base + [0.01, -0.02, 0.0]}
    root = write_sweep(tmp_path, {"doc": {"ce": list(base), **{k: list(v) for k, v in configs.items()}}},
                       {"doc": {"epoch": "final"}})
    md = quiet_report(root)
    rows = markdown_table(md, CONTRASTS)
    p = {k: sps.ttest_rel(v, base).pvalue for k, v in configs.items()}
    adjusted = dict(zip(p, holm_adjust(list(p.values()))))
    for name, values in configs.items():
        n, diff, interval, alpha, raw, mde, needed, verdict = rows[f"loss={name} vs loss=ce"]
        assert n == "3" and float(diff) == pytest.approx(100 * np.mean(values - base), abs=1e-2)  # in points
        assert float(raw) == pytest.approx(p[name], abs=1e-4)
        assert (float(raw) < float(alpha)) == (adjusted[name] < 0.05)  # Holm's step: the same decisions
    assert rows["loss=good vs loss=ce"][-1].startswith("better") and rows["loss=good vs loss=ce"][3] == "0.0167"
    assert p["mid"] < 0.05 < adjusted["mid"] and rows["loss=mid vs loss=ce"][-1] == "not significant"
    assert rows["loss=mid vs loss=ce"][3] == "0.025"  # tested at alpha / 2 once "good" was decided
    assert rows["loss=same vs loss=ce"][-1] == "not significant"
    # the interval of a mean accuracy stays inside [0, 1]
    metrics = markdown_table(md, "configuration | seeds")
    mean, low, high = map(float, re.match(r"★ ([\d.]+) \[([\d.]+), ([\d.]+)\]", metrics["loss=mid"][2]).groups())
    assert high == 1.0 and low < mean < high
    assert "Better / worse: the difference is surely not zero; not significant" in md
    assert "MDE is the smallest difference" in md and "forest.png" in md


def test_derived_configurations_join_the_holm_family(tmp_path):
    root = write_sweep(tmp_path, {"doc": {"ce": [0.6, 0.62, 0.65], "focal": [0.7, 0.71, 0.76]}})
    setup = setup_of(root)
    alone = compare(setup)[0]
    both = {c.label: c for c in compare(setup, {"ce + post-hoc": {0: 0.61, 1: 0.64, 2: 0.655}})}
    assert both["loss=focal"].p == alone.p
    assert both["loss=focal"].p_holm == pytest.approx(min(1.0, max(2 * alone.p, both["ce + post-hoc"].p)))


def test_confusion_and_per_class_figures_follow_report_epoch(tmp_path):
    root = write_sweep(tmp_path, {"doc": {"ce": [0.6, 0.7]}}, {"doc": {"epoch": "final"}})
    setup = setup_of(root)
    (group,) = setup.groups
    assert setup.epoch == "final"
    cm, names = summed_confusion(root, group, "final")
    assert names == CLASSES and cm.tolist() == (2 * np.array(FINAL_CM)).tolist()
    assert per_class_values(root, group, "final")[0] == pytest.approx([5 / 8, 6 / 8, 6 / 8])
    assert summed_confusion(root, group, "best")[0].tolist() == (2 * np.array(BEST_CM)).tolist()
    md = quiet_report(root)
    assert "Normalized confusion matrices of the final epoch" in md and "Per class (final epoch)" in md
    assert "Metrics (final epoch)" in md and "best epoch" not in md


def test_old_summaries_without_a_final_matrix_show_none_rather_than_the_best(tmp_path):
    root = write_sweep(tmp_path, {"doc": {"ce": [0.6, 0.7]}}, {"doc": {"epoch": "final"}})
    for summary in root.glob("*/summary.json"):
        data = json.loads(summary.read_text())
        del data["final_confusion_matrix"]
        summary.write_text(json.dumps(data))
    md = quiet_report(root)
    assert "Normalized confusion matrices" not in md and "recorded none of their final epoch" in md


def test_test_split_defaults_to_final_and_labels_an_explicit_best(tmp_path):
    root = write_sweep(tmp_path, {"doc": {"ce": [0.6, 0.7], "focal": [0.65, 0.7]}}, eval_split="test")
    setup = setup_of(root)
    assert (setup.eval_split, setup.epoch, setup.best_on_test) == ("test", "final", False)
    md = quiet_report(root)
    assert "Evaluated on the test split at each run's final epoch" in md and "Warning" not in md
    meta = json.loads((root / "sweep.json").read_text())
    meta["report"] = {"doc": {"epoch": "best"}}  # a folder planned before plan_sweep refused this
    (root / "sweep.json").write_text(json.dumps(meta))
    md = quiet_report(root)
    assert "> **Warning: each run's best epoch was selected on the test split" in md
    assert "Metrics (best epoch, selected on the test split)" in md
    assert '<p class="warning"><strong>Warning: each run' in (root / "report.html").read_text()


def test_a_failed_cell_and_an_all_failed_document_report_without_warnings(tmp_path):
    root = write_sweep(tmp_path, {"clf": {"ce": [0.6, 0.7, None], "focal": [None, None, None]},
                                  "broken": {"ce": [None, None]}})
    md = quiet_report(root)  # no "Mean of empty slice", no "No artists with labels found to put in legend"
    assert md.count("### Failed cells") == 2
    assert markdown_table(md, CONTRASTS)["loss=focal vs loss=ce"][-1] == "too few seeds"


def test_report_time_options_are_validated_like_plan_time(tmp_path):
    root = write_sweep(tmp_path, {"doc": {"ce": [0.6, 0.7], "focal": [0.65, 0.7]}},
                       {"doc": {"baseline": {"loss": "x"}}})
    with pytest.raises(UserError, match=r"sweep\.json: report\.baseline: loss=x names no configuration of the grid; "
                                        r"loss is one of ce, focal"):
        build_report(root)
    assert not (root / "report.md").exists()


def test_options_of_an_unnamed_single_document_saved_under_the_old_key_still_apply(tmp_path):
    root = write_sweep(tmp_path, {"exp": {"ce": [0.6, 0.7], "focal": [0.65, 0.7]}},
                       {"exp-0": {"baseline": {"loss": "focal"}}})
    assert setup_of(root).baseline.label == "loss=focal"


@pytest.mark.parametrize("loss, drw_epoch, plain", [
    ("ce", None, True), ("ce()", None, True), (" ce ( ) ", None, True), ({"name": "ce"}, None, True),
    ("ce", 3, False), ("ce(label_smoothing=0.1)", None, False), ("0.5 * ce", None, False),
    ("ce + dice", None, False), ("focal", None, False), ("la_ce", None, False),
])
def test_plain_ce_is_asked_of_the_typed_config(loss, drw_epoch, plain):
    """report.posthoc_la adjusts only runs that trained plain ce: the spec parsed, not its text compared."""
    from lossbench.config import validate_experiment
    from lossbench.experiments.report_data import trains_plain_ce

    exp = validate_experiment({"task": "classification", "loss": loss, "drw_epoch": drw_epoch}, "exp.yaml")
    assert trains_plain_ce(exp) is plain
    assert trains_plain_ce(None) is False


def test_the_evaluated_split_is_read_from_each_cell_config(tmp_path):
    root = write_sweep(tmp_path, {"doc": {"ce": [0.6, 0.7, 0.8], "focal": [0.6, 0.7, None]}}, eval_split="test")
    setup = setup_of(root)
    assert setup.eval_split == "test" and setup.epoch == "final"
    assert all(exp is not None and exp.data.eval_split == "test" for exp in setup.configs.values())
    assert len(setup.configs) == 6
