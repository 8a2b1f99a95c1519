"""Per-class weights from a spec: a list, "balanced" (inverse frequency) or "effective(beta=...)".

Effective-number weights follow Cui et al. 2019, "Class-Balanced Loss Based
on Effective Number of Samples": w_c = (1 - beta) / (1 - beta ** n_c),
normalised so the weights sum to the number of classes.
"""

from __future__ import annotations

from typing import Any

import torch

from lossbench.losses.registry import LossContext


def class_counts_tensor(ctx: LossContext, what: str) -> torch.Tensor:
    """The training class counts as float64, at least 1 each; ValueError naming ``what`` when absent."""
    if ctx.class_counts is None:
        raise ValueError(f"{what} needs the training class counts (class_counts), which this run does not have")
    counts = torch.tensor(ctx.class_counts, dtype=torch.float64)
    if len(counts) != ctx.num_classes:
        raise ValueError(f"class_counts has {len(counts)} entries for {ctx.num_classes} classes")
    return counts.clamp(min=1)


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al.'s (1 - beta) / (1 - beta^n), normalised to sum to the number of classes."""
    w = (1.0 - beta) / (1.0 - torch.pow(torch.as_tensor(beta, dtype=torch.float64), counts))
    return w / w.sum() * len(counts)


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
