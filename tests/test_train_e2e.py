import csv
import json

import torch
import yaml
from cli_helper import run_cli

from lossbench.data.imbalance import long_tail_counts

CLASSIFICATION = """
name: clf
task: classification
output_dir: OUT
data: {source: synthetic, num_classes: 4, image_size: 16, train_per_class: 400, val_per_class: 40, imbalance_ratio: 3}
model: {name: resnet20}
loss: focal(gamma=2)
optimizer: {name: adam, lr: 0.001}
epochs: 1
batch_size: 16
"""

SEGMENTATION = """
name: seg
task: segmentation
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 16, train_per_class: 24, val_per_class: 8}
model: {name: unet, encoder: resnet18, encoder_depth: 3}
loss: ce + dice
epochs: 2
batch_size: 8
"""


def run_train(path, *extra):
    return run_cli(["train", str(path), *extra])


def check_run_folder(run, epochs):
    for name in ["config.yaml", "metrics.csv", "summary.json", "best.pt", "last.pt", "confusion_matrix.png"]:
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed"] == 0 and "torch" in config["versions"]
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == epochs
    return json.loads((run / "summary.json").read_text())


def test_classification_end_to_end_learns(tiny_config, tmp_path):
    res = run_train(tiny_config(CLASSIFICATION))
    assert res.code == 0, res.err
    summary = check_run_folder(tmp_path / "runs" / "clf", 1)
    # 4 classes: chance is 0.25; one short epoch must clearly beat it
    assert summary["best"]["val_accuracy"] > 0.5
    assert summary["class_counts"] == long_tail_counts(400, 4, 3.0)
    assert len(summary["best"]) > 5 and "val_recall_3" in summary["best"]


def test_segmentation_end_to_end(tiny_config, tmp_path):
    res = run_train(tiny_config(SEGMENTATION))
    assert res.code == 0, res.err
    summary = check_run_folder(tmp_path / "runs" / "seg", 2)
    assert 0 <= summary["best"]["val_miou"] <= 1
    assert len([k for k in summary["best"] if k.startswith("val_iou_")]) == 3
    rows = list(csv.DictReader((tmp_path / "runs" / "seg" / "metrics.csv").open()))
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])


def test_existing_run_folder_is_not_clobbered(tiny_config, tmp_path):
    path = tiny_config(SEGMENTATION.replace("epochs: 2", "epochs: 1"))
    assert run_train(path).code == 0
    before = (tmp_path / "runs" / "seg" / "summary.json").read_bytes()
    res = run_train(path)
    assert res.code == 2 and "already exists" in res.err and "--overwrite" in res.err
    assert (tmp_path / "runs" / "seg" / "summary.json").read_bytes() == before
