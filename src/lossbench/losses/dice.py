"""Overlap (region) losses built on soft counts: Dice (Jaccard and Tversky build on the same base).

With p the softmax / sigmoid probabilities and y the one-hot target, the soft
counts per class are TP = sum p y, |P| = sum p, |Y| = sum y, summed over the
batch and pixels (or over the pixels of each image with ``per_image``). For
classification the sums run over the batch, so Dice is a batch-level soft F1.

Defaults depend on the task (``smooth``, ``skip_empty`` and, for ``dice``,
``squared`` left unset):

- segmentation: ``smooth=1``, classes absent from the target still cost
  their false positives ((0 + s) / (|P| + s) < 1), plain sums. Counts are
  thousands of pixels, so s = 1 only keeps empty classes defined.
- classification: ``smooth=0``, classes absent from the batch count 0
  (``skip_empty``; smp's DiceLoss defaults) and, for ``dice``, squared sums
  |P| = sum p^2 (V-Net's form) and ``log_loss`` (-log Dice_c per class). A
  batch of 128 holds a rare class once or not at all, so s = 1 is as large as
  its counts: every batch without the class pushed its probabilities to 0,
  and one sample could not pull them back (``dice`` with s = 1 ended at 0 %
  recall on 7 of 10 classes of long-tailed Fashion-MNIST, imbalance 100,
  recipe fashion_mnist_lt_cpu.yaml). With plain sums the small probabilities
  the other 127 samples give a rare class outweigh its one true sample (the
  hardest rare class, Shirt, ended at 0 % in 3 of 3 proxy runs; squared: in
  none). Squared, smooth 0 and skip_empty were still not enough: in
  BENCHMARKS.md's long-tailed table seeds 1 and 2 ended with Sneaker and
  Ankle boot at 0 % recall, their true-class probability at 1e-5 - 3e-2
  (median over their test images). Through the softmax 1 - Dice_c gives a
  sample's true-class logit a gradient proportional to p, so a class whose p
  has collapsed never comes back; -log Dice_c gives it about 1 - p (test:
  ``test_dice_recovers_a_collapsed_rare_class_only_in_its_log_form``). The
  same 3 seeds with ``log_loss``: 77.5 / 72.2 / 74.6 % balanced accuracy
  (linear: 74.2 / 63.6 / 63.1), no class at 0 % recall on any seed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lossbench.losses.common import Probs, flag, probabilities
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import class_weights


def soft_counts(probs: Probs, per_image: bool, squared: bool = False):
    """(TP, |P|, |Y|) per class: shape C, or N x C with ``per_image``. ``squared`` sums p^2 and y^2."""
    p, y = probs.prob, probs.onehot
    dims = (2,) if per_image else (0, 2)
    tp = (p * y).sum(dims)
    if squared:
        return tp, (p * p).sum(dims), (y * y).sum(dims)
    return tp, p.sum(dims), y.sum(dims)


def log_soft_tp(log_p: torch.Tensor, onehot: torch.Tensor, per_image: bool) -> torch.Tensor:
    """log TP per class from log-probabilities (logsumexp of log p + log y): exact where p underflows.

    Entries with y = 0 get log y = -1e4 instead of -inf, so that a class absent from the target has a
    finite log TP (about -1e4) and no NaN reaches the gradient through a masked term.
    """
    log_y = torch.where(onehot > 0, onehot.clamp_min(1e-30).log(), torch.full_like(onehot, -1e4))
    return torch.logsumexp(log_p + log_y, dim=(2,) if per_image else (0, 2))


#: smooth, skip_empty and (dice) squared and log_loss when unset, by task; the module docstring says why
#: they differ.
TASK_DEFAULTS = {
    "classification": {"smooth": 0.0, "skip_empty": True, "squared": True, "log_loss": True},
    "segmentation": {"smooth": 1.0, "skip_empty": False, "squared": False, "log_loss": False},
}

#: the smallest Dice a log_loss term of a class absent from the target counts (smp's eps 1e-7): at most 16.1
MIN_LOG_DICE = math.log(1e-7)


def task_default(ctx: LossContext, name: str, value):
    """``value``, or the task's default for parameter ``name`` when it is None (unset)."""
    return TASK_DEFAULTS.get(ctx.task, TASK_DEFAULTS["segmentation"])[name] if value is None else value


def smoothing(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"smooth must be a number >= 0, got {value!r}")
    return float(value)


class RegionLoss(nn.Module):
    """Base for losses of the form mean_c w_c (1 - score_c) over per-class soft counts."""

    squared = False

    def __init__(self, ctx: LossContext, smooth: float | None, weight, per_image: bool,
                 skip_empty: bool | None) -> None:
        super().__init__()
        if flag("per_image", per_image) and ctx.task == "classification":
            raise ValueError("per_image needs segmentation; for classification the counts run over the batch")
        self.smooth = smoothing(task_default(ctx, "smooth", smooth))
        self.skip_empty = flag("skip_empty", task_default(ctx, "skip_empty", skip_empty))
        self.per_image = flag("per_image", per_image)
        self.ignore_index = ctx.ignore_index
        self.register_buffer("weight", class_weights(weight, ctx), persistent=False)

    def class_losses(self, tp: torch.Tensor, psum: torch.Tensor, ysum: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, loss: torch.Tensor, ysum: torch.Tensor) -> torch.Tensor:
        """Mean over classes (weighted) and images; with ``skip_empty`` classes absent from the target add 0."""
        if self.skip_empty:
            loss = loss * (ysum > 0)
        if self.weight is not None:
            w = self.weight.expand_as(loss)
            return (loss * w).sum() / w.sum().clamp(min=1e-7)
        return loss.mean()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = probabilities(logits, target, self.ignore_index)
        tp, psum, ysum = soft_counts(probs, self.per_image, self.squared)
        return self.reduce(self.class_losses(tp, psum, ysum), ysum)


@register_loss("dice")
class DiceLoss(RegionLoss):
    """Soft Dice 1 - mean_c (2 TP_c + s) / (|P_c| + |Y_c| + s) (Milletari et al. 2016; Sudre et al. 2017).

    ``squared``: |P| = sum p^2, |Y| = sum y^2 (V-Net's form). ``per_image``:
    Dice of each image, then averaged. ``skip_empty``: classes absent from the
    target count 0 (smp's convention) instead of penalising false positives.
    ``log_loss``: each class costs -log Dice_c instead of 1 - Dice_c (smp's
    ``DiceLoss(log_loss=True)``; the exponential-logarithmic loss of Wong et al.
    2018 with gamma = 1), computed from log-probabilities. Through a softmax,
    1 - Dice_c gives a sample's true-class logit a gradient proportional to its
    probability p, which vanishes once a class has collapsed (p -> 0); -log
    Dice_c gives it about 1 - p, as cross-entropy does.
    Unset ``smooth`` / ``skip_empty`` / ``squared`` / ``log_loss``: 1 / false /
    false / false for segmentation, 0 / true / true / true for classification
    (module docstring).

    Formula:
        L = 1 - mean_c (2 TP_c + s) / (|P_c| + |Y_c| + s)
        TP_c = sum p_c y_c, |P_c| = sum p_c (or sum p_c^2 with squared), |Y_c| = sum y_c;
        with log_loss: L = mean_c -log( (2 TP_c + s) / (|P_c| + |Y_c| + s) )

    Paper:
        Milletari, Navab, Ahmadi, "V-Net: Fully Convolutional Neural Networks
        for Volumetric Medical Image Segmentation" (3DV 2016); Sudre, Li,
        Vercauteren, Ourselin, Cardoso, "Generalised Dice overlap as a deep
        learning loss function for highly unbalanced segmentations" (DLMIA 2017).

    Official code:
        segmentation_models_pytorch's ``DiceLoss`` (our smoothing s is smp's 2 s;
        ``skip_empty=true`` gives smp's "absent classes count 0").

    Checked by:
        tests/test_losses.py::test_dice_formula_batch_squared_and_per_image
        tests/test_losses.py::test_dice_for_classification_runs_over_the_batch
        tests/test_losses.py::test_log_dice_keeps_the_gradient_of_a_collapsed_class_and_never_gives_nan
        tests/test_losses_smp.py::test_overlap_losses_match_smp
        tests/test_losses_smp.py::test_dice_default_keeps_absent_classes_where_smp_zeroes_them
        tests/test_losses_training.py::test_dice_recovers_a_collapsed_rare_class_only_in_its_log_form
    """

    def __init__(self, ctx: LossContext, smooth: float | None = None, squared: bool | None = None, weight=None,
                 per_image: bool = False, skip_empty: bool | None = None, log_loss: bool | None = None) -> None:
        super().__init__(ctx, smooth, weight, per_image, skip_empty)
        self.squared = flag("squared", task_default(ctx, "squared", squared))
        self.log_loss = flag("log_loss", task_default(ctx, "log_loss", log_loss))

    def class_losses(self, tp, psum, ysum):
        return 1 - (2 * tp + self.smooth) / (psum + ysum + self.smooth).clamp(min=1e-7)

    def log_class_losses(self, log_tp, psum, ysum):
        """-log Dice_c from log TP_c; a class absent from the target costs at most -MIN_LOG_DICE (as smp)."""
        log_smooth = torch.full_like(log_tp, math.log(self.smooth) if self.smooth > 0 else -math.inf)
        log_dice = torch.logaddexp(log_tp + math.log(2), log_smooth) - (psum + ysum + self.smooth).clamp(min=1e-7).log()
        return -torch.where(ysum > 0, log_dice, log_dice.clamp(min=MIN_LOG_DICE))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.log_loss:
            return super().forward(logits, target)
        probs = probabilities(logits, target, self.ignore_index, log=True)
        _, psum, ysum = soft_counts(probs, self.per_image, self.squared)
        log_tp = log_soft_tp(probs.log_prob, probs.onehot, self.per_image)
        return self.reduce(self.log_class_losses(log_tp, psum, ysum), ysum)
