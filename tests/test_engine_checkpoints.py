"""checkpoint_every: last.pt every N epochs and after the last, best.pt with it, metrics.csv every epoch; a run
killed between two checkpoints resumes from the earlier one and ends bit for bit like an uninterrupted run."""

import csv
import json
import signal

import torch
from cli_helper import forked_call, metrics_without_time, run_cli, train_until_killed_after_epoch
from torch import nn

from lossbench.config import load_experiment
from lossbench.engine import train
from lossbench.engine.checkpoints import CheckpointSchedule

CONFIG = """
name: NAME
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 3, imbalance_ratio: 2}
model: {name: resnet20}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
ema: {decay: 0.9}
epochs: 5
checkpoint_every: 2
batch_size: 8
"""


def test_schedule_writes_every_nth_epoch_the_last_and_an_early_stop():
    schedule = CheckpointSchedule(every=2, epochs=5)
    assert [e for e in range(1, 6) if schedule.is_due(e, stopped_early=False)] == [2, 4, 5]
    assert schedule.is_due(3, stopped_early=True)
    assert [e for e in range(1, 4) if CheckpointSchedule(1, 3).is_due(e, False)] == [1, 2, 3]


def test_a_best_epoch_between_checkpoints_is_held_as_a_copy_and_written_with_the_next():
    model = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    schedule = CheckpointSchedule(every=2, epochs=4)
    assert schedule.best_to_write({"model": model.state_dict(), "epoch": 1}, due=False) is None
    with torch.no_grad():
        model.weight.add_(1.0)  # the next epoch trains on
    held = schedule.best_to_write(None, due=True)  # epoch 2 is no better: epoch 1's best goes with its last.pt
    assert held["epoch"] == 1 and all(torch.equal(held["model"][k], before[k]) for k in before)
    assert schedule.best_to_write(None, due=True) is None  # written once


def files_after_each_epoch(config: str, seen: list) -> None:
    run = load_experiment(config).run_dir

    def look(epoch: int) -> None:
        last = torch.load(run / "last.pt", weights_only=True)["epoch"] if (run / "last.pt").exists() else None
        best = torch.load(run / "best.pt", weights_only=True)["epoch"] if (run / "best.pt").exists() else None
        seen.append((epoch, len(list(csv.DictReader((run / "metrics.csv").open()))), last, best))

    train(load_experiment(config), log=lambda *_: None, on_epoch_end=look)


def test_run_checkpoints_every_second_epoch_and_resumes_exactly(tiny_config, tmp_path):
    full = tiny_config(CONFIG.replace("NAME", "full"), "full.yaml")
    cut = tiny_config(CONFIG.replace("NAME", "cut"), "cut.yaml")
    killed = forked_call(train_until_killed_after_epoch, str(cut), 3, log=tmp_path / "killed.log")
    seen: list = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the uninterrupted run, in this process while the other one trains
        files_after_each_epoch(str(full), seen)
    finally:
        torch.set_num_threads(threads)
    runs = tmp_path / "runs"
    best = json.loads((runs / "full" / "summary.json").read_text())["best"]["epoch"]
    # metrics.csv every epoch; last.pt after epochs 2, 4 and 5 only; best.pt never ahead of last.pt
    assert [(e, rows, last) for e, rows, last, _ in seen] == [(1, 1, None), (2, 2, 2), (3, 3, 2), (4, 4, 4),
                                                              (5, 5, 5)]
    assert all(b is None or b <= last for _, _, last, b in seen if last is not None)
    assert seen[-1][3] == best and torch.load(runs / "full" / "best.pt", weights_only=True)["epoch"] == best

    killed.join(300)
    assert killed.exitcode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    assert torch.load(runs / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    assert len(list(csv.DictReader((runs / "cut" / "metrics.csv").open()))) == 3  # written, not checkpointed
    res = run_cli(["train", "--resume", str(runs / "cut")])
    assert res.code == 0, res.err
    assert "resuming after epoch 2/5" in res.out
    assert metrics_without_time(runs / "cut") == metrics_without_time(runs / "full")
    for name, keys in (("last.pt", ["model", "ema", "optimizer"]), ("best.pt", ["model"])):
        a = torch.load(runs / "full" / name, weights_only=True)
        b = torch.load(runs / "cut" / name, weights_only=True)
        assert a["epoch"] == b["epoch"]
        for key in keys:
            flat_a, flat_b = dict(_tensors(a[key])), dict(_tensors(b[key]))
            assert flat_a.keys() == flat_b.keys() and flat_a
            assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), f"{name} {key} differs"


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")
