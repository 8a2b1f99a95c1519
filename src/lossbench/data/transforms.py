"""Joint image / mask transforms (torchvision.transforms.v2) applied after a source yields a sample.

The image is wrapped as ``tv_tensors.Image`` and a segmentation mask as
``tv_tensors.Mask``, so every geometric transform (random resized crop, padded
random crop, flips, rotation) moves both together, and masks are always
resampled with nearest neighbour. Pixels a rotation or padding brings in are
255 (ignored) in index masks and 0 in binary masks. Colour jitter touches the
image only. Geometric and colour steps run on uint8; the image then becomes
float in [0, 1] and is normalized.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lossbench.config import AugmentConfig
from lossbench.contract import IGNORE_INDEX
from lossbench.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_GRAY = ((0.449,), (0.226,))


def adapt_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 image with 1, 3 or 4 channels -> ``channels`` (gray repeated to 3, alpha dropped, RGB to luma)."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 4:
        image, c = image[:3], 3
    if c == 1 and channels == 3:
        return image.expand(3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        return F.rgb_to_grayscale(image)
    if c == channels:
        return image
    raise UserError(f"images have {c} channels but the model takes {channels}; set model.in_channels to 1 or 3")


def _geometric(augment: AugmentConfig | None, size: int, mask_fill: int) -> v2.Compose | None:
    """The configured geometric steps; pixels they bring in are 0 in the image and ``mask_fill`` in the mask."""
    if augment is None:
        return None
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}
    steps: list[Callable] = []
    if augment.random_resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=augment.random_resized_crop, antialias=True))
    if augment.crop_padding:
        steps.append(v2.RandomCrop(size, padding=augment.crop_padding, fill=fill))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip(augment.hflip))
    if augment.vflip:
        steps.append(v2.RandomVerticalFlip(augment.vflip))
    if augment.rotation:
        steps.append(v2.RandomRotation(augment.rotation, fill=fill))
    return v2.Compose(steps) if steps else None


class SampleTransform:
    """``(uint8 image, target) -> (float image, target)``: augmentation (training only), then normalization.

    Targets: an ``int`` label passes through; an H x W index mask becomes
    int64 (pixels brought in by padding or rotation: 255, ignored); a
    C x H x W binary mask becomes float (brought-in pixels: 0).
    """

    def __init__(
        self,
        size: int,
        channels: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        augment: AugmentConfig | None = None,
    ) -> None:
        self.channels = channels
        self.geometric = _geometric(augment, size, IGNORE_INDEX)
        self.geometric_binary = _geometric(augment, size, 0)
        self.jitter = None
        if augment is not None and augment.color_jitter:
            s = augment.color_jitter
            self.jitter = v2.ColorJitter(brightness=s, contrast=s, saturation=s if channels == 3 else 0)
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        image = tv_tensors.Image(adapt_channels(image, self.channels))
        if isinstance(target, torch.Tensor) and target.ndim >= 2:
            geometric = self.geometric if target.ndim == 2 else self.geometric_binary
            mask = tv_tensors.Mask(target)
            if geometric is not None:
                image, mask = geometric(image, mask)
            mask = mask.as_subclass(torch.Tensor)
            target = mask.long() if mask.ndim == 2 else mask.float()
        elif self.geometric is not None:
            image = self.geometric(image)
        if self.jitter is not None:
            image = self.jitter(image)
        x = F.to_dtype(image.as_subclass(torch.Tensor), torch.float32, scale=True)
        if self.mean is not None:
            x = F.normalize(x, self.mean, self.std)
        return x, target


def evaluation_steps(mean: Sequence[float] | None, std: Sequence[float] | None) -> list[dict]:
    """What :class:`SampleTransform` does to a decoded uint8 image outside training, step by step (export.json)."""
    steps = [{"step": "scale", "divide_by": 255, "how": "uint8 H x W x C -> float32 C x H x W, divided by 255"}]
    if mean is not None:
        steps.append({"step": "normalize", "mean": list(mean), "std": list(std),
                      "how": "x[c] = (x[c] - mean[c]) / std[c] per channel"})
    else:
        steps.append({"step": "normalize", "mean": None, "std": None, "how": "none (the run used normalize: none)"})
    return steps


def normalization(spec: Any, channels: int) -> tuple[list[float] | None, list[float] | None]:
    """``(mean, std)`` for ``imagenet``, ``none`` or explicit lists (``auto`` is resolved by the caller)."""
    if spec == "none":
        return None, None
    if spec == "imagenet":
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else IMAGENET_GRAY
        return list(mean), list(std)
    mean, std = list(spec.mean), list(spec.std)
    if len(mean) != channels:
        raise UserError(f"data.normalize: {len(mean)} mean/std values for {channels}-channel images; "
                        f"give one per channel")
    return mean, std


class Relabel:
    """``(image, target) -> (image, target)`` with data class k renamed ``lut[k]``: another dataset's classes
    scored as a run's.

    A label and an index mask's values are looked up (255, ignored, stays); a
    multi-label mask's channel k moves to channel ``lut[k]`` of ``num_classes``.
    """

    def __init__(self, lut: Sequence[int], num_classes: int) -> None:
        self.lut = list(lut)
        self.num_classes = num_classes
        self.values = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
        self.values[: len(self.lut)] = torch.tensor(self.lut, dtype=torch.long)

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        if not isinstance(target, torch.Tensor) or target.ndim == 0:
            return image, self.lut[int(target)]
        if target.is_floating_point():
            moved = target.new_zeros((self.num_classes, *target.shape[1:]))
            moved[self.lut] = target
            return image, moved
        return image, self.values[target.long()]


class Transformed(Dataset):
    """A dataset whose samples pass through ``transform(image, target)``."""

    def __init__(self, samples: Dataset, transform: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        return self.transform(*self.samples[i])
