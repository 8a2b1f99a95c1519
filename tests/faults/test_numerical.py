"""Non-finite losses and diverging weights, end to end through ``lossbench train``.

``nonfinite_loss: stop`` (the default) ends the run at once with one line and
keeps the last finite epoch's checkpoints; ``skip`` skips each step whose loss
is not finite and counts it in metrics.csv. Weights that have become inf / nan
stop the run in both modes, before that epoch is saved.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses import LOSSES
from lossbench.losses.registry import register_loss

from .helpers import TALLY, run_cli

CONFIG = """
name: {name}
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 16, val_per_class: 4}}
model: {{name: resnet20}}
optimizer: {{name: sgd, lr: 0.01}}
loss: {loss}
stages:
  - {{epochs: 1}}
  - {{epochs: 2, lr: {lr}}}
batch_size: 8
nonfinite_loss: {mode}
device: cpu
"""

EVERY = 3


class NanEveryThirdStep(nn.Module):
    """Cross-entropy, but nan on every third training call (never in evaluation)."""

    def __init__(self, ctx) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, logits, target):
        loss = F.cross_entropy(logits, target)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls % EVERY == 0:
                return loss * float("nan")
        return loss


@pytest.fixture
def nan_loss():
    register_loss("test_nan_every_third")(NanEveryThirdStep)
    yield "test_nan_every_third"
    LOSSES._items.pop("test_nan_every_third")


def write(tmp_path, name, mode, lr=0.01, loss="ce"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name, out=tmp_path / "runs", mode=mode, lr=lr, loss=loss))
    return path, tmp_path / "runs" / name


def rows(run):
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def finite_state(path):
    state = torch.load(path, weights_only=True)
    return state, all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_lr_1e3_stops_in_one_line_and_keeps_the_last_finite_epoch(tmp_path, mode):
    cfg, run = write(tmp_path, f"lr1e3-{mode}", mode, lr=1000.0)
    res = run_cli(["train", str(cfg)])
    assert res.code == 2 and "Traceback" not in res.err, res.err
    assert len(res.err_lines) == 1, res.err
    line = res.err_lines[0]
    assert line.startswith("lossbench: error: epoch 2/3") and "last.pt keeps epoch 1" in line, line
    assert "non-finite" in line or "val loss became" in line, line
    assert [r["epoch"] for r in rows(run)] == ["1"] and not (run / "summary.json").exists()
    for name in ("last.pt", "best.pt"):
        state, finite = finite_state(run / name)
        assert state["epoch"] == 1 and finite, name
    TALLY["non-finite runs stopped"] += 1


def test_nonfinite_loss_stop_ends_at_the_first_bad_step(tmp_path, nan_loss):
    cfg, run = write(tmp_path, "stop", "stop", loss=nan_loss)
    res = run_cli(["train", str(cfg)])
    assert res.code == 2 and len(res.err_lines) == 1, res.err
    assert f"loss became nan (epoch 1/3 train, batch {EVERY})" in res.err_lines[0]
    assert not (run / "last.pt").exists() and not (run / "metrics.csv").exists()


def test_nonfinite_loss_skip_skips_and_counts_each_step(tmp_path, nan_loss):
    cfg, run = write(tmp_path, "skip", "skip", loss=nan_loss)
    res = run_cli(["train", str(cfg)])
    assert res.code == 0, res.err
    table = rows(run)
    steps = math.ceil(_train_size(run) / 8)  # batch_size 8, one optimizer step per batch
    expected, call = [], 0
    for _ in table:
        expected.append(sum((call + i + 1) % EVERY == 0 for i in range(steps)))
        call += steps
    assert [int(r["skipped_steps"]) for r in table] == expected and sum(expected) > 0
    assert all(math.isfinite(float(r["train_loss"])) and math.isfinite(float(r["val_loss"])) for r in table)
    state, finite = finite_state(run / "last.pt")
    assert finite and state["epoch"] == 3
    assert f"{expected[0]} non-finite steps skipped" in res.out
    TALLY["non-finite steps skipped and counted"] += sum(expected)


def _train_size(run):
    import json

    return sum(json.loads((run / "class_counts.json").read_text()).values())
