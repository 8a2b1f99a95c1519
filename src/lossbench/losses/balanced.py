"""Losses that use the training class counts n_c to counter a long-tailed label distribution.

All take class-index targets (classification, or per pixel for
segmentation) and receive ``class_counts`` from the data layer.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.ce import cross_entropy_mean, one_hot_float
from lossbench.losses.common import canonical_target, check_index_target, class_view, flat_index, flat_logits
from lossbench.losses.common import is_sigmoid_target
from lossbench.losses.focal import sigmoid_focal_terms, softmax_focal_terms
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import ClassWeighted, class_counts_tensor, class_weights, effective_number_weights
from lossbench.losses.weights import log_class_prior, weighted_mean


def _index_target(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The class-index target (an N x 1 x *spatial mask squeezed); ValueError for float targets."""
    target = canonical_target(logits, target)
    if is_sigmoid_target(logits, target):
        raise ValueError(f"{name} needs class-index targets, not float targets")
    check_index_target(logits, target)
    return target


def _beta(beta: float) -> float:
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    return float(beta)


@register_loss("cb", needs_class_counts=True)
class ClassBalancedLoss(nn.Module):
    """Class-balanced loss (1/N) sum_i w_{y_i} L_i, w_c = (1-beta)/(1-beta^n_c) normalised to sum C (Cui et al. 2019).

    ``base``: "sigmoid_focal" (the official "focal": one sigmoid per class,
    modulator (1 - p_t)^gamma, every channel of sample i weighted by w_{y_i},
    the sum over samples and channels divided by the number of samples),
    "ce" (the official "softmax": sum_i w_{y_i} CE_i / N, TF's
    SUM_BY_NONZERO_WEIGHTS), or "focal" (softmax focal, sum_i w_{y_i} FL_i / N;
    not in the paper). Segmentation: pixels are the samples.

    Defaults are those of the official long-tailed CIFAR script
    (cifar_im_trainval_cb.sh: focal, beta 0.9999, gamma 1.0; gamma 1.0 is also
    the code's default): the class-balanced *sigmoid focal* loss the paper
    proposes (its softmax and sigmoid CE variants are ``base`` "ce" and
    "sigmoid_focal" with gamma 0). The paper also
    initialises the classifier's bias to -log((1 - pi) / pi), pi = 0.1, for
    the sigmoid losses; that is a model option, not the loss's.

    The normalisation is 1/N, not the library's sum_i w_{y_i} L_i / sum_i
    w_{y_i} (:mod:`lossbench.losses.weights`): the official code divides by
    the number of samples, so a batch rich in tail samples weighs more in
    total; the weights, normalised to sum to C, keep the loss's overall scale.
    ``cb`` has no ``set_class_weights``: its weights are the method itself
    (deferred re-weighting with cb would apply them twice).

    ``normalize``: "classes" (the default, the official code's: the weights
    sum to C) or "samples" (not in the paper: the same weights times
    N / sum_c n_c w_c, so the training set's mean sample weight is 1). On a
    long tail most samples come from the head, whose weights are small: on
    CIFAR-10-LT's counts (5000 ... 50, beta 0.9999) the official weights
    give a mean sample weight of 0.171, so the loss and its gradient are
    5.85x smaller than with "samples"; the ablation that separates the
    re-weighting from that smaller step.

    Formula:
        L = (1/N) sum_i w_{y_i} L_i,  w_c = (1 - beta) / (1 - beta^n_c), normalised so sum_c w_c = C
        (normalize "samples": so sum_c n_c w_c = sum_c n_c, with n_c the training counts);
        L_i = sum_c FL_sigmoid(z_ic, y_ic) (default base), CE_i or FL_i

    Paper:
        Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on
        Effective Number of Samples" (CVPR 2019).

    Official code:
        richardaecn/class-balanced-loss, src/cifar_main.py: the weights (lines
        425-430), one weight per sample, w of its true class, copied to every
        class channel (lines 323-330), the losses and their normalisation (lines
        226-266 and 332-342).

    Checked by:
        tests/test_losses_official.py::test_cb_defaults_are_the_official_long_tail_script
        tests/test_losses_official.py::test_cb_sigmoid_focal_is_the_official_focal_loss
        tests/test_losses_official.py::test_cb_softmax_is_weighted_sum_over_number_of_samples
        tests/test_losses.py::test_class_balanced_focal_and_ce_formula
        tests/test_losses.py::test_class_balanced_sigmoid_focal_formula
        tests/test_losses.py::test_class_balanced_normalized_over_samples_has_mean_sample_weight_one
    """

    def __init__(self, ctx: LossContext, base: str = "sigmoid_focal", beta: float = 0.9999,
                 gamma: float = 1.0, normalize: str = "classes") -> None:
        super().__init__()
        if base not in ("ce", "focal", "sigmoid_focal"):
            raise ValueError(f"base must be 'ce', 'focal' or 'sigmoid_focal', got {base!r}")
        if normalize not in ("classes", "samples"):
            raise ValueError(f"normalize must be 'classes' or 'samples', got {normalize!r}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.base = base
        self.gamma = 0.0 if base == "ce" else float(gamma)
        self.ignore_index = ctx.ignore_index
        counts = class_counts_tensor(ctx, "cb")
        weight = effective_number_weights(counts, _beta(beta))
        if normalize == "samples":
            weight = weight * counts.sum() / (counts * weight).sum()
        self.register_buffer("weight", weight.float(), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _index_target("cb", logits, target)
        t, valid = flat_index(target, self.ignore_index)
        sample_weight = self.weight[t] * valid
        if self.base == "sigmoid_focal":
            loss, _, _ = sigmoid_focal_terms(logits, one_hot_float(logits, target, self.ignore_index),
                                             self.gamma, self.ignore_index)
            loss = loss.sum(1)
        else:
            loss, _, _ = softmax_focal_terms(logits, target, self.gamma, self.ignore_index)
        return (loss * sample_weight).sum() / valid.sum().clamp(min=1)


#: LDAM's parameters that became config keys
LDAM_MOVED = {
    "drw_epoch": "deferred re-weighting is now a config option (for ce, focal and ldam): "
                 "use the config key drw_epoch: N",
    "beta": "deferred re-weighting (and its beta) is now a config option: use the config key drw_epoch: N",
}


@register_loss("ldam", accepts_class_weights=True, expects_cosine_logits=True, needs_class_counts=True,
               moved_parameters=LDAM_MOVED)
class LDAMLoss(ClassWeighted):
    """LDAM -log softmax(s (z - m_y e_y))_y, margins m_c ∝ n_c^(-1/4), the largest ``max_margin`` (Cao et al. 2019).

    The defaults are the paper's: s = 30 on a *cosine* classifier (normalised
    features and weights, no bias, so |z| <= 1; models/resnet_cifar.py,
    NormedLinear), ``model.head: cosine``. On a plain linear head use a small
    s (1); its capabilities say it expects cosine logits only when s > 1, so the engine warns then. ``weight``:
    per-class sample weights (mean normalised by them,
    :mod:`lossbench.losses.weights`); deferred re-weighting (DRW) is the
    engine's ``drw_epoch`` option, which calls ``set_class_weights``.

    ``max_margin=0`` is the control for the margin: cross-entropy of
    ``s * z`` on the same cosine head and scale, with nothing else changed
    (``ldam(max_margin=0)`` vs ``ldam`` separates the margin from the head).

    Formula:
        L = -log softmax(s (z - m_y e_y))_y,  m_c = max_margin * n_c^(-1/4) / max_k n_k^(-1/4)
        (weighted mean over samples with per-class weights w: sum_i w_{y_i} l_i / sum_i w_{y_i})

    Paper:
        Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with
        Label-Distribution-Aware Margin Loss" (NeurIPS 2019).

    Official code:
        kaidic/LDAM-DRW, losses.py, lines 23-45 (margins n^(-1/4) scaled so the
        largest is max_m = 0.5; F.cross_entropy(s * (z - m_y e_y), y, weight=w),
        PyTorch's weighted mean), cifar_train.py, line 213 (s = 30).

    Checked by:
        tests/test_losses_official.py::test_ldam_is_cross_entropy_of_shifted_scaled_logits_with_pytorch_weights
        tests/test_losses_official.py::test_ldam_without_margin_is_cross_entropy_of_the_scaled_cosine_logits
        tests/test_losses_official.py::test_ldam_says_when_it_expects_cosine_logits
        tests/test_losses_official.py::test_ldam_points_drw_parameters_to_the_config_key
        tests/test_losses.py::test_ldam_margins_and_class_weights
    """

    def __init__(self, ctx: LossContext, max_margin: float = 0.5, s: float = 30.0, weight=None) -> None:
        super().__init__(ctx, class_weights(weight, ctx))
        if max_margin < 0 or s <= 0:
            raise ValueError(f"max_margin must be >= 0 and s > 0, got max_margin={max_margin}, s={s}")
        counts = class_counts_tensor(ctx, "ldam")
        m = counts.pow(-0.25)
        self.register_buffer("margins", (m * (max_margin / m.max())).float(), persistent=False)
        self.s = float(s)
        self.capabilities = replace(self.capabilities, expects_cosine_logits=self.s > 1)
        self.ignore_index = ctx.ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _index_target("ldam", logits, target)
        t, valid = flat_index(target, self.ignore_index)
        z = flat_logits(logits)
        z = z - torch.zeros_like(z).scatter_(1, t.unsqueeze(1), 1.0) * class_view(self.margins, 3)
        logpt = F.log_softmax(self.s * z, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
        weight = self.class_weight(logits)
        return weighted_mean(-logpt, valid if weight is None else valid * weight[t])


class _PriorShiftedCE(nn.Module):
    def __init__(self, ctx: LossContext, name: str, tau: float) -> None:
        super().__init__()
        counts = class_counts_tensor(ctx, name)
        self.register_buffer("shift", (tau * log_class_prior(counts)).float(), persistent=False)
        self.ignore_index = ctx.ignore_index
        self.name = name

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _index_target(self.name, logits, target)
        return cross_entropy_mean(logits.float() + class_view(self.shift, logits.ndim), target, self.ignore_index)


@register_loss("logit_adjusted", needs_class_counts=True)
class LogitAdjustedLoss(_PriorShiftedCE):
    """Logit-adjusted CE -log softmax(z + tau log pi)_y, pi_c = n_c / n (Menon et al. 2021).

    "Long-tail learning via logit adjustment" (ICLR 2021). Train with it, then
    predict with the plain logits: tau = 1 is Fisher-consistent for the
    balanced error.

    Formula:
        L = -log softmax(z + tau log pi)_y,  pi_c = n_c / n

    Paper:
        Menon, Jayasumana, Rawat, Jain, Veit, Kumar, "Long-tail learning via
        logit adjustment" (ICLR 2021).

    Official code:
        google-research/google-research, logit_adjustment (the logit-adjusted
        loss; its ``posthoc`` mode is ``lossbench eval --posthoc-la``).

    Checked by:
        tests/test_losses.py::test_logit_adjusted_and_balanced_softmax_formulas
    """

    def __init__(self, ctx: LossContext, tau: float = 1.0) -> None:
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        super().__init__(ctx, "logit_adjusted", float(tau))


@register_loss("balanced_softmax", needs_class_counts=True)
class BalancedSoftmaxLoss(_PriorShiftedCE):
    """Balanced softmax -log(n_y e^{z_y} / sum_c n_c e^{z_c}) (Ren et al. 2020).

    "Balanced Meta-Softmax for Long-Tailed Visual Recognition" (NeurIPS 2020);
    the same as ``logit_adjusted(tau=1)``.

    Formula:
        L = -log( n_y exp(z_y) / sum_c n_c exp(z_c) ),  n_c = training count of class c

    Paper:
        Ren, Yu, Sheng, Ma, Zhao, Yi, Li, "Balanced Meta-Softmax for Long-Tailed
        Visual Recognition" (NeurIPS 2020).

    Official code:
        Not compared with the authors' code: the paper's formula, which is
        ``logit_adjusted(tau=1)``.

    Checked by:
        tests/test_losses.py::test_logit_adjusted_and_balanced_softmax_formulas
    """

    def __init__(self, ctx: LossContext) -> None:
        super().__init__(ctx, "balanced_softmax", 1.0)
