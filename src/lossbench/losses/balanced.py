"""Losses that use the training class counts n_c to counter a long-tailed label distribution.

All take class-index targets (classification, or per pixel for
segmentation) and receive ``class_counts`` from the data layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.ce import cross_entropy_mean, one_hot_float
from lossbench.losses.common import check_index_target, class_view, flat_index, flat_logits, is_sigmoid_target
from lossbench.losses.focal import sigmoid_focal_terms, softmax_focal_terms
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import class_counts_tensor, effective_number_weights


def _index_only(name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    if is_sigmoid_target(logits, target):
        raise ValueError(f"{name} needs class-index targets, not float targets")
    check_index_target(logits, target)


def _beta(beta: float) -> float:
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    return float(beta)


@register_loss("cb")
class ClassBalancedLoss(nn.Module):
    """Class-balanced loss (1/N) sum_i w_{y_i} L_i, w_c = (1-beta)/(1-beta^n_c) normalised to sum C (Cui et al. 2019).

    "Class-Balanced Loss Based on Effective Number of Samples". ``base``:
    "ce" (softmax cross-entropy), "focal" (softmax focal) or "sigmoid_focal"
    (one sigmoid per class, the paper's best variant). Unlike ``ce(weight=...)``
    the weighted sum is divided by the number of samples, as in the paper.
    """

    def __init__(self, ctx: LossContext, base: str = "focal", beta: float = 0.9999, gamma: float = 2.0) -> None:
        super().__init__()
        if base not in ("ce", "focal", "sigmoid_focal"):
            raise ValueError(f"base must be 'ce', 'focal' or 'sigmoid_focal', got {base!r}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.base = base
        self.gamma = 0.0 if base == "ce" else float(gamma)
        self.ignore_index = ctx.ignore_index
        counts = class_counts_tensor(ctx, "cb")
        self.register_buffer("weight", effective_number_weights(counts, _beta(beta)).float(), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _index_only("cb", logits, target)
        if self.base == "sigmoid_focal":
            loss, y, valid = sigmoid_focal_terms(logits, one_hot_float(logits, target, self.ignore_index),
                                                 self.gamma, self.ignore_index)
            per_sample = (loss * class_view(self.weight, 3) * valid).sum(1)
            return per_sample.sum() / valid[:, 0].sum().clamp(min=1)
        loss, t, valid = softmax_focal_terms(logits, target, self.gamma, self.ignore_index)
        return (loss * self.weight[t] * valid).sum() / valid.sum().clamp(min=1)


@register_loss("ldam")
class LDAMLoss(nn.Module):
    """LDAM -log softmax(s (z - m_y e_y))_y, margins m_c proportional to n_c^(-1/4) (Cao et al. 2019).

    "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss".
    The largest margin is ``max_margin``. The paper applies it to cosine
    logits with scale s = 30; for plain linear logits use a small s (1).
    Deferred re-weighting (DRW): from epoch ``drw_epoch`` on (the engine calls
    ``on_epoch_start``) the samples are weighted by effective-number weights
    with ``beta``, mean normalised by the weights like ``F.cross_entropy``.
    """

    def __init__(self, ctx: LossContext, max_margin: float = 0.5, s: float = 30.0, drw_epoch: int | None = None,
                 beta: float = 0.9999) -> None:
        super().__init__()
        if max_margin <= 0 or s <= 0:
            raise ValueError(f"max_margin and s must be > 0, got max_margin={max_margin}, s={s}")
        if drw_epoch is not None and (isinstance(drw_epoch, bool) or not isinstance(drw_epoch, int) or drw_epoch < 1):
            raise ValueError(f"drw_epoch must be an epoch number >= 1 or null, got {drw_epoch!r}")
        counts = class_counts_tensor(ctx, "ldam")
        m = counts.pow(-0.25)
        self.register_buffer("margins", (m * (max_margin / m.max())).float(), persistent=False)
        self.register_buffer("drw_weight", effective_number_weights(counts, _beta(beta)).float(), persistent=False)
        self.s = float(s)
        self.drw_epoch = drw_epoch
        self.reweight = False
        self.ignore_index = ctx.ignore_index

    def on_epoch_start(self, epoch: int, drw_epoch: int | None = None) -> None:
        """Switch the class-balanced weights on once ``epoch`` (1-based) reaches ``drw_epoch``.

        The engine passes the experiment's ``drw_epoch`` when the config sets
        one; it then takes the place of the loss's own parameter.
        """
        start = self.drw_epoch if drw_epoch is None else drw_epoch
        self.reweight = start is not None and epoch >= start

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _index_only("ldam", logits, target)
        t, valid = flat_index(target, self.ignore_index)
        z = flat_logits(logits)
        z = z - torch.zeros_like(z).scatter_(1, t.unsqueeze(1), 1.0) * class_view(self.margins, 3)
        logpt = F.log_softmax(self.s * z, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
        w = valid.to(z.dtype)
        if self.reweight:
            w = w * self.drw_weight[t]
        return -(logpt * w).sum() / w.sum().clamp(min=1e-12)


class _PriorShiftedCE(nn.Module):
    def __init__(self, ctx: LossContext, name: str, tau: float) -> None:
        super().__init__()
        counts = class_counts_tensor(ctx, name)
        self.register_buffer("shift", (tau * torch.log(counts / counts.sum())).float(), persistent=False)
        self.ignore_index = ctx.ignore_index
        self.name = name

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _index_only(self.name, logits, target)
        return cross_entropy_mean(logits.float() + class_view(self.shift, logits.ndim), target, self.ignore_index)


@register_loss("logit_adjusted")
class LogitAdjustedLoss(_PriorShiftedCE):
    """Logit-adjusted CE -log softmax(z + tau log pi)_y, pi_c = n_c / n (Menon et al. 2021).

    "Long-tail learning via logit adjustment" (ICLR 2021). Train with it, then
    predict with the plain logits: tau = 1 is Fisher-consistent for the
    balanced error.
    """

    def __init__(self, ctx: LossContext, tau: float = 1.0) -> None:
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        super().__init__(ctx, "logit_adjusted", float(tau))


@register_loss("balanced_softmax")
class BalancedSoftmaxLoss(_PriorShiftedCE):
    """Balanced softmax -log(n_y e^{z_y} / sum_c n_c e^{z_c}) (Ren et al. 2020).

    "Balanced Meta-Softmax for Long-Tailed Visual Recognition" (NeurIPS 2020);
    the same as ``logit_adjusted(tau=1)``.
    """

    def __init__(self, ctx: LossContext) -> None:
        super().__init__(ctx, "balanced_softmax", 1.0)
