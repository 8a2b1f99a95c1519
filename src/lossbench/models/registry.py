"""The registry the model modules fill, and what each entry declares about its models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lossbench.config import ModelConfig
from lossbench.registry import Registry

#: parameter-name prefixes, each ending in "." (``"fc."``, ``"encoder.layer4."``)
Prefixes = tuple[str, ...]


@dataclass(frozen=True)
class ModelLayout:
    """Where a built model's parameters belong.

    ``head``: prefixes of the head's parameters; every other parameter is the
    backbone, so the engine can freeze, unfreeze and give each group its own
    learning rate. ``skippable``: prefixes of tensors a weights file may hold
    that this model does not load (any registered model's head, layers this
    model drops); they are skipped, everything else must fit.
    """

    head: Prefixes
    skippable: Prefixes = ()


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its task, its builder, and what it declares about the models it builds.

    ``head``: the head's parameter prefixes, or a function of the built model
    for families whose head name varies (timm). ``other_heads``: heads of
    related models whose weights files this one may load (a U-Net decoder for
    the U-Net classifier, timm's classifier names). ``unused``: a function of
    the built model naming layers a full-size file has but this model drops
    (the deep stages of a shallow smp encoder). ``imagenet``: the builder
    itself loads ImageNet weights from the local cache when ``pretrained:
    imagenet``; ``stems``: the values of ``model.stem`` it accepts besides
    null; ``deep_supervision``: it can return side outputs.
    """

    task: str
    build: Callable[[ModelConfig, int], nn.Module]
    head: Prefixes | Callable[[nn.Module], Prefixes]
    description: str = ""
    imagenet: bool = False
    stems: tuple[str, ...] = ()
    deep_supervision: bool = False
    other_heads: Prefixes = ()
    unused: Callable[[nn.Module], Prefixes] | None = None

    def layout(self, model: nn.Module) -> ModelLayout:
        """The layout of ``model``, which this entry built."""
        head = self.head(model) if callable(self.head) else self.head
        dropped = self.unused(model) if self.unused is not None else ()
        return ModelLayout(head, tuple(dict.fromkeys(head + dropped + registered_heads())))


MODELS: Registry[ModelEntry] = Registry("model")


def registered_heads() -> Prefixes:
    """Every head prefix a registered model declares: a weights file's tensors under them are never backbone."""
    found: list[str] = []
    for _, entry in MODELS.items():
        found += ([] if callable(entry.head) else list(entry.head)) + list(entry.other_heads)
    return tuple(dict.fromkeys(found))


def register_model(name: str, task: str, head: Prefixes | Callable[[nn.Module], Prefixes], description: str = "",
                   imagenet: bool = False, stems: tuple[str, ...] = (), deep_supervision: bool = False,
                   other_heads: Prefixes = (), unused: Callable[[nn.Module], Prefixes] | None = None):
    """Decorator: file ``build(cfg, num_classes)`` as model ``name``; ``head`` names the head's parameter prefixes."""

    def add(build: Callable[[ModelConfig, int], nn.Module]) -> Callable[[ModelConfig, int], nn.Module]:
        entry = ModelEntry(task, build, head, description or (build.__doc__ or "").strip(),
                           imagenet, stems, deep_supervision, other_heads, unused)
        MODELS.register(name, build.__module__)(entry)
        return build

    return add
