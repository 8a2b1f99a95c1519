"""The Python API: what ``import lossbench`` offers a timm / smp user (docs/getting-started.md, "From Python").

Each function is a thin door to the layer that does the work: losses and
models come from their registries, ``train`` and ``sweep`` run exactly what
``lossbench train`` / ``lossbench sweep`` run, and ``load_run`` gives a
finished run's network with a ``predict`` that decodes images the way the
run's validation data was decoded. Keyword overrides are config keys, nested
with ``__`` (``optimizer__lr=0.01`` is ``--set optimizer.lr=0.01``).
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.config import (
    RECORDED_KEYS, Experiment, ModelConfig, apply_overrides, load_experiment, override_text, validate_experiment,
)
from lossbench.contract import IGNORE_INDEX
from lossbench.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from lossbench.engine.inference import LoadedRun

__all__ = ["SweepResult", "TrainedRun", "build_loss", "build_model", "data_experiments", "data_stats", "load_run",
           "run_sweep_config", "sweep", "train", "train_runs"]


def _overrides(values: dict[str, Any]) -> list[str]:
    """Keyword overrides as ``--set`` items (``a__b=1`` -> ``a.b=1``)."""
    return [override_text(key.replace("__", "."), value) for key, value in values.items()]


def build_loss(spec: str | dict[str, Any] | list[Any], num_classes: int, task: str = "classification",
               class_counts: Sequence[int] | None = None, ignore_index: int = IGNORE_INDEX) -> nn.Module:
    """A loss module from a spec (``"focal(gamma=2) + 0.5 * dice"``), called as ``loss(logits, target)``.

    Args:
        spec: a loss spec string, a mapping ``{name: focal, gamma: 2}`` or a list of them.
        num_classes: classes of the logits (channels for segmentation).
        task: ``"classification"`` or ``"segmentation"`` (some defaults differ, e.g. ``dice``'s).
        class_counts: training images (or pixels) per class, for the losses
            that re-weight by class frequency (cb, ldam, logit_adjusted, ...).
        ignore_index: target value that counts in no loss.

    Returns:
        The loss, an ``nn.Module``; ``loss(logits, target)`` gives a scalar tensor.

    Raises:
        UserError: an unknown loss or parameter, or a bad value, in one line.
    """
    from lossbench.losses import build_loss as build, refuse_targets_out_of_range
    from lossbench.plugins import load_entry_points

    load_entry_points()  # installed plugin packages' losses
    loss = build(spec, num_classes, task, class_counts, ignore_index, where="build_loss")
    return refuse_targets_out_of_range(loss, num_classes, ignore_index)


def build_model(name: str, num_classes: int, task: str | None = None, **options: Any) -> nn.Module:
    """A registered network (``lossbench list models``) with logits for ``num_classes``.

    Args:
        name: a registered model (``resnet18``, ``unet``, ``timm:<name>``, ...).
        num_classes: classes of the logits.
        task: defaults to the model's own (a U-Net segments, a ResNet classifies).
        **options: ``model:`` config keys (``encoder="resnet34"``,
            ``in_channels=1``, ``pretrained="imagenet"``, ...).

    Returns:
        An ``nn.Module`` giving N x K logits (classification) or N x K x H x W (segmentation).

    Raises:
        UserError: an unknown model or option, in one line.
    """
    from lossbench.config import describe_validation_error
    from lossbench.models import MODELS, build_model as build, registry_key
    from lossbench.plugins import load_entry_points
    from pydantic import ValidationError

    load_entry_points()  # installed plugin packages' models
    try:
        cfg = ModelConfig(name=name, **options)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, "build_model", ModelConfig)) from None
    return build(cfg, task or MODELS.get(registry_key(name)).task, num_classes)


@dataclass
class TrainedRun:
    """A finished training run: its folder, its summary.json and its metrics.csv rows (one per epoch)."""

    folder: Path
    summary: dict[str, Any]
    metrics: list[dict[str, float]]
    experiment: Experiment

    def load(self, checkpoint: str = "auto", device: str = "cpu") -> LoadedRun:
        """The run's network with its ``auto`` (best.pt unless chosen on the test split), ``best`` or ``last``
        weights, ready to predict."""
        return load_run(self.folder, checkpoint, device)


def _experiment(config: str | Path | dict[str, Any] | Experiment, overrides: list[str]) -> Experiment:
    if isinstance(config, (str, Path)):
        return load_experiment(config, overrides)
    if not isinstance(config, (Mapping, Experiment)):
        raise UserError(f"train: config must be a config file's path, a mapping of config keys or an Experiment, "
                        f"got {type(config).__name__} {config!r:.40}")
    raw = (config.model_dump(mode="json", exclude=set(RECORDED_KEYS)) if isinstance(config, Experiment)
           else copy.deepcopy(dict(config)))
    return validate_experiment(apply_overrides(raw, overrides), "train")


def _read_metrics(path: Path) -> list[dict[str, float]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f)]


def train(config: str | Path | dict[str, Any] | Experiment, *, overwrite: bool = False,
          log: Callable[[str], Any] = print, **overrides: Any) -> TrainedRun:
    """Train one experiment as ``lossbench train`` does.

    Args:
        config: a config file, a mapping or an :class:`~lossbench.config.Experiment`.
            A file holding several experiments is an error; train each, or sweep them.
        overwrite: replace an existing run folder of the same name.
        log: where the progress lines go.
        **overrides: config keys to change first, nested with ``__``:
            ``train("recipes/example.yaml", epochs=1, optimizer__lr=0.01)``.

    Returns:
        The finished run's folder, summary and per-epoch metrics.

    Raises:
        UserError: a bad config, missing data, or a run folder that exists.
    """
    from lossbench.engine import train as run_training

    exp = _experiment(config, _overrides(overrides))
    summary = run_training(exp, overwrite=overwrite, log=log)
    folder = Path(summary["run_dir"])
    return TrainedRun(folder, summary, _read_metrics(folder / "metrics.csv"), exp)


@dataclass
class SweepResult:
    """A finished sweep: its folder, its results.csv rows (one per cell) and its report.html."""

    folder: Path
    results: list[dict[str, Any]]
    report: Path


def sweep(config: str | Path, *, backend: str = "local", address: str | None = None, jobs: int | None = None,
          out: str | Path | None = None, log: Callable[[str], Any] = print, rerun_changed: bool = False,
          **overrides: Any) -> SweepResult:
    """Run a sweep config as ``lossbench sweep`` does: its ``tune:`` studies first, then every cell of its
    ``grid:`` (each in its own process) on ``backend`` (``local`` or ``ray``, at ``address``), then the report.

    Finished cells of an earlier sweep into the same folder are kept when
    they recorded the same config and data.

    Args:
        config: a sweep config file.
        backend: ``"local"`` (processes on this machine) or ``"ray"`` (a Ray cluster).
        address: the Ray cluster (``auto``, ``ray://HOST:PORT``); default ``RAY_ADDRESS`` or a local Ray.
        jobs: cells at a time (default: 1 locally; on Ray one per GPU, else per CPU, of the cluster).
        out: the sweep folder (default ``<output_dir>/<name>``).
        log: where the progress lines go.
        rerun_changed: train again the finished cells whose config or data changed
            (without it, such a cell is a UserError).
        **overrides: config keys of every document to change first, e.g.
            ``sweep("recipes/quickstart.yaml", epochs=1, jobs=2)``.

    Returns:
        The sweep folder, its results.csv rows and the report's path.
    """
    return run_sweep_config(config, _overrides(overrides), out=out, backend=backend, address=address, jobs=jobs,
                            rerun_changed=rerun_changed, log=log)


def run_sweep_config(config: str | Path, overrides: Sequence[str] = (), *, out: str | Path | None = None,
                     backend: str = "local", address: str | None = None, jobs: int | None = None,
                     rerun_changed: bool = False, log: Callable[[str], Any] = print) -> SweepResult:
    """``lossbench sweep CONFIG [--set KEY=VALUE ...]``: plan (plugins loaded, every cell and study checked
    before anything runs), tune, run the cells on the backend, write the report; ``overrides`` as ``--set``."""
    from lossbench.experiments.backends import open_backend
    from lossbench.experiments.plan import plan_sweep
    from lossbench.experiments.report import build_report
    from lossbench.experiments.sweep import run_sweep

    start = time.perf_counter()
    plan = plan_sweep(config, list(overrides), out)
    if plan.tune:  # a tune: section: its mistakes are reported before Ray or any trial starts
        from lossbench.experiments.tune import run_tuned_sweep
        from lossbench.experiments.tune_plan import plan_tuning

        studies = plan_tuning(plan)
    with open_backend(backend, address, jobs) as runner:
        rows = (run_tuned_sweep(plan, studies, runner, log=log, rerun_changed=rerun_changed) if plan.tune
                else run_sweep(plan, log=log, backend=runner, rerun_changed=rerun_changed))
    html_path, _ = build_report(plan.sweep_dir)
    log(f"report: {html_path}")
    log(f"wall time: {time.perf_counter() - start:.1f}s")
    return SweepResult(plan.sweep_dir, rows, html_path)


def train_runs(config: str | Path | None = None, *, resume: str | Path | None = None, overrides: Sequence[str] = (),
               overwrite: bool = False, log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """``lossbench train``: every experiment of ``config`` (under torchrun data-parallel, one process group
    around them all), or the run in ``resume`` continued; their summaries. Rank 0 logs a line per run."""
    from lossbench.config import load_experiments

    if (config is None) == (resume is None):
        raise UserError("train: give either a CONFIG file or --resume RUN_DIR (not both)")
    if resume is not None and (overrides or overwrite):
        raise UserError("train --resume continues a run with its recorded config; drop --set / --overwrite")
    # a mistake in the config is reported before torch and the engine are imported (seconds sooner)
    experiments = load_experiments(config, list(overrides)) if resume is None else []

    from lossbench.engine import resume as resume_run, train as train_one
    from lossbench.engine.distributed import is_main_process, session
    from lossbench.engine.runfolder import is_finished
    from lossbench.engine.selection import best_line

    is_main = is_main_process()  # under torchrun only rank 0 reports
    start = time.perf_counter()
    if resume is not None:
        if is_finished(resume):  # resume says so in one line and changes nothing
            return [resume_run(resume, log)]
        summaries = [resume_run(resume, log)]
    else:
        with session(experiments[0].device):
            summaries = [train_one(exp, overwrite=overwrite, log=log) for exp in experiments]
    for summary in summaries if is_main else []:
        log(best_line(summary))
    if is_main:
        log(f"wall time: {time.perf_counter() - start:.1f}s for {len(summaries)} run(s)")
    return summaries


def load_run(path: str | Path, checkpoint: str = "auto", device: str = "cpu") -> LoadedRun:
    """A finished run's network with its weights; ``.predict(images or tensors)`` gives classes or masks.

    Args:
        path: the run folder.
        checkpoint: ``"auto"`` (best.pt, unless it was chosen on the test split: then last.pt),
            ``"best"`` (best.pt) or ``"last"`` (last.pt).
        device: where the network runs.

    Returns:
        The loaded run, in eval mode.
    """
    from lossbench.engine.inference import load_run as load

    return load(path, checkpoint, device)


def data_stats(config: str | Path, overrides: Sequence[str] = (), out: str | Path = ".") -> Iterator[str]:
    """``lossbench data stats``: the lines of each distinct data section's statistics, as each is ready; writes
    ``<out>/<name>_class_distribution.png`` for each."""
    from lossbench.data.stats import data_stats as stats_of

    for exp in data_experiments(config, overrides):
        yield from stats_of(exp, Path(out) / f"{exp.name}_class_distribution.png")


def data_experiments(config: str | Path, overrides: Sequence[str] = ()) -> list[Experiment]:
    """One experiment per distinct data section of CONFIG, named for it.

    A grid does not change the data unless it sets ``data.*`` keys (or what
    the data depends on: the task, the model's input channels); the grid is
    expanded as a sweep expands it, and the first cell of each distinct data
    section stands for it, named by its document, plus the grid values that
    tell its sections apart when the document has several.
    """
    import json
    import re

    from lossbench.config import load_experiments, read_documents
    from lossbench.data import resolve_config
    from lossbench.plugins import load_config_plugins

    load_config_plugins(config)  # the plugins: a source may be one of (a sweep's plan loads each cell's too)
    if not any("grid" in doc for doc in read_documents(Path(config))):
        return load_experiments(config, list(overrides))
    from lossbench.experiments.plan import plan_sweep

    firsts: dict[tuple[str, str], object] = {}
    for cell in plan_sweep(config, list(overrides)).cells:
        exp = cell.experiment
        data = json.dumps([exp.task, resolve_config(exp).model_dump(mode="json")], sort_keys=True, default=str)
        firsts.setdefault((cell.document, data), cell)
    experiments = []
    for (document, _), cell in firsts.items():
        siblings = [c.values for (d, _), c in firsts.items() if d == document]
        differing = [k for k in cell.values if len({json.dumps(v.get(k), default=str) for v in siblings}) > 1]
        name = document
        if differing:
            name += "--" + re.sub(r"[^A-Za-z0-9.=-]+", "_", "__".join(f"{k.split('.')[-1]}-{cell.values[k]}"
                                                                       for k in differing))
        experiments.append(cell.experiment.model_copy(update={"name": name}))
    return experiments

