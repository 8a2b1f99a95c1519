"""DDP through torchrun: 2 CPU processes (gloo) give the metrics a single-process evaluation of the checkpoint gives.

The job is launched as ``torchrun --nproc_per_node=2 --master_port=P --start_method=fork`` launches a function
entry point (torch.distributed.run's own argument parsing and elastic agent), from a process forked with
lossbench imported: the two ranks are forks of it, not fresh interpreters that import torch and lossbench again.
"""

import json
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from cli_helper import forked_call
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from shared import once_per_session

from lossbench.config import load_experiment
from lossbench.contract import IGNORE_INDEX
from lossbench.data import build_data
from lossbench.engine.distributed import ShardSampler, session
from lossbench.engine.loop import TrainLoop, evaluate
from lossbench.losses import build_loss
from lossbench.metrics import TaskMetrics
from lossbench.models import build_model

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


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory):
    """The job of :func:`run_torchrun_job`, run once for the whole test session: (result, folder, config)."""
    tmp, (code, out, err) = once_per_session(tmp_path_factory, "torchrun", run_torchrun_job)
    return subprocess.CompletedProcess([], code, out, err), tmp, tmp / "ddp.yaml"


def run_torchrun_job(tmp):
    """One torchrun job of 2 CPU processes for both tests below: the skip check, then `lossbench train`."""
    path = tmp / "ddp.yaml"
    path.write_text(CONFIG.replace("OUT", str(tmp / "runs")))
    log = tmp / "job.log"
    launcher = forked_call(torchrun, str(tmp / "result"), str(path), free_port(), log=log, daemon=False)
    launcher.join(300)
    if launcher.exitcode is None:
        launcher.kill()
        launcher.join()
    text = log.read_text()
    return launcher.exitcode, text, text


def torchrun(result: str, config: str, port: int) -> None:
    """``torchrun --nproc_per_node=2 --master_port=PORT --start_method=fork`` of :func:`job` (result, config)."""
    from torch.distributed.run import config_from_args, elastic_launch, get_args_parser

    args = get_args_parser().parse_args(["--nproc_per_node=2", f"--master_port={port}", "--start_method=fork",
                                         "--monitor_interval=0.1", "job"])
    launch, _, _ = config_from_args(args)
    elastic_launch(launch, job)(result, config)


def test_two_process_ddp_metrics_equal_single_process_evaluation(torchrun_job):
    res, tmp, path = torchrun_job
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("best val_balanced_accuracy") == 1  # only rank 0 reports
    run = tmp / "runs" / "ddp"
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


class NanOnRank1(nn.Module):
    """Cross-entropy, but NaN on rank 1 only, on its 2nd and 5th batch: every rank must skip those groups."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, logits, target):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if dist.get_rank() == 1 and self.calls in (2, 5) else loss


def job(result: str, config: str) -> None:
    """One rank: a tiny DDP epoch whose loss is NaN on rank 1 only (written to RESULT.rankN), then `lossbench train`
    CONFIG, which reuses the job's process group."""
    from lossbench.cli import main

    with session("cpu") as ctx:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loop = TrainLoop(model=model, loss_fn=NanOnRank1(), optimizer=opt, device=ctx.device, grad_accumulation=2,
                         nonfinite_loss="skip", ctx=ctx, wrapped=DistributedDataParallel(model))
        g = torch.Generator().manual_seed(ctx.rank)
        data = TensorDataset(torch.randn(12, 3, 2, 2, generator=g), torch.arange(12) % 3)
        outcome = loop.train_epoch(DataLoader(data, batch_size=2), TaskMetrics("classification", 3))
        w = model[1].weight.detach().clone()
        dist.all_reduce(w)
        Path(f"{result}.rank{ctx.rank}").write_text(
            f"skipped {outcome.skipped_steps}, in step {torch.allclose(w / 2, model[1].weight)}")
        code = main(["train", config])
    if code:
        raise RuntimeError(f"lossbench train {config} exited with code {code}")


def test_ddp_ranks_agree_on_skipping_a_nonfinite_step(torchrun_job):
    res, tmp, _ = torchrun_job
    assert res.returncode == 0, res.stderr[-3000:]
    # batches 2 and 5 of 6 fall in accumulation groups 1 and 3 of 3: two skipped steps on both ranks
    for rank in range(2):
        assert (tmp / f"result.rank{rank}").read_text() == "skipped 2, in step True", rank
