"""Shared shape handling: one call shape for classification and segmentation.

Logits are N x C (classification) or N x C x *spatial (segmentation, any
spatial rank). A target is either

- class indices (N or N x *spatial, integer): softmax over the C channels, or
- a float tensor shaped like the logits (binary / multi-label): sigmoid per
  channel. A one-channel model (N x 1 x *spatial) may also be given an N x
  *spatial mask of 0 / 1; it is read as the float target N x 1 x *spatial,
- or an N x 1 x *spatial integer mask, read as one of the two above
  (:func:`canonical_target`).

``ignore_index`` marks samples / pixels (or, for float targets, entries) that
count nowhere. Everything is computed in float32 so that fp16 / bf16 logits
cannot overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def is_sigmoid_target(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """True for float targets shaped like the logits (binary / multi-label)."""
    return target.is_floating_point() and target.shape == logits.shape


def canonical_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The target in one of the two canonical forms: class indices N x *spatial, or floats shaped like the logits.

    Two other spellings of a mask are accepted and rewritten: an N x 1 x *spatial
    integer (or bool) mask, as image loaders and MONAI write it (for a
    C-channel model: the class indices N x *spatial; for a one-channel model:
    the 0/1 float target N x 1 x *spatial), and an N x *spatial 0/1 mask for a
    one-channel model (the float target N x 1 x *spatial).
    """
    if logits.ndim < 2:
        return target
    if not target.is_floating_point() and target.ndim == logits.ndim and target.shape[1] == 1 \
            and target.shape[:1] + target.shape[2:] == logits.shape[:1] + logits.shape[2:]:
        return target.float() if logits.shape[1] == 1 else target.squeeze(1)
    if logits.shape[1] == 1 and target.shape == logits.shape[:1] + logits.shape[2:]:
        return target.unsqueeze(1).float()
    return target


def check_index_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ValueError when an index target does not fit the logits' shape."""
    if logits.ndim < 2:
        raise ValueError(f"logits must be N x C or N x C x *spatial, got shape {tuple(logits.shape)}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
            f"expected class indices {expected} or float targets {tuple(logits.shape)}"
        )
    if target.is_floating_point():
        raise ValueError("class-index targets must be integers; float targets must be shaped like the logits")


@dataclass
class Probs:
    """Probabilities and one-hot targets, N x C x S (S = flattened spatial, 1 for classification).

    Both are zero where an entry is ignored; ``valid`` is N x 1 x S (softmax)
    or N x C x S (sigmoid), 0/1. ``log_prob`` (asked for with ``log=True``):
    log-softmax / log-sigmoid, not masked, exact where p underflows to 0.
    """

    prob: torch.Tensor
    onehot: torch.Tensor
    valid: torch.Tensor
    log_prob: torch.Tensor | None = None


def flat_logits(logits: torch.Tensor) -> torch.Tensor:
    """N x C x *spatial -> float32 N x C x S (a view where possible)."""
    return logits.float().reshape(logits.shape[0], logits.shape[1], -1)


def flat_index(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index target N x *spatial -> (N x S long with ignored set to 0, N x S bool validity)."""
    t = target.reshape(target.shape[0], -1).long()
    valid = t != ignore_index
    return t.masked_fill(~valid, 0), valid


def flat_float(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float target N x C x *spatial -> (N x C x S float32 with ignored set to 0, float32 validity 0/1)."""
    t = target.reshape(target.shape[0], target.shape[1], -1).float()
    valid = torch.ne(t, ignore_index, out=torch.empty_like(t))
    return t * valid, valid


def probabilities(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, log: bool = False) -> Probs:
    """Softmax (index targets) or sigmoid (float targets) probabilities with aligned one-hot targets.

    With ``log`` the log-probabilities are computed first and p = exp(log p), so both come from one pass.
    """
    target = canonical_target(logits, target)
    z = flat_logits(logits)
    sigmoid = is_sigmoid_target(logits, target)
    if log:
        log_p = torch.nn.functional.logsigmoid(z) if sigmoid else torch.log_softmax(z, dim=1)
        p = log_p.exp()
    else:
        log_p, p = None, torch.sigmoid(z) if sigmoid else torch.softmax(z, dim=1)
    if sigmoid:
        y, valid = flat_float(target, ignore_index)
        return Probs(p * valid, y, valid, log_p)
    check_index_target(logits, target)
    t, valid = flat_index(target, ignore_index)
    v = valid.unsqueeze(1)
    y = torch.zeros_like(z).scatter_(1, t.unsqueeze(1), 1.0) * v
    return Probs(p * v, y, v, log_p)


def flag(name: str, value) -> bool:
    """A boolean parameter, or ValueError naming it (so 'false' as a string is not read as True)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def class_view(vector: torch.Tensor, ndim: int) -> torch.Tensor:
    """A C-vector shaped 1 x C x 1 ... to broadcast against N x C x *rest (ndim dims)."""
    return vector.view(1, -1, *([1] * (ndim - 2)))
