"""DataLoaders for a DataBundle: seeded shuffling, optional DDP sharding."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lossbench.data import DataBundle


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a loader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loaders(
    data: DataBundle,
    batch_size: int,
    num_workers: int,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Shuffled training loader and in-order validation loader (sharded across ranks when world_size > 1).

    With DDP the training sampler is a ``DistributedSampler``; the engine calls
    ``loader.sampler.set_epoch(epoch)`` when it has one.
    """
    g = torch.Generator().manual_seed(seed)
    common = dict(num_workers=num_workers, worker_init_fn=seed_worker, persistent_workers=num_workers > 0)
    if world_size > 1:
        train_sampler = DistributedSampler(data.train, world_size, rank, shuffle=True, seed=seed)
        val_sampler = DistributedSampler(data.val, world_size, rank, shuffle=False, drop_last=False)
        train = DataLoader(data.train, batch_size=batch_size, sampler=train_sampler, generator=g, **common)
        val = DataLoader(data.val, batch_size=batch_size, sampler=val_sampler, **common)
        return train, val
    train = DataLoader(
        data.train, batch_size=batch_size, shuffle=True, generator=g,
        drop_last=len(data.train) % batch_size == 1,  # a lone last sample breaks batch norm
        **common,
    )
    val = DataLoader(data.val, batch_size=batch_size, shuffle=False, **common)
    return train, val
