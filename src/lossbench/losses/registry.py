"""The loss registry and the context every loss is built with."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from lossbench.contract import IGNORE_INDEX
from lossbench.registry import Registry


@dataclass(frozen=True)
class LossContext:
    """What a loss may know besides its own parameters: never the dataset itself."""

    num_classes: int
    task: str = "classification"
    class_counts: tuple[int, ...] | None = None
    ignore_index: int = IGNORE_INDEX


LOSSES: Registry[type[nn.Module]] = Registry("loss")


def register_loss(name: str):
    """Decorator: file an ``nn.Module`` class built as ``cls(ctx, **params)`` under ``name``."""
    return lambda cls: LOSSES.register(name, cls.__module__)(cls)


def loss_parameters(cls: type[nn.Module]) -> dict[str, Any]:
    """A loss's keyword parameters and their defaults (for listings and validation)."""
    sig = inspect.signature(cls.__init__)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in list(sig.parameters.values())[2:]
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def loss_summary(cls: type[nn.Module]) -> str:
    """First line of a loss's docstring."""
    return (inspect.getdoc(cls) or "").splitlines()[0] if inspect.getdoc(cls) else ""
