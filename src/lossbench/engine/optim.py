"""Optimizers over a model's named parameter groups, and learning-rate schedules.

Each trained group (``head``, ``backbone``, ...) becomes up to two optimizer
param groups: weights with decay, and biases / normalization weights without
(parameters with fewer than two dimensions). Non-head groups get
``lr * backbone_lr_factor``: the discriminative learning rates of transfer
learning, where pretrained features move slower than the new head.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from lossbench.config import OptimizerConfig, SchedulerConfig

Scheduler = LRScheduler | ReduceLROnPlateau


def optimizer_param_groups(
    groups: dict[str, list[nn.Parameter]], trained: list[str], cfg: OptimizerConfig
) -> list[dict[str, Any]]:
    """Param-group dicts for the ``trained`` named groups: per-group lr, decay split off norms and biases."""
    out = []
    for name, params in groups.items():
        if name not in trained:
            continue
        lr = cfg.lr if name == "head" else cfg.lr * cfg.backbone_lr_factor
        decay = [p for p in params if cfg.decay_norm_and_bias or p.ndim > 1]
        no_decay = [p for p in params if not (cfg.decay_norm_and_bias or p.ndim > 1)]
        for part, weight_decay, label in ((decay, cfg.weight_decay, name), (no_decay, 0.0, f"{name}/no_decay")):
            if part:
                out.append({"params": part, "lr": lr, "weight_decay": weight_decay, "name": label})
    return out


def build_optimizer(cfg: OptimizerConfig, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The configured optimizer over prepared param groups (see :func:`optimizer_param_groups`)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(param_groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor(cfg: SchedulerConfig, step: int, epochs: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr after ``step`` optimizer steps, for cosine / step / multistep with warm-up.

    Warm-up rises linearly from ``warmup_start_factor`` to 1 over
    ``warmup_epochs``; cosine then falls to ``min_lr_factor`` at the last step
    (Loshchilov & Hutter 2017); step / multistep multiply by ``gamma`` at epoch
    boundaries (every ``step_size`` epochs, or at each of ``milestones``).
    """
    total = epochs * steps_per_epoch
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    factor = 1.0
    if step < warm:
        factor = cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * step / warm
    epoch = step // steps_per_epoch
    if cfg.name == "cosine" and step >= warm:
        t = min(1.0, (step - warm) / max(1, total - warm))
        factor = cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))
    elif cfg.name == "step":
        factor *= cfg.gamma ** (epoch // cfg.step_size)
    elif cfg.name == "multistep":
        factor *= cfg.gamma ** bisect.bisect_right(cfg.milestones, epoch)
    return factor


def build_scheduler(
    cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, mode: str = "max"
) -> Scheduler | None:
    """The scheduler for a stage of ``epochs`` epochs; ``None`` for a constant lr.

    Everything but ``plateau`` is stepped after every optimizer step;
    ``plateau`` after every epoch with the monitored metric (``mode`` says
    whether higher is better).
    """
    if cfg.name == "none":
        return None
    if cfg.name == "plateau":
        return ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.gamma, patience=cfg.patience)
    if cfg.name == "onecycle":
        return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                          total_steps=epochs * steps_per_epoch, pct_start=cfg.pct_start,
                          div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor)
    return LambdaLR(optimizer, lambda step: lr_factor(cfg, step, epochs, steps_per_epoch))
