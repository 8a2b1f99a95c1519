"""The registry the model modules fill."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lossbench.config import ModelConfig
from lossbench.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its task, builder, parameter prefixes of its groups, and the options it takes.

    ``imagenet``: the builder itself loads ImageNet weights from the local cache
    when ``pretrained: imagenet``; ``stems``: the values of ``model.stem`` it
    accepts besides null; ``deep_supervision``: it can return side outputs.
    A builder may set ``model.param_prefixes`` itself (timm models, whose head
    name varies); otherwise ``param_prefixes`` here is used.
    """

    task: str
    build: Callable[[ModelConfig, int], nn.Module]
    param_prefixes: dict[str, tuple[str, ...]]
    description: str = ""
    imagenet: bool = False
    stems: tuple[str, ...] = ()
    deep_supervision: bool = False


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, task: str, head: tuple[str, ...], description: str = "", imagenet: bool = False,
                   stems: tuple[str, ...] = (), deep_supervision: bool = False):
    """Decorator: file ``build(cfg, num_classes)`` as model ``name``; ``head`` names the head's parameter prefixes."""

    def add(build: Callable[[ModelConfig, int], nn.Module]) -> Callable[[ModelConfig, int], nn.Module]:
        MODELS.register(name)(ModelEntry(task, build, {"head": head}, description or (build.__doc__ or "").strip(),
                                         imagenet, stems, deep_supervision))
        return build

    return add
