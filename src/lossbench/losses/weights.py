"""Per-class weights, and the one meaning every per-class-weighted loss gives them.

**One normalisation.** A loss that takes per-class sample weights w (``ce``'s
``weight``, ``focal``'s ``alpha`` as a list / "balanced" / "effective(...)",
``ldam``'s ``weight``, and the weights deferred re-weighting sets through
``set_class_weights``) computes the weighted mean

    L = sum_i w_{y_i} l_i / sum_i w_{y_i}

over the valid samples (or pixels) i, l_i the unweighted loss of sample i:
PyTorch's ``F.cross_entropy(weight=w)`` convention, which the official
LDAM-DRW code (kaidic/LDAM-DRW, cifar_train.py / losses.py) uses for CE and
LDAM. So ``focal(gamma=0, alpha=w)`` equals ``ce(weight=w)``, and scaling all
weights by a constant changes nothing. For float (multi-label) targets, which
have no single true class, entry (i, c) weighs w_c and the mean runs over
entries. :func:`weighted_mean` is that formula. Two losses normalise
differently on purpose and say why: ``cb`` (Cui et al.'s official code divides
the weighted sum by the number of samples) and ``dice(weight=...)`` (weights
of class terms, not of samples).

**Deferred re-weighting.** ``ce``, ``focal`` and ``ldam`` derive from
:class:`ClassWeighted` and so have ``set_class_weights``. The others do not:
``bce``'s ``pos_weight`` scales positives per channel, not samples; the
region losses (``dice``, ``jaccard``, ``tversky``, ``focal_tversky``,
``generalized_dice``, ``dsc``) and the Lovász losses have no per-sample terms
to weigh (their ``weight``, where they have one, weighs class terms); ``cb``'s
weights are the method itself; ``logit_adjusted`` / ``balanced_softmax``
already correct for the class prior in the logits, and weights on top would
correct it twice.

**Weight specs.** A list (one number per class), "balanced" (inverse
frequency n / (C n_c)) or "effective(beta=B)": the effective-number weights of
Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples",
w_c = (1 - beta) / (1 - beta ** n_c) normalised to sum to the number of
classes C (richardaecn/class-balanced-loss, src/cifar_main.py, lines 425-430;
kaidic/LDAM-DRW, cifar_train.py, lines 199-206, for DRW).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from lossbench.losses.registry import LossContext


def log_class_prior(counts: torch.Tensor) -> torch.Tensor:
    """log pi_c = log(n_c / sum n): the training label prior that logit adjustment subtracts or adds
    (Menon et al. 2021), of counts already at least 1 each (:func:`class_counts_tensor`)."""
    return torch.log(counts / counts.sum())


def class_counts_tensor(ctx: LossContext, what: str) -> torch.Tensor:
    """The training class counts as float64, at least 1 each; ValueError naming ``what`` when absent.

    A class with no training image cannot be given a finite inverse-frequency
    weight, margin or log-prior; it is counted as 1 image, with one warning.
    """
    if ctx.class_counts is None:
        raise ValueError(f"{what} needs the training class counts (class_counts), which this run does not have")
    counts = torch.tensor(ctx.class_counts, dtype=torch.float64)
    if len(counts) != ctx.num_classes:
        raise ValueError(f"class_counts has {len(counts)} entries for {ctx.num_classes} classes")
    empty = (counts < 1).nonzero().flatten().tolist()
    if empty:
        which = f"class {empty[0]} has" if len(empty) == 1 else f"classes {', '.join(map(str, empty))} have"
        warnings.warn(f"{what}: {which} no training images in class_counts; counted as 1 image each so that "
                      "weights, margins and priors stay finite", stacklevel=2)
    return counts.clamp(min=1)


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al.'s (1 - beta) / (1 - beta^n), normalised to sum to the number of classes."""
    w = (1.0 - beta) / (1.0 - torch.pow(torch.as_tensor(beta, dtype=torch.float64), counts))
    return w / w.sum() * len(counts)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum w l / sum w over entries with weight > 0 (ignored entries weigh 0); 0, with a gradient, when none weighs."""
    w = weights.to(values.dtype).expand_as(values).reshape(-1)
    return values.reshape(-1).dot(w) / w.sum().clamp(min=1e-12)


def check_class_weight(weight: torch.Tensor | None, num_classes: int) -> torch.Tensor | None:
    """A weight vector given to ``set_class_weights``: None, or C non-negative numbers (float32)."""
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32)
    if w.shape != (num_classes,) or (w < 0).any() or not torch.isfinite(w).all():
        raise ValueError(f"class weights must be {num_classes} finite numbers >= 0, got {tuple(w.shape)}")
    return w


class ClassWeighted(nn.Module):
    """Base of the losses that weigh samples by class: the configured weights, replaceable at run time.

    ``set_class_weights(w)`` replaces the per-class sample weights used in
    ``forward`` (deferred re-weighting: the engine calls it on every module of
    the loss tree that has it, from its ``drw_epoch`` on, with effective-number
    weights); ``set_class_weights(None)`` restores the configured ones.
    """

    def __init__(self, ctx: LossContext, weight: torch.Tensor | None) -> None:
        super().__init__()
        self.num_classes = ctx.num_classes
        self.register_buffer("configured_weight", weight, persistent=False)
        self.register_buffer("weight", weight, persistent=False)

    def set_class_weights(self, weight: torch.Tensor | None) -> None:
        """Use ``weight`` (C numbers >= 0) as the per-class sample weights; None restores the configured weights."""
        w = check_class_weight(weight, self.num_classes)
        self.weight = self.configured_weight if w is None else w

    def class_weight(self, like: torch.Tensor) -> torch.Tensor | None:
        """The weights in force (float32) on ``like``'s device, moved there once; None: unweighted."""
        if self.weight is not None and self.weight.device != like.device:
            self.weight = self.weight.to(like.device)
        return self.weight


def class_weights(spec: Any, ctx: LossContext) -> torch.Tensor | None:
    """A float32 C-vector of class weights, or None for unweighted."""
    if spec is None:
        return None
    if isinstance(spec, str):
        from lossbench.losses.spec import parse_spec

        (term,) = parse_spec(spec)
        if term.name == "balanced" and not term.params:
            counts = class_counts_tensor(ctx, "balanced weighting")
            w = counts.sum() / (len(counts) * counts)
        elif term.name == "effective":
            beta = float(term.params.get("beta", 0.999))
            if set(term.params) - {"beta"} or not 0 <= beta < 1:
                raise ValueError("effective(beta=B) takes only beta, with 0 <= B < 1")
            w = effective_number_weights(class_counts_tensor(ctx, "effective-number weighting"), beta)
        else:
            raise ValueError(f"weights {spec!r}: use a list of numbers, 'balanced' or 'effective(beta=0.999)'")
        return w.float()
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return torch.full((ctx.num_classes,), float(spec))
    w = torch.as_tensor(spec, dtype=torch.float32)
    if w.ndim != 1 or len(w) != ctx.num_classes:
        raise ValueError(f"weights {spec!r}: need one number per class ({ctx.num_classes})")
    if (w < 0).any():
        raise ValueError(f"weights {spec!r}: must not be negative")
    return w
