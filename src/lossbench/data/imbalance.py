"""Imbalance tools: long-tail profiles and class counts."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Per-class sizes of the exponential long-tail profile of Cui et al. 2019.

    Class k keeps ``n_max * ratio ** (-k / (K - 1))`` samples, so class 0 has
    ``n_max`` and the last class ``n_max / ratio`` (at least one).
    """
    if num_classes == 1:
        return [n_max]
    return [max(1, int(n_max * imbalance_ratio ** (-k / (num_classes - 1)))) for k in range(num_classes)]


def class_counts(targets: Sequence[int] | torch.Tensor, num_classes: int, ignore_index: int = 255) -> list[int]:
    """How many samples (classification) or pixels (index masks) each class has."""
    t = torch.as_tensor(targets).reshape(-1).long()
    t = t[(t != ignore_index) & (t >= 0) & (t < num_classes)]
    return torch.bincount(t, minlength=num_classes).tolist()
