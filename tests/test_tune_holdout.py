"""Tuning with a held-out split (issue 21 item 9): with ``eval_split: test`` and ``holdout: true`` the trials
keep the document's data and are judged on the held-out split; the re-runs report the test split."""

import csv
import json

import pytest
from cli_helper import run_cli
from test_recipe_fashion_mnist_lt import fake_fashion_mnist

from lossbench.data import prepare_splits
from lossbench.errors import UserError
from lossbench.experiments.plan import plan_sweep
from lossbench.experiments.tune_plan import plan_tuning, trial_cell

CONFIG = """name: lt
output_dir: {out}
data: {{source: fashion_mnist, root: {root}, imbalance_ratio: 5, eval_split: test, holdout: {holdout},
       val_fraction: 0.25, image_size: 8, normalize: none}}
model: {{name: resnet20, in_channels: 1}}
optimizer: {{name: sgd, lr: 0.05}}
batch_size: 32
epochs: 1
device: cpu
grid:
  loss: [ce]
  seed: [0]
tune:
  trials: 1
  metric: {metric}
  startup_trials: 1
  untuned: false
  space:
    optimizer.lr: {{type: float, low: 1.0e-3, high: 1.0e-1, log: true}}
"""


@pytest.fixture(scope="module")
def fm_root(tmp_path_factory):
    return fake_fashion_mnist(tmp_path_factory.mktemp("fm"), train_per_class=24, test_per_class=3)


def write(tmp_path, root, holdout=True, metric="loss"):
    path = tmp_path / "lt.yaml"
    path.write_text(CONFIG.format(out=tmp_path / "runs", root=root, holdout=str(holdout).lower(), metric=metric))
    return path


def test_trials_keep_the_test_split_data_and_are_judged_on_the_holdout(tmp_path, fm_root):
    plan = plan_sweep(write(tmp_path, fm_root))
    (study,) = plan_tuning(plan)
    assert study.tuning.metric == "holdout_loss" and study.tuning.split == "holdout"
    exp = trial_cell(study, "t0", {"optimizer.lr": 0.01}, plan.sweep_dir).experiment
    assert exp.data.eval_split == "test" and exp.data.holdout  # the re-runs' data, the tuning seed
    without = plan_tuning(plan_sweep(write(tmp_path, fm_root, holdout=False)))[0]
    assert without.tuning.metric == "val_loss" and without.base["data"]["eval_split"] == "val"  # as before
    with pytest.raises(UserError, match="'val_loss' is measured on the test split"):
        plan_tuning(plan_sweep(write(tmp_path, fm_root, metric="val_loss")))
    with pytest.raises(UserError, match="these trials have no held-out split"):
        plan_tuning(plan_sweep(write(tmp_path, fm_root, holdout=False, metric="holdout_loss")))


def test_a_tuned_sweep_with_a_holdout_judges_trials_on_it_and_reports_test(tmp_path, fm_root, forked_cells):
    out = tmp_path / "sweep"
    res = run_cli(["sweep", str(write(tmp_path, fm_root)), "--out", str(out)])
    assert res.code == 0, res.err
    studies = json.loads((out / "tune" / "studies.json").read_text())["tuned_documents"]["lt-tuned"]
    assert studies["metric"] == "holdout_loss"
    trials = studies["studies"][0]["trials"]
    assert len(trials) == 1
    for trial in trials:
        run = out / "tune" / trial["run"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["selected_on"] == "holdout"
        assert trial["value"] == summary[studies["epoch"]]["holdout_loss"]  # judged on the held-out split
    (row,) = csv.DictReader((out / "results.csv").open())
    assert row["document"] == "lt-tuned" and row["status"] == "done" and row["final_balanced_accuracy"]
    split = json.loads((out / row["cell"] / "split.json").read_text())
    # the re-run reports the test split and trains on what an untuned cell of its seed trains on
    untuned = prepare_splits(plan_sweep(write(tmp_path, fm_root)).cells[0].experiment)
    assert split["eval_split"] == "test" and split["val"] == untuned.val.names
    assert split["train"] == untuned.train.names and split["holdout"] == untuned.holdout.names
    report = (out / "report.md").read_text()
    assert "judged on the held-out split by holdout_loss" in report
