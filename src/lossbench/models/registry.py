"""The registry the model modules fill."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lossbench.config import ModelConfig
from lossbench.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its task, builder, and the parameter prefixes of its groups."""

    task: str
    build: Callable[[ModelConfig, int], nn.Module]
    param_prefixes: dict[str, tuple[str, ...]]
    description: str = ""


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, task: str, head: tuple[str, ...], description: str = ""):
    """Decorator: file ``build(cfg, num_classes)`` as model ``name``; ``head`` names the head's parameter prefixes."""

    def add(build: Callable[[ModelConfig, int], nn.Module]) -> Callable[[ModelConfig, int], nn.Module]:
        MODELS.register(name)(ModelEntry(task, build, {"head": head}, description or (build.__doc__ or "").strip()))
        return build

    return add
