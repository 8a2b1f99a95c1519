import csv
import json
import re
import warnings

import numpy as np
import pytest
from cli_helper import run_cli

from lossbench.cli import main
from lossbench.errors import UserError
from lossbench.experiments.report import build_report
from lossbench.experiments.plan import plan_sweep
from lossbench.experiments.sweep import SweepLock

SWEEP = """
name: tiny
task: classification
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 24, val_per_class: 8}
model: {name: resnet20}
epochs: 1
batch_size: 16
grid:
  loss: [ce, focal(gamma=2), "focal(gamma=-1)"]
  seed: [0, 1]
report:
  baseline: {loss: ce}
"""


def test_plan_expands_the_product_with_unique_names(tiny_config):
    plan = plan_sweep(tiny_config(SWEEP))
    assert len(plan.cells) == 6
    assert len({c.name for c in plan.cells}) == 6
    assert {(c.values["loss"], c.experiment.seed) for c in plan.cells} == {
        (loss, s) for loss in ["ce", "focal(gamma=2)", "focal(gamma=-1)"] for s in (0, 1)
    }
    assert all(c.experiment.loss == c.values["loss"] for c in plan.cells)


@pytest.mark.parametrize("grid, message", [
    ("grid: {loss: ce}\n", "grid.loss: must be a non-empty list"),
    ("grid: {optimizer.lr: [-1.0]}\n", "optimizer.lr: Input should be greater than 0"),
    ("grid: {optimiser.lr: [0.1]}\n", "optimiser: unknown key"),
])
def test_bad_grid_fails_before_anything_runs(tiny_config, tmp_path, grid, message):
    with pytest.raises(UserError, match=message):
        plan_sweep(tiny_config("task: classification\noutput_dir: OUT\n" + grid))
    assert not (tmp_path / "runs").exists()


def test_lock_refuses_a_second_sweep(tmp_path):
    with SweepLock(tmp_path):
        with pytest.raises(UserError, match="another lossbench sweep"):
            with SweepLock(tmp_path):
                pass
    with SweepLock(tmp_path):
        pass


def test_sweep_runs_records_failures_reports_and_resumes(tiny_config, tmp_path, forked_cells):
    cfg = tiny_config(SWEEP)
    cmd = ["sweep", str(cfg), "--jobs", "2"]
    res = run_cli(cmd)
    assert res.code == 1, res.err  # one loss value is invalid: those cells fail, the rest finish
    sweep_dir = tmp_path / "runs" / "exp"
    rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert len(rows) == 6
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all("gamma must be >= 0" in r["error"] for r in failed)
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == 4 and all(0 <= float(r["best_balanced_accuracy"]) <= 1 for r in done)
    for r in done:  # each row carries its own run's best metrics
        best = json.loads((sweep_dir / r["cell"] / "summary.json").read_text())["best"]
        assert float(r["best_balanced_accuracy"]) == pytest.approx(best["val_balanced_accuracy"])
    page = (sweep_dir / "report.html").read_text()
    assert page.count("<img") >= 4 and "data:image/png;base64," in page
    assert "gamma must be &gt;= 0" in page and "baseline" in page
    md = (sweep_dir / "report.md").read_text()
    assert "| loss=focal(gamma=2) |" in md and "★" in md
    # two seeds: a difference and the seeds a verdict would need, but no interval, no p and no verdict
    row = next(line for line in md.splitlines() if line.startswith("| loss=focal(gamma=2) vs loss=ce | 2 |"))
    assert row.endswith("| – | – | too few seeds |") or "| – | – |" in row and row.endswith("| too few seeds |")
    assert not re.search(r"(?<!not )significant", md)  # no claim of significance from 2 seeds
    summary = json.loads((sweep_dir / done[0]["cell"] / "summary.json").read_text())
    final_cm = np.array(summary["final_confusion_matrix"])
    assert final_cm.sum() == 24  # the last epoch's matrix, which gives the final metrics
    assert np.mean(final_cm.diagonal() / final_cm.sum(1)) == pytest.approx(summary["final"]["val_balanced_accuracy"])
    with warnings.catch_warnings():  # a report with failed cells prints no NumPy or matplotlib warning
        warnings.simplefilter("error")
        build_report(sweep_dir)
    stamps = {r["cell"]: (sweep_dir / r["cell"] / "summary.json").stat().st_mtime_ns for r in done}
    res = run_cli(cmd)
    assert "4 already done, 2 to run" in res.out
    for cell, stamp in stamps.items():
        assert (sweep_dir / cell / "summary.json").stat().st_mtime_ns == stamp


def test_report_epoch_must_be_best_or_final(tiny_config):
    with pytest.raises(UserError, match="report.epoch: 'last'; use best"):
        plan_sweep(tiny_config(SWEEP.replace("  baseline: {loss: ce}\n", "  baseline: {loss: ce}\n  epoch: last\n")))
    plan = plan_sweep(tiny_config(SWEEP.replace("  baseline: {loss: ce}\n", "  baseline: {loss: ce}\n  epoch: final\n")))
    assert plan.report["tiny"]["epoch"] == "final"


def with_report(options: str, data: str = "") -> str:
    text = SWEEP.replace("  baseline: {loss: ce}\n", options)
    return text.replace("train_per_class: 24, val_per_class: 8", "train_per_class: 24, val_per_class: 8" + data)


@pytest.mark.parametrize("options, message", [
    ("  baseline: {loss: cee}\n", "report.baseline: loss=cee names no configuration of the grid; loss is one of ce, "),
    ("  baseline: {model.name: resnet18}\n", "report.baseline: 'model.name' is not a grid key of this document"),
    ("  metric: kappa\n", "report.metric: 'kappa' is not a metric of classification runs; choose one of "),
    ("  basline: {loss: ce}\n", "report.basline: unknown key; valid keys here: baseline, contrasts, epoch, margin, metric"),
])
def test_bad_report_options_fail_at_plan_time_in_one_line(tiny_config, tmp_path, capsys, options, message):
    config = tiny_config(with_report(options))
    assert main(["sweep", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lossbench: error: {config}: {message}") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_test_split_refuses_best_epoch_and_defaults_to_final(tiny_config):
    with pytest.raises(UserError, match=r"exp\.yaml: report\.epoch: best picks each run's best epoch on the test "
                                        r"split \(data\.eval_split: test\).*use report\.epoch: final$"):
        plan_sweep(tiny_config(with_report("  epoch: best\n", ", eval_split: test")))
    assert plan_sweep(tiny_config(with_report("", ", eval_split: test"))).report["tiny"] == {"epoch": "final"}
    assert plan_sweep(tiny_config(with_report(""))).report["tiny"] == {"epoch": "best"}


def test_an_unnamed_single_document_keeps_its_report_options(tiny_config):
    plan = plan_sweep(tiny_config(SWEEP.replace("name: tiny\n", "")))
    assert plan.cells[0].document == "exp"
    assert plan.report == {"exp": {"baseline": {"loss": "ce"}, "epoch": "best"}}


def test_interrupted_cell_is_continued_with_resume_and_a_changed_one_restarts(tiny_config, tmp_path, forked_cells):
    from lossbench.experiments.cells import resumable
    from lossbench.experiments.sweep import run_cell

    text = SWEEP.replace("epochs: 1", "epochs: 2").replace(
        '  loss: [ce, focal(gamma=2), "focal(gamma=-1)"]\n  seed: [0, 1]\n', "  seed: [0]\n").replace(
        "report:\n  baseline: {loss: ce}\n", "")
    plan = plan_sweep(tiny_config(text))
    (cell,) = plan.cells
    assert run_cell(cell, plan.sweep_dir, 1, None)[0] == "done"
    rows_before = (cell.run_dir / "metrics.csv").read_text().splitlines()
    final_cm = json.loads((cell.run_dir / "summary.json").read_text())["final_confusion_matrix"]
    assert final_cm is not None
    # as if killed after the last checkpoint but before the summary
    (cell.run_dir / "summary.json").unlink()
    assert resumable(cell)
    status, error, _ = run_cell(cell, plan.sweep_dir, 1, None)
    assert (status, error) == ("done", "")
    log = (plan.sweep_dir / "logs" / f"{cell.name}.log").read_text()
    assert "train --resume" in log and "starting the cell again" not in log
    assert (cell.run_dir / "metrics.csv").read_text().splitlines() == rows_before  # no epoch trained twice
    assert json.loads((cell.run_dir / "summary.json").read_text())["final_confusion_matrix"] == final_cm
    # the sweep config changed (3 epochs): the old run is not continued but replaced
    (cell.run_dir / "summary.json").unlink()
    (changed,) = plan_sweep(tiny_config(text.replace("epochs: 2", "epochs: 3"))).cells
    assert changed.run_dir == cell.run_dir and not resumable(changed)
    # a cell that failed on its own (not killed) is retried from the start
    (cell.run_dir / "error.txt").write_text("loss became nan (epoch 1, batch 2); stopped\n")
    assert not resumable(cell)


def test_sweep_cells_share_the_decode_cache_for_file_sources(tiny_config):
    text = ("task: classification\noutput_dir: OUT\ndata: {source: folder, root: /nowhere}\n"
            "grid: {seed: [0]}\n---\nname: b\ntask: classification\noutput_dir: OUT\n"
            "data: {source: folder, root: /nowhere, cache: false}\ngrid: {seed: [0]}\n")
    first, second = plan_sweep(tiny_config(text)).cells
    assert first.experiment.data.cache is True and second.experiment.data.cache is False
    assert plan_sweep(tiny_config(SWEEP)).cells[0].experiment.data.cache is False  # synthetic: nothing to decode
