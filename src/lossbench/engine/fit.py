"""The training run: stages of epochs of train + validate, checkpoints, exact resume, DDP.

``train(exp)`` is the whole of ``lossbench train`` for one experiment: it takes a validated :class:`Experiment`
(never YAML), builds data, model, loss and optimizer through their registries, and leaves the run folder of
ARCHITECTURE.md. ``resume(run_dir)`` continues a run from its ``last.pt`` (:mod:`lossbench.engine.state` says what
that holds), so on the CPU a resumed run ends bit for bit where an uninterrupted one does.

A run is a sequence of named steps around one :class:`Run`: :func:`_set_up`, then :func:`_restore` (resume) or
:func:`_start`, :func:`_run_stage` for each stage, :func:`_run_epoch` for each of its epochs, :func:`_end_epoch`
(metrics row, best epoch, early stopping, checkpoint), and :func:`_summarise`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lossbench.config import Experiment, load_run_config
from lossbench.contract import IGNORE_INDEX
from lossbench.data import DataBundle, build_data
from lossbench.data.loaders import build_loaders
from lossbench.engine import runfolder
from lossbench.engine.checkpoints import CheckpointSchedule, write_epoch
from lossbench.engine.distributed import (
    DistContext, broadcast_buffers, exact_eval_loader, gather_objects, is_main_process, run_on_main, session,
)
from lossbench.engine.ema import build_ema
from lossbench.engine.loop import EpochResult, TrainLoop, autocast_for, evaluate
from lossbench.engine.monitor import flat_metrics
from lossbench.engine.optim import build_optimizer, build_scheduler, optimizer_param_groups
from lossbench.engine.reweighting import DeferredReweighting, run_warnings
from lossbench.engine.rng import loader_generators, rng_state, seed_everything
from lossbench.engine.selection import Selection, evaluated_split, figure_title, plan_selection
from lossbench.engine.stages import freeze_for_stage, trained_groups
from lossbench.engine.state import RunState, read_last_checkpoint
from lossbench.engine.trackers import Trackers
from lossbench.errors import UserError
from lossbench.losses import build_loss
from lossbench.losses.combine import DeepSupervision
from lossbench.metrics import MAIN_METRIC, TaskMetrics, shot_accuracies
from lossbench.models import build_model, check_model, model_layout, parameter_groups
from lossbench.plugins import load_experiment_code

__all__ = ["resume", "train"]


def train(exp: Experiment, overwrite: bool = False, log: Callable[[str], Any] = print,
          on_epoch_end: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Train one experiment end to end and return its summary (also written to summary.json).

    Under torchrun this runs data-parallel; only rank 0 writes the run folder
    and logs. ``on_epoch_end(epoch)`` is called on every rank after the
    epoch's files are written (engine/checkpoints.py: last.pt every ``checkpoint_every`` epochs). A loss spec
    with a typo, an unknown model or a plugin that does not load is refused (naming the config file and key)
    before any data is read.
    """
    load_experiment_code(exp)
    check_model(exp.model, exp.task, exp.where("model"))
    plan_selection(exp, None)  # nothing chosen on the test split: refused before any data is read
    with session(exp.device) as ctx:
        return _fit(exp, ctx, overwrite, None, log, on_epoch_end)


def resume(
    run_dir: str | Path, log: Callable[[str], Any] = print, on_epoch_end: Callable[[int], Any] | None = None
) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last.pt with the config it recorded; return its summary.

    A finished run has nothing to continue: its recorded summary is returned
    and no file of its folder is touched (a resume that rewrote summary.json
    would record the resume's seconds as the run's wall time).
    """
    run_dir = Path(run_dir)
    if runfolder.is_finished(run_dir):
        summary = runfolder.read_summary(run_dir)
        if is_main_process():
            log(f"{run_dir}: finished after {summary.get('epochs_trained', '?')} of {summary.get('epochs', '?')} "
                "epochs; nothing to resume, its files are unchanged")
        return summary
    config, last = run_dir / "config.yaml", run_dir / "last.pt"
    if not config.is_file() or not last.is_file():
        missing = config if not config.is_file() else last
        raise UserError(f"{run_dir}: cannot resume, {missing.name} is missing; train it from its config instead")
    exp = load_experiment_code(load_run_config(run_dir))
    checkpoint = read_last_checkpoint(last)
    with session(exp.device) as ctx:
        return _fit(exp, ctx, True, checkpoint, log, on_epoch_end)


@dataclass
class Run:
    """What one training run works with, made by :func:`_set_up`; every step below takes it.

    ``head``: the model's head prefixes (its stage groups); ``reweighting``: the loss's deferred class weights
    (``drw_epoch``); ``main``: the task's main metric; ``selection``: the columns choosing best.pt, early stopping
    and each stage's plateau scheduler, never the test split's (:mod:`lossbench.engine.selection`);
    ``holdout_loader``: the held-out split, evaluated every epoch when something is chosen on it; ``state``: what
    changes from epoch to epoch and is checkpointed; ``checkpoints``: which epochs write last.pt.
    """

    exp: Experiment
    ctx: DistContext
    data: DataBundle
    head: tuple[str, ...]
    loss_fn: nn.Module
    reweighting: DeferredReweighting
    metrics: TaskMetrics
    train_loader: DataLoader
    val_loader: DataLoader
    autocast: Callable
    main: str
    selection: Selection
    holdout_loader: DataLoader | None
    state: RunState
    trackers: Trackers
    log: Callable[[str], Any]
    on_epoch_end: Callable[[int], Any] | None
    checkpoints: CheckpointSchedule
    started: float = 0.0

    @property
    def run_dir(self) -> Path:
        return self.exp.run_dir


def _fit(
    exp: Experiment,
    ctx: DistContext,
    overwrite: bool,
    checkpoint: dict[str, Any] | None,
    log: Callable[[str], Any],
    on_epoch_end: Callable[[int], Any] | None,
) -> dict[str, Any]:
    """Set up, restore or start, run every stage not yet done, summarise; trackers hear when the run fails."""
    trackers, lock = Trackers(exp, exp.run_dir, enabled=ctx.is_main), runfolder.run_lock(exp.run_dir)
    try:
        run = _set_up(exp, ctx, overwrite or checkpoint is not None, trackers, lock, log, on_epoch_end)
        if checkpoint is not None:
            _restore(run, checkpoint)
        else:
            _start(run)
        trackers.open(run.state.epoch)
        run.started = time.perf_counter()
        run.log(f"{exp.name}: {exp.task}, {len(run.data.train)} train / {len(run.data.val)} val images, "
                f"{run.data.num_classes} classes, model {exp.model.name}, loss {exp.loss}, device {ctx.device}"
                + (f", {ctx.world_size} processes" if ctx.distributed else ""))
        for warning in run_warnings(run.loss_fn, exp):
            run.log(warning)
        for index, (first, last) in enumerate(_stage_bounds(exp)):
            if last <= run.state.epoch or run.state.stopped_early:
                continue
            _run_stage(run, index, first, last, checkpoint)
            checkpoint = None  # restored by the first stage that runs
        summary = _summarise(run)
        trackers.finish()
        return summary
    finally:
        trackers.finish(failed=True)  # a no-op after a finished run: it has closed them
        lock.release()


def _set_up(exp: Experiment, ctx: DistContext, overwrite: bool, trackers: Trackers, lock: runfolder.FolderLock,
            log: Callable[[str], Any], on_epoch_end: Callable[[int], Any] | None) -> Run:
    """Seeds, data, model, loss, loaders, monitors and the initial state (in this order: it decides what the
    seeded random streams draw), then the run folder and its ``lock``: a run refused on the way leaves no folder."""
    run_on_main(ctx, lambda: runfolder.check_run_dir(exp.run_dir, overwrite))
    device = ctx.device
    autocast = autocast_for(exp.amp, device)
    if exp.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not exp.deterministic
    seed_everything(exp.seed + ctx.rank)

    data = build_data(exp)
    metrics = TaskMetrics(exp.task, data.num_classes, IGNORE_INDEX).to(device)  # refuses classes beyond the memory
    model = build_model(exp.model, exp.task, data.num_classes).to(device)
    if exp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = model_layout(exp.model, model).head
    for stage in exp.resolved_stages():  # a stage naming an unknown group fails before the first epoch
        trained_groups(parameter_groups(model, head), stage.train)
    loss_fn = DeepSupervision(build_loss(exp.loss, data.num_classes, exp.task, data.class_counts, IGNORE_INDEX,
                                         where=exp.where("loss"))).to(device)
    reweighting = DeferredReweighting(loss_fn, exp.drw_epoch, exp.drw_beta, data.class_counts, exp.loss, device)
    train_loader, val_loader = build_loaders(data, batch_size=exp.batch_size, num_workers=exp.data.num_workers,
                                             seed=exp.seed, world_size=ctx.world_size, rank=ctx.rank)

    selection = plan_selection(exp, data.num_classes)
    holdout_loader = exact_eval_loader(selection.holdout_loader(data, exp), ctx) if selection.evaluates_holdout else None
    state = RunState(
        model=model, generators=loader_generators(train_loader),
        best_monitor=selection.best_monitor(exp), stopper=selection.stopper_monitor(exp),
        ema=build_ema(model, exp.ema.decay) if exp.ema is not None else None,
        scaler=torch.amp.GradScaler(device.type) if exp.amp == "fp16" else None,
    )
    run_on_main(ctx, lambda: runfolder.create_run_dir(exp.run_dir, overwrite, lock))
    return Run(exp=exp, ctx=ctx, data=data, head=head, loss_fn=loss_fn, reweighting=reweighting, metrics=metrics,
               train_loader=train_loader, val_loader=exact_eval_loader(val_loader, ctx), autocast=autocast,
               main=MAIN_METRIC[exp.task], selection=selection, holdout_loader=holdout_loader, state=state,
               trackers=trackers, log=log if ctx.is_main else (lambda *_: None), on_epoch_end=on_epoch_end,
               checkpoints=CheckpointSchedule(exp.checkpoint_every, exp.epochs))


def _restore(run: Run, checkpoint: dict[str, Any]) -> None:
    """Take a resumed run's weights and progress from ``last.pt``, and tidy what the kill left half done."""
    last = run.run_dir / "last.pt"
    run.state.restore(checkpoint, last)
    best_epoch = run.state.best.get("epoch")
    run_on_main(run.ctx, lambda: runfolder.tidy_after_kill(run.run_dir, best_epoch))
    run.log(f"{run.exp.name}: resuming after epoch {run.state.epoch}/{run.exp.epochs} from {last}")


def _start(run: Run) -> None:
    """A new run's first files: the resolved config (with package versions and the data's identity) and the data
    layer's run files."""
    run_on_main(run.ctx, lambda: runfolder.start_run(run.run_dir, runfolder.recorded_config(run.exp),
                                                     run.data.run_files))


def _stage_bounds(exp: Experiment) -> list[tuple[int, int]]:
    """(first epoch - 1, last epoch) of each stage."""
    bounds, end = [], 0
    for stage in exp.resolved_stages():
        bounds.append((end, end + stage.epochs))
        end += stage.epochs
    return bounds


def _run_stage(run: Run, index: int, first: int, last: int, checkpoint: dict[str, Any] | None) -> None:
    """Stage ``index`` (epochs ``first + 1`` to ``last``): freeze its groups, a fresh optimizer and scheduler,
    then its epochs not yet done; ``checkpoint`` is the resumed run's, when this is the first stage to run."""
    exp, state, ctx = run.exp, run.state, run.ctx
    stages = exp.resolved_stages()
    groups, trained = freeze_for_stage(state.model, stages[index].train, run.head)
    opt_cfg, sched_cfg = exp.stage_optimizer(index), exp.stage_scheduler(index)
    state.optimizer = build_optimizer(opt_cfg, optimizer_param_groups(groups, trained, opt_cfg))
    steps_per_epoch = math.ceil(len(run.train_loader) / exp.grad_accumulation)
    monitor = run.selection.monitors[index]
    state.scheduler = build_scheduler(sched_cfg, state.optimizer, stages[index].epochs, steps_per_epoch,
                                      run.selection.plateau_mode(index, exp))
    if checkpoint is not None:
        state.restore_stage(checkpoint, run.run_dir / "last.pt", index, ctx.rank)
    wrapped = state.model
    if ctx.distributed:
        wrapped = DistributedDataParallel(state.model,
                                          device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    loop = TrainLoop(model=state.model, loss_fn=run.loss_fn, optimizer=state.optimizer, device=ctx.device,
                     scheduler=state.scheduler, scaler=state.scaler, ema=state.ema, autocast=run.autocast,
                     channels_last=exp.channels_last, grad_accumulation=exp.grad_accumulation,
                     grad_clip_norm=exp.grad_clip_norm, nonfinite_loss=exp.nonfinite_loss, ctx=ctx, wrapped=wrapped)
    if len(stages) > 1:
        run.log(f"stage {index + 1}/{len(stages)}: epochs {first + 1}-{last}, training {', '.join(trained)}")
    for epoch in range(max(first, state.epoch) + 1, last + 1):
        _run_epoch(run, loop, index, epoch, monitor, evaluated=epoch % exp.eval_every == 0 or epoch == last)
        if state.stopped_early:
            break


def _nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``module`` holding inf or nan."""
    return [name for name, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]


def _run_epoch(run: Run, loop: TrainLoop, index: int, epoch: int, monitor: str | None, evaluated: bool) -> None:
    """Train one epoch, stop on weights or a validation loss gone non-finite, validate when the epoch is
    ``evaluated`` (``eval_every``), then :func:`_end_epoch`."""
    exp, state, ctx = run.exp, run.state, run.ctx
    started = time.perf_counter()
    if hasattr(run.train_loader.sampler, "set_epoch"):
        run.train_loader.sampler.set_epoch(epoch)
    run.reweighting.start_epoch(epoch)
    desc = f"epoch {epoch}/{exp.epochs}"
    tr = loop.train_epoch(run.train_loader, run.metrics, f"{desc} train")
    eval_model = state.ema.module if state.ema is not None else state.model
    broadcast_buffers(ctx, state.model)
    if state.ema is not None:
        broadcast_buffers(ctx, state.ema.module)
    kept = f"last.pt keeps epoch {state.epoch}" if state.epoch else "no checkpoint was written"
    diverged = _nonfinite_tensors(state.model) + (_nonfinite_tensors(state.ema.module) if state.ema is not None
                                                   else [])
    if diverged:  # skipping steps cannot undo this: stop before the epoch is saved
        raise UserError(
            f"{desc}: the weights became non-finite (inf or nan in {diverged[0]}"
            + (f" and {len(diverged) - 1} more tensors" if len(diverged) > 1 else "")
            + f") after a train loss of {tr.loss:.3g}; stopped, {kept}; "
            "lower optimizer.lr or set grad_clip_norm"
        )
    if not evaluated:
        _end_epoch(run, loop, index, epoch, monitor, tr, None, None, eval_model, started)
        return
    va = evaluate(eval_model, run.val_loader, run.loss_fn, run.metrics, ctx.device, f"{desc} val", run.autocast,
                  exp.channels_last, ctx)
    if not math.isfinite(va.loss) and exp.nonfinite_loss == "stop":
        raise UserError(f"{desc}: val loss became {va.loss} (the model diverged); stopped, {kept}; "
                        "lower optimizer.lr, set grad_clip_norm, or set nonfinite_loss: skip")
    ho = None
    if run.holdout_loader is not None:
        ho = evaluate(eval_model, run.holdout_loader, run.loss_fn, run.metrics, ctx.device, f"{desc} holdout",
                      run.autocast, exp.channels_last, ctx)
    _end_epoch(run, loop, index, epoch, monitor, tr, va, ho, eval_model, started)


def _epoch_row(run: Run, epoch: int, index: int, tr: EpochResult, va: EpochResult | None, ho: EpochResult | None
               ) -> dict[str, Any]:
    """The epoch's metrics.csv row (without its ``seconds``); ``va`` / ``ho``: the evaluated and held-out splits',
    when evaluated (None: an epoch ``eval_every`` skips)."""
    main = run.main
    row = {"epoch": epoch, "stage": index + 1, "lr": run.state.optimizer.param_groups[0]["lr"],
           "train_loss": tr.loss, f"train_{main}": tr.metrics[main]}
    if va is not None:
        row.update({"val_loss": va.loss, **flat_metrics("val_", va.metrics)})
    if ho is not None:
        row.update({"holdout_loss": ho.loss, **flat_metrics("holdout_", ho.metrics)})
    if run.exp.nonfinite_loss == "skip":
        row["skipped_steps"] = tr.skipped_steps
    return row


def _end_epoch(run: Run, loop: TrainLoop, index: int, epoch: int, monitor: str | None, tr: EpochResult,
               va: EpochResult | None, ho: EpochResult | None, eval_model: nn.Module, started: float) -> None:
    """What happens at the end of an epoch: long-tail shot accuracies, the metrics row, then, on an evaluated
    epoch (``va``), the plateau scheduler's step, the best epoch and early stopping; then metrics.csv, last.pt and
    best.pt when due, trackers, log line."""
    exp, state, ctx = run.exp, run.state, run.ctx
    for result in [r for r in (va, ho) if r is not None and exp.task == "classification" and "recall" in r.metrics]:
        result.metrics.update(shot_accuracies(result.metrics["recall"], run.data.class_counts))
    row = _epoch_row(run, epoch, index, tr, va, ho)
    best = None
    if va is not None:
        state.final_cm = va.metrics.get("confusion_matrix")  # none for sigmoid (binary / multi-label) outputs
        if state.scheduler is not None and not loop.step_scheduler and monitor is not None:
            state.scheduler.step(row[monitor])
        best = state.record_best(epoch, row, state.final_cm, run.main, eval_model, run.selection.chosen_on)
        state.record_stopping(row, exp.early_stopping.patience if exp.early_stopping is not None else 0)
    row["seconds"] = time.perf_counter() - started
    state.rows.append(row)
    state.epoch, state.stage = epoch, index
    due = run.checkpoints.is_due(epoch, state.stopped_early)
    last = state.checkpoint(gather_objects(ctx, rng_state(state.generators))) if due else None
    best = run.checkpoints.best_to_write(best, due)
    run_on_main(ctx, lambda: write_epoch(run.run_dir, state.rows, last, best))
    run.trackers.log_epoch(epoch, row)
    split = evaluated_split(exp.data)
    run.log(f"epoch {epoch}/{exp.epochs}: train loss {tr.loss:.4f}"
            + (f", {split} loss {va.loss:.4f}, {split} {run.main} {va.metrics[run.main]:.4f}" if va is not None
               else f" (evaluated every {exp.eval_every} epochs)")
            + (f", holdout {run.main} {ho.metrics[run.main]:.4f}" if ho is not None else "")
            + (f", {tr.skipped_steps} non-finite steps skipped" if tr.skipped_steps else "")
            + f" ({row['seconds']:.1f}s)")
    if run.on_epoch_end is not None:
        run.on_epoch_end(epoch)
    if state.stopped_early:
        run.log(f"early stopping: {state.stopper.name} has not improved for {state.stopper.bad_epochs} epochs")


def _summarise(run: Run) -> dict[str, Any]:
    """The run's summary, written to summary.json with the best epoch's confusion-matrix plot."""
    exp, state, data = run.exp, run.state, run.data
    summary = {
        "name": exp.name,
        "run_dir": str(run.run_dir),
        "task": exp.task,
        "target": data.target,
        "main_metric": run.main,
        "best_metric": run.selection.best,
        "selected_on": run.selection.chosen_on,
        "best": state.best,
        "final": {k: v for k, v in state.rows[-1].items() if k.startswith(("val_", "holdout_"))},
        "best_confusion_matrix": state.best_cm,
        "final_confusion_matrix": state.final_cm,
        "class_names": data.class_names,
        "class_counts": data.class_counts,
        "epochs": exp.epochs,
        "epochs_trained": state.epoch,
        "stopped_early": state.stopped_early,
        "seed": exp.seed,
        "world_size": run.ctx.world_size,
        "wall_seconds": time.perf_counter() - run.started,
    }

    def write_end_files() -> None:
        if state.best_cm is not None:
            from lossbench.plots import plot_confusion  # matplotlib: only a run's last step needs it

            runfolder.atomic_write_bytes(
                run.run_dir / "confusion_matrix.png",
                plot_confusion(torch.tensor(state.best_cm), data.class_names,
                               figure_title(exp, state.best["epoch"], run.selection.best)),
            )
        runfolder.write_json(run.run_dir / runfolder.SUMMARY, summary)

    run_on_main(run.ctx, write_end_files)
    return summary
