"""Shared shape handling: one call shape for classification and segmentation.

Logits are N x C (classification) or N x C x *spatial (segmentation). A target
is either class indices (N or N x *spatial, integer) -> softmax over C, or a
float tensor shaped like the logits (binary / multi-label) -> sigmoid per
channel. ``ignore_index`` marks samples / pixels that count nowhere.
"""

from __future__ import annotations

import torch


def is_sigmoid_target(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """True for float targets shaped like the logits (binary / multi-label)."""
    return target.is_floating_point() and target.shape == logits.shape


def flatten_logits(logits: torch.Tensor) -> torch.Tensor:
    """N x C x *spatial -> M x C with the class dimension last."""
    if logits.ndim == 2:
        return logits
    c = logits.shape[1]
    return logits.movedim(1, -1).reshape(-1, c)


def flatten_index_target(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index target -> (flat long target with ignored entries set to 0, bool validity mask)."""
    t = target.reshape(-1).long()
    valid = t != ignore_index
    return torch.where(valid, t, torch.zeros_like(t)), valid


def check_index_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ValueError when an index target does not fit the logits' shape."""
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over valid entries (0 with a gradient when none is valid)."""
    values = values * valid
    return values.sum() / valid.sum().clamp(min=1)


def one_hot_flat(target: torch.Tensor, num_classes: int, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """M x C one-hot of a flat index target, all-zero rows where invalid."""
    oh = torch.nn.functional.one_hot(target, num_classes).to(dtype)
    return oh * valid.unsqueeze(1).to(dtype)
