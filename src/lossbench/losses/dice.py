"""Soft Dice loss (Milletari et al. 2016, "V-Net"), for segmentation and classification.

Dice_c = (2 sum p_c y_c + s) / (sum p_c + sum y_c + s) over the batch (and
pixels), loss = 1 - mean_c Dice_c. For classification the sums run over the
batch's class probabilities, which makes it a batch-level F1 surrogate.
"""

from __future__ import annotations

import torch
from torch import nn

from lossbench.losses.common import (
    check_index_target,
    flatten_index_target,
    flatten_logits,
    is_sigmoid_target,
    one_hot_flat,
)
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import class_weights


def soft_dice_terms(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, squared: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class (intersection, prediction sum, target sum) over all samples / pixels."""
    if is_sigmoid_target(logits, target):
        valid = (target != ignore_index).float()
        p = torch.sigmoid(logits.float()) * valid
        y = torch.where(target == ignore_index, torch.zeros_like(target), target).float()
        dims = [0] + list(range(2, logits.ndim))
    else:
        check_index_target(logits, target)
        z = flatten_logits(logits).float()
        t, valid = flatten_index_target(target, ignore_index)
        p = torch.softmax(z, dim=1) * valid.unsqueeze(1)
        y = one_hot_flat(t, z.shape[1], valid, p.dtype)
        dims = [0]
    inter = (p * y).sum(dims)
    if squared:
        return inter, (p * p).sum(dims), (y * y).sum(dims)
    return inter, p.sum(dims), y.sum(dims)


@register_loss("dice")
class DiceLoss(nn.Module):
    """Soft Dice 1 - mean_c (2|P_c Y_c| + s) / (|P_c| + |Y_c| + s) over the batch (Milletari et al. 2016)."""

    def __init__(self, ctx: LossContext, smooth: float = 1.0, squared: bool = False, weight=None) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError("smooth must be >= 0")
        self.smooth = float(smooth)
        self.squared = bool(squared)
        self.ignore_index = ctx.ignore_index
        self.register_buffer("weight", class_weights(weight, ctx), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        inter, psum, ysum = soft_dice_terms(logits, target, self.ignore_index, self.squared)
        dice = (2 * inter + self.smooth) / (psum + ysum + self.smooth).clamp(min=1e-7)
        loss = 1 - dice
        if self.weight is not None:
            return (loss * self.weight).sum() / self.weight.sum().clamp(min=1e-7)
        return loss.mean()
