"""The training loop: stages of epochs of train + validate, checkpoints, exact resume, DDP.

``train(exp)`` is the whole of ``lossbench train`` for one experiment: it takes a
validated :class:`Experiment` (never YAML), builds data, model, loss and
optimizer through their registries, and leaves the run folder of DESIGN.md.
``resume(run_dir)`` continues a run from its ``last.pt``: everything that
decides the next epoch's numbers (weights, optimizer, scheduler, scaler, EMA,
RNG states of Python, NumPy, torch and the loader, early-stopping and best
state, metric rows) is in that checkpoint, so on the CPU a resumed run ends
bit for bit where an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from lossbench.config import Experiment, read_documents, validate_experiment
from lossbench.data import IGNORE_INDEX, build_data
from lossbench.data.loaders import build_loaders
from lossbench.engine import runfolder
from lossbench.engine.distributed import (
    DistContext, all_true, broadcast_buffers, exact_eval_loader, gather_objects, resolve_device, run_on_main, session,
    sum_across_ranks,
)
from lossbench.engine.ema import build_ema
from lossbench.engine.rng import loader_generators, rng_state, seed_everything, set_rng_state
from lossbench.engine.optim import Scheduler, build_optimizer, build_scheduler, optimizer_param_groups
from lossbench.engine.reweighting import DeferredReweighting, cosine_head_warning
from lossbench.engine.stages import freeze_for_stage, frozen_norm_layers, set_train_mode, trained_groups
from lossbench.engine.trackers import Trackers
from lossbench.engine.tracking import MetricTracker, flat_metrics, metric_mode, metric_names, resolve_metric
from lossbench.errors import UserError
from lossbench.losses import build_loss
from lossbench.losses.combine import DeepSupervision
from lossbench.metrics import MAIN_METRIC, TaskMetrics, shot_accuracies
from lossbench.models import build_model, parameter_groups
from lossbench.plots import plot_confusion

__all__ = ["EpochResult", "TrainLoop", "evaluate", "resolve_device", "resume", "seed_everything", "train"]


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
    """Loss and metrics of ``model`` over all of ``loader`` (summed over ranks when distributed)."""
    model.eval()
    metrics.reset()
    total, count = 0.0, 0
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


@dataclass
class TrainLoop:
    """The objects one training stage steps: model (and its DDP wrapper), optimizer, scheduler, scaler, EMA.

    ``train_epoch`` is the hot loop: forward under autocast, scaled backward,
    accumulation over micro-batches (without DDP gradient sync until the last),
    clipping, the optimizer step, the per-step scheduler and the EMA update.
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


def _nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``module`` holding inf or nan."""
    return [name for name, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]


def _stage_bounds(exp: Experiment) -> list[tuple[int, int]]:
    """(first epoch - 1, last epoch) of each stage."""
    bounds, end = [], 0
    for stage in exp.resolved_stages():
        bounds.append((end, end + stage.epochs))
        end += stage.epochs
    return bounds


def train(
    exp: Experiment,
    overwrite: bool = False,
    log: Callable[[str], Any] = print,
    on_epoch_end: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Train one experiment end to end and return its summary (also written to summary.json).

    Under torchrun this runs data-parallel; only rank 0 writes the run folder
    and logs. ``on_epoch_end(epoch)`` is called on every rank after the
    epoch's checkpoint is written.
    """
    with session(exp.device) as ctx:
        return _fit(exp, ctx, overwrite, None, log, on_epoch_end)


#: what last.pt must hold for an exact resume
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "scaler", "ema", "epoch", "stage", "stopped_early",
                             "rng", "best_tracker", "stopper", "rows", "best", "best_cm"})


def _restore_error(path: Path, exc: Exception) -> UserError:
    first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
    return UserError(f"{path}: checkpoint does not fit this run's config.yaml ({first}); it cannot be resumed, "
                     "train the run again with --overwrite")


def resume(
    run_dir: str | Path, log: Callable[[str], Any] = print, on_epoch_end: Callable[[int], Any] | None = None
) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last.pt with the config it recorded; return its summary."""
    run_dir = Path(run_dir)
    config, last = run_dir / "config.yaml", run_dir / "last.pt"
    if not config.is_file() or not last.is_file():
        missing = config if not config.is_file() else last
        raise UserError(f"{run_dir}: cannot resume, {missing.name} is missing; train it from its config instead")
    docs = read_documents(config)
    if len(docs) != 1:
        raise UserError(f"{config}: holds {len(docs)} YAML documents, a run's config holds one; it cannot be resumed")
    raw = {**docs[0], "output_dir": str(run_dir.parent), "name": run_dir.name}
    exp = validate_experiment(raw, str(config))
    try:
        checkpoint = runfolder.load_checkpoint(last)
    except Exception as exc:  # a truncated or foreign file: say which and stop
        raise UserError(f"{last}: cannot read the checkpoint ({exc.__class__.__name__}); it cannot be resumed") \
            from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEYS - set(checkpoint):
        what = (f"missing {', '.join(sorted(CHECKPOINT_KEYS - set(checkpoint)))}" if isinstance(checkpoint, dict)
                else f"it holds a {type(checkpoint).__name__}")
        raise UserError(f"{last}: not a lossbench training checkpoint ({what}); it cannot be resumed, "
                        "train the run again with --overwrite")
    with session(exp.device) as ctx:
        return _fit(exp, ctx, True, checkpoint, log, on_epoch_end)


def _fit(
    exp: Experiment,
    ctx: DistContext,
    overwrite: bool,
    checkpoint: dict[str, Any] | None,
    log: Callable[[str], Any],
    on_epoch_end: Callable[[int], Any] | None,
) -> dict[str, Any]:
    """:func:`_fit_loop` with the config's trackers, which are told when the run fails."""
    trackers = Trackers(exp, exp.run_dir, enabled=ctx.is_main)
    try:
        return _fit_loop(exp, ctx, overwrite, checkpoint, log, on_epoch_end, trackers)
    finally:
        trackers.finish(failed=True)  # a no-op after a finished run: _fit_loop has closed them


def _fit_loop(
    exp: Experiment,
    ctx: DistContext,
    overwrite: bool,
    checkpoint: dict[str, Any] | None,
    log: Callable[[str], Any],
    on_epoch_end: Callable[[int], Any] | None,
    trackers: Trackers,
) -> dict[str, Any]:
    run_dir: Path = exp.run_dir
    log = log if ctx.is_main else (lambda *_: None)
    run_on_main(ctx, lambda: runfolder.prepare_run_dir(run_dir, overwrite or checkpoint is not None))
    device = ctx.device
    autocast = autocast_for(exp.amp, device)
    if exp.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not exp.deterministic
    seed_everything(exp.seed + ctx.rank)

    data = build_data(exp)
    model = build_model(exp.model, exp.task, data.num_classes).to(device)
    if exp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    for stage in exp.resolved_stages():
        trained_groups(parameter_groups(model), stage.train)
    loss_fn = DeepSupervision(build_loss(exp.loss, data.num_classes, exp.task, data.class_counts, IGNORE_INDEX))
    loss_fn = loss_fn.to(device)
    reweighting = DeferredReweighting(loss_fn, exp.drw_epoch, exp.drw_beta, data.class_counts, exp.loss, device)
    train_loader, val_loader = build_loaders(data, batch_size=exp.batch_size, num_workers=exp.data.num_workers,
                                             seed=exp.seed, world_size=ctx.world_size, rank=ctx.rank)
    val_loader = exact_eval_loader(val_loader, ctx)
    generators = loader_generators(train_loader)

    main = MAIN_METRIC[exp.task]
    names = metric_names(exp.task, data.num_classes)
    best_name = resolve_metric(exp.best_metric or main, names, "best_metric")
    best_tracker = MetricTracker(best_name, metric_mode(best_name, exp.best_mode))
    stopper = None
    if exp.early_stopping is not None:
        es = exp.early_stopping
        name = resolve_metric(es.metric or best_name, names, "early_stopping.metric")
        stopper = MetricTracker(name, metric_mode(name, es.mode), es.min_delta)
    ema = build_ema(model, exp.ema.decay) if exp.ema is not None else None
    scaler = torch.amp.GradScaler(device.type) if exp.amp == "fp16" else None
    metrics = TaskMetrics(exp.task, data.num_classes, IGNORE_INDEX).to(device)

    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None}
    best_cm = final_cm = None
    done, stopped_early, resume_stage = 0, False, None
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint["model"])
            if ema is not None:
                ema.load_state_dict(checkpoint["ema"])
            if scaler is not None:
                scaler.load_state_dict(checkpoint["scaler"])
            best_tracker.load_state_dict(checkpoint["best_tracker"])
            if stopper is not None and checkpoint.get("stopper") is not None:
                stopper.load_state_dict(checkpoint["stopper"])
            rows, best, best_cm = list(checkpoint["rows"]), dict(checkpoint["best"]), checkpoint["best_cm"]
            final_cm = checkpoint.get("final_cm")  # absent from checkpoints written before it was kept
            done, stopped_early, resume_stage = checkpoint["epoch"], checkpoint["stopped_early"], checkpoint["stage"]
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise _restore_error(run_dir / "last.pt", exc) from None
        best_epoch = best.get("epoch")
        run_on_main(ctx, lambda: runfolder.tidy_after_kill(run_dir, best_epoch))
        log(f"{exp.name}: resuming after epoch {done}/{exp.epochs} from {run_dir / 'last.pt'}")
    else:
        resolved = exp.model_dump(mode="json")
        resolved["versions"] = runfolder.versions()

        def write_start_files() -> None:
            runfolder.clear_previous_run(run_dir)
            runfolder.write_yaml(run_dir / "config.yaml", resolved)
            for fname, text in getattr(data, "run_files", {}).items():
                runfolder.atomic_write_text(run_dir / fname, text)

        run_on_main(ctx, write_start_files)

    trackers.open(done)
    start = time.perf_counter()
    log(f"{exp.name}: {exp.task}, {len(data.train)} train / {len(data.val)} val images, "
        f"{data.num_classes} classes, model {exp.model.name}, loss {exp.loss}, device {device}"
        + (f", {ctx.world_size} processes" if ctx.distributed else ""))
    head_warning = cosine_head_warning(loss_fn, exp.model.head) if exp.task == "classification" else None
    if head_warning:
        log(head_warning)
    stages = exp.resolved_stages()
    for index, ((first, last_epoch), stage) in enumerate(zip(_stage_bounds(exp), stages)):
        if last_epoch <= done or stopped_early:
            continue
        groups, trained = freeze_for_stage(model, stage.train)
        opt_cfg, sched_cfg = exp.stage_optimizer(index), exp.stage_scheduler(index)
        optimizer = build_optimizer(opt_cfg, optimizer_param_groups(groups, trained, opt_cfg))
        steps_per_epoch = math.ceil(len(train_loader) / exp.grad_accumulation)
        monitor = resolve_metric(sched_cfg.monitor or best_name, names, "scheduler.monitor")
        scheduler = build_scheduler(sched_cfg, optimizer, stage.epochs, steps_per_epoch,
                                    metric_mode(monitor, exp.best_mode if monitor == best_name else "auto"))
        if checkpoint is not None and resume_stage == index:
            try:
                optimizer.load_state_dict(checkpoint["optimizer"])
                if scheduler is not None:
                    scheduler.load_state_dict(checkpoint["scheduler"])
            except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
                raise _restore_error(run_dir / "last.pt", exc) from None
        wrapped = model
        if ctx.distributed:
            wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        loop = TrainLoop(model, loss_fn, optimizer, device, scheduler, scaler, ema, autocast, exp.channels_last,
                         exp.grad_accumulation, exp.grad_clip_norm, exp.nonfinite_loss, ctx, wrapped)
        if len(stages) > 1:
            log(f"stage {index + 1}/{len(stages)}: epochs {first + 1}-{last_epoch}, training {', '.join(trained)}")
        if checkpoint is not None:
            try:
                set_rng_state(checkpoint["rng"][min(ctx.rank, len(checkpoint["rng"]) - 1)], generators)
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
                raise _restore_error(run_dir / "last.pt", exc) from None
            checkpoint = None
        for epoch in range(max(first, done) + 1, last_epoch + 1):
            t0 = time.perf_counter()
            if hasattr(train_loader.sampler, "set_epoch"):
                train_loader.sampler.set_epoch(epoch)
            reweighting.start_epoch(epoch)
            desc = f"epoch {epoch}/{exp.epochs}"
            tr = loop.train_epoch(train_loader, metrics, f"{desc} train")
            eval_model = ema.module if ema is not None else model
            broadcast_buffers(ctx, model)
            if ema is not None:
                broadcast_buffers(ctx, ema.module)
            kept = f"last.pt keeps epoch {done}" if done else "no checkpoint was written"
            diverged = _nonfinite_tensors(model) + (_nonfinite_tensors(ema.module) if ema is not None else [])
            if diverged:  # skipping steps cannot undo this: stop before the epoch is saved
                raise UserError(
                    f"{desc}: the weights became non-finite (inf or nan in {diverged[0]}"
                    + (f" and {len(diverged) - 1} more tensors" if len(diverged) > 1 else "")
                    + f") after a train loss of {tr.loss:.3g}; stopped, {kept}; "
                    "lower optimizer.lr or set grad_clip_norm"
                )
            va = evaluate(eval_model, val_loader, loss_fn, metrics, device, f"{desc} val", autocast,
                          exp.channels_last, ctx)
            if not math.isfinite(va.loss) and exp.nonfinite_loss == "stop":
                raise UserError(f"{desc}: val loss became {va.loss} (the model diverged); stopped, {kept}; "
                                "lower optimizer.lr, set grad_clip_norm, or set nonfinite_loss: skip")
            final_cm = va.metrics.get("confusion_matrix")
            if exp.task == "classification" and "recall" in va.metrics:
                va.metrics.update(shot_accuracies(va.metrics["recall"], data.class_counts))
            row = {"epoch": epoch, "stage": index + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": tr.loss,
                   f"train_{main}": tr.metrics[main], "val_loss": va.loss, **flat_metrics("val_", va.metrics)}
            if exp.nonfinite_loss == "skip":
                row["skipped_steps"] = tr.skipped_steps
            if scheduler is not None and not loop.step_scheduler:
                scheduler.step(row[monitor])
            best_state = None
            if best_tracker.update(row[best_name]):
                best = {"epoch": epoch, **{k: v for k, v in row.items() if k.startswith("val_")},
                        main: row[f"val_{main}"], best_name: row[best_name]}
                best_cm = va.metrics.get("confusion_matrix")  # none for sigmoid (binary / multi-label) outputs
                best_state = {"model": eval_model.state_dict(), "epoch": epoch, best_name: row[best_name]}
            if stopper is not None:
                stopper.update(row[stopper.name])
                stopped_early = stopper.bad_epochs >= exp.early_stopping.patience
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            rng = gather_objects(ctx, rng_state(generators))
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
                "epoch": epoch, "stage": index, "stopped_early": stopped_early, "rng": rng,
                "best_tracker": best_tracker.state_dict(),
                "stopper": stopper.state_dict() if stopper is not None else None,
                "rows": rows, "best": best, "best_cm": best_cm, "final_cm": final_cm,
            }

            def write_epoch_files() -> None:
                # a new best.pt takes its place only once last.pt records it as the best; a kill in between
                # leaves it pending, and resume commits or drops it (runfolder.tidy_after_kill)
                if best_state is not None:
                    runfolder.save_checkpoint(run_dir / runfolder.PENDING_BEST, best_state)
                runfolder.write_csv(run_dir / "metrics.csv", rows)
                runfolder.save_checkpoint(run_dir / "last.pt", state)
                if best_state is not None:
                    os.replace(run_dir / runfolder.PENDING_BEST, run_dir / "best.pt")

            run_on_main(ctx, write_epoch_files)
            trackers.log_epoch(epoch, row)
            log(f"{desc}: train loss {tr.loss:.4f}, val loss {va.loss:.4f}, val {main} {va.metrics[main]:.4f}"
                + (f", {tr.skipped_steps} non-finite steps skipped" if tr.skipped_steps else "")
                + f" ({row['seconds']:.1f}s)")
            done = epoch
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            if stopped_early:
                log(f"early stopping: {stopper.name} has not improved for {stopper.bad_epochs} epochs")
                break

    summary = {
        "name": exp.name,
        "run_dir": str(run_dir),
        "task": exp.task,
        "main_metric": main,
        "best_metric": best_name,
        "best": best,
        "final": {k: v for k, v in rows[-1].items() if k.startswith("val_")},
        "best_confusion_matrix": best_cm,
        "final_confusion_matrix": final_cm,
        "class_names": data.class_names,
        "class_counts": data.class_counts,
        "epochs": exp.epochs,
        "epochs_trained": done,
        "stopped_early": stopped_early,
        "seed": exp.seed,
        "world_size": ctx.world_size,
        "wall_seconds": time.perf_counter() - start,
    }

    def write_end_files() -> None:
        if best_cm is not None:
            runfolder.atomic_write_bytes(
                run_dir / "confusion_matrix.png",
                plot_confusion(torch.tensor(best_cm), data.class_names,
                               f"{exp.name}: epoch {best['epoch']} (best {best_name})"),
            )
        runfolder.write_json(run_dir / "summary.json", summary)

    run_on_main(ctx, write_end_files)
    trackers.finish()
    return summary
