"""Lovász hinge and Lovász-softmax, Berman et al. 2018, "The Lovász-Softmax loss".

Both minimise the Lovász extension of the Jaccard loss: sort the errors e of
one row (an image, a class, or the whole batch) in decreasing order, take the
Jaccard loss J_k = 1 - |Y - Y_k| / |Y ∪ Y_k| of the k largest errors and form
loss = sum_k e_(k) (J_k - J_{k-1}). Every row is done at once: one batched
sort and cumsum over a rows x pixels matrix, no loop over images or classes.
Ignored pixels are moved to the end of each row with a zero weight, so they
change neither the order nor the union counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.common import canonical_target, check_index_target, flat_float, flat_index, flat_logits
from lossbench.losses.common import flag, is_sigmoid_target
from lossbench.losses.registry import LossContext, register_loss


def lovasz_rows(errors: torch.Tensor, fg: torch.Tensor, valid: torch.Tensor | None = None,
                hinge: bool = True, gts: torch.Tensor | None = None) -> torch.Tensor:
    """Lovász extension of the Jaccard loss for each row of R x P errors and 0/1 foreground.

    With ``valid`` (R x P, 0/1), invalid entries must hold an error below
    every valid one (-inf for the hinge, -1 for softmax errors in [0, 1]).
    ``hinge`` clips errors at 0; softmax errors are never negative. ``gts``
    (R x 1) is the foreground count of each row when the caller has already
    dropped entries that cannot contribute (errors <= 0 sort last and get
    weight 0, so only the count of their foreground matters). The weights
    J_k - J_{k-1} depend on the order only, so they carry no gradient.
    """
    if errors.shape[1] == 0:
        return errors.sum(1)
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    with torch.no_grad():
        cum_fg = fg.gather(1, perm).cumsum(1)
        if valid is None:
            seen = torch.arange(1, errors.shape[1] + 1, dtype=cum_fg.dtype, device=cum_fg.device)
        else:
            seen = valid.gather(1, perm).cumsum(1)
        gts = cum_fg[:, -1:] if gts is None else gts.to(cum_fg.dtype)
        jaccard = 1 - (gts - cum_fg) / (gts + seen - cum_fg).clamp(min=1)
        grad = torch.diff(jaccard, dim=1, prepend=jaccard.new_zeros(jaccard.shape[0], 1))
    return torch.linalg.vecdot(F.relu(errors_sorted) if hinge else errors_sorted, grad)


def _row_mean(losses: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    keep = keep.to(losses.dtype)
    return (losses * keep).sum() / keep.sum().clamp(min=1)


@register_loss("lovasz_hinge")
class LovaszHingeLoss(nn.Module):
    """Lovász hinge sum_k relu(1 - z y±)_(k) dJ_k for binary / multi-label sigmoid logits (Berman et al. 2018).

    ``per_image``: one Jaccard per image, averaged over images with valid
    pixels; else one over the whole batch. A multi-label image is one row of
    all its channels (as in the reference code and smp). Index targets need a
    one-channel model (0/1 mask).

    Formula:
        L = sum_k relu(e)_(k) (J_k - J_{k-1}),  e = 1 - z y±, errors sorted in
        decreasing order, J the Jaccard loss of the first k errors

    Paper:
        Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss: A tractable
        surrogate for the optimization of the intersection-over-union measure
        in neural networks" (CVPR 2018).

    Official code:
        bermanmaxim/LovaszSoftmax, as copied into segmentation_models_pytorch's
        ``LovaszLoss`` (binary / multi-label mode), the version compared.

    Checked by:
        tests/test_losses.py::test_lovasz_hinge_formula_per_image_and_per_batch
        tests/test_losses_smp.py::test_lovasz_matches_smp
        tests/test_losses_smp.py::test_lovasz_gradients_match_smp
        tests/test_losses_smp.py::test_lovasz_hinge_per_image_skips_fully_ignored_images_where_smp_counts_zero
    """

    def __init__(self, ctx: LossContext, per_image: bool = True) -> None:
        super().__init__()
        if flag("per_image", per_image) and ctx.task == "classification":
            raise ValueError("per_image needs segmentation; use per_image=false for classification")
        self.per_image = flag("per_image", per_image)
        self.ignore_index = ctx.ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = canonical_target(logits, target)
        if not is_sigmoid_target(logits, target):
            raise ValueError("lovasz_hinge needs float 0/1 targets shaped like the logits or a one-channel model; "
                             "use lovasz_softmax for class indices")
        y, valid = flat_float(target, self.ignore_index)
        z = flat_logits(logits)
        if not self.per_image:
            y, z = y.reshape(1, -1), z.reshape(1, -1)
            errors = 1 - z * (2 * y - 1)
            keep = ((valid.reshape(1, -1) > 0) & (errors > 0)).reshape(-1).nonzero().squeeze(1)
            return lovasz_rows(errors.index_select(1, keep), y.index_select(1, keep), gts=y.sum(1, keepdim=True)).sum()
        y, valid, z = y.flatten(1), valid.flatten(1), z.flatten(1)
        errors = (1 - z * (2 * y - 1)).masked_fill(valid == 0, float("-inf"))
        return _row_mean(lovasz_rows(errors, y, valid), valid.any(1))


@register_loss("lovasz_softmax")
class LovaszSoftmaxLoss(nn.Module):
    """Lovász-softmax mean over present classes c of sum_k |y_c - p_c|_(k) dJ_k (Berman et al. 2018).

    ``classes``: "present" (classes in the target of the row) or "all".
    ``per_image``: mean over the images of each image's loss; else over the batch.

    Formula:
        L = mean over present classes c of sum_k |y_c - p_c|_(k) (J_k - J_{k-1}),
        errors sorted in decreasing order

    Paper:
        Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss: A tractable
        surrogate for the optimization of the intersection-over-union measure
        in neural networks" (CVPR 2018).

    Official code:
        bermanmaxim/LovaszSoftmax, as copied into segmentation_models_pytorch's
        ``LovaszLoss`` (multi-class mode), the version compared.

    Checked by:
        tests/test_losses.py::test_lovasz_softmax_formula_present_classes_only
        tests/test_losses_smp.py::test_lovasz_matches_smp
    """

    def __init__(self, ctx: LossContext, per_image: bool = False, classes: str = "present") -> None:
        super().__init__()
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
        if flag("per_image", per_image) and ctx.task == "classification":
            raise ValueError("per_image needs segmentation; use per_image=false for classification")
        self.per_image = flag("per_image", per_image)
        self.classes = classes
        self.ignore_index = ctx.ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = canonical_target(logits, target)
        if is_sigmoid_target(logits, target) or logits.shape[1] == 1:
            raise ValueError("lovasz_softmax needs class-index targets and C >= 2 logits; use lovasz_hinge")
        check_index_target(logits, target)
        t, valid = flat_index(target, self.ignore_index)
        p = torch.softmax(flat_logits(logits), dim=1)
        c = p.shape[1]
        classes = torch.arange(c, device=t.device).view(1, c, 1)
        if not self.per_image:
            keep = valid.reshape(-1).nonzero().squeeze(1)
            p, t = p.transpose(0, 1).reshape(c, -1).index_select(1, keep), t.reshape(-1).index_select(0, keep)
            fg = (t.unsqueeze(0) == classes[0]).to(p.dtype)
            losses = lovasz_rows((fg - p).abs(), fg, hinge=False)
            present = fg.sum(1) > 0 if self.classes == "present" else losses.new_full((c,), float(t.numel() > 0))
            return _row_mean(losses, present)
        v = valid.unsqueeze(1).expand(-1, c, -1)
        fg = ((t.unsqueeze(1) == classes) & v).to(p.dtype)
        errors = (fg - p).abs().masked_fill(~v, -1.0)
        losses = lovasz_rows(errors.flatten(0, 1), fg.flatten(0, 1), v.flatten(0, 1).to(p.dtype), hinge=False)
        losses = losses.view(-1, c)
        keep = (fg.sum(2) > 0) if self.classes == "present" else valid.any(1, keepdim=True).expand(-1, c)
        per_image = (losses * keep).sum(1) / keep.sum(1).clamp(min=1)
        return _row_mean(per_image, keep.any(1))
