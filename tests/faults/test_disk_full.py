"""A disk that fills up during a checkpoint write: one line naming the file and the free space, no temp or pending
file left, the previous checkpoint intact, and ``--resume`` goes on once space is freed (issue 27, item 8).

The disk is a real tmpfs of a few MB (root only); it is filled, all but a few KB, after the first epoch.
"""

from __future__ import annotations

import torch
import yaml

from lossbench.config import load_experiment
from lossbench.engine import train
from lossbench.errors import UserError

from .helpers import TALLY, fill_disk, run_cli, small_file_system

CONFIG = {"name": "full", "data": {"source": "synthetic", "num_classes": 3, "image_size": 8, "train_per_class": 4,
                                   "val_per_class": 2},
          "model": {"name": "resnet20"}, "epochs": 2, "batch_size": 4, "device": "cpu"}


def test_disk_full_during_a_checkpoint_write(tmp_path):
    with small_file_system(tmp_path / "disk", 16) as disk:
        cfg = tmp_path / "full.yaml"
        cfg.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(disk / "runs")}))
        run = disk / "runs" / "full"
        filled = []

        def fill_after_first_epoch(epoch: int) -> None:
            if epoch == 1:
                filled.append(fill_disk(disk, leave_bytes=64 * 1024))

        try:
            train(load_experiment(cfg), log=lambda *_: None, on_epoch_end=fill_after_first_epoch)
        except UserError as exc:
            line = str(exc)
        else:
            raise AssertionError("training went on with a full disk")
        assert "\n" not in line and str(run) in line and "the disk is full" in line and "MB free" in line, line
        assert "the previous file is kept" in line, line
        left = sorted(p.name for p in run.iterdir())
        assert not [n for n in left if n.endswith(".tmp") or n == ".best.pending.pt"], left
        assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
        assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 1
        filled[0].unlink()
        res = run_cli(["train", "--resume", str(run)])
        assert res.code == 0, res.err
        assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    TALLY["disk-full checkpoint writes refused, previous kept"] += 1
