"""Cross-entropy for softmax outputs and binary cross-entropy for sigmoid outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.common import check_index_target, is_sigmoid_target
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import class_weights


@register_loss("ce")
class CrossEntropy(nn.Module):
    """Cross-entropy -sum_c w_c y_c log softmax(z)_c, with class weights and label smoothing.

    Float targets shaped like the logits fall back to BCE with logits.
    """

    def __init__(self, ctx: LossContext, weight=None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        self.ignore_index = ctx.ignore_index
        self.label_smoothing = label_smoothing
        w = class_weights(weight, ctx)
        self.register_buffer("weight", w, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if is_sigmoid_target(logits, target):
            return binary_cross_entropy(logits, target, self.ignore_index)
        check_index_target(logits, target)
        w = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(
            logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits,
            target.long(),
            weight=None if w is None else w.float(),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


def binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean BCE with logits over the entries whose target is not ``ignore_index``."""
    valid = target != ignore_index
    t = torch.where(valid, target, torch.zeros_like(target)).float()
    per = F.binary_cross_entropy_with_logits(logits.float(), t, reduction="none")
    return (per * valid).sum() / valid.sum().clamp(min=1)


@register_loss("bce")
class BinaryCrossEntropy(nn.Module):
    """Binary cross-entropy with logits for sigmoid outputs (binary / multi-label)."""

    def __init__(self, ctx: LossContext) -> None:
        super().__init__()
        self.ignore_index = ctx.ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not is_sigmoid_target(logits, target):
            if logits.shape[1] != 1:
                raise ValueError("bce needs float targets shaped like the logits, or one logit channel")
            target = target.unsqueeze(1).to(logits.dtype)
            target = torch.where(target == self.ignore_index, target, target.clamp(0, 1))
        return binary_cross_entropy(logits, target, self.ignore_index)
