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
