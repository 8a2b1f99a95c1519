"""The loss library: ``build_loss(spec, num_classes, ...) -> nn.Module``.

Every loss is called as ``loss(logits, target)`` for both tasks. Adding a loss
is one new module in this package with one ``@register_loss`` class: every
module of the package is imported here (:func:`import_loss_modules`), so no
list of imports has to be edited.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, get_args

import torch
from torch import nn

from lossbench.config import Experiment

from lossbench.errors import UserError
from lossbench.losses.combine import DeepSupervision, WeightedSum
from lossbench.losses.registry import (
    LOSSES, LossCapabilities, LossContext, declare_loss, loss_capabilities, loss_parameters, loss_summary,
    register_loss,
)
from lossbench.losses.spec import Term, parse_spec

__all__ = [
    "DeepSupervision", "LOSSES", "LossCapabilities", "LossContext", "TASKS", "build_loss", "check_loss_arguments",
    "check_spec", "declare_loss", "loss_capabilities", "loss_parameters", "loss_summary", "parse_spec",
    "refuse_targets_out_of_range", "register_loss",
]


def import_loss_modules() -> list[str]:
    """Import every module of this package (each registers its losses); their names, sorted."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


import_loss_modules()
# every built-in loss class by its own name, for plain PyTorch use: FocalLoss(LossContext(num_classes=3), gamma=2)
globals().update({cls.__name__: cls for _, cls in LOSSES.items()})
__all__ += sorted(cls.__name__ for _, cls in LOSSES.items())


def _check_type(loss: str, key: str, value: Any, default: Any) -> None:
    """A parameter whose default is a number (or a bool) must be given as one."""
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return
    if not ok:
        raise UserError(f"{loss}: {key} must be {kind} (default {default!r}), got {value!r}")


def _check_term(term: Term) -> type[nn.Module]:
    """The term's loss class, once its name, parameter names and parameter types are known to be right."""
    cls = LOSSES.get(term.name)
    allowed = loss_parameters(cls)
    unknown = sorted(set(term.params) - set(allowed))
    moved = cls.moved_parameters
    for key in unknown:
        if key in moved:
            raise UserError(f"{term.name}: {key} is no longer a parameter of {term.name}; {moved[key]}")
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise UserError(f"{term.name}: unknown parameter {unknown[0]!r}; valid parameters: {valid}")
    for key, value in term.params.items():
        _check_type(term.name, key, value, allowed[key])
    return cls


def _build_term(term: Term, ctx: LossContext) -> nn.Module:
    cls = _check_term(term)
    try:
        return cls(ctx, **term.params)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{term.name}: {exc}") from None


@contextmanager
def _named(where: str) -> Iterator[None]:
    """Put ``where`` (``exp.yaml: loss``) in front of the one line of a UserError raised in the block."""
    try:
        yield
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def check_spec(spec: str | dict[str, Any] | list[Any], where: str = "loss") -> list[Term]:
    """The terms of ``spec``, once its syntax, loss names, parameter names and parameter types are right;
    otherwise one line starting with ``where``. Needs no data: a run checks its loss before reading any
    (values that depend on the data, such as class weights, are checked when the loss is built)."""
    with _named(where):
        terms = parse_spec(spec)
        for term in terms:
            _check_term(term)
    return terms


def build_loss(
    spec: str | dict[str, Any] | list[Any],
    num_classes: int,
    task: str = "classification",
    class_counts: Sequence[int] | None = None,
    ignore_index: int = 255,
    where: str = "loss",
) -> nn.Module:
    """The loss module a spec describes; a weighted sum when the spec has several terms.

    A spec that cannot be built is one UserError line starting with ``where``
    (the engine passes ``<config file>: loss``).
    """
    check_loss_arguments(num_classes, task, where)
    ctx = LossContext(num_classes, task, None if class_counts is None else tuple(class_counts), ignore_index)
    terms = check_spec(spec, where)
    with _named(where):
        modules = [_build_term(t, ctx) for t in terms]
    if len(terms) == 1 and terms[0].weight == 1.0:
        return modules[0]
    return WeightedSum(modules, [t.weight for t in terms], [t.name for t in terms])


#: the tasks a loss is built for (the config's ``task:`` values)
TASKS: tuple[str, ...] = get_args(Experiment.model_fields["task"].annotation)


def check_loss_arguments(num_classes: Any, task: Any, where: str = "loss") -> None:
    """One line starting with ``where`` when ``num_classes`` is not a whole number >= 1 or ``task`` is unknown."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"{where}: num_classes must be a whole number of 1 or more, got {num_classes!r}")
    if task not in TASKS:
        raise UserError(f"{where}: task must be one of {', '.join(TASKS)}, got {task!r}")


def refuse_targets_out_of_range(loss: nn.Module, num_classes: int, ignore_index: int) -> nn.Module:
    """``loss``, which now refuses in one line an index target outside its classes (a Python user's labels are
    not checked by a data source; torch would fail deep inside with an IndexError or a CUDA assert)."""
    top = max(num_classes, 2)  # one sigmoid channel takes index targets 0 and 1

    def check(_module: nn.Module, args: tuple) -> None:
        target = args[1] if len(args) > 1 else None
        if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dtype == torch.bool:
            return
        bad = target[(target != ignore_index) & ((target < 0) | (target >= top))]
        if bad.numel():
            raise UserError(f"loss: the target holds class {int(bad[0])}, outside 0..{top - 1} of num_classes="
                            f"{num_classes} (ignore_index {ignore_index} is skipped); fix the targets or num_classes")

    loss.register_forward_pre_hook(check)
    return loss
