"""What a plugin's registry entry must be: the contracts of ARCHITECTURE.md, checked when the plugin loads.

Each check returns the one problem it finds (a phrase the loader puts after the
entry's name and origin), or None. They read only what an entry declares and
its signatures, never build anything: a bad entry is refused before any data is
read or any training starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from lossbench.contract import TASKS
from lossbench.data.registry import SourceEntry
from lossbench.losses.registry import LossCapabilities
from lossbench.models.registry import ModelEntry


def _takes(func: Callable[..., Any], *names: str) -> bool:
    """Whether ``func`` can be called with ``len(names)`` positional arguments."""
    try:
        inspect.signature(func).bind(*names)
    except (TypeError, ValueError):
        return False
    return True


def _takes_context(cls: type) -> bool:
    """Whether ``cls.__init__`` takes a positional argument after ``self`` (the LossContext)."""
    params = list(inspect.signature(cls.__init__).parameters.values())
    return len(params) > 1 and params[1].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                   inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _required_keywords(cls: type) -> list[str]:
    """Parameters of ``cls(ctx, ...)`` after ``ctx`` that have no default (a spec may leave any of them out)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    return [p.name for p in params if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def loss_problem(cls: Any) -> str | None:
    """A loss is an ``nn.Module`` class built as ``cls(ctx, **params)`` (every param with a default) and
    called as ``loss(logits, target)``."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return f"is not an nn.Module class (got {type(cls).__name__}); register a subclass of torch.nn.Module"
    if not isinstance(cls.__dict__.get("capabilities"), LossCapabilities):
        return "declares no capabilities; register the class with @register_loss(name, ...)"
    if not _takes_context(cls):
        return "cannot be built as cls(ctx): its __init__ must take the LossContext as its first argument"
    missing = _required_keywords(cls)
    if missing:
        return (f"has a required argument {missing[0]!r} without a default; give every parameter after ctx "
                "a default (a spec may name the loss alone)")
    if not _takes(cls.forward, "self", "logits", "target"):
        return "cannot be called as loss(logits, target): its forward must take exactly those two tensors"
    return None


def model_problem(entry: Any) -> str | None:
    """A model entry names a task lossbench knows, head prefixes ending in '.', and ``build(cfg, num_classes)``."""
    if not isinstance(entry, ModelEntry):
        return "is not a ModelEntry; register the builder with @register_model(name, task, head=...)"
    if entry.task not in TASKS:
        return f"declares task {entry.task!r}; use {' or '.join(TASKS)}"
    if not callable(entry.head) and (not entry.head or not all(isinstance(p, str) and p.endswith(".")
                                                                for p in entry.head)):
        return f"declares head {entry.head!r}; give the head's parameter prefixes, each ending in '.', e.g. ('fc.',)"
    if not _takes(entry.build, "cfg", "num_classes"):
        return "has a builder that cannot be called as build(cfg, num_classes)"
    return None


def source_problem(entry: Any) -> str | None:
    """A source entry's loader is called as ``load(cfg, task, seed)``."""
    if not isinstance(entry, SourceEntry):
        return "is not a SourceEntry; register the loader with @register_source(name)"
    if not _takes(entry.load, "cfg", "task", "seed"):
        return "has a loader that cannot be called as load(cfg, task, seed)"
    return None
