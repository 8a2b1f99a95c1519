"""Exact resume: a run SIGKILLed after epoch 2 of 4 and resumed ends bit for bit like an uninterrupted one."""

import csv
import json
import signal

import pytest
import torch
from cli_helper import forked_call, metrics_without_time, run_cli, train_until_killed_after_epoch

from lossbench.engine import train
from lossbench.config import load_experiment
from lossbench.errors import UserError

CONFIG = """
name: NAME
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 3, imbalance_ratio: 2}
model: {name: resnet20}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0005}
scheduler: {name: cosine, warmup_epochs: 1}
ema: {decay: 0.9}
early_stopping: {metric: val_loss, patience: 10}
stages:
  - {epochs: 1, train: head}
  - {epochs: 3, train: all, optimizer: {backbone_lr_factor: 0.5}}
batch_size: 8
"""

def test_killed_and_resumed_run_matches_uninterrupted_bit_for_bit(tiny_config, tmp_path):
    full = tiny_config(CONFIG.replace("NAME", "full"), "full.yaml")
    cut = tiny_config(CONFIG.replace("NAME", "cut"), "cut.yaml")
    killed = forked_call(train_until_killed_after_epoch, str(cut), 2, log=tmp_path / "killed.log")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the uninterrupted run, in this process while the other one trains
        train(load_experiment(full), log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    killed.join(300)
    assert killed.exitcode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    runs = tmp_path / "runs"
    assert torch.load(runs / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    assert not (runs / "cut" / "summary.json").exists()
    with pytest.raises(UserError, match="holds an unfinished run; continue it with lossbench train --resume"):
        train(load_experiment(cut))
    res = run_cli(["train", "--resume", str(runs / "cut")])  # the kill was a real process; resuming needs none
    assert res.code == 0, res.err
    assert "resuming after epoch 2/4" in res.out

    assert metrics_without_time(runs / "cut") == metrics_without_time(runs / "full")
    for name in ["last.pt", "best.pt"]:
        a = torch.load(runs / "full" / name, weights_only=True)
        b = torch.load(runs / "cut" / name, weights_only=True)
        assert a["epoch"] == b["epoch"]
        for key in ["model", "ema", "optimizer"] if name == "last.pt" else ["model"]:
            flat_a, flat_b = _tensors(a[key]), _tensors(b[key])
            assert flat_a.keys() == flat_b.keys() and flat_a
            assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), f"{name} {key} differs"
    sa, sb = (json.loads((runs / r / "summary.json").read_text()) for r in ("full", "cut"))
    assert sa["best"] == sb["best"] and sa["final"] == sb["final"] and sb["epochs_trained"] == 4


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else []
    for k, v in items:
        out.update(_tensors(v, f"{prefix}.{k}"))
    return out


def test_resume_of_a_folder_without_checkpoint_is_one_line(tmp_path):
    from lossbench.engine import resume

    with pytest.raises(UserError, match="cannot resume, config.yaml is missing"):
        resume(tmp_path)


def test_unwritable_output_folder_fails_before_training(tiny_config, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    exp = load_experiment(tiny_config(CONFIG.replace("NAME", "x").replace("OUT", str(blocker / "runs"))))

    def no_data(*_):
        raise AssertionError("training started")

    monkeypatch.setattr("lossbench.engine.fit.build_data", no_data)
    with pytest.raises(UserError, match="cannot write the run folder .*choose a writable output_dir"):
        train(exp)


EARLY = """
name: early
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 3}
model: {name: resnet20}
optimizer: {name: adamw, lr: 0.003, weight_decay: 0.01}
scheduler: {name: plateau, patience: 0, gamma: 0.5, monitor: val_loss}
epochs: 5
best_metric: val_loss
early_stopping: {metric: accuracy, patience: 1, min_delta: 1.0}
grad_accumulation: 2
grad_clip_norm: 5.0
batch_size: 4
"""


def test_early_stopping_best_metric_and_resume_of_a_finished_run(tiny_config, tmp_path, monkeypatch):
    import lossbench.engine.fit as fit
    from lossbench.engine import resume

    real_build_data = fit.build_data

    def with_run_file(exp):
        data = real_build_data(exp)
        data.run_files = {"class_map.txt": "0 a\n1 b\n2 c\n"}
        return data

    monkeypatch.setattr(fit, "build_data", with_run_file)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(load_experiment(tiny_config(EARLY)), log=lambda *_: None)
        run = tmp_path / "runs" / "early"
        # no accuracy gain can exceed min_delta 1.0: epoch 2 is the patience-1 epoch without improvement
        assert summary["stopped_early"] and summary["epochs_trained"] == 2
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        assert len(rows) == 2 and (run / "class_map.txt").read_text() == "0 a\n1 b\n2 c\n"
        losses = [float(r["val_loss"]) for r in rows]
        assert summary["best_metric"] == "val_loss" and summary["best"]["epoch"] == 1 + losses.index(min(losses))
        assert torch.load(run / "best.pt", weights_only=True)["epoch"] == summary["best"]["epoch"]
        again = resume(run, log=lambda *_: None)
        assert again["epochs_trained"] == 2 and len(list(csv.DictReader((run / "metrics.csv").open()))) == 2
    finally:
        torch.set_num_threads(threads)


def test_unknown_stage_group_fails_before_the_first_epoch(tiny_config, tmp_path):
    text = CONFIG.replace("NAME", "bad").replace("train: all,", "train: [head, neck],")
    with pytest.raises(UserError, match="stages: unknown parameter group 'neck'"):
        train(load_experiment(tiny_config(text)), log=lambda *_: None)
    assert not (tmp_path / "runs" / "bad" / "last.pt").exists()


def test_train_command_takes_a_config_or_resume(capsys):
    from lossbench.cli import main

    assert main(["train"]) == 2
    assert "give either a CONFIG file or --resume RUN_DIR" in capsys.readouterr().err
    assert main(["train", "--resume", "runs/x", "--set", "epochs=3"]) == 2
    assert "drop --set / --overwrite" in capsys.readouterr().err
