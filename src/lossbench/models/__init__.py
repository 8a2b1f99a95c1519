"""The model registry: ``build_model(cfg, task, num_classes) -> nn.Module``.

Every module of this package is imported when the package is, so adding a
model is one new file here with one ``@register_model`` builder (see
ARCHITECTURE.md). A registry entry declares its model's head (the parameter
prefixes of the ``head`` group; all other parameters are the ``backbone``),
so the engine can freeze, unfreeze and give each group its own learning rate:
:func:`model_layout` gives it. Every classifier takes ``model.head`` (linear
or cosine) and ``model.bias_prior`` (see heads.py). ``pretrained`` weights
other than ImageNet (a file, a run folder) are loaded here, strict about the
backbone and tolerant of the head (see weights.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence

from torch import nn

from lossbench.config import ModelConfig
from lossbench.errors import UserError
from lossbench.models.heads import configure_head
from lossbench.models.registry import MODELS, ModelEntry, ModelLayout
from lossbench.models.weights import load_backbone_strict, read_state_dict, resolve_pretrained_file

__all__ = ["MODELS", "ModelLayout", "build_model", "check_model", "model_layout", "parameter_groups", "registry_key"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from lossbench.models.classifiers import TIMM_PREFIX  # noqa: E402


def registry_key(name: str) -> str:
    """The registry entry of a model name (every ``timm:<name>`` shares one entry)."""
    return TIMM_PREFIX + "<name>" if name.startswith(TIMM_PREFIX) else name


def model_layout(cfg: ModelConfig, model: nn.Module) -> ModelLayout:
    """Head prefixes and skippable weights-file prefixes of ``model``, built from ``cfg``."""
    return MODELS.get(registry_key(cfg.name)).layout(model)


def check_model(cfg: ModelConfig, task: str, where: str = "model") -> ModelEntry:
    """The registry entry of ``cfg.name`` once it names a model of ``task`` that takes ``cfg``'s options; otherwise
    one line naming the key under ``where`` (the section: ``exp.yaml: model``). Needs no data and builds nothing:
    a run checks its model before reading any, a tuning plan every value it may try."""
    entry: ModelEntry = MODELS.get(registry_key(cfg.name), f"{where}.name")
    if entry.task != task:
        raise UserError(f"{where}.name: {cfg.name!r} is a {entry.task} model but task is {task!r}")
    if cfg.stem is not None and cfg.stem not in entry.stems:
        allowed = f"only {', '.join(entry.stems)}" if entry.stems else "no stem option; leave it null"
        raise UserError(f"{where}.stem: {cfg.name!r} takes {allowed} (got {cfg.stem!r})")
    if cfg.deep_supervision and not entry.deep_supervision:
        raise UserError(f"{where}.deep_supervision: {cfg.name!r} has no side outputs; use nested_unet or set it false")
    if cfg.pretrained == "imagenet" and not entry.imagenet:
        raise UserError(f"{where}.pretrained: {cfg.name!r} has no ImageNet weights; use null, a weights file or a run")
    if entry.task != "classification" and (cfg.head != "linear" or cfg.bias_prior is not None):
        key = "head" if cfg.head != "linear" else "bias_prior"
        raise UserError(f"{where}.{key}: is a classifier option and {cfg.name!r} is a {entry.task} model; "
                        f"remove model.{key}")
    return entry


def build_model(cfg: ModelConfig, task: str, num_classes: int, log: Callable[[str], None] = print) -> nn.Module:
    """The configured network, with logits sized for ``num_classes`` and its pretrained weights loaded."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes: must be a whole number of 1 or more, got {num_classes!r}")
    entry = check_model(cfg, task)
    model = entry.build(cfg, num_classes)
    configure_head(model, cfg, entry.layout(model).head)
    if cfg.pretrained not in (None, "imagenet"):
        path = resolve_pretrained_file(cfg.pretrained, log)
        load_backbone_strict(model, read_state_dict(path), str(path), entry.layout(model), log)
    return model


def parameter_groups(model: nn.Module, head: Sequence[str]) -> dict[str, list[nn.Parameter]]:
    """Parameters split into the named groups ``head`` (names starting with a ``head`` prefix) and ``backbone``.

    Both keys are always there; ``head=("",)`` puts every parameter in the head.
    """
    prefixes = tuple(head)
    groups: dict[str, list[nn.Parameter]] = {"head": [], "backbone": []}
    for pname, param in model.named_parameters():
        groups["head" if pname.startswith(prefixes) else "backbone"].append(param)
    return groups
