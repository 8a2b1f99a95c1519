"""SIGKILL a training run four times at random moments; each ``train --resume`` goes on, and the end is exact.

The run is killed twice mid-epoch (a random delay after it made progress) and
twice inside a checkpoint write (as soon as the temp file of ``last.pt``
appears, on a disk made slow for checkpoint fsyncs so the write lasts long
enough to be hit; a leftover temp file proves the kill landed inside it), in a
seeded random order. After every kill the run folder must be valid, and
``--resume`` continues from its ``last.pt``. The final metrics, checkpoints and
summary equal those of an uninterrupted run (CPU, deterministic). Processes are
forked from a server that has lossbench imported, so kills cost seconds, not
minutes of imports.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import time
from pathlib import Path

import torch
import yaml

from .helpers import TALLY, forked_cli

KILLS = 4
EPOCHS = 8
SLOW_FSYNC = 0.06

CONFIG = """
name: {name}
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 16, val_per_class: 4, imbalance_ratio: 2,
        augment: {{hflip: 0.5, crop_padding: 1}}}}
model: {{name: resnet20}}
optimizer: {{name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0005}}
scheduler: {{name: cosine, warmup_epochs: 1}}
ema: {{decay: 0.9}}
epochs: {epochs}
batch_size: 8
device: cpu
"""


def rows_without_time(rows):
    return [{k: str(v) for k, v in r.items() if k != "seconds"} for r in rows]


def csv_rows(path: Path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def checkpoint_epoch(run: Path) -> int:
    try:
        return torch.load(run / "last.pt", weights_only=True)["epoch"]
    except (OSError, RuntimeError, EOFError):
        return 0


def temp_files(run: Path) -> list[str]:
    return [n for n in os.listdir(run) if n.endswith(".tmp")] if run.is_dir() else []


def wait_for(predicate, proc, timeout=60.0, poll=0.0005):
    """Poll until ``predicate()`` holds; False if the process ended or time ran out first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if not proc.is_alive():
            return predicate()
        time.sleep(poll)
    return False


def assert_valid_run_folder(run: Path) -> int:
    """config.yaml parses, last.pt / best.pt load safely, metrics.csv agrees with last.pt; returns its epoch."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["epochs"] == EPOCHS
    state = torch.load(run / "last.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)
    pending = run / ".best.pending.pt"
    if best["epoch"] != state["best"]["epoch"]:  # killed between last.pt and committing the new best.pt
        best = torch.load(pending, weights_only=True)
    assert best["epoch"] == state["best"]["epoch"] <= state["epoch"]
    rows = csv_rows(run / "metrics.csv")
    # metrics.csv is written just before last.pt: it may hold the epoch a kill cut off before its checkpoint
    assert len(rows) in (state["epoch"], state["epoch"] + 1), (len(rows), state["epoch"])
    assert rows_without_time(rows[: state["epoch"]]) == rows_without_time(state["rows"])
    assert not (run / "summary.json").exists()
    return state["epoch"]


def test_sigkills_mid_epoch_and_mid_checkpoint_then_resume_end_like_an_uninterrupted_run(tmp_path):
    out = tmp_path / "runs"
    for name in ("full", "cut"):
        (tmp_path / f"{name}.yaml").write_text(CONFIG.format(name=name, out=out, epochs=EPOCHS))
    run = out / "cut"
    reference = forked_cli(["train", str(tmp_path / "full.yaml")], tmp_path / "full.log")

    rng = random.Random(20261123)
    modes = ["epoch", "checkpoint"] * (KILLS // 2)
    rng.shuffle(modes)
    kills, in_write, epochs_at_kill = 0, 0, []
    argv = ["train", str(tmp_path / "cut.yaml")]
    for mode in modes:
        log = tmp_path / f"cut-{kills}.log"
        start_epoch = checkpoint_epoch(run)
        proc = forked_cli(argv, log, slow_fsync=SLOW_FSYNC)
        assert wait_for(lambda: checkpoint_epoch(run) > start_epoch, proc), log.read_text()
        seconds = [float(r["seconds"]) for r in csv_rows(run / "metrics.csv")]
        epoch_seconds = sum(seconds) / len(seconds)
        if mode == "checkpoint":
            leftovers = set(temp_files(run))
            assert wait_for(lambda: any(n.startswith(".last.pt.") for n in set(temp_files(run)) - leftovers), proc)
            time.sleep(rng.uniform(0, SLOW_FSYNC * 0.5))
        else:
            time.sleep(rng.uniform(0.05, 0.8) * epoch_seconds)
        assert proc.is_alive(), f"the run finished before kill {kills + 1}; raise EPOCHS"
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        kills += 1
        in_write += any(n.startswith(".last.pt.") for n in temp_files(run))  # the write it cut short
        epochs_at_kill.append(assert_valid_run_folder(run))
        argv = ["train", "--resume", str(run)]

    proc = forked_cli(argv, tmp_path / "cut-final.log")
    proc.join(120)
    log = (tmp_path / "cut-final.log").read_text()
    assert proc.exitcode == 0, log
    assert f"resuming after epoch {epochs_at_kill[-1]}/{EPOCHS}" in log
    reference.join(120)
    assert reference.exitcode == 0, (tmp_path / "full.log").read_text()

    # the end equals the uninterrupted run's: every metric row, the checkpoints bit for bit, the summary
    full = out / "full"
    assert rows_without_time(csv_rows(run / "metrics.csv")) == rows_without_time(csv_rows(full / "metrics.csv"))
    for name, keys in (("last.pt", ["model", "ema", "optimizer"]), ("best.pt", ["model"])):
        a, b = (torch.load(r / name, weights_only=True) for r in (full, run))
        assert a["epoch"] == b["epoch"]
        for key in keys:
            ta, tb = _tensors(a[key]), _tensors(b[key])
            assert ta.keys() == tb.keys() and ta
            assert all(torch.equal(ta[k], tb[k]) for k in ta), f"{name} {key} differs"
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (full, run))
    assert sa["best"] == sb["best"] and sa["final"] == sb["final"] and sb["epochs_trained"] == EPOCHS
    assert not temp_files(run) and not (run / ".best.pending.pt").exists(), "a killed write was left behind"
    assert in_write >= 1, "no kill landed inside a checkpoint write"
    TALLY["kills survived"] += kills
    TALLY["kills inside a checkpoint write"] += in_write

    # resuming the finished run again changes nothing that matters
    metrics_before = (run / "metrics.csv").read_bytes()
    proc = forked_cli(["train", "--resume", str(run)], tmp_path / "again.log")
    proc.join(60)
    assert proc.exitcode == 0, (tmp_path / "again.log").read_text()
    assert (run / "metrics.csv").read_bytes() == metrics_before


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else []
    out = {}
    for k, v in items:
        out.update(_tensors(v, f"{prefix}.{k}"))
    return out
