"""Self-adjusting Dice loss (DSC): Li et al. 2020, "Dice Loss for Data-imbalanced NLP Tasks" (ACL 2020).

Official code: ShannonAI/dice_loss_for_NLP, loss/dice_loss.py (``DiceLoss``,
lines 48-181), run by every training script of the repository with
``--dice_square``, ``--dice_smooth 1`` and ``--dice_alpha 0.01`` (e.g.
scripts/textcl_tnews/bert_dice.sh; utils/get_parser.py, line 54: alpha
defaults to 0.01). With p~ = (1 - p)^alpha p, the probability damped where it
is already close to 1, the code computes:

- several classes (softmax; lines 92-150 with ``_compute_dice_loss``, lines
  80-90): each sample i and class c apart, the squared denominator summing
  one entry, 1 - (2 p~_ic y_ic + s) / (p~_ic^2 + y_ic^2 + s); summed over
  the classes, averaged over the samples (``reduction="mean"``);
- one channel (sigmoid; lines 152-181): one Dice over the whole batch,
  1 - (2 sum p~ y + s) / (sum p~^2 + sum y^2 + s).

Here a pixel is a sample; float (multi-label) targets get the one-channel
form per channel, summed over channels. Ignored samples / pixels count
nowhere. 1 - p is computed from log-probabilities, never as 1 - p: for
softmax, log(1 - p_c) = logsumexp over the other classes minus logsumexp over
all; for sigmoid, 1 - s(z) = s(-z). So a confident prediction keeps its
(small) gradient and fractional alphas stay finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.common import canonical_target, check_index_target, flat_float, flat_index, flat_logits
from lossbench.losses.common import is_sigmoid_target
from lossbench.losses.registry import LossContext, register_loss
from lossbench.losses.weights import weighted_mean


def softmax_log_probs(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p, log(1 - p)) of softmax over dim 1, both without cancellation.

    Only the largest class can have p > 1/2; its log(1 - p) is the
    logsumexp of the other logits minus that of all. Every other class has
    p <= 1/2, where log1p(-p) is exact.
    """
    lse = torch.logsumexp(z, 1, keepdim=True)
    log_p = z - lse
    top = z.argmax(1, keepdim=True)
    log_rest = torch.logsumexp(z.scatter(1, top, float("-inf")), 1, keepdim=True) - lse
    log_q = torch.log1p(-log_p.exp().clamp(max=0.5)).scatter(1, top, log_rest)
    return log_p, log_q


@register_loss("dsc")
class SelfAdjustingDiceLoss(nn.Module):
    """Self-adjusting Dice sum_c 1 - (2 p~ y + s) / (p~^2 + y^2 + s), p~ = (1-p)^alpha p (Li et al. 2020).

    "Dice Loss for Data-imbalanced NLP Tasks" (ACL 2020); the official code's
    form and defaults (ShannonAI/dice_loss_for_NLP, loss/dice_loss.py, run
    with --dice_square, smooth 1, alpha 0.01): per sample and class for
    softmax outputs, one batch-level Dice per channel for sigmoid outputs.
    ``alpha`` damps confident predictions ((1-p)^alpha falls to 0 as p -> 1);
    large alphas make a confident right and a confident wrong prediction cost
    alike (at alpha = 1, p~ = p (1 - p) is symmetric) and stop training.

    Formula:
        L = mean_i sum_c [ 1 - (2 p~_ic y_ic + s) / (p~_ic^2 + y_ic^2 + s) ],  p~ = (1 - p)^alpha p

    Paper:
        Li, Sun, Meng, Liang, Wu, Li, "Dice Loss for Data-imbalanced NLP Tasks"
        (ACL 2020).

    Official code:
        ShannonAI/dice_loss_for_NLP, loss/dice_loss.py, run with --dice_square,
        smooth 1, alpha 0.01.

    Checked by:
        tests/test_losses_official.py::test_dsc_is_the_official_multiclass_form_with_its_defaults
        tests/test_losses_official.py::test_dsc_segmentation_treats_each_pixel_as_a_sample
        tests/test_losses_official.py::test_dsc_one_channel_is_one_dice_over_the_batch
        tests/test_losses_official.py::test_dsc_computes_one_minus_p_without_cancellation
        tests/test_losses_official.py::test_dsc_ranks_a_perfect_predictor_below_a_constant_and_an_always_wrong_one
    """

    def __init__(self, ctx: LossContext, alpha: float = 0.01, smooth: float = 1.0) -> None:
        super().__init__()
        if alpha < 0 or smooth <= 0:
            raise ValueError(f"need alpha >= 0 and smooth > 0, got alpha={alpha}, smooth={smooth}")
        self.alpha = float(alpha)
        self.smooth = float(smooth)
        self.ignore_index = ctx.ignore_index

    def damped(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """p~ = (1 - p)^alpha p from log p and log(1 - p)."""
        return torch.exp(self.alpha * log_q + log_p)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = canonical_target(logits, target)
        z = flat_logits(logits)
        s = self.smooth
        if is_sigmoid_target(logits, target):
            y, valid = flat_float(target, self.ignore_index)
            pt = self.damped(F.logsigmoid(z), F.logsigmoid(-z)) * valid
            dims = (0, 2)
            dice = (2 * (pt * y).sum(dims) + s) / ((pt * pt).sum(dims) + (y * y).sum(dims) + s)
            return (1 - dice).sum()
        check_index_target(logits, target)
        t, valid = flat_index(target, self.ignore_index)
        y = torch.zeros_like(z).scatter_(1, t.unsqueeze(1), 1.0)
        pt = self.damped(*softmax_log_probs(z))
        per_sample = (1 - (2 * pt * y + s) / (pt * pt + y + s)).sum(1)
        return weighted_mean(per_sample, valid)
