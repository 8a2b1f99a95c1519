"""DataLoaders for a DataBundle: seeded shuffling or class-balanced sampling, optional DDP sharding of training."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, WeightedRandomSampler

from lossbench.data import DataBundle


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a loader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class DistributedWeightedSampler(Sampler[int]):
    """Weighted sampling with replacement, sharded across DDP ranks.

    Every rank draws the same ``len(weights)`` indices from a generator seeded
    by ``seed + epoch`` and keeps every ``world_size``-th one from ``rank``, so
    ranks see disjoint shards of one class-balanced epoch. Call
    :meth:`set_epoch` each epoch, as with ``DistributedSampler``.
    """

    def __init__(self, weights: list[float], world_size: int, rank: int, seed: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.world_size, self.rank, self.seed, self.epoch = world_size, rank, seed, 0
        self.num_samples = math.ceil(len(weights) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.num_samples * self.world_size, replacement=True, generator=g)
        return iter(drawn[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


def build_loaders(
    data: DataBundle,
    batch_size: int,
    num_workers: int,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Training loader (this rank's shard when world_size > 1) and the whole validation set's in-order loader.

    With DDP the training sampler is a ``DistributedSampler``; the engine calls
    ``loader.sampler.set_epoch(epoch)`` when it has one. When the bundle has
    ``sample_weights`` (``data.sampler: balanced``) training batches are drawn
    with replacement with those weights (``WeightedRandomSampler``, or
    :class:`DistributedWeightedSampler` under DDP), one epoch being
    ``len(train)`` draws. The validation loader is never sharded here: the
    engine's ``exact_eval_loader`` gives each rank its exact shard.
    """
    g = torch.Generator().manual_seed(seed)
    common = dict(num_workers=num_workers, worker_init_fn=seed_worker, persistent_workers=num_workers > 0)
    weights = data.sample_weights
    val = DataLoader(data.val, batch_size=batch_size, shuffle=False, **common)
    if world_size > 1:
        if weights is not None:
            train_sampler = DistributedWeightedSampler(weights, world_size, rank, seed)
        else:
            train_sampler = DistributedSampler(data.train, world_size, rank, shuffle=True, seed=seed)
        return DataLoader(data.train, batch_size=batch_size, sampler=train_sampler, generator=g, **common), val
    lone_last = len(data.train) % batch_size == 1  # a lone last sample breaks batch norm
    if weights is not None:
        sampler = WeightedRandomSampler(weights, len(weights), replacement=True, generator=g)
        return DataLoader(data.train, batch_size=batch_size, sampler=sampler, drop_last=lone_last, **common), val
    return DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=g, drop_last=lone_last, **common), val
