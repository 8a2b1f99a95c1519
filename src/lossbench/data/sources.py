"""On-disk (or generated) formats -> splits of ``(image, target)`` samples.

A source is a function registered with :data:`SOURCES` that takes the data
config, the task and the seed and returns :class:`Splits`. Images are uint8
C x H x W tensors; targets follow the sample contract of DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from lossbench.config import DataConfig
from lossbench.data import synthetic
from lossbench.errors import UserError
from lossbench.registry import Registry

SOURCES: Registry = Registry("source")


class TensorSamples(Dataset):
    """Samples held in memory as one uint8 image tensor and one target tensor."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        target = self.targets[i]
        return self.images[i], (int(target) if target.ndim == 0 else target)


@dataclass
class Splits:
    """What a source returns: the splits, and the names of the classes."""

    train: Dataset
    val: Dataset
    class_names: list[str]
    test: Dataset | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@SOURCES.register("synthetic")
def synthetic_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """Procedural shapes (classification) or shape masks (segmentation); no download."""
    num_classes = cfg.num_classes or (4 if task == "classification" else 3)
    limit = synthetic.MAX_CLASSES + (task == "segmentation")
    if num_classes > limit or (task == "segmentation" and num_classes < 2):
        raise UserError(f"data.num_classes: the synthetic {task} set takes 2 to {limit} classes, got {num_classes}")
    splits = synthetic.make_splits(
        task, num_classes, cfg.image_size, cfg.train_per_class, cfg.val_per_class, cfg.imbalance_ratio, seed
    )
    names = synthetic.class_names(num_classes)
    if task == "segmentation":
        names = ["background"] + names[: num_classes - 1]
    return Splits(TensorSamples(*splits["train"]), TensorSamples(*splits["val"]), names)
