"""The report side of data.imbalance_order (issue 21 item 7): per-class results by each run's own frequency rank,
shot groups from each seed's own counts, and a data section saying what every seed draws."""

import csv
import json
import math

import numpy as np
import pytest
from cli_helper import run_cli
from test_recipe_fashion_mnist_lt import fake_fashion_mnist

from lossbench.experiments.report_data import group_by_seed, setup_document
from lossbench.experiments.report_ranks import head_to_tail, rank_table
from lossbench.experiments.results import load_sweep
from lossbench.metrics import SHOT_METRICS, shot_accuracies

CONFIG = """name: lt
output_dir: {out}
data: {{source: fashion_mnist, root: {root}, imbalance_ratio: 10, imbalance_order: permuted, eval_split: test,
       holdout: true, val_fraction: 0.1666666667, image_size: 8, normalize: none}}
model: {{name: resnet20, in_channels: 1}}
optimizer: {{name: sgd, lr: 0.05}}
loss: ce
batch_size: 64
epochs: 1
device: cpu
grid:
  seed: [0, 1]
"""


def test_head_to_tail_follows_the_recorded_ranks_else_the_counts():
    summary = {"class_counts": [5, 50, 20]}
    assert head_to_tail(summary, {"frequency_ranks": [2, 0, 1]}) == [1, 2, 0]
    assert head_to_tail(summary, None) == [1, 2, 0]
    assert head_to_tail({"class_counts": [3, 9, 3]}, {}) == [1, 0, 2]  # ties by class index


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranks")
    root = fake_fashion_mnist(tmp / "fm", train_per_class=150, test_per_class=2)
    path = tmp / "lt.yaml"
    path.write_text(CONFIG.format(out=tmp / "runs", root=root))
    from cli_helper import forked_cell_process

    with pytest.MonkeyPatch.context() as patch:  # cells as forked processes (conftest's forked_cells, module-wide)
        patch.setattr("lossbench.experiments.sweep._run_process", forked_cell_process)
        res = run_cli(["sweep", str(path), "--out", str(tmp / "sweep")])
    assert res.code == 0, res.err
    return tmp / "sweep"


def runs(sweep_dir):
    rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
    return [(row, json.loads((sweep_dir / row["cell"] / "summary.json").read_text()),
             json.loads((sweep_dir / row["cell"] / "split.json").read_text())) for row in rows]


def test_each_seed_has_its_own_rare_classes_and_shot_groups(sweep):
    found = runs(sweep)
    assert found[0][2]["frequency_ranks"] != found[1][2]["frequency_ranks"]
    for row, summary, split in found:
        counts = summary["class_counts"]
        assert sorted(counts, reverse=True) == [counts[k] for k in head_to_tail(summary, split)]
        recall = [summary["final"][f"val_recall_{k}"] for k in range(10)]
        own = shot_accuracies(recall, counts)  # the groups by this seed's own training counts
        for name in SHOT_METRICS:
            assert (math.isnan(own[name]) and row[f"final_{name}"] in ("", "nan")) or \
                float(row[f"final_{name}"]) == pytest.approx(own[name])


def test_the_report_shows_per_class_recall_by_each_runs_own_rank(sweep):
    meta, rows = load_sweep(sweep)
    setup = setup_document(sweep, meta, group_by_seed(meta, rows))
    header, body = rank_table(sweep, setup)
    assert header[:2] == ["rank (1 = head)", "train images"] and len(body) == 10
    found = runs(sweep)
    for rank, line in enumerate(body):
        by_rank = [(s["class_counts"][head_to_tail(s, sp)[rank]],
                    s["final"][f"val_recall_{head_to_tail(s, sp)[rank]}"]) for _, s, sp in found]
        assert line[1] == f"{np.mean([c for c, _ in by_rank]):.0f}"
        assert line[2].startswith(f"{np.mean([r for _, r in by_rank]):.4f}")
    assert body[0][1] == "125" and body[-1][1] == "12"  # 150 a class, 25 held out, ratio 10: head 125, tail 12
    report = (sweep / "report.md").read_text()
    assert "Per class by training frequency, head to tail" in report
    assert "Every seed draws its own long-tail subsample of the training images" in report
    assert "its own held-out split" in report and "which classes are rare" in report


def test_the_quality_table_gives_per_class_recall_by_rank_as_the_report(sweep, capsys):
    from test_benchmarks import quality_table_module

    quality_table_module().main([str(sweep)])
    out = capsys.readouterr().out
    assert "by each run's own training frequency rank" in out and "counts of the first finished seed" not in out
    found = runs(sweep)
    by_rank = [[s["final"][f"val_recall_{k}"] for k in head_to_tail(s, sp)] for _, s, sp in found]
    means = [f"{100 * np.mean([r[rank] for r in by_rank]):.0f}" for rank in range(10)]
    assert " | 2 | " + " | ".join(means) + " |\n" in out  # one configuration (the recipe sets only the seed)
    assert "| 1 (125) | 2 (" in out and "| 10 (12) |" in out
