"""TensorBoard and MLflow trackers, for real: the stores are read back with each tool's own reader."""

import csv

import pytest

from lossbench.config import validate_experiment
from lossbench.engine import resume, train
from lossbench.errors import UserError

pytest.importorskip("tensorboard", reason="pip install 'lossbench[tracking]'")
pytest.importorskip("mlflow", reason="pip install 'lossbench[tracking]'")


class Crash(Exception):
    pass


def experiment(tmp_path, **extra):
    raw = {
        "name": "tracked", "task": "classification", "output_dir": str(tmp_path / "runs"), "epochs": 3,
        "batch_size": 16, "tracking": ["tensorboard", "mlflow"],
        "data": {"source": "synthetic", "num_classes": 3, "image_size": 8, "train_per_class": 16,
                 "val_per_class": 8},
        "model": {"name": "resnet20"},
        **extra,
    }
    return validate_experiment(raw, "test")


def metrics_csv(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_tensorboard_and_mlflow_hold_the_run_and_a_resume_continues_them(tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp = experiment(tmp_path)

    def crash_after_two(epoch):
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train(exp, log=lambda *_: None, on_epoch_end=crash_after_two)
    run_dir = exp.run_dir
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (crashed,) = client.search_runs([client.get_experiment_by_name("lossbench").experiment_id])
    assert crashed.info.status == "FAILED" and crashed.info.run_name == "tracked"

    resume(run_dir, log=lambda *_: None)
    rows = metrics_csv(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]

    (run,) = client.search_runs([client.get_experiment_by_name("lossbench").experiment_id])
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    assert run.data.params["loss"] == "ce" and run.data.params["data.num_classes"] == "3"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    history = sorted((m.step, m.value) for m in history)
    assert [s for s, _ in history] == [1, 2, 3]  # each epoch once: the resume did not log epoch 2 again
    assert [v for _, v in history] == pytest.approx([float(r["val_loss"]) for r in rows])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.csv", "summary.json", "confusion_matrix.png"} <= artifacts
    assert (tmp_path / "runs" / "mlartifacts").is_dir()

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("val_accuracy")
    assert [s.step for s in scalars] == [1, 2, 3]
    assert [s.value for s in scalars] == pytest.approx([float(r["val_accuracy"]) for r in rows])
    assert "config/text_summary" in events.Tags()["tensors"]


def test_bad_tracking_values_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"tracking\.0: Input should be 'tensorboard' or 'mlflow'"):
        experiment(tmp_path, tracking=["wandb"])
    exp = experiment(tmp_path, tracking=["mlflow"], tracking_uri="nosuchscheme://x", epochs=1)
    with pytest.raises(UserError, match="tracking_uri nosuchscheme://x: MLflow could not open it"):
        train(exp, log=lambda *_: None)
