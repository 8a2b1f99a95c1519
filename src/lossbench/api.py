"""The Python API: what ``import lossbench`` offers a timm / smp user (see README, "Use from Python").

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
from collections.abc import Callable, Mapping, Sequence
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

__all__ = ["SweepResult", "TrainedRun", "build_loss", "build_model", "load_run", "sweep", "train"]


def _overrides(values: dict[str, Any]) -> list[str]:
    """Keyword overrides as ``--set`` items (``a__b=1`` -> ``a.b=1``)."""
    return [override_text(key.replace("__", "."), value) for key, value in values.items()]


def build_loss(spec: str | dict[str, Any] | list[Any], num_classes: int, task: str = "classification",
               class_counts: Sequence[int] | None = None, ignore_index: int = IGNORE_INDEX) -> nn.Module:
    """A loss module from a spec (``"focal(gamma=2) + 0.5 * dice"``), called as ``loss(logits, target)``.

    ``class_counts`` (training images, or pixels, per class) feed the losses
    that re-weight by class frequency (cb, ldam, logit_adjusted, ...).
    """
    from lossbench.losses import build_loss as build, refuse_targets_out_of_range

    loss = build(spec, num_classes, task, class_counts, ignore_index, where="build_loss")
    return refuse_targets_out_of_range(loss, num_classes, ignore_index)


def build_model(name: str, num_classes: int, task: str | None = None, **options: Any) -> nn.Module:
    """A registered network (``lossbench list models``) with logits for ``num_classes``.

    ``options`` are ``model:`` config keys (``encoder="resnet34"``,
    ``in_channels=1``, ``pretrained="imagenet"``...); ``task`` defaults to the
    model's own (a U-Net segments, a ResNet classifies).
    """
    from lossbench.config import describe_validation_error
    from lossbench.models import MODELS, build_model as build, registry_key
    from pydantic import ValidationError

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

    def load(self, checkpoint: str = "best", device: str = "cpu") -> LoadedRun:
        """The run's network with its ``best`` (or ``last``) weights, ready to predict."""
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
    """Train one experiment (a config file, a mapping or an :class:`Experiment`) as ``lossbench train`` does.

    ``overrides`` change config keys first: ``train("recipes/example.yaml",
    epochs=1, optimizer__lr=0.01)``. A file holding several experiments is
    an error; train each, or sweep them.
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


def sweep(config: str | Path, *, jobs: int = 1, out: str | Path | None = None, log: Callable[[str], Any] = print,
          rerun_changed: bool = False, **overrides: Any) -> SweepResult:
    """Run every cell of a sweep config's ``grid:`` (each in its own process) and write the report.

    ``overrides`` change config keys of every document first, e.g.
    ``sweep("recipes/quickstart.yaml", epochs=1, jobs=2)``; finished cells
    of an earlier sweep into the same folder are kept when they recorded the
    same config and data. A finished cell trained on another config or other
    data is a UserError, unless ``rerun_changed`` trains it again.
    """
    from lossbench.experiments.plan import plan_sweep
    from lossbench.experiments.report import build_report
    from lossbench.experiments.sweep import run_sweep

    plan = plan_sweep(config, _overrides(overrides), out)
    rows = run_sweep(plan, jobs=jobs, log=log, rerun_changed=rerun_changed)
    html_path, _ = build_report(plan.sweep_dir)
    return SweepResult(plan.sweep_dir, rows, html_path)


def load_run(path: str | Path, checkpoint: str = "best", device: str = "cpu") -> LoadedRun:
    """A finished run's network with its weights; ``.predict(images or tensors)`` gives classes or masks."""
    from lossbench.engine.inference import load_run as load

    return load(path, checkpoint, device)
