"""The step loops: one training epoch (:class:`TrainLoop`) and one evaluation pass (:func:`evaluate`).

Both run on one process or, under torchrun, on every rank of a DDP job; the
epoch's loss is summed over ranks and the metrics' counts are summed over
ranks when computed.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from lossbench.engine.distributed import DistContext, all_true, sum_across_ranks
from lossbench.engine.optim import Scheduler
from lossbench.engine.stages import frozen_norm_layers, set_train_mode
from lossbench.errors import UserError
from lossbench.metrics import TaskMetrics


@dataclass
class EpochResult:
    loss: float
    metrics: dict[str, Any]
    skipped_steps: int = 0


def autocast_for(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the autocast context for ``amp`` (``off``: no autocast at all)."""
    if amp == "off":
        return contextlib.nullcontext
    if amp == "fp16" and device.type != "cuda":
        raise UserError("amp: fp16 needs a CUDA device; use amp: bf16 or off on the CPU")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("amp: bf16 is not supported by this GPU; use amp: fp16")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _to_device(images: torch.Tensor, target: torch.Tensor, device: torch.device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, target.to(device, non_blocking=True)


def _progress(loader: DataLoader, desc: str, enabled: bool):
    # disable=None: no bars when stderr is not a terminal (a log file, a sweep's cell), where they are noise
    return tqdm(loader, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
                disable=None if enabled else True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    metrics: TaskMetrics,
    device: torch.device,
    desc: str = "",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    channels_last: bool = False,
    ctx: DistContext | None = None,
) -> EpochResult:
    """Loss and metrics of ``model`` over all of ``loader`` (summed over ranks when distributed).

    torch's random streams are as they were afterwards (the loader's iterator draws a seed from them): whether an
    epoch is evaluated (``eval_every``), or a held-out split with it, changes nothing of the training that follows.
    """
    model.eval()
    metrics.reset()
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for images, target in _progress(loader, desc, ctx is None or ctx.is_main):
            images, target = _to_device(images, target, device, channels_last)
            with autocast():
                logits = model(images)
                loss = loss_fn(logits, target)
            total += loss.item() * images.shape[0]
            count += images.shape[0]
            metrics.update(logits, target)
    if ctx is not None:
        total, count = sum_across_ranks(ctx, torch.tensor([total, count], dtype=torch.float64, device=device)).tolist()
    return EpochResult(total / max(count, 1), metrics.compute())


@dataclass(kw_only=True)
class TrainLoop:
    """The objects one training stage steps: model (and its DDP wrapper), optimizer, scheduler, scaler, EMA.

    ``train_epoch`` is the hot loop: forward under autocast, scaled backward,
    accumulation over micro-batches (without DDP gradient sync until the last),
    clipping, the optimizer step, the per-step scheduler and the EMA update.
    Built with keyword arguments only.
    """

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    scheduler: Scheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: nn.Module | None = None
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    channels_last: bool = False
    grad_accumulation: int = 1
    grad_clip_norm: float | None = None
    nonfinite_loss: str = "stop"
    ctx: DistContext = field(default_factory=lambda: DistContext(0, 1, 0, torch.device("cpu")))
    wrapped: nn.Module | None = None
    frozen_norms: list[nn.Module] = field(init=False)

    def __post_init__(self) -> None:
        if self.wrapped is None:
            self.wrapped = self.model
        self.frozen_norms = frozen_norm_layers(self.model)
        self.trained = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.step_scheduler = self.scheduler is not None and not isinstance(
            self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            if self.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.trained, self.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(self.trained, self.grad_clip_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step_scheduler:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def train_epoch(self, loader: DataLoader, metrics: TaskMetrics, desc: str = "") -> EpochResult:
        """One pass over ``loader`` with optimizer steps every ``grad_accumulation`` batches (and at the end)."""
        set_train_mode(self.wrapped, self.frozen_norms)
        metrics.reset()
        self.optimizer.zero_grad(set_to_none=True)
        n_batches, accum = len(loader), self.grad_accumulation
        total, count, skipped, group_ok = 0.0, 0, 0, True
        bar = _progress(loader, desc, self.ctx.is_main)
        for i, (images, target) in enumerate(bar):
            images, target = _to_device(images, target, self.device, self.channels_last)
            last = (i + 1) % accum == 0 or i + 1 == n_batches
            in_group = min(accum, n_batches - (i // accum) * accum)
            sync = self.wrapped.no_sync() if self.ctx.distributed and not last else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    logits = self.wrapped(images)
                    loss = self.loss_fn(logits, target)
                value = loss.item()
                finite = all_true(self.ctx, math.isfinite(value))
                if not finite and self.nonfinite_loss == "stop":
                    raise UserError(
                        f"loss became {value} ({desc}, batch {i + 1}); stopped, last.pt keeps the last finite epoch; "
                        "lower optimizer.lr, set grad_clip_norm, or set nonfinite_loss: skip"
                    )
                if finite:
                    scaled = loss / in_group
                    (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                    total += value * images.shape[0]
                    count += images.shape[0]
                    metrics.update(logits, target)
                group_ok = group_ok and finite
            if last:
                if group_ok:
                    self._optimizer_step()
                else:
                    skipped += 1
                    self.optimizer.zero_grad(set_to_none=True)
                group_ok = True
            if i % 20 == 0:
                bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
        bar.close()
        sums = sum_across_ranks(self.ctx, torch.tensor([total, count], dtype=torch.float64, device=self.device))
        loss_sum, n = sums.tolist()
        return EpochResult(loss_sum / max(n, 1), metrics.compute(), skipped)
