"""Focal loss, Lin et al. 2017, "Focal Loss for Dense Object Detection".

FL_i = -alpha_t (1 - p_t)^gamma log p_t is computed for every sample (or
pixel) i and only then averaged over the valid ones. Applying the factor
(1 - p_t)^gamma to the batch-mean cross-entropy instead is a different (and
wrong) loss. Softmax over classes for index targets, p_t = softmax(z)_y;
sigmoid per channel for float (binary / multi-label) targets, p_t = s(z) if
y = 1 else 1 - s(z), with alpha_t = alpha for positives and 1 - alpha for
negatives when alpha is a number.

Per-class weights (``alpha`` a list, "balanced" or "effective(...)") are
sample weights with the library's one normalisation, sum_i w_{y_i} FL_i /
sum_i w_{y_i} (:mod:`lossbench.losses.weights`), so ``focal(gamma=0,
alpha=w)`` is ``ce(weight=w)``. The focal baseline of the LDAM-DRW code
(kaidic/LDAM-DRW, losses.py, lines 7-21) differs: it puts the weight inside
the modulating factor, p = exp(-w_y CE), and takes the plain mean of
(1 - p)^gamma w_y CE over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.ce import one_hot_float
from lossbench.losses.common import canonical_target, class_view, flat_float, flat_index, flat_logits, is_sigmoid_target
from lossbench.losses.common import check_index_target, flag
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import ClassWeighted, class_weights, weighted_mean


def _focal_factor(pt: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 - p_t)^gamma for p_t <= 1; for gamma < 1 the base is kept off 0, where the slope is infinite."""
    if gamma == 0:
        return torch.ones_like(pt)
    q = 1 - pt
    if gamma == 2:
        return q * q
    return (q.clamp(min=1e-12) if gamma < 1 else q).pow(gamma)


def softmax_focal_terms(logits: torch.Tensor, target: torch.Tensor, gamma: float, ignore_index: int):
    """Per-sample -(1 - p_t)^gamma log p_t as N x S, with the flat index target and validity."""
    check_index_target(logits, target)
    t, valid = flat_index(target, ignore_index)
    logpt = F.log_softmax(flat_logits(logits), dim=1).gather(1, t.unsqueeze(1)).squeeze(1).clamp(max=0)
    return -_focal_factor(logpt.exp(), gamma) * logpt, t, valid


def sigmoid_focal_terms(logits: torch.Tensor, target: torch.Tensor, gamma: float, ignore_index: int):
    """Per-entry sigmoid focal terms as N x C x S, with the float target and validity."""
    y, valid = flat_float(target, ignore_index)
    z = flat_logits(logits)
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return _focal_factor(torch.exp(-ce), gamma) * ce, y, valid


@register_loss("focal", accepts_class_weights=True)
class FocalLoss(ClassWeighted):
    """Focal loss -alpha_t (1-p_t)^gamma log p_t, per sample / pixel, then averaged (Lin et al. 2017).

    ``alpha``: None, a number (sigmoid: alpha for positives, 1 - alpha for
    negatives; softmax: a plain scale), or per-class sample weights (a list,
    "balanced", "effective(beta=...)"; mean normalised by the weights, as
    ``ce(weight=...)``; ``set_class_weights`` replaces them). ``sigmoid=True``
    uses one sigmoid per class (one-vs-rest) even for index targets, as
    RetinaNet and smp's multiclass mode do; every channel of sample i then
    weighs w_{y_i}.
    """

    def __init__(self, ctx: LossContext, gamma: float = 2.0, alpha=None, sigmoid: bool = False) -> None:
        scalar = float(alpha) if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else None
        super().__init__(ctx, None if scalar is not None else class_weights(alpha, ctx))
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = ctx.ignore_index
        self.sigmoid = flag("sigmoid", sigmoid)
        self.scalar_alpha = scalar
        if self.scalar_alpha is not None and not 0 <= self.scalar_alpha <= 1:
            raise ValueError(f"a scalar alpha must be in [0, 1], got {alpha}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = canonical_target(logits, target)
        weight = self.class_weight(logits)
        if is_sigmoid_target(logits, target):
            loss, y, valid = sigmoid_focal_terms(logits, target, self.gamma, self.ignore_index)
            return self._sigmoid_mean(loss, y, valid if weight is None else valid * class_view(weight, 3))
        if self.sigmoid:
            loss, y, valid = sigmoid_focal_terms(logits, one_hot_float(logits, target, self.ignore_index),
                                                 self.gamma, self.ignore_index)
            if weight is not None:
                t, _ = flat_index(target, self.ignore_index)
                valid = valid * weight[t].unsqueeze(1)
            return self._sigmoid_mean(loss, y, valid)
        loss, t, valid = softmax_focal_terms(logits, target, self.gamma, self.ignore_index)
        if self.scalar_alpha is not None:
            loss = loss * self.scalar_alpha
        return weighted_mean(loss, valid if weight is None else valid * weight[t])

    def _sigmoid_mean(self, loss: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Weighted mean over entries, alpha_t = alpha (positives) / 1 - alpha (negatives) for a scalar alpha."""
        if self.scalar_alpha is not None:
            loss = loss * (self.scalar_alpha * y + (1 - self.scalar_alpha) * (1 - y))
        return weighted_mean(loss, weight)
