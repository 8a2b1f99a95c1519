"""The reference workload: how fast this machine trains, so other timings can be stated as ratios to it.

    PYTHONPATH=src python -m benchmarks calibrate

10 training steps of torchvision's ResNet-18 (10 classes) on 32x32 images,
batch 64, one thread, Adam (lr 1e-3), after 2 warm-up steps; fixed random
tensors, so no data loading is timed. Machines of one kind differ 2-4x in
speed from day to day: a wall time means something beside this one,
measured in the same run (issue 25: quickstart wall / reference, ``make
test`` wall / reference).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
import torchvision

STEPS, WARMUP, BATCH, SIZE, CLASSES = 10, 2, 64, 32, 10


def reference_seconds(steps: int = STEPS, warmup: int = WARMUP) -> float:
    """Wall seconds of ``steps`` ResNet-18 training steps (32 px, batch 64, one thread, Adam) after ``warmup``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=CLASSES)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
        y = torch.randint(0, CLASSES, (BATCH,), generator=g)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

        for _ in range(warmup):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def main() -> float:
    """Print the reference time (and per step); return it."""
    seconds = reference_seconds()
    print(f"reference: {STEPS} steps of ResNet-18, {SIZE} px, batch {BATCH}, 1 thread, Adam, after {WARMUP} "
          f"warm-up steps")
    print(f"{'reference time (s)':<46}{seconds:9.2f}   ({seconds / STEPS:.3f} s per step)")
    return seconds


if __name__ == "__main__":
    main()
