"""The model registry: ``build_model(cfg, task, num_classes) -> nn.Module``.

Every model built here carries ``param_prefixes``: which parameter-name
prefixes form its ``head`` and its ``backbone``, so the engine can freeze,
unfreeze and give each group its own learning rate.
"""

from __future__ import annotations

from torch import nn

from lossbench.config import ModelConfig
from lossbench.errors import UserError
from lossbench.models.registry import MODELS, ModelEntry
from lossbench.models import classifiers as _classifiers  # noqa: F401  (registers models)
from lossbench.models import segmenters as _segmenters  # noqa: F401

__all__ = ["MODELS", "build_model", "parameter_groups"]


def build_model(cfg: ModelConfig, task: str, num_classes: int) -> nn.Module:
    """The configured network, with logits sized for ``num_classes``."""
    entry: ModelEntry = MODELS.get(cfg.name)
    if entry.task != task:
        raise UserError(f"model.name: {cfg.name!r} is a {entry.task} model but task is {task!r}")
    if cfg.pretrained is not None:
        raise UserError("model.pretrained: pretrained weights are not supported yet; set it to null")
    model = entry.build(cfg, num_classes)
    model.param_prefixes = entry.param_prefixes
    return model


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters split into the model's named groups (``head``, ``backbone``)."""
    prefixes: dict[str, tuple[str, ...]] = getattr(model, "param_prefixes", {"head": ("",)})
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in prefixes}
    for pname, param in model.named_parameters():
        for group, starts in prefixes.items():
            if pname.startswith(starts):
                groups[group].append(param)
                break
        else:
            groups.setdefault("backbone", []).append(param)
    return groups
