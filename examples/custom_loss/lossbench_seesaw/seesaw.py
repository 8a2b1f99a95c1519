"""Seesaw loss (Wang et al., "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021;
official code: open-mmlab/mmdetection, mmdet/models/losses/seesaw_loss.py).

Cross-entropy in which a sample of class i pushes down another class j's logit
less when j is rarer than i (the mitigation factor (N_j / N_i)^p, for
N_j < N_i) and more when j already scores above i (the compensation factor
(s_j / s_i)^q, for s_j > s_i, s the softmax scores). Both factors enter as
log-terms added to the other classes' logits. The paper counts classes as the
batches go by; this plugin takes the training set's counts from lossbench
(``ctx.class_counts``), so every batch sees the same mitigation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses import LossContext, register_loss

EPS = 1e-2  # the floor of the true class's score in the compensation ratio (the official default)


@register_loss("seesaw", needs_class_counts=True)
class SeesawLoss(nn.Module):
    """Seesaw loss: CE with rare classes' logits pushed down less (mitigation p), wrong winners more (compensation q)."""

    def __init__(self, ctx: LossContext, p: float = 0.8, q: float = 2.0) -> None:
        super().__init__()
        if ctx.task != "classification":
            raise ValueError("is a classification loss; use it with task: classification")
        if ctx.class_counts is None:
            raise ValueError("needs the training class counts, which this run does not have")
        if p < 0 or q < 0:
            raise ValueError(f"p and q must be >= 0, got p={p}, q={q}")
        counts = torch.tensor(ctx.class_counts, dtype=torch.float32).clamp(min=1)
        ratio = counts[None, :] / counts[:, None]  # [i, j] = N_j / N_i
        self.register_buffer("mitigation", torch.where(ratio < 1, ratio.pow(p), torch.ones_like(ratio)))
        self.q = q

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        scores = F.softmax(logits.detach().float(), dim=1)
        own = scores.gather(1, target[:, None]).clamp(min=EPS)
        ratio = scores / own  # [n, j] = s_j / s_i
        compensation = torch.where(ratio > 1, ratio.pow(self.q), torch.ones_like(ratio))
        factor = self.mitigation[target] * compensation  # 1 on the true class: it keeps its logit
        return F.cross_entropy(logits + factor.log().to(logits.dtype), target)
