"""DDP through torchrun: 2 CPU processes (gloo) give the metrics a single-process evaluation of the checkpoint gives."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from lossbench.config import load_experiment
from lossbench.data import IGNORE_INDEX, build_data
from lossbench.engine.distributed import ShardSampler
from lossbench.engine.fit import evaluate
from lossbench.losses import build_loss
from lossbench.metrics import TaskMetrics
from lossbench.models import build_model
from torch.utils.data import DataLoader

# 9 validation images: DistributedSampler would pad them to 10 and count one twice;
# two stages re-wrap the model in DDP with a different set of trained parameters
CONFIG = """
name: ddp
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 16, train_per_class: 8, val_per_class: 3}
model: {name: resnet18}
optimizer: {name: adam, lr: 0.003}
stages: [{epochs: 1, train: head}, {epochs: 1, train: all}]
grad_accumulation: 2
batch_size: 4
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shard_sampler_splits_without_padding_or_repeats():
    shards = [list(ShardSampler(9, 2, r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(9)) and [len(s) for s in shards] == [5, 4]


def test_two_process_ddp_metrics_equal_single_process_evaluation(tiny_config, tmp_path):
    path = tiny_config(CONFIG)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "lossbench", "train", str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("best val_balanced_accuracy") == 1  # only rank 0 reports
    run = tmp_path / "runs" / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2

    exp = load_experiment(path)
    data = build_data(exp)
    model = build_model(exp.model, exp.task, data.num_classes)
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    loss_fn = build_loss(exp.loss, data.num_classes, exp.task, data.class_counts, IGNORE_INDEX)
    single = evaluate(model, DataLoader(data.val, batch_size=4), loss_fn, TaskMetrics(exp.task, data.num_classes),
                      torch.device("cpu"))
    assert sum(map(sum, single.metrics["confusion_matrix"])) == len(data.val) == 9
    assert summary["best_confusion_matrix"] == single.metrics["confusion_matrix"]
    best = summary["best"]
    for key in ["accuracy", "balanced_accuracy", "macro_f1"]:
        assert best[f"val_{key}"] == pytest.approx(single.metrics[key], abs=1e-12)
    assert best["val_loss"] == pytest.approx(single.loss, rel=1e-4)
