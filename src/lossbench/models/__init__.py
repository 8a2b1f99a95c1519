"""The model registry: ``build_model(cfg, task, num_classes) -> nn.Module``.

Every model built here carries ``param_prefixes``: which parameter-name
prefixes form its ``head``; all other parameters are its ``backbone``, so the
engine can freeze, unfreeze and give each group its own learning rate.
Every classifier takes ``model.head`` (linear or cosine) and
``model.bias_prior`` (see heads.py).
``pretrained`` weights other than ImageNet (a file, a run folder) are loaded
here, strict about the backbone and tolerant of the head (see weights.py).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lossbench.config import ModelConfig
from lossbench.errors import UserError
from lossbench.models.registry import MODELS, ModelEntry
from lossbench.models import cifar_resnet as _cifar_resnet  # noqa: F401  (registers models)
from lossbench.models import classifiers as _classifiers  # noqa: F401
from lossbench.models import segmenters as _segmenters  # noqa: F401
from lossbench.models.classifiers import TIMM_PREFIX
from lossbench.models.heads import configure_head
from lossbench.models.weights import load_backbone_strict, read_state_dict, resolve_pretrained_file

__all__ = ["MODELS", "build_model", "parameter_groups", "registry_key"]


def registry_key(name: str) -> str:
    """The registry entry of a model name (every ``timm:<name>`` shares one entry)."""
    return TIMM_PREFIX + "<name>" if name.startswith(TIMM_PREFIX) else name


def build_model(cfg: ModelConfig, task: str, num_classes: int, log: Callable[[str], None] = print) -> nn.Module:
    """The configured network, with logits sized for ``num_classes`` and its pretrained weights loaded."""
    entry: ModelEntry = MODELS.get(registry_key(cfg.name))
    if entry.task != task:
        raise UserError(f"model.name: {cfg.name!r} is a {entry.task} model but task is {task!r}")
    if cfg.stem is not None and cfg.stem not in entry.stems:
        allowed = f"only {', '.join(entry.stems)}" if entry.stems else "no stem option; leave it null"
        raise UserError(f"model.stem: {cfg.name!r} takes {allowed} (got {cfg.stem!r})")
    if cfg.deep_supervision and not entry.deep_supervision:
        raise UserError(f"model.deep_supervision: {cfg.name!r} has no side outputs; use nested_unet or set it false")
    if cfg.pretrained == "imagenet" and not entry.imagenet:
        raise UserError(f"model.pretrained: {cfg.name!r} has no ImageNet weights; use null, a weights file or a run")
    if entry.task != "classification" and (cfg.head != "linear" or cfg.bias_prior is not None):
        key = "head" if cfg.head != "linear" else "bias_prior"
        raise UserError(f"model.{key}: is a classifier option and {cfg.name!r} is a {entry.task} model; "
                        f"remove model.{key}")
    model = entry.build(cfg, num_classes)
    if "param_prefixes" not in model.__dict__:
        model.param_prefixes = entry.param_prefixes
    configure_head(model, cfg)
    if cfg.pretrained not in (None, "imagenet"):
        path = resolve_pretrained_file(cfg.pretrained)
        load_backbone_strict(model, read_state_dict(path), str(path), log)
    return model


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters split into the model's named groups: ``head`` and ``backbone`` (always both keys)."""
    prefixes: dict[str, tuple[str, ...]] = getattr(model, "param_prefixes", {"head": ("",)})
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in prefixes}
    groups.setdefault("backbone", [])
    for pname, param in model.named_parameters():
        for group, starts in prefixes.items():
            if pname.startswith(starts):
                groups[group].append(param)
                break
        else:
            groups["backbone"].append(param)
    return groups
