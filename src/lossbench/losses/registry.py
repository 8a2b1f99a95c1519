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


@dataclass(frozen=True)
class LossCapabilities:
    """What a loss declares to the code around it (``@register_loss(name, ...)``); read, never probed.

    ``accepts_class_weights``: it has ``set_class_weights(w | None)``, which
    replaces its per-class sample weights (deferred re-weighting, ``drw_epoch``,
    calls it every epoch). ``expects_cosine_logits``: it is made for cosine
    logits in [-1, 1] (``model.head: cosine``) scaled by its parameter ``s``;
    a built loss may narrow it (``ldam(s=1)`` expects none), and the engine
    warns when such a loss trains a linear head. ``needs_class_counts``: it
    cannot be built without the training class counts (``LossContext.class_counts``).
    """

    accepts_class_weights: bool = False
    expects_cosine_logits: bool = False
    needs_class_counts: bool = False


LOSSES: Registry[type[nn.Module]] = Registry("loss")
#: every class declared with :func:`declare_loss` (the registered losses, and any a test declares)
_DECLARED: set[type[nn.Module]] = set()
NO_CAPABILITIES = LossCapabilities()


def declare_loss(name: str, capabilities: LossCapabilities):
    """Decorator: give a loss class its ``capabilities``, once they agree with the class (ValueError if not)."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        has_setter = callable(getattr(cls, "set_class_weights", None))
        if has_setter != capabilities.accepts_class_weights:
            raise ValueError(f"loss {name!r}: accepts_class_weights={capabilities.accepts_class_weights} but the "
                             f"class {'has' if has_setter else 'has no'} set_class_weights")
        if capabilities.expects_cosine_logits and "s" not in loss_parameters(cls):
            raise ValueError(f"loss {name!r}: expects_cosine_logits needs the scale as parameter s")
        cls.capabilities = capabilities
        _DECLARED.add(cls)
        return cls

    return add


def register_loss(name: str, *, accepts_class_weights: bool = False, expects_cosine_logits: bool = False,
                  needs_class_counts: bool = False, moved_parameters: dict[str, str] | None = None):
    """Decorator: file an ``nn.Module`` class built as ``cls(ctx, **params)`` under ``name``, with its
    :class:`LossCapabilities`; ``moved_parameters``: parameters it no longer takes -> what to write instead
    (the error line of a spec that still gives one)."""
    declare = declare_loss(name, LossCapabilities(accepts_class_weights, expects_cosine_logits, needs_class_counts))

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        cls.moved_parameters = dict(moved_parameters or {})
        return LOSSES.register(name, cls.__module__)(declare(cls))

    return add


def loss_capabilities(module: nn.Module) -> LossCapabilities:
    """What a module of a built loss tree declares (as its constructor may have narrowed it); nothing for the
    modules that only combine losses (sums, deep supervision)."""
    return module.capabilities if type(module) in _DECLARED else NO_CAPABILITIES


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
