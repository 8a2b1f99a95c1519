"""Joint image / target transforms applied after a source yields a sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize:
    """uint8 C x H x W -> float, scaled to [0, 1] then standardised per channel."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        x = image.float().div_(255)
        c = x.shape[0]
        return (x - self.mean[:c]) / self.std[:c], target


class Transformed(Dataset):
    """A dataset whose samples pass through ``transform(image, target)``."""

    def __init__(self, samples: Dataset, transform: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        return self.transform(*self.samples[i])
