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

    Formula:
        L = 1 - mean_c (TP_c + s) / (|P_c| + |Y_c| - TP_c + s)

    Paper:
        Rahman, Wang, "Optimizing Intersection-Over-Union in Deep Neural
        Networks for Image Segmentation" (ISVC 2016).

    Official code:
        segmentation_models_pytorch's ``JaccardLoss``.

    Checked by:
        tests/test_losses.py::test_jaccard_tversky_focal_tversky_formulas
        tests/test_losses_smp.py::test_overlap_losses_match_smp
    """

    def __init__(self, ctx: LossContext, smooth: float | None = None, weight=None, per_image: bool = False,
                 skip_empty: bool | None = None) -> None:
        super().__init__(ctx, smooth, weight, per_image, skip_empty)

    def class_losses(self, tp, psum, ysum):
        return 1 - tversky_index(tp, psum, ysum, 1.0, 1.0, self.smooth)


@register_loss("tversky")
class TverskyLoss(RegionLoss):
    """Tversky 1 - mean_c (TP + s) / (TP + alpha FP + beta FN + s); beta > alpha favours recall (Salehi et al. 2017).

    Formula:
        L = 1 - mean_c (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)

    Paper:
        Salehi, Erdogmus, Gholipour, "Tversky loss function for image
        segmentation using 3D fully convolutional deep networks" (MLMI 2017).

    Official code:
        segmentation_models_pytorch's ``TverskyLoss``.

    Checked by:
        tests/test_losses.py::test_jaccard_tversky_focal_tversky_formulas
        tests/test_losses_smp.py::test_overlap_losses_match_smp
    """

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

    Formula:
        L = mean_c (1 - TI_c)^gamma,  TI_c = (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)

    Paper:
        Abraham, Khan, "A Novel Focal Tversky loss function with improved
        Attention U-Net for lesion segmentation" (ISBI 2019).

    Official code:
        Not compared with the authors' code; compared with smp's ``TverskyLoss``
        (equal for one class; smp raises the class mean to gamma).

    Checked by:
        tests/test_losses.py::test_jaccard_tversky_focal_tversky_formulas
        tests/test_losses_smp.py::test_focal_tversky_matches_smp_for_one_class_and_differs_for_several
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
