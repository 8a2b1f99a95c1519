"""``synthetic``: the built-in dataset of procedurally drawn shapes, no download.

Classification: class k is a shape (one of eight) filled with a texture (solid,
stripes or checker); position, size, colours and noise vary per image. Up to
24 classes are distinct (8 shapes x 3 textures). Training classes follow the
long-tail profile of :func:`long_tail_counts`; validation is balanced.

Segmentation: class 0 is background; object class c (1..K-1) is drawn smaller
the larger c is, so pixel counts are imbalanced even with one object of each
class per image. The mask holds the class index of every pixel.

Everything is generated from a seeded ``torch.Generator``: the same seed gives
the same tensors, on any machine.
"""

from __future__ import annotations

import math

import torch

from lossbench.config import DataConfig
from lossbench.data.imbalance import frequency_ranks, long_tail_counts
from lossbench.data.registry import Splits, register_source
from lossbench.data.samples import TensorSamples
from lossbench.errors import UserError

MAX_CLASSES = 24
SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "bar", "ellipse")
TEXTURES = ("solid", "stripes", "checker")


def class_names(num_classes: int) -> list[str]:
    """Readable names: shape and texture for each class."""
    return [f"{SHAPES[k % len(SHAPES)]}-{TEXTURES[k % len(TEXTURES)]}" for k in range(num_classes)]


def _shape_mask(shape: int, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Boolean N x H x W inside-mask of a shape centred at 0 with radius r (N x 1 x 1)."""
    au, av = u.abs(), v.abs()
    if shape == 0:
        return u * u + v * v < r * r
    if shape == 1:
        return torch.maximum(au, av) < r * 0.85
    if shape == 2:
        return (v > -r) & (v < r * 0.8) & (au < (r * 0.8 - v) * 0.6)
    if shape == 3:
        d = (u * u + v * v).sqrt()
        return (d < r) & (d > r * 0.55)
    if shape == 4:
        return ((au < r / 3) & (av < r)) | ((av < r / 3) & (au < r))
    if shape == 5:
        return au + av < r * 1.1
    if shape == 6:
        return (au < r) & (av < r * 0.35)
    return (u / (r * 0.5)) ** 2 + (v / r) ** 2 < 1


def _texture(texture: int, u: torch.Tensor, v: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
    """Multiplier in {0.45, 1} per pixel that paints the texture on an object."""
    if texture == 0:
        return torch.ones_like(u)
    if texture == 1:
        return torch.where(torch.sin((u + v) * freq) > 0, 1.0, 0.45)
    return torch.where(torch.sin(u * freq) * torch.sin(v * freq) > 0, 1.0, 0.45)


def _draw(
    images: torch.Tensor, cls: int, which: torch.Tensor, radius: tuple[float, float], g: torch.Generator
) -> torch.Tensor:
    """Paint one object of class ``cls`` on ``images[which]`` (float, in place); return its N x H x W mask."""
    n, _, size, _ = images.shape
    m = int(which.numel())
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    lo, hi = radius
    r = (lo + (hi - lo) * torch.rand(m, 1, 1, generator=g))
    centre = (torch.rand(m, 2, 1, 1, generator=g) * 2 - 1) * (1 - r.unsqueeze(1)) * 0.9
    u = xx.expand(m, size, size) - centre[:, 0]
    v = yy.expand(m, size, size) - centre[:, 1]
    angle = torch.rand(m, 1, 1, generator=g) * 0.6 - 0.3
    u, v = u * torch.cos(angle) - v * torch.sin(angle), u * torch.sin(angle) + v * torch.cos(angle)
    inside = _shape_mask(cls % len(SHAPES), u, v, r)
    freq = math.pi * (6 + 4 * torch.rand(m, 1, 1, generator=g)) / r.clamp(min=0.1) * 0.3
    shade = _texture(cls % len(TEXTURES), u, v, freq)
    colour = 140 + 115 * torch.rand(m, 3, 1, 1, generator=g)
    paint = colour * shade.unsqueeze(1)
    sub = images[which]
    sub = torch.where(inside.unsqueeze(1), paint, sub)
    images[which] = sub
    full = torch.zeros(n, size, size, dtype=torch.bool)
    full[which] = inside
    return full


def _backgrounds(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    base = 90 * torch.rand(n, 3, 1, 1, generator=g)
    return base + 18 * torch.randn(n, 3, size, size, generator=g)


def _finish(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    images = images + 10 * torch.randn(images.shape, generator=g)
    return images.clamp(0, 255).round().to(torch.uint8)


def make_classification(
    per_class: list[int], size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 N x 3 x S x S, labels int64 N)`` with ``per_class[k]`` images of class k."""
    if len(per_class) > MAX_CLASSES:
        raise ValueError(f"the synthetic dataset has at most {MAX_CLASSES} distinct classes")
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(per_class)])
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    images = _backgrounds(labels.numel(), size, g)
    for k in range(len(per_class)):
        which = (labels == k).nonzero().flatten()
        if which.numel():
            _draw(images, k, which, (0.35, 0.65), g)
    return _finish(images, g), labels


def make_segmentation(num_images: int, num_classes: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 N x 3 x S x S, masks int64 N x S x S)``; class 0 is background.

    Object class c has radius about ``0.45 * 0.6 ** (c - 1)`` of the half-width,
    so higher classes cover far fewer pixels.
    """
    if num_classes > MAX_CLASSES + 1:
        raise ValueError(f"the synthetic dataset has at most {MAX_CLASSES} object classes")
    g = torch.Generator().manual_seed(seed)
    images = _backgrounds(num_images, size, g)
    masks = torch.zeros(num_images, size, size, dtype=torch.int64)
    for c in range(1, num_classes):
        present = torch.rand(num_images, generator=g) < 0.85
        which = present.nonzero().flatten()
        if not which.numel():
            continue
        scale = 0.6 ** (c - 1)
        inside = _draw(images, c - 1, which, (0.3 * scale, 0.5 * scale), g)
        masks[inside] = c
    return _finish(images, g), masks


def make_splits(
    task: str, num_classes: int, size: int, train_per_class: int, val_per_class: int, imbalance_ratio: float, seed: int,
    ranks: list[int] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train and validation tensors for a task; validation never overlaps train (other seed stream).
    ``ranks``: each class's rank in the long-tail profile (default: class k has rank k)."""
    train_seed, val_seed = 2 * seed + 1, 2 * seed + 2
    if task == "classification":
        profile = long_tail_counts(train_per_class, num_classes, imbalance_ratio)
        counts = [profile[r] for r in ranks] if ranks is not None else profile
        return {
            "train": make_classification(counts, size, train_seed),
            "val": make_classification([val_per_class] * num_classes, size, val_seed),
        }
    return {
        "train": make_segmentation(train_per_class, num_classes, size, train_seed),
        "val": make_segmentation(val_per_class, num_classes, size, val_seed),
    }


@register_source("synthetic", tasks=("classification", "segmentation"))
def synthetic_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """Procedural shapes (classification) or shape masks (segmentation); no download."""
    num_classes = cfg.num_classes or (4 if task == "classification" else 3)
    limit = MAX_CLASSES + (task == "segmentation")
    if num_classes > limit or (task == "segmentation" and num_classes < 2):
        raise UserError(f"data.num_classes: the synthetic {task} set takes 2 to {limit} classes, got {num_classes}")
    ranks = frequency_ranks(num_classes, cfg.imbalance_order, seed) if task == "classification" else None
    splits = make_splits(
        task, num_classes, cfg.image_size, cfg.train_per_class, cfg.val_per_class, cfg.imbalance_ratio, seed, ranks
    )
    names = class_names(num_classes)
    if task == "segmentation":
        names = ["background"] + names[: num_classes - 1]
    return Splits(TensorSamples(*splits["train"]), TensorSamples(*splits["val"]), names, long_tail_applied=True,
                  frequency_ranks=ranks)
