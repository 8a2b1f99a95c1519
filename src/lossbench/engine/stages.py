"""Freezing and unfreezing named parameter groups for a training stage.

A frozen group is frozen three ways: ``requires_grad=False`` (no gradients
are computed for it), left out of the optimizer (no weight decay or momentum
moves it), and its batch-norm layers kept in eval mode (running mean and
variance stay those of the pretrained features, as in feature extraction).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from collections.abc import Sequence

from lossbench.errors import UserError
from lossbench.models import parameter_groups


def trained_groups(groups: dict[str, list[nn.Parameter]], train: str | list[str]) -> list[str]:
    """Names of the groups a stage trains: ``all``, ``head`` or an explicit list of group names."""
    if train == "all":
        return list(groups)
    names = [train] if isinstance(train, str) else list(train)
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise UserError(f"stages: unknown parameter group {unknown[0]!r}; this model has {', '.join(groups)}")
    return names


def freeze_for_stage(model: nn.Module, train: str | list[str], head: Sequence[str]
                     ) -> tuple[dict[str, list[nn.Parameter]], list[str]]:
    """Set ``requires_grad`` for a stage; return the model's groups (``head`` names the head's parameter
    prefixes) and the names of those that train."""
    groups = parameter_groups(model, head)
    names = trained_groups(groups, train)
    for name, params in groups.items():
        for p in params:
            p.requires_grad_(name in names)
    return groups, names


def frozen_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Batch-norm layers whose affine parameters are all frozen: they must stay in eval mode."""
    frozen = []
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                frozen.append(module)
    return frozen


def set_train_mode(model: nn.Module, frozen_norms: list[nn.Module]) -> None:
    """``model.train()`` except that frozen batch-norm layers keep their running statistics."""
    model.train()
    for module in frozen_norms:
        module.eval()
