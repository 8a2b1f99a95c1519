"""Focal loss, Lin et al. 2017, "Focal Loss for Dense Object Detection".

FL = -alpha_t (1 - p_t)^gamma log p_t, computed per sample (or pixel) and
only then averaged. Softmax over classes for index targets; sigmoid per
channel for float (binary / multi-label) targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.common import check_index_target, flatten_index_target, flatten_logits, is_sigmoid_target
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import class_weights


@register_loss("focal")
class FocalLoss(nn.Module):
    """Focal loss -alpha_t (1-p_t)^gamma log p_t, per sample / pixel then averaged (Lin et al. 2017)."""

    def __init__(self, ctx: LossContext, gamma: float = 2.0, alpha=None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError("gamma must be >= 0")
        self.gamma = float(gamma)
        self.ignore_index = ctx.ignore_index
        self.scalar_alpha = float(alpha) if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else None
        w = None if self.scalar_alpha is not None else class_weights(alpha, ctx)
        self.register_buffer("alpha", w, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if is_sigmoid_target(logits, target):
            return self._sigmoid(logits.float(), target)
        check_index_target(logits, target)
        z = flatten_logits(logits).float()
        t, valid = flatten_index_target(target, self.ignore_index)
        logpt = F.log_softmax(z, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
        pt = logpt.exp()
        loss = -((1 - pt).clamp(min=0) ** self.gamma) * logpt
        if self.scalar_alpha is not None:
            loss = loss * self.scalar_alpha
        elif self.alpha is not None:
            loss = loss * self.alpha[t]
        return (loss * valid).sum() / valid.sum().clamp(min=1)

    def _sigmoid(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        t = torch.where(valid, target, torch.zeros_like(target)).float()
        logp = F.logsigmoid(z)
        log1mp = F.logsigmoid(-z)
        logpt = t * logp + (1 - t) * log1mp
        pt = logpt.exp()
        loss = -((1 - pt).clamp(min=0) ** self.gamma) * logpt
        if self.scalar_alpha is not None:
            loss = loss * (self.scalar_alpha * t + (1 - self.scalar_alpha) * (1 - t))
        elif self.alpha is not None:
            loss = loss * self.alpha.view(1, -1, *([1] * (z.ndim - 2)))
        return (loss * valid).sum() / valid.sum().clamp(min=1)
