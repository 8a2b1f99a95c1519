"""eval_every: evaluate every N epochs and at each stage's last; training is the same whatever N, so the last
epoch's figures are too, and best.pt, early stopping and a resume see only the evaluated epochs."""

import json

import pytest
import torch

from lossbench.config import load_experiment
from lossbench.engine import resume, train

CONFIG = """
name: NAME
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 3, imbalance_ratio: 2,
       augment: {crop_padding: 2, hflip: 0.5}}
model: {name: resnet20}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
epochs: 5
batch_size: 8
EVERY
"""


def _train(tiny_config, name: str, extra: str = "", **kwargs):
    path = tiny_config(CONFIG.replace("NAME", name).replace("EVERY", extra), f"{name}.yaml")
    exp = load_experiment(path)
    return exp.run_dir, train(exp, log=lambda *_: None, **kwargs)


def _same(a, b) -> bool:
    """Equal, NaN included (a shot group without classes is NaN in both)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _rows(run_dir):
    return [{k: v for k, v in row.items() if k != "seconds"}
            for row in torch.load(run_dir / "last.pt", weights_only=True)["rows"]]


def test_training_is_the_same_whatever_eval_every_and_only_those_epochs_are_scored(tiny_config):
    every_run, every = _train(tiny_config, "every")
    third_run, third = _train(tiny_config, "third", "eval_every: 3")
    rows_every, rows_third = _rows(every_run), _rows(third_run)
    assert [("val_loss" in r) for r in rows_third] == [False, False, True, False, True]  # epoch 3, and the last
    for full, sparse in zip(rows_every, rows_third):  # the same training: every epoch's train loss and lr
        assert _same({k: v for k, v in full.items() if k in sparse}, sparse)
    assert _same(third["final"], every["final"])  # the last epoch's figures, bit for bit
    weights = [torch.load(r / "last.pt", weights_only=True)["model"] for r in (every_run, third_run)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert third["best"]["epoch"] in (3, 5)  # chosen among the evaluated epochs
    assert torch.load(third_run / "best.pt", weights_only=True)["epoch"] == third["best"]["epoch"]
    header = (third_run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_loss" in header and "val_balanced_accuracy" in header


def test_early_stopping_patience_counts_evaluations(tiny_config):
    never_better = "early_stopping: {metric: val_loss, patience: 1, min_delta: 1000000.0}"
    _, each = _train(tiny_config, "each", never_better)
    _, second = _train(tiny_config, "second", never_better + "\neval_every: 2")
    assert each["stopped_early"] and each["epochs_trained"] == 2  # evaluations at epochs 1, 2
    assert second["stopped_early"] and second["epochs_trained"] == 4  # evaluations at epochs 2, 4


def test_a_run_stopped_between_evaluations_resumes_to_the_same_end(tiny_config):
    run_dir, whole = _train(tiny_config, "whole", "eval_every: 3")

    def stop_after_two(epoch: int) -> None:
        if epoch == 2:  # last.pt holds two epochs, neither evaluated
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tiny_config, "cut", "eval_every: 3", on_epoch_end=stop_after_two)
    cut_dir = run_dir.parent / "cut"
    assert not any("val_loss" in r for r in _rows(cut_dir))
    resumed = resume(cut_dir, log=lambda *_: None)
    assert _same(resumed["final"], whole["final"]) and _same(resumed["best"], whole["best"])
    assert _same(_rows(cut_dir), _rows(run_dir))
    assert json.loads((cut_dir / "summary.json").read_text())["epochs_trained"] == 5
