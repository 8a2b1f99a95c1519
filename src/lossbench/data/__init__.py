"""The data layer: a source's splits, transformed, with class counts for the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from lossbench.config import Experiment
from lossbench.data.imbalance import class_counts
from lossbench.data.sources import SOURCES, Splits
from lossbench.data.transforms import Normalize, Transformed

IGNORE_INDEX = 255


@dataclass
class DataBundle:
    """What the engine receives: ready datasets, class names and training class counts."""

    train: Dataset
    val: Dataset
    class_names: list[str]
    class_counts: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _targets(samples: Dataset) -> torch.Tensor:
    if hasattr(samples, "targets"):
        return torch.as_tensor(samples.targets)
    return torch.stack([torch.as_tensor(samples[i][1]) for i in range(len(samples))])


def build_data(exp: Experiment) -> DataBundle:
    """Open the configured source and return transformed train / val sets with class counts."""
    splits: Splits = SOURCES.get(exp.data.source)(exp.data, exp.task, exp.seed)
    counts = class_counts(_targets(splits.train), splits.num_classes, IGNORE_INDEX)
    transform = Normalize()
    return DataBundle(
        train=Transformed(splits.train, transform),
        val=Transformed(splits.val, transform),
        class_names=splits.class_names,
        class_counts=counts,
    )
