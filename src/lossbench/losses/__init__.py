"""The loss library: ``build_loss(spec, num_classes, ...) -> nn.Module``.

Every loss is called as ``loss(logits, target)`` for both tasks. Adding a loss
is one new module in this package with one ``@register_loss`` class: every
module of the package is imported here (:func:`import_loss_modules`), so no
list of imports has to be edited.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from typing import Any

from torch import nn

from lossbench.errors import UserError
from lossbench.losses.combine import DeepSupervision, WeightedSum
from lossbench.losses.registry import LOSSES, LossContext, loss_parameters, loss_summary, register_loss
from lossbench.losses.spec import Term, parse_spec

__all__ = [
    "DeepSupervision", "LOSSES", "LossContext", "build_loss", "loss_parameters", "loss_summary", "parse_spec",
    "register_loss",
]


def import_loss_modules() -> list[str]:
    """Import every module of this package (each registers its losses); their names, sorted."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


import_loss_modules()


def _check_type(loss: str, key: str, value: Any, default: Any) -> None:
    """A parameter whose default is a number (or a bool) must be given as one."""
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return
    if not ok:
        raise UserError(f"loss {loss}: {key} must be {kind} (default {default!r}), got {value!r}")


def _build_term(term: Term, ctx: LossContext) -> nn.Module:
    cls = LOSSES.get(term.name)
    allowed = loss_parameters(cls)
    unknown = sorted(set(term.params) - set(allowed))
    moved = getattr(cls, "moved_parameters", {})
    for key in unknown:
        if key in moved:
            raise UserError(f"loss {term.name}: {key} is no longer a parameter of {term.name}; {moved[key]}")
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise UserError(f"loss {term.name}: unknown parameter {unknown[0]!r}; valid parameters: {valid}")
    for key, value in term.params.items():
        _check_type(term.name, key, value, allowed[key])
    try:
        return cls(ctx, **term.params)
    except (ValueError, TypeError) as exc:
        raise UserError(f"loss {term.name}: {exc}") from None


def build_loss(
    spec: str | dict[str, Any] | list[Any],
    num_classes: int,
    task: str = "classification",
    class_counts: Sequence[int] | None = None,
    ignore_index: int = 255,
) -> nn.Module:
    """The loss module a spec describes; a weighted sum when the spec has several terms."""
    ctx = LossContext(num_classes, task, None if class_counts is None else tuple(class_counts), ignore_index)
    terms = parse_spec(spec)
    modules = [_build_term(t, ctx) for t in terms]
    if len(terms) == 1 and terms[0].weight == 1.0:
        return modules[0]
    return WeightedSum(modules, [t.weight for t in terms], [t.name for t in terms])
