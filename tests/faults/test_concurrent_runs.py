"""Two ``lossbench train --overwrite`` of one run name at once: one trains, the other is refused in one line, and
the run folder holds one run's files, never a mix (issue 27, item 1).

Real processes, forked with lossbench imported; their checkpoint writes are slowed so that they overlap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import yaml

from .helpers import TALLY, forked_cli

CONFIG = {"name": "same", "data": {"source": "synthetic", "num_classes": 3, "image_size": 8, "train_per_class": 4,
                                   "val_per_class": 2},
          "model": {"name": "resnet20"}, "epochs": 2, "batch_size": 4, "device": "cpu"}


def start(tmp: Path, seed: int, slow_fsync: float):
    cfg = tmp / f"seed{seed}.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(tmp / "runs"), "seed": seed}))
    out, err = tmp / f"seed{seed}.out", tmp / f"seed{seed}.err"
    return forked_cli(["train", str(cfg), "--overwrite"], out, slow_fsync, err_path=err, cwd=tmp), err


def finish(proc, err: Path) -> tuple[int, list[str]]:
    proc.join(120)
    assert proc.exitcode is not None, "a train did not end"
    return proc.exitcode, [ln for ln in err.read_text().splitlines() if ln.strip()]


def assert_one_run(run: Path, seed: int) -> None:
    """config.yaml, summary.json, last.pt and best.pt all belong to the run with ``seed``."""
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["seed"] == seed
    last = torch.load(run / "last.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)
    assert last["epoch"] == summary["epochs_trained"]
    assert best["epoch"] == summary["best"]["epoch"]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".best.pending")]


def assert_refused(code: int, lines: list[str], run: Path) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("lossbench: error: "), lines
    assert str(run) in lines[0] and "another lossbench process (pid" in lines[0], lines


def test_a_second_train_of_a_running_run_is_refused(tmp_path):
    """The second starts while the first is writing its folder: refused in one line before reading any data."""
    run = tmp_path / "runs" / "same"
    first, first_err = start(tmp_path, 1, slow_fsync=0.4)
    deadline = time.monotonic() + 60
    while not (run / "config.yaml").exists() and first.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (run / "config.yaml").exists() and first.is_alive(), first_err.read_text()
    second, second_err = start(tmp_path, 2, slow_fsync=0.0)
    code2, lines2 = finish(second, second_err)
    code1, lines1 = finish(first, first_err)
    assert code1 == 0, lines1
    assert_refused(code2, lines2, run)
    assert "train /" not in (tmp_path / "seed2.out").read_text(), "the refused run read its data first"
    assert_one_run(run, seed=1)
    TALLY["concurrent runs refused"] += 1


def test_two_trains_started_at_once_leave_one_run(tmp_path):
    """Both start together and read their data at the same time: whichever creates the folder second is refused."""
    run = tmp_path / "runs" / "same"
    procs = {seed: start(tmp_path, seed, slow_fsync=0.3) for seed in (1, 2)}
    ends = {seed: finish(proc, err) for seed, (proc, err) in procs.items()}
    winners = [seed for seed, (code, _) in ends.items() if code == 0]
    assert len(winners) == 1, ends
    loser = 3 - winners[0]
    assert_refused(*ends[loser], run)
    assert_one_run(run, seed=winners[0])
    TALLY["concurrent runs refused"] += 1
