"""Training speed of lossbench's engine against a bare PyTorch loop, in one process.

    PYTHONPATH=src python benchmarks/engine.py              # CPU: ResNet-18, 32x32, batch 64
    PYTHONPATH=src python benchmarks/engine.py --gpu        # CUDA: ResNet-50, 224x224, fp32 bare vs bf16 + channels_last

Both loops train the same model (same initial weights), on the same data
tensors in the same order, with the same optimizer (SGD, momentum 0.9) and
batch size. "lossbench" is ``TrainLoop.train_epoch``, the loop ``lossbench
train`` runs each epoch (autocast, loss-finiteness check, accumulation logic,
training metrics over the whole epoch, progress bar, EMA / scheduler hooks);
"bare" is the four lines of a hand-written loop. Epochs alternate between the
two after a warm-up epoch each, and the median images/s of each is reported
with their ratio. Goal on the CPU: lossbench within 5% of bare (ratio >= 0.95).
On a GPU, lossbench runs with bf16 autocast and channels_last against the
plain fp32 loop (goal: at least 2x).

On a machine shared with other jobs, wall-clock rates swing widely; run with
``--threads 1`` and read the CPU-time column (images per second of this
process's CPU time), which other jobs barely move.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossbench.config import Experiment, ModelConfig, OptimizerConfig
from lossbench.data import build_data
from lossbench.engine.loop import TrainLoop, autocast_for
from lossbench.engine.optim import build_optimizer, optimizer_param_groups
from lossbench.losses import build_loss
from lossbench.losses.combine import DeepSupervision
from lossbench.metrics import TaskMetrics
from lossbench.models import MODELS, build_model, parameter_groups


def synthetic_tensors(images: int, size: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """lossbench's synthetic classification images, decoded and normalized once into two tensors."""
    exp = Experiment(data={"source": "synthetic", "num_classes": classes, "image_size": size,
                           "train_per_class": -(-images // classes), "val_per_class": 1})
    data = build_data(exp)
    n = min(images, len(data.train))
    xs, ys = zip(*(data.train[i] for i in range(n)))
    return torch.stack(xs), torch.tensor(ys)


def classifier(arch: str, classes: int) -> nn.Module:
    """lossbench's registered model ``arch``, or torchvision's (head ``fc``) before the registry has it."""
    if arch in MODELS:
        return build_model(ModelConfig(name=arch), "classification", classes)
    return getattr(torchvision.models, arch)(weights=None, num_classes=classes)


def bare_epoch(model: nn.Module, batches, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    model.train()
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()


def timed(fn, images: int, device: torch.device) -> tuple[float, float]:
    """Images/s of one call of ``fn`` by the wall clock and by this process's CPU time."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - t0), images / (time.process_time() - c0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="ResNet-50 at 224x224 on CUDA, bf16 + channels_last")
    parser.add_argument("--images", type=int, help="images per epoch (default 1024 CPU, 2048 GPU)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs of each loop")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    classes = 10
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device")
        device, arch, size, images = torch.device("cuda"), "resnet50", 224, args.images or 2048
        torch.backends.cudnn.benchmark = True
        g = torch.Generator().manual_seed(0)
        x = torch.randn(images, 3, size, size, generator=g)
        y = torch.randint(0, classes, (images,), generator=g)
        batches = [(x[i:i + args.batch_size].to(device), y[i:i + args.batch_size].to(device))
                   for i in range(0, images, args.batch_size)]
        make_batches = lambda: batches  # noqa: E731  (same tensors already on the GPU, same order)
        amp, channels_last = "bf16", True
    else:
        device, arch, size, images = torch.device("cpu"), "resnet18", 32, args.images or 1024
        x, y = synthetic_tensors(images, size, classes)
        images = len(x)

        def make_batches():
            return DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(0))

        amp, channels_last = "off", False

    torch.manual_seed(0)
    bare_model = classifier(arch, classes).to(device)
    ours_model = classifier(arch, classes).to(device)
    ours_model.load_state_dict(bare_model.state_dict())
    if channels_last:
        ours_model = ours_model.to(memory_format=torch.channels_last)
    cfg = OptimizerConfig(name="sgd", lr=0.01, momentum=0.9)
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    groups = optimizer_param_groups(parameter_groups(ours_model, ("fc.",)), ["head", "backbone"], cfg)
    ours_opt = build_optimizer(cfg, groups)
    loss_fn = DeepSupervision(build_loss("ce", classes, "classification", [1] * classes, 255)).to(device)
    loop = TrainLoop(model=ours_model, loss_fn=loss_fn, optimizer=ours_opt, device=device,
                     autocast=autocast_for(amp, device), channels_last=channels_last)
    metrics = TaskMetrics("classification", classes).to(device)

    run_bare = lambda: bare_epoch(bare_model, make_batches(), bare_opt, device)  # noqa: E731
    run_ours = lambda: loop.train_epoch(make_batches(), metrics)  # noqa: E731
    run_bare(), run_ours()  # warm-up: allocator, cudnn autotuning, lazy init
    bare, ours = [], []
    for _ in range(args.rounds):
        bare.append(timed(run_bare, images, device))
        ours.append(timed(run_ours, images, device))
    where = torch.cuda.get_device_name() if args.gpu else f"CPU, {torch.get_num_threads()} threads"
    label = "lossbench (bf16 + channels_last)" if args.gpu else "lossbench"
    print(f"{arch}, {size}x{size}, batch {args.batch_size}, {images} images/epoch, {where}, {args.rounds} epochs each")
    print(f"{'images/s':<34}{'best':>9}{'median':>9}{'by CPU time (median)':>22}")
    for name, runs in ((f"bare PyTorch loop{' (fp32)' if args.gpu else ''}", bare), (label, ours)):
        wall, cpu = zip(*runs)
        print(f"{name:<34}{max(wall):9.1f}{statistics.median(wall):9.1f}{statistics.median(cpu):22.1f}")
    b, o = statistics.median(w for w, _ in bare), statistics.median(w for w, _ in ours)
    print(f"ratio lossbench / bare, best: {max(w for w, _ in ours) / max(w for w, _ in bare):.3f}, "
          f"median: {o / b:.3f}, by CPU time: {statistics.median(c for _, c in ours) / statistics.median(c for _, c in bare):.3f}"
          + ("  (goal >= 2)" if args.gpu else "  (goal >= 0.95)"))


if __name__ == "__main__":
    main()
