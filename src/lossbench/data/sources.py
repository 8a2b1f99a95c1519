"""On-disk (or generated) formats -> splits of ``(image, target)`` samples.

A source is a function registered with :data:`SOURCES` that takes the data
config, the task and the seed and returns :class:`Splits`. Images are uint8
C x H x W tensors; targets follow the sample contract of DESIGN.md. A source
without a validation split returns ``val=None`` and :func:`build_data` makes a
stratified one. File formats live in ``lossbench.data.formats`` and register
themselves here when this module is imported.

``Splits.extra`` carries hints for the generic steps: ``long_tail_applied``
(the source already drew the long-tail profile) and ``target``
(``"multilabel"`` for C x H x W binary masks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from lossbench.config import DataConfig
from lossbench.data import synthetic
from lossbench.data.samples import TensorSamples
from lossbench.errors import UserError
from lossbench.registry import Registry

SOURCES: Registry = Registry("source")


@dataclass
class Splits:
    """What a source returns: the splits, and the names of the classes."""

    train: Dataset
    val: Dataset | None
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
    return Splits(TensorSamples(*splits["train"]), TensorSamples(*splits["val"]), names,
                  extra={"long_tail_applied": True})


from lossbench.data import formats  # noqa: E402,F401  (registers the file formats)
