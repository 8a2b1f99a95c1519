import csv
import json
import math

import pytest
from cli_helper import run_cli
from scipy import stats

from lossbench.errors import UserError
from lossbench.experiments.report import mean_ci, paired_comparison
from lossbench.experiments.sweep import SweepLock, plan_sweep

SWEEP = """
name: tiny
task: classification
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 16, train_per_class: 24, val_per_class: 8}
model: {name: resnet18}
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


def test_mean_ci_and_paired_test_match_scipy():
    x = [0.61, 0.64, 0.70]
    mean, std, half = mean_ci(x)
    lo, hi = stats.t.interval(0.95, 2, loc=sum(x) / 3, scale=stats.sem(x))
    assert mean == pytest.approx(sum(x) / 3) and half == pytest.approx((hi - lo) / 2)
    base = {0: 0.60, 1: 0.62, 2: 0.65}
    better = {0: 0.70, 1: 0.71, 2: 0.76}
    cmp = paired_comparison(base, better)
    assert cmp["p"] == pytest.approx(stats.ttest_rel(list(better.values()), list(base.values())).pvalue)
    assert cmp["verdict"] == "significant"
    two = paired_comparison({0: 0.60, 1: 0.62}, {0: 0.605, 1: 0.63})
    assert two["verdict"] == "not significant"
    assert paired_comparison({0: 0.6}, {0: 0.7})["verdict"].startswith("n/a")
    assert math.isnan(mean_ci([0.5])[1])


def test_sweep_runs_records_failures_reports_and_resumes(tiny_config, tmp_path):
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


def test_report_options_of_a_single_unnamed_document_are_keyed_by_its_cells_document(tiny_config):
    """Regression: without ``name:`` a one-document sweep keyed ``report:`` under '<stem>-0' while its cells were
    '<stem>', so the report silently ignored ``baseline`` and ``metric``."""
    plan = plan_sweep(tiny_config(SWEEP.replace("name: tiny\n", "")))
    assert {c.document for c in plan.cells} == {"exp"}
    assert plan.report == {"exp": {"baseline": {"loss": "ce"}}}


def test_interrupted_cell_is_continued_with_resume_and_a_changed_one_restarts(tiny_config, tmp_path):
    from lossbench.experiments.sweep import resumable, run_cell

    text = SWEEP.replace("epochs: 1", "epochs: 2").replace(
        '  loss: [ce, focal(gamma=2), "focal(gamma=-1)"]\n  seed: [0, 1]\n', "  seed: [0]\n")
    plan = plan_sweep(tiny_config(text))
    (cell,) = plan.cells
    assert run_cell(cell, plan.sweep_dir, 1, None)[0] == "done"
    rows_before = (cell.run_dir / "metrics.csv").read_text().splitlines()
    # as if killed after the last checkpoint but before the summary
    (cell.run_dir / "summary.json").unlink()
    assert resumable(cell)
    status, error, _ = run_cell(cell, plan.sweep_dir, 1, None)
    assert (status, error) == ("done", "")
    log = (plan.sweep_dir / "logs" / f"{cell.name}.log").read_text()
    assert "train --resume" in log and "starting the cell again" not in log
    assert (cell.run_dir / "metrics.csv").read_text().splitlines() == rows_before  # no epoch trained twice
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
