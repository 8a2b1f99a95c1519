"""Cross-entropy for softmax outputs and binary cross-entropy for sigmoid outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.common import as_binary_target, check_index_target, class_view, flat_float, is_sigmoid_target
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import class_weights


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
) -> torch.Tensor:
    """Mean BCE with logits over the entries whose target is not ``ignore_index``.

    Label smoothing moves targets to y (1 - eps) + eps / 2 (two-class case of
    Szegedy et al. 2016). ``pos_weight`` (per channel) scales the positive term.
    """
    y, w = flat_float(target, ignore_index)
    if label_smoothing:
        y = y * (1 - label_smoothing) + label_smoothing / 2
    z = logits.float().reshape(y.shape)
    pw = None if pos_weight is None else class_view(pos_weight, 3)
    return F.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw, reduction="sum") / w.sum().clamp(min=1)


@register_loss("ce")
class CrossEntropy(nn.Module):
    """Cross-entropy -sum_c w_c q_c log softmax(z)_c, q the (label-smoothed) target; weighted mean over pixels.

    Float targets shaped like the logits (or a one-channel model) fall back to
    BCE with logits. With class weights the mean is sum_i w_{y_i} l_i / sum_i w_{y_i}
    (PyTorch's convention).
    """

    def __init__(self, ctx: LossContext, weight=None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = ctx.ignore_index
        self.label_smoothing = _smoothing(label_smoothing)
        self.register_buffer("weight", class_weights(weight, ctx), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = as_binary_target(logits, target)
        if is_sigmoid_target(logits, target):
            return binary_cross_entropy(logits, target, self.ignore_index, self.label_smoothing)
        check_index_target(logits, target)
        return cross_entropy_mean(logits, target, self.ignore_index, self.weight, self.label_smoothing)


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
        target = as_binary_target(logits, target)
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
