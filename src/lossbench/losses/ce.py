"""Cross-entropy for softmax outputs and binary cross-entropy for sigmoid outputs."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.common import canonical_target, check_index_target, class_view, flat_float, is_sigmoid_target
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import ClassWeighted, class_weights, weighted_mean


def _smoothing(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {value}")
    return float(value)


def cross_entropy_mean(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """F.cross_entropy's weighted mean sum_i l_i / sum_i w_{y_i}, but 0 (not NaN) when every entry is ignored."""
    t = target.long()
    total = F.cross_entropy(logits.float(), t, weight=weight, ignore_index=ignore_index,
                            label_smoothing=label_smoothing, reduction="sum")
    valid = t != ignore_index
    if weight is None:
        return total / valid.sum().clamp(min=1)
    return total / weight[t.masked_fill(~valid, 0)].mul(valid).sum().clamp(min=1e-12)


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    label_smoothing: float = 0.0,
    pos_weight: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean BCE with logits over the entries whose target is not ``ignore_index``.

    Label smoothing moves targets to y (1 - eps) + eps / 2 (two-class case of
    Szegedy et al. 2016). ``pos_weight`` (per channel) scales the positive
    term; ``weight`` (per channel) weighs whole entries, mean normalised by
    the weights (see :mod:`lossbench.losses.weights`).
    """
    y, valid = flat_float(target, ignore_index)
    if label_smoothing:
        y = y * (1 - label_smoothing) + label_smoothing / 2
    z = logits.float().reshape(y.shape)
    pw = None if pos_weight is None else class_view(pos_weight, 3)
    terms = F.binary_cross_entropy_with_logits(z, y, pos_weight=pw, reduction="none")
    return weighted_mean(terms, valid if weight is None else valid * class_view(weight, 3))


@register_loss("ce", accepts_class_weights=True)
class CrossEntropy(ClassWeighted):
    """Cross-entropy -sum_c w_c q_c log softmax(z)_c, q the (label-smoothed) target; weighted mean over pixels.

    With class weights the mean is sum_i w_{y_i} l_i / sum_i w_{y_i}
    (PyTorch's convention, the one every weighted loss here uses; see
    :mod:`lossbench.losses.weights`). ``set_class_weights`` replaces the
    weights (deferred re-weighting). Float targets shaped like the logits (or
    a one-channel model) are binary / multi-label: ``ce`` then computes
    per-channel BCE with logits (class weights per channel) and says so once.
    """

    def __init__(self, ctx: LossContext, weight=None, label_smoothing: float = 0.0) -> None:
        super().__init__(ctx, class_weights(weight, ctx))
        self.ignore_index = ctx.ignore_index
        self.label_smoothing = _smoothing(label_smoothing)
        self.warned_bce = False

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = canonical_target(logits, target)
        weight = self.class_weight(logits)
        if is_sigmoid_target(logits, target):
            if not self.warned_bce:
                self.warned_bce = True
                warnings.warn("loss ce: float targets shaped like the logits (binary / multi-label), so ce computes "
                              "per-channel binary cross-entropy (sigmoid); write loss: bce to say so", stacklevel=1)
            return binary_cross_entropy(logits, target, self.ignore_index, self.label_smoothing, weight=weight)
        check_index_target(logits, target)
        return cross_entropy_mean(logits, target, self.ignore_index, weight, self.label_smoothing)


@register_loss("bce")
class BinaryCrossEntropy(nn.Module):
    """Binary cross-entropy with logits -[y log s(z) + (1-y) log(1-s(z))] for sigmoid outputs (binary / multi-label).

    Index targets are one-hot encoded (one sigmoid per class); a one-channel
    model takes an N x H x W 0/1 mask. ``pos_weight``: a number or one per channel.
    """

    def __init__(self, ctx: LossContext, label_smoothing: float = 0.0, pos_weight=None) -> None:
        super().__init__()
        self.ignore_index = ctx.ignore_index
        self.label_smoothing = _smoothing(label_smoothing)
        self.register_buffer("pos_weight", class_weights(pos_weight, ctx), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = canonical_target(logits, target)
        if not is_sigmoid_target(logits, target):
            target = one_hot_float(logits, target, self.ignore_index)
        return binary_cross_entropy(logits, target, self.ignore_index, self.label_smoothing, self.pos_weight)


def one_hot_float(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Index target -> float one-hot shaped like the logits, ``ignore_index`` in every channel where ignored."""
    check_index_target(logits, target)
    t = target.long()
    ignored = (t == ignore_index).unsqueeze(1)
    oh = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
    oh.scatter_(1, t.masked_fill(t == ignore_index, 0).unsqueeze(1), 1.0)
    return oh.masked_fill(ignored, float(ignore_index))
