"""Weighted sums of losses: ``focal(gamma=2) + 0.5 * dice``."""

from __future__ import annotations

import torch
from torch import nn


class WeightedSum(nn.Module):
    """sum_i w_i L_i(logits, target); ``parts`` records each term's last value for logging."""

    def __init__(self, losses: list[nn.Module], weights: list[float], names: list[str]) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights = list(weights)
        self.names = list(names)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        for w, loss in zip(self.weights, self.losses):
            value = w * loss(logits, target)
            total = value if total is None else total + value
        return total


class DeepSupervision(nn.Module):
    """Applies a loss to every output of a deep-supervision model and averages (or weights) them.

    A nested U-Net returns a list of side outputs in training; in evaluation it
    returns one tensor, which passes straight through to the wrapped loss.
    """

    def __init__(self, loss: nn.Module, weights: list[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else list(weights)

    def forward(self, logits: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self.loss(logits, target)
        weights = self.weights or [1.0 / len(logits)] * len(logits)
        if len(weights) != len(logits):
            raise ValueError(f"{len(weights)} deep-supervision weights for {len(logits)} outputs")
        return sum(w * self.loss(out, target) for w, out in zip(weights, logits))
