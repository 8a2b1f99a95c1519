"""DDP through torchrun: 2 CPU processes (gloo) give the metrics a single-process evaluation of the checkpoint gives."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from shared import once_per_session

from lossbench.config import load_experiment
from lossbench.contract import IGNORE_INDEX
from lossbench.data import build_data
from lossbench.engine.distributed import ShardSampler
from lossbench.engine.loop import evaluate
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


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory):
    """The job of :func:`run_torchrun_job`, run once for the whole test session: (result, folder, config)."""
    tmp, (code, out, err) = once_per_session(tmp_path_factory, "torchrun", run_torchrun_job)
    return subprocess.CompletedProcess([], code, out, err), tmp, tmp / "ddp.yaml"


def run_torchrun_job(tmp):
    """One torchrun job of 2 CPU processes for both tests below: the skip check, then `lossbench train`."""
    path = tmp / "ddp.yaml"
    path.write_text(CONFIG.replace("OUT", str(tmp / "runs")))
    script = tmp / "job.py"
    script.write_text(SKIP_SCRIPT + JOB_TRAIN)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(script), str(tmp / "result"), str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=300)
    return res.returncode, res.stdout, res.stderr


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


SKIP_SCRIPT = """
import sys
import torch, torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from lossbench.engine.distributed import session
from lossbench.engine.loop import TrainLoop
from lossbench.metrics import TaskMetrics

class NanOnRank1(nn.Module):
    # NaN on rank 1 only, on its 2nd and 5th batch: every rank must skip those accumulation groups
    def __init__(self):
        super().__init__()
        self.calls = 0
    def forward(self, logits, target):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if dist.get_rank() == 1 and self.calls in (2, 5) else loss

with session("cpu") as ctx:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = TrainLoop(model=model, loss_fn=NanOnRank1(), optimizer=opt, device=ctx.device, grad_accumulation=2,
                     nonfinite_loss="skip", ctx=ctx, wrapped=DistributedDataParallel(model))
    g = torch.Generator().manual_seed(ctx.rank)
    data = TensorDataset(torch.randn(12, 3, 2, 2, generator=g), torch.arange(12) % 3)
    result = loop.train_epoch(DataLoader(data, batch_size=2), TaskMetrics("classification", 3))
    w = model[1].weight.detach().clone()
    dist.all_reduce(w)
    out = f"skipped {result.skipped_steps}, in step {torch.allclose(w / 2, model[1].weight)}"
    open(sys.argv[1] + f".rank{ctx.rank}", "w").write(out)
"""


# appended to SKIP_SCRIPT, inside its session: `lossbench train` then reuses the job's process group
JOB_TRAIN = """
    from lossbench.cli import main
    code = main(["train", sys.argv[2]])
sys.exit(code)
"""


def test_ddp_ranks_agree_on_skipping_a_nonfinite_step(torchrun_job):
    res, tmp, _ = torchrun_job
    assert res.returncode == 0, res.stderr[-3000:]
    # batches 2 and 5 of 6 fall in accumulation groups 1 and 3 of 3: two skipped steps on both ranks
    for rank in range(2):
        assert (tmp / f"result.rank{rank}").read_text() == "skipped 2, in step True", rank
