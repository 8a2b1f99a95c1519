"""Combinations of losses: weighted sums from specs, the two named ones the field uses, deep supervision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lossbench.losses.ce import BinaryCrossEntropy, CrossEntropy
from lossbench.losses.common import canonical_target, is_sigmoid_target
from lossbench.losses.dice import DiceLoss
from lossbench.losses.focal import FocalLoss
from lossbench.losses.registry import LossContext, register_loss


class WeightedSum(nn.Module):
    """sum_i w_i L_i(logits, target); ``parts`` holds each term's last value (detached tensor) for logging."""

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float], names: Sequence[str]) -> None:
        super().__init__()
        if not len(losses) == len(weights) == len(names):
            raise ValueError("one weight and one name per loss")
        self.losses = nn.ModuleList(losses)
        self.weights = [float(w) for w in weights]
        self.names = list(names)
        self.parts: dict[str, float] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        for name, w, loss in zip(self.names, self.weights, self.losses):
            value = loss(logits, target)
            self.parts[name] = value.detach()
            total = w * value if total is None else total + w * value
        return total


@register_loss("bce_dice")
class BCEDiceLoss(nn.Module):
    """bce_weight * BCE + dice_weight * Dice, default 0.5 BCE + Dice (binary / multi-label segmentation).

    With class-index targets the cross-entropy term is the softmax ``ce``, so
    both terms see the same softmax model. ``smooth`` and ``per_image`` are the
    Dice term's. ``bce_dice(per_image=true, smooth=1e-5)`` is the ``BCEDiceLoss``
    of the nested U-Net's reference code (4uiiurz1/pytorch-nested-unet,
    losses.py): 0.5 BCE + 1 - the mean over images of each image's Dice with
    smoothing 1e-5.
    """

    def __init__(self, ctx: LossContext, bce_weight: float = 0.5, dice_weight: float = 1.0,
                 smooth: float | None = None, per_image: bool = False) -> None:
        super().__init__()
        self.bce, self.ce = BinaryCrossEntropy(ctx), CrossEntropy(ctx)
        self.dice = DiceLoss(ctx, smooth=smooth, per_image=per_image)
        self.bce_weight, self.dice_weight = float(bce_weight), float(dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sigmoid = is_sigmoid_target(logits, canonical_target(logits, target))
        first = (self.bce if sigmoid else self.ce)(logits, target)
        return self.bce_weight * first + self.dice_weight * self.dice(logits, target)


@register_loss("focal_dice")
class FocalDiceLoss(WeightedSum):
    """focal_weight * Focal + dice_weight * Dice (Zhu et al. 2019, AnatomyNet), both from the same logits."""

    def __init__(self, ctx: LossContext, gamma: float = 2.0, alpha=None, focal_weight: float = 1.0,
                 dice_weight: float = 1.0, smooth: float | None = None) -> None:
        super().__init__([FocalLoss(ctx, gamma=gamma, alpha=alpha), DiceLoss(ctx, smooth=smooth)],
                         [focal_weight, dice_weight], ["focal", "dice"])


class DeepSupervision(nn.Module):
    """sum_k w_k L(output_k, target) over the outputs of a deep-supervision model (nested U-Net).

    Weights default to 1/K each. In evaluation the model returns one tensor,
    which passes straight to the wrapped loss. Each output must have the
    target's spatial size.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self.loss(logits, target)
        if not logits:
            raise ValueError("deep supervision got no outputs")
        weights = self.weights or [1.0 / len(logits)] * len(logits)
        if len(weights) != len(logits):
            raise ValueError(f"{len(weights)} deep-supervision weights for {len(logits)} outputs")
        total = None
        for w, out in zip(weights, logits):
            value = w * self.loss(out, target)
            total = value if total is None else total + value
        return total
