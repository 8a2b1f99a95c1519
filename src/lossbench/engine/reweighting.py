"""What the engine sets on a built loss tree per run and per epoch: deferred re-weighting (DRW), and the
check that a loss expecting cosine logits gets the cosine head.

Deferred re-weighting (Cao et al. 2019, "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", Sec. 3.3; official code kaidic/LDAM-DRW,
cifar_train.py, ``train_rule == 'DRW'``) trains without class weights, then,
from epoch ``drw_epoch`` (1-based; the official 200-epoch schedule: 161) on,
weights each sample's loss by its class's effective-number weight

    w_c = (1 - beta) / (1 - beta ** n_c),  normalised so that sum_c w_c = C

(Cui et al. 2019), with beta = 0.9999 and n_c the training class counts. It
works for any loss with a term that takes class weights: the engine calls
``set_class_weights(w)`` (or ``set_class_weights(None)`` before ``drw_epoch``)
on every module of the loss tree that declares ``accepts_class_weights``
(:class:`lossbench.losses.LossCapabilities`), at the start of every epoch. The weights are a function of the epoch alone, so a resumed run sets
exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lossbench.config import Experiment
from lossbench.errors import UserError
from lossbench.losses import LOSSES, loss_capabilities
from lossbench.losses.weights import effective_number_weights


def class_weight_takers(loss_fn: nn.Module) -> list[nn.Module]:
    """The modules of a loss tree that declare they take class weights from the engine (``set_class_weights``)."""
    return [m for m in loss_fn.modules() if loss_capabilities(m).accepts_class_weights]


def drw_class_weights(class_counts: Sequence[int], beta: float) -> torch.Tensor:
    """Effective-number weights of the training class counts (a class without images counts as one)."""
    counts = torch.tensor(list(class_counts), dtype=torch.float64).clamp(min=1)
    return effective_number_weights(counts, beta).float()


class DeferredReweighting:
    """Sets the DRW class weights of a run's loss at the start of each epoch (a no-op without ``drw_epoch``)."""

    def __init__(self, loss_fn: nn.Module, drw_epoch: int | None, beta: float, class_counts: Sequence[int],
                 loss_spec: object, device: torch.device | str = "cpu") -> None:
        self.takers = class_weight_takers(loss_fn)
        if drw_epoch is not None and not self.takers:
            raise UserError(f"drw_epoch: {drw_epoch} is set, but loss {loss_spec} has no term that takes class "
                            "weights (set_class_weights); use e.g. ce, focal or ldam, or remove drw_epoch")
        self.drw_epoch = drw_epoch
        self.weights = drw_class_weights(class_counts, beta).to(device)

    def start_epoch(self, epoch: int) -> None:
        """Unweighted before ``drw_epoch``, effective-number weighted from it on (``epoch`` is 1-based)."""
        if self.drw_epoch is None:
            return
        weights = self.weights if epoch >= self.drw_epoch else None
        for module in self.takers:
            module.set_class_weights(weights)


def _loss_name(module: nn.Module) -> str:
    return next((name for name, cls in LOSSES.items() if type(module) is cls), type(module).__name__)


def cosine_head_warning(loss_fn: nn.Module, head: str) -> str | None:
    """One warning line when a loss term expects cosine logits (LDAM with s > 1) but the head is not cosine.

    LDAM's margins and scale s = 30 are meant for logits in [-1, 1] (the cosine
    head of Cao et al. 2019); on unbounded linear logits s = 30 multiplies them
    thirty-fold. Read from the loss's declared capabilities; such a loss's scale is its ``s``.
    """
    if head == "cosine":
        return None
    for module in loss_fn.modules():
        if loss_capabilities(module).expects_cosine_logits:
            with_s = f" with s={module.s:g}"
            return (f"warning: {_loss_name(module)}{with_s} expects the cosine head of the paper; "
                    f"set model.head: cosine, or use {_loss_name(module)}(s=1) on a linear head")
    return None


def late_drw_warning(drw_epoch: int | None, epochs: int, where: str = "drw_epoch") -> str | None:
    """One warning line when deferred re-weighting would start after the last epoch, so it never does (a recipe
    shortened with ``--set epochs=...`` keeps its ``drw_epoch``; ``where``: ``exp.yaml: drw_epoch``)."""
    if drw_epoch is None or drw_epoch <= epochs:
        return None
    return (f"warning: {where}: {drw_epoch} is past the last epoch ({epochs}), so deferred re-weighting never "
            f"starts; set drw_epoch to at most {epochs}, or remove it")


def run_warnings(loss_fn: nn.Module, exp: Experiment) -> list[str]:
    """What a run warns of before its first epoch: a cosine-logit loss on another head, a DRW that never starts."""
    found = [cosine_head_warning(loss_fn, exp.model.head) if exp.task == "classification" else None,
             late_drw_warning(exp.drw_epoch, exp.epochs, exp.where("drw_epoch"))]
    return [line for line in found if line]
