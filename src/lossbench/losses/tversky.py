"""Jaccard (soft IoU), Tversky and focal Tversky losses on per-class soft counts.

With TP = sum p y, FP = |P| - TP, FN = |Y| - TP (see :mod:`lossbench.losses.dice`):
the Tversky index TI = (TP + s) / (TP + alpha FP + beta FN + s) is Dice for
alpha = beta = 1/2 and Jaccard for alpha = beta = 1. Here alpha weighs false
positives and beta false negatives (Salehi et al. 2017; smp's convention).
Unset ``smooth`` / ``skip_empty`` take the task's defaults, as for ``dice``
(:mod:`lossbench.losses.dice`: 1 / false for segmentation, 0 / true for
classification).
"""

from __future__ import annotations

from lossbench.losses.dice import RegionLoss
from lossbench.losses.registry import LossContext, register_loss


def tversky_index(tp, psum, ysum, alpha: float, beta: float, smooth: float):
    """(TP + s) / (TP + alpha FP + beta FN + s), denominator clamped at 1e-7."""
    fp, fn = psum - tp, ysum - tp
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp(min=1e-7)


def _check(alpha: float, beta: float) -> None:
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")


@register_loss("jaccard")
class JaccardLoss(RegionLoss):
    """Soft Jaccard / IoU 1 - mean_c (TP_c + s) / (|P_c| + |Y_c| - TP_c + s) (Rahman & Wang 2016).

    ``per_image``, ``skip_empty``, ``weight`` and the task defaults of ``smooth`` / ``skip_empty`` as for ``dice``.
    """

    def __init__(self, ctx: LossContext, smooth: float | None = None, weight=None, per_image: bool = False,
                 skip_empty: bool | None = None) -> None:
        super().__init__(ctx, smooth, weight, per_image, skip_empty)

    def class_losses(self, tp, psum, ysum):
        return 1 - tversky_index(tp, psum, ysum, 1.0, 1.0, self.smooth)


@register_loss("tversky")
class TverskyLoss(RegionLoss):
    """Tversky 1 - mean_c (TP + s) / (TP + alpha FP + beta FN + s); beta > alpha favours recall (Salehi et al. 2017)."""

    def __init__(self, ctx: LossContext, alpha: float = 0.3, beta: float = 0.7, smooth: float | None = None,
                 weight=None, per_image: bool = False, skip_empty: bool | None = None) -> None:
        super().__init__(ctx, smooth, weight, per_image, skip_empty)
        _check(alpha, beta)
        self.alpha, self.beta = float(alpha), float(beta)

    def class_losses(self, tp, psum, ysum):
        return 1 - tversky_index(tp, psum, ysum, self.alpha, self.beta, self.smooth)


@register_loss("focal_tversky")
class FocalTverskyLoss(RegionLoss):
    """Focal Tversky mean_c (1 - TI_c)^gamma, gamma < 1 focuses on hard classes (Abraham & Khan 2019).

    The paper writes the exponent as 1/gamma with gamma = 4/3; here ``gamma``
    is the exponent itself (0.75). It is applied per class, before the class
    mean (smp's TverskyLoss raises the class mean to gamma instead).
    """

    def __init__(self, ctx: LossContext, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75,
                 smooth: float | None = None, weight=None, per_image: bool = False,
                 skip_empty: bool | None = None) -> None:
        super().__init__(ctx, smooth, weight, per_image, skip_empty)
        _check(alpha, beta)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)

    def class_losses(self, tp, psum, ysum):
        return (1 - tversky_index(tp, psum, ysum, self.alpha, self.beta, self.smooth)).clamp(min=1e-12).pow(self.gamma)
