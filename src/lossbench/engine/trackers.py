"""Experiment trackers: TensorBoard event files and MLflow runs, next to the run folder.

``tracking: [tensorboard, mlflow]`` in a config turns them on (both need the
``lossbench[tracking]`` extra). The run folder stays the record; trackers get
a copy for browsing:

- ``tensorboard``: event files in ``<run>/tensorboard/``, one scalar per
  metrics.csv column per epoch, and the resolved config as text.
- ``mlflow``: one MLflow run per lossbench run in ``tracking_uri`` (default
  ``sqlite:///<output_dir>/mlflow.db``, artifacts in ``<output_dir>/mlartifacts``),
  holding the config as params, every metrics.csv column per epoch, and the
  run folder's config, metrics, summary and confusion matrix as artifacts.

A resumed run continues the same TensorBoard log (events after the
checkpoint's epoch are dropped) and the same MLflow run (its id is kept in
``<run>/mlflow_run_id``). Only rank 0 of a DDP job writes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lossbench.config import RECORDED_KEYS, Experiment
from lossbench.errors import UserError

MLFLOW_ID_FILE = "mlflow_run_id"
ARTIFACTS = ("config.yaml", "metrics.csv", "summary.json", "confusion_matrix.png", "class_counts.json")


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is not None:
        out[prefix] = str(value)[:6000]  # MLflow's limit on a parameter value


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardTracker:
    def __init__(self, exp: Experiment, run_dir: Path, resumed_epoch: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("tracking: tensorboard needs the tensorboard package; "
                            "pip install 'lossbench[tracking]' or remove it from tracking") from None
        # purge_step drops events a killed run logged after its last checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"),
                                    purge_step=resumed_epoch + 1 if resumed_epoch else None)
        if not resumed_epoch:
            from lossbench.config import yaml_io

            text = yaml_io.dump(exp.model_dump(mode="json"), sort_keys=False)
            self.writer.add_text("config", "```\n" + text + "\n```", 0)

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def finish(self, run_dir: Path, failed: bool) -> None:
        self.writer.close()


class MlflowTracker:
    def __init__(self, exp: Experiment, run_dir: Path, resumed_epoch: int) -> None:
        try:
            import mlflow
        except ImportError:
            raise UserError("tracking: mlflow needs the mlflow package; "
                            "pip install 'lossbench[tracking]' or remove it from tracking") from None
        self.mlflow = mlflow
        out = Path(exp.output_dir).resolve()
        uri = exp.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
        try:
            if uri.startswith("sqlite:///"):
                Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
            name = exp.tracking_experiment
            found = self.client.get_experiment_by_name(name)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(
                name, artifact_location=(out / "mlartifacts").as_uri())
            id_file = run_dir / MLFLOW_ID_FILE
            run_id = id_file.read_text(encoding="utf-8").strip() if resumed_epoch and id_file.is_file() else None
            if run_id is None:
                run = self.client.create_run(experiment_id, run_name=exp.name,
                                             tags={"lossbench.run_dir": str(run_dir.resolve()),
                                                   "lossbench.task": exp.task})
                run_id = run.info.run_id
                params: dict[str, str] = {}
                _flatten("", exp.model_dump(mode="json", exclude=set(RECORDED_KEYS)), params)
                items = list(params.items())
                for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                    self.client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in items[i:i + 100]])
                id_file.write_text(run_id + "\n", encoding="utf-8")
            else:
                self.client.update_run(run_id, status="RUNNING")
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure is the user's URI / folder to fix
            raise UserError(f"tracking_uri {uri}: MLflow could not open it ({exc.__class__.__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); check the URI or "
                            f"remove mlflow from tracking") from None
        self.run_id = run_id

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [self.mlflow.entities.Metric(k.replace("@", "_at_"), v, now, epoch) for k, v in _scalars(row).items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def finish(self, run_dir: Path, failed: bool) -> None:
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


class Trackers:
    """The config's trackers; a no-op when ``tracking`` is empty or on ranks other than 0."""

    def __init__(self, exp: Experiment, run_dir: Path, enabled: bool = True) -> None:
        self.exp, self.run_dir, self.enabled = exp, run_dir, enabled
        self.items: list[Any] = []

    def open(self, resumed_epoch: int = 0) -> None:
        """Start (or, after ``resumed_epoch`` epochs, continue) each tracker; the run folder exists by now."""
        if self.enabled:
            for name in self.exp.tracking:
                self.items.append(TRACKERS[name](self.exp, self.run_dir, resumed_epoch))

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        for tracker in self.items:
            tracker.log_epoch(epoch, row)

    def finish(self, failed: bool = False) -> None:
        items, self.items = self.items, []
        for tracker in items:
            try:
                tracker.finish(self.run_dir, failed)
            except Exception:  # noqa: BLE001 - a tracker failing at the end must not hide the run's own error
                if not failed:
                    raise
