"""Classifier head options shared by every classifier: ``model.head`` and ``model.bias_prior``.

Every registered classifier ends in one ``nn.Linear`` (or several, for timm's
distilled models) inside its ``head`` parameter group. :func:`configure_head`
finds those layers and, as configured, swaps them for a :class:`CosineLinear`
or sets their bias to the prior of a sigmoid output. The replacement sits at
the same path, so it stays in the ``head`` group: freezing, two-stage
training and loading a backbone from another run work unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.config import ModelConfig
from lossbench.errors import UserError


class CosineLinear(nn.Module):
    """Cosine classifier: logit_c = cos(f, w_c) = <f / |f|, w_c / |w_c|>, in [-1, 1]; no bias.

    The head of LDAM-DRW (Cao et al. 2019, "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss"; official code kaidic/LDAM-DRW,
    models/resnet_cifar.py, ``NormedLinear``). Both the feature and each class's
    weight vector are L2-normalised, so a logit is a cosine and the loss must
    supply the scale (``ldam(s=30)``). As in the official code the class
    vectors start uniform in [-1, 1] and rescaled to unit length (normalising
    them in ``forward`` ignores their length, but their length sets how far a
    gradient step turns them).

    The official layer stores the weight as D x C; here it is C x D like
    ``nn.Linear``, under its own name ``directions``, so a linear head's
    ``weight`` never loads into it: a cosine head is always a fresh head when
    the backbone comes from a linear-head run (and the other way round).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.directions = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.directions.uniform_(-1, 1)
            self.directions.div_(self.directions.norm(dim=1, keepdim=True).clamp(min=1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.directions, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def prior_bias(pi: float) -> float:
    """The bias b = -log((1 - pi) / pi) for which sigmoid(b) = pi (Cui et al. 2019, Sec. 4)."""
    return -math.log((1 - pi) / pi)


def classifier_layers(model: nn.Module, head: tuple[str, ...]) -> list[str]:
    """Names of the ``nn.Linear`` layers that give the logits: each head prefix's module, or the last
    linear layer inside it (smp's classification head is pooling, dropout, linear, activation)."""
    names = []
    for prefix in head:
        path = prefix.rstrip(".")
        module = model.get_submodule(path)
        if isinstance(module, nn.Linear):
            names.append(path)
            continue
        inner = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
        if inner:
            names.append(f"{path}.{inner[-1]}")
    return names


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def configure_head(model: nn.Module, cfg: ModelConfig, head: tuple[str, ...]) -> nn.Module:
    """Apply ``cfg.head`` and ``cfg.bias_prior`` to a freshly built classifier (before weights are loaded).

    ``head: cosine`` replaces each classifier layer by a :class:`CosineLinear`
    of the same size; ``bias_prior: pi`` sets each classifier bias to
    -log((1 - pi) / pi), so every sigmoid starts near p = pi and the C - 1
    negatives of a sample do not swamp a sigmoid loss at the start (Cui et al.
    2019, "Class-Balanced Loss Based on Effective Number of Samples", Sec. 4,
    pi = 0.1; their code, richardaecn/class-balanced-loss src/model_base.py,
    uses -log(C - 1), the same value for C = 10). The weights keep their
    initialisation, as in that code.
    """
    if cfg.head == "linear" and cfg.bias_prior is None:
        return model
    layers = classifier_layers(model, head)
    key = "model.head" if cfg.head != "linear" else "model.bias_prior"
    if not layers:
        raise UserError(f"{key}: {cfg.name!r} has no linear classifier layer to change; use another model "
                        f"or leave {key.split('.')[1]} at its default")
    for path in layers:
        linear = model.get_submodule(path)
        if cfg.head == "cosine":
            _replace(model, path, CosineLinear(linear.in_features, linear.out_features))
        elif linear.bias is None:
            raise UserError(f"model.bias_prior: the classifier {path} of {cfg.name!r} has no bias; "
                            "set bias_prior: null")
        else:
            with torch.no_grad():
                linear.bias.fill_(prior_bias(cfg.bias_prior))
    return model
