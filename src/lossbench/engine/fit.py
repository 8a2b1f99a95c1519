"""The training loop: epochs of train + validate, best / last checkpoints, run folder.

``train(exp)`` is the whole of ``lossbench train`` for one experiment: it takes a
validated :class:`Experiment` (never YAML), builds data, model, loss and
optimizer through their registries, and leaves the run folder of DESIGN.md.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from lossbench.config import Experiment, OptimizerConfig
from lossbench.data import IGNORE_INDEX, build_data
from lossbench.data.loaders import build_loaders
from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.losses import build_loss
from lossbench.metrics import MAIN_METRIC, TaskMetrics
from lossbench.models import build_model
from lossbench.plots import plot_confusion


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} asked for but no CUDA GPU is available; use device: auto or cpu")
    return device


def build_optimizer(cfg: OptimizerConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimizer over ``params``."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _flat_metrics(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    row: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "confusion_matrix":
            continue
        if isinstance(value, list):
            row.update({f"{prefix}{key}_{i}": v for i, v in enumerate(value)})
        else:
            row[f"{prefix}{key}"] = value
    return row


@dataclass
class EpochResult:
    loss: float
    metrics: dict[str, Any]


def run_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    metrics: TaskMetrics,
    device: torch.device,
    optimizer: torch.optim.Optimizer | None = None,
    desc: str = "",
) -> EpochResult:
    """One pass over ``loader``: trains when an optimizer is given, else evaluates without gradients."""
    training = optimizer is not None
    model.train(training)
    metrics.reset()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
    with torch.set_grad_enabled(training):
        for images, target in bar:
            images = images.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            logits = model(images)
            loss = loss_fn(logits, target)
            if training:
                if not torch.isfinite(loss):
                    raise UserError(
                        f"loss became {loss.item()} ({desc}); lower optimizer.lr or check the data and loss"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            n = images.shape[0]
            total += float(loss.detach()) * n
            count += n
            metrics.update(logits.detach(), target)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
    bar.close()
    return EpochResult(total / max(count, 1), metrics.compute())


def train(exp: Experiment, overwrite: bool = False, log=print) -> dict[str, Any]:
    """Train one experiment end to end and return its summary (also written to summary.json)."""
    run_dir: Path = exp.run_dir
    runfolder.prepare_run_dir(run_dir, overwrite)
    seed_everything(exp.seed)
    device = resolve_device(exp.device)
    data = build_data(exp)
    model = build_model(exp.model, exp.task, data.num_classes).to(device)
    loss_fn = build_loss(exp.loss, data.num_classes, exp.task, data.class_counts, IGNORE_INDEX).to(device)
    optimizer = build_optimizer(exp.optimizer, [p for p in model.parameters() if p.requires_grad])
    train_loader, val_loader = build_loaders(data, exp.batch_size, exp.data.num_workers, exp.seed)

    resolved = exp.model_dump(mode="json")
    resolved["versions"] = runfolder.versions()
    runfolder.write_yaml(run_dir / "config.yaml", resolved)

    main = MAIN_METRIC[exp.task]
    metrics = TaskMetrics(exp.task, data.num_classes, IGNORE_INDEX).to(device)
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, main: -math.inf}
    best_cm = None
    start = time.perf_counter()
    log(f"{exp.name}: {exp.task}, {len(data.train)} train / {len(data.val)} val images, "
        f"{data.num_classes} classes, model {exp.model.name}, loss {exp.loss}, device {device}")
    for epoch in range(1, exp.epochs + 1):
        t0 = time.perf_counter()
        for module in loss_fn.modules():
            if hasattr(module, "on_epoch_start"):
                module.on_epoch_start(epoch)
        tr = run_epoch(model, train_loader, loss_fn, metrics, device, optimizer, f"epoch {epoch}/{exp.epochs} train")
        va = run_epoch(model, val_loader, loss_fn, metrics, device, None, f"epoch {epoch}/{exp.epochs} val")
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": tr.loss,
               f"train_{main}": tr.metrics[main], "val_loss": va.loss, **_flat_metrics("val_", va.metrics),
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        runfolder.write_csv(run_dir / "metrics.csv", rows)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        score = va.metrics[main]
        if best["epoch"] is None or (not math.isnan(score) and score > best[main]):
            best = {"epoch": epoch, **{k: v for k, v in row.items() if k.startswith("val_")}, main: score}
            best_cm = va.metrics["confusion_matrix"]
            runfolder.save_checkpoint(run_dir / "best.pt", state)
        runfolder.save_checkpoint(run_dir / "last.pt", state)
        log(f"epoch {epoch}/{exp.epochs}: train loss {tr.loss:.4f}, val loss {va.loss:.4f}, "
            f"val {main} {score:.4f} ({row['seconds']:.1f}s)")

    runfolder.atomic_write_bytes(
        run_dir / "confusion_matrix.png",
        plot_confusion(torch.tensor(best_cm), data.class_names, f"{exp.name}: epoch {best['epoch']} (best {main})"),
    )
    summary = {
        "name": exp.name,
        "task": exp.task,
        "main_metric": main,
        "best": best,
        "final": {k: v for k, v in rows[-1].items() if k.startswith("val_")},
        "best_confusion_matrix": best_cm,
        "class_names": data.class_names,
        "class_counts": data.class_counts,
        "epochs": exp.epochs,
        "seed": exp.seed,
        "wall_seconds": time.perf_counter() - start,
    }
    runfolder.write_json(run_dir / "summary.json", summary)
    return summary
