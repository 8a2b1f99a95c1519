"""Overlap (region) losses built on soft counts: Dice, and the self-adjusting Dice (DSC).

With p the softmax / sigmoid probabilities and y the one-hot target, the soft
counts per class are TP = sum p y, |P| = sum p, |Y| = sum y, summed over the
batch and pixels (or over the pixels of each image with ``per_image``). For
classification the sums run over the batch, so Dice is a batch-level soft F1.
"""

from __future__ import annotations

import torch
from torch import nn

from lossbench.losses.common import Probs, flag, masked_mean, probabilities
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import class_weights


def soft_counts(probs: Probs, per_image: bool, squared: bool = False):
    """(TP, |P|, |Y|) per class: shape C, or N x C with ``per_image``. ``squared`` sums p^2 and y^2."""
    p, y = probs.prob, probs.onehot
    dims = (2,) if per_image else (0, 2)
    tp = (p * y).sum(dims)
    if squared:
        return tp, (p * p).sum(dims), (y * y).sum(dims)
    return tp, p.sum(dims), y.sum(dims)


class RegionLoss(nn.Module):
    """Base for losses of the form mean_c w_c (1 - score_c) over per-class soft counts."""

    squared = False

    def __init__(self, ctx: LossContext, smooth: float, weight, per_image: bool, skip_empty: bool) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        if flag("per_image", per_image) and ctx.task == "classification":
            raise ValueError("per_image needs segmentation; for classification the counts run over the batch")
        self.smooth = float(smooth)
        self.per_image = flag("per_image", per_image)
        self.skip_empty = flag("skip_empty", skip_empty)
        self.ignore_index = ctx.ignore_index
        self.register_buffer("weight", class_weights(weight, ctx), persistent=False)

    def class_losses(self, tp: torch.Tensor, psum: torch.Tensor, ysum: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, loss: torch.Tensor, ysum: torch.Tensor) -> torch.Tensor:
        """Mean over classes (weighted) and images; with ``skip_empty`` classes absent from the target add 0."""
        if self.skip_empty:
            loss = loss * (ysum > 0)
        if self.weight is not None:
            w = self.weight.expand_as(loss)
            return (loss * w).sum() / w.sum().clamp(min=1e-7)
        return loss.mean()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = probabilities(logits, target, self.ignore_index)
        tp, psum, ysum = soft_counts(probs, self.per_image, self.squared)
        return self.reduce(self.class_losses(tp, psum, ysum), ysum)


@register_loss("dice")
class DiceLoss(RegionLoss):
    """Soft Dice 1 - mean_c (2 TP_c + s) / (|P_c| + |Y_c| + s) (Milletari et al. 2016; Sudre et al. 2017).

    ``squared``: |P| = sum p^2, |Y| = sum y^2 (V-Net's form). ``per_image``:
    Dice of each image, then averaged. ``skip_empty``: classes absent from the
    target count 0 (smp's convention) instead of penalising false positives.
    """

    def __init__(self, ctx: LossContext, smooth: float = 1.0, squared: bool = False, weight=None,
                 per_image: bool = False, skip_empty: bool = False) -> None:
        super().__init__(ctx, smooth, weight, per_image, skip_empty)
        self.squared = flag("squared", squared)

    def class_losses(self, tp, psum, ysum):
        return 1 - (2 * tp + self.smooth) / (psum + ysum + self.smooth).clamp(min=1e-7)


@register_loss("dsc")
class SelfAdjustingDiceLoss(nn.Module):
    """Self-adjusting Dice 1 - (2 p~ y + g) / (p~ + y + g), p~ = (1-p)^alpha p, per pixel and class (Li et al. 2020).

    From "Dice Loss for Data-imbalanced NLP Tasks" (ACL 2020), Table 1: the
    factor (1 - p)^alpha pushes down the weight of easy examples, so a
    confident correct positive does not reach 0 (it sits at 1 - g / (1 + g)).
    Averaged over valid samples / pixels and classes.
    """

    def __init__(self, ctx: LossContext, alpha: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        if alpha < 0 or smooth <= 0:
            raise ValueError(f"need alpha >= 0 and smooth > 0, got alpha={alpha}, smooth={smooth}")
        self.alpha = float(alpha)
        self.smooth = float(smooth)
        self.ignore_index = ctx.ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = probabilities(logits, target, self.ignore_index)
        p, y = probs.prob, probs.onehot
        pa = (1 - p).clamp(min=0).pow(self.alpha) * p
        loss = 1 - (2 * pa * y + self.smooth) / (pa + y + self.smooth)
        return masked_mean(loss, probs.valid)
