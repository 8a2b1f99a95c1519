"""The table of metric facts (lossbench.metrics.METRICS) walked through its users: the monitor, best-epoch selection."""

import csv
import math

import pytest
import yaml

from lossbench.config import validate_experiment
from lossbench.engine import train
from lossbench.engine.monitor import MetricMonitor, metric_columns, metric_mode, metric_names, resolve_metric
from lossbench.errors import UserError
from lossbench.metrics import METRICS, TASKS, metric_facts, task_metrics

RUN = """
name: NAME
task: TASK
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 12, val_per_class: 6, imbalance_ratio: 2}
model: MODEL
optimizer: {name: adam, lr: 0.01}
epochs: 3
batch_size: 12
"""
MODELS = {"classification": "{name: resnet20}", "segmentation": "{name: unet, encoder: resnet18, encoder_depth: 3}"}
WATCHED = {"classification": "ece", "segmentation": "loss"}


def run_rows(tmp_path, task: str, best_metric: str) -> tuple[list[dict[str, float]], dict]:
    text = RUN.replace("NAME", task).replace("TASK", task).replace("MODEL", MODELS[task])
    raw = yaml.safe_load(text.replace("OUT", str(tmp_path / "runs")))
    summary = train(validate_experiment({**raw, "best_metric": best_metric}, "exp.yaml"), log=lambda *_: None)
    with (tmp_path / "runs" / task / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)], summary


def test_unknown_metric_names_the_known_ones():
    assert metric_facts("ece").higher_is_better is False
    with pytest.raises(UserError, match=r"unknown metric 'eec'; known metrics: balanced_accuracy, .*\bece\b"):
        metric_facts("eec")


@pytest.mark.parametrize("task", TASKS)
def test_every_metric_of_a_task_is_watchable_in_its_direction(task):
    names = metric_names(task, 3)
    for facts in task_metrics(task):
        for column in metric_columns(facts, "val_", 3):
            bare = column.removeprefix("val_")
            assert resolve_metric(bare, names, "best_metric") == column
            mode = metric_mode(column, "auto")
            assert mode == ("max" if facts.higher_is_better else "min"), column
            worse, better = (0.2, 0.7) if facts.higher_is_better else (0.7, 0.2)
            monitor = MetricMonitor(column, mode)
            assert [monitor.update(v) for v in (worse, better, worse)] == [True, True, False]
    others = [m.name for m in METRICS if task not in m.tasks and not m.per_class]
    for name in others:
        with pytest.raises(UserError, match=f"best_metric: unknown metric '{name}'"):
            resolve_metric(name, names, "best_metric")


@pytest.mark.parametrize("task", TASKS)
def test_runs_record_the_table_and_choose_the_best_epoch_by_it(tmp_path, task):
    """metrics.csv has exactly the table's columns; best_metric: ece (classification) and loss (segmentation) are minimised."""
    rows, summary = run_rows(tmp_path, task, WATCHED[task])
    recorded = {k for k in rows[0] if k.startswith("val_")}
    assert recorded == {c for c in metric_names(task, 3) if c.startswith("val_")}
    column = f"val_{WATCHED[task]}"
    values = [row[column] for row in rows]
    assert not any(math.isnan(v) for v in values) and len(set(values)) > 1, values
    pick = min if not metric_facts(WATCHED[task]).higher_is_better else max
    best_epoch = int(rows[values.index(pick(values))]["epoch"])
    assert summary["best_metric"] == column
    assert summary["best"]["epoch"] == best_epoch and summary["best"][column] == pick(values)


SWEEP = """\
name: facts
task: TASK
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 4}
model: MODEL
epochs: 1
grid: {seed: [0, 1]}
tune: {trials: 2, metric: METRIC, space: {optimizer.lr: {type: float, low: 0.001, high: 0.1, log: true}}}
"""


@pytest.mark.parametrize("task", TASKS)
def test_the_report_and_tuning_read_the_table(tiny_config, task):
    """Every metric a run records may be the report's metric and the tuned one, each in the table's direction and
    range; a metric of the other task is refused by both."""
    from lossbench.experiments.plan import plan_sweep
    from lossbench.experiments.report_metrics import lower_is_better, metric_range
    from lossbench.experiments.schema import validate_report_options
    from lossbench.experiments.tune_plan import resolve_tuning

    def tuned(name: str):
        text = SWEEP.replace("TASK", task).replace("MODEL", MODELS[task]).replace("METRIC", name)
        return resolve_tuning(plan_sweep(tiny_config(text)), "facts")

    for facts in task_metrics(task):
        name = f"{facts.name}_1" if facts.per_class else facts.name
        assert validate_report_options({"metric": name}, "exp.yaml", task=task, grid={}).metric == name
        assert lower_is_better(name) is not facts.higher_is_better
        assert metric_range(name) == facts.value_range
        tuning = tuned(name)
        assert tuning.metric == f"val_{name}"
        assert tuning.direction == ("maximize" if facts.higher_is_better else "minimize"), name
    for facts in (m for m in METRICS if task not in m.tasks and not m.per_class):
        with pytest.raises(UserError, match=f"report.metric: '{facts.name}' is not a metric of {task} runs"):
            validate_report_options({"metric": facts.name}, "exp.yaml", task=task, grid={})
        with pytest.raises(UserError, match=f"tune.metric: unknown metric '{facts.name}'"):
            tuned(facts.name)
