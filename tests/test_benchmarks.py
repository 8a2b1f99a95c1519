"""The benchmark entry point's command line, and the long-tail table printed from a sweep folder."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def test_entry_point_rejects_an_unknown_benchmark():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "nope"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown benchmark 'nope'; choose from calibrate, losses, engine, data, quickstart, backends" in proc.stderr


def test_reference_workload_times_training_steps_on_one_thread():
    import torch

    spec = importlib.util.spec_from_file_location("calibrate", ROOT / "benchmarks" / "calibrate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference_seconds = module.reference_seconds
    threads = torch.get_num_threads()
    one, three = reference_seconds(steps=1, warmup=1), reference_seconds(steps=3, warmup=1)
    assert 0 < one < three  # the time grows with the steps timed
    assert torch.get_num_threads() == threads  # the thread count is given back


def quality_table_module():
    spec = importlib.util.spec_from_file_location("quality_table", ROOT / "benchmarks" / "quality_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lt_table_uses_final_epoch_gives_the_reports_verdicts_and_lists_missing_cells(tmp_path, capsys):
    cells, rows = [], []
    finals = {("ce", 0): 0.60, ("ce", 1): 0.64, ("ce", 2): 0.62, ("ldam", 0): 0.70, ("ldam", 1): 0.75,
              ("ldam", 2): 0.71, ("dice", 0): 0.50}
    for loss in ("ce", "ldam", "dice"):
        for seed in (0, 1, 2):
            name = f"lt--seed-{seed}_loss-{loss}"
            cells.append({"name": name, "document": "lt", "values": {"seed": seed, "loss": loss}})
            row = {"cell": name, "document": "lt", "task": "classification", "seed": seed, "loss": loss,
                   "status": "pending", "best_balanced_accuracy": "", "final_balanced_accuracy": ""}
            if (loss, seed) in finals:
                row.update(status="done", best_balanced_accuracy=0.99, final_balanced_accuracy=finals[loss, seed],
                           final_many_shot_accuracy=0.9, final_few_shot_accuracy="nan")
            rows.append(row)
    (tmp_path / "sweep.json").write_text(json.dumps({
        "grid_keys": ["seed", "loss"], "cells": cells,
        "report": {"lt": {"baseline": {"loss": "ce"}, "epoch": "final"}}}))
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "cell", k))
    with (tmp_path / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    quality_table_module().main([str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith("final-epoch metrics")
    assert "| `ce` | 3 | 62.00 ± 2.00 | – | 90.00 ± 0.00 | – | – |" in out
    assert "| `ldam` | 3 | 72.00 ± 2.65 |" in out and "| `dice` | 1 | 50.00 |" in out
    # the report's contrasts (fixed design, Holm over the 2): ldam has 3 pairs, tested first at 0.05 / 2 with the
    # paired t-test; dice has 1 pair, too few for a verdict
    p = stats.ttest_rel([0.70, 0.75, 0.71], [0.60, 0.64, 0.62]).pvalue
    assert p < 0.025
    assert "| loss=ldam vs loss=ce | 3 | +10.00 |" in out
    half = stats.t.ppf(1 - 0.025 / 2, 2) * stats.sem([10.0, 11.0, 9.0])  # the interval at the alpha it used
    assert f"| [{10 - half:+.2f}, {10 + half:+.2f}] | 0.025 | {p:.4f} |" in out
    assert "| better, decided at 3 seeds |" in out
    assert "| loss=dice vs loss=ce | 1 | -10.00 | – |" in out and "| too few seeds |" in out
    assert "Not finished (2): lt--seed-1_loss-dice, lt--seed-2_loss-dice" in out
    quality_table_module().main([str(tmp_path), "--first-seeds", "2"])  # the table as it was with seeds 0 and 1
    out = capsys.readouterr().out
    assert "| `ldam` | 2 | 72.50 ± 3.54 |" in out and "| loss=ldam vs loss=ce | 2 | +10.50 |" in out
    assert "better" not in out and "Not finished (1): lt--seed-1_loss-dice" in out


def test_kept_results_hold_finished_cells_without_checkpoints_and_a_sweep_skips_them(tiny_config, tmp_path):
    from lossbench.engine import runfolder
    from lossbench.experiments.cells import cell_status
    from lossbench.experiments.plan import plan_sweep
    from lossbench.experiments.results import write_results

    spec = importlib.util.spec_from_file_location("keep_results", ROOT / "benchmarks" / "keep_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = tiny_config("output_dir: OUT\ndata: {source: synthetic, num_classes: 2, image_size: 8}\n"
                         "model: {name: resnet20}\ngrid: {seed: [0, 1]}\n")
    sweep = tmp_path / "sweep"
    done, killed = plan_sweep(config, sweep_dir=sweep).cells
    for cell in (done, killed):
        runfolder.start_run(cell.run_dir, runfolder.recorded_config(cell.experiment), {"split.json": "{}"})
        (cell.run_dir / "last.pt").write_bytes(b"weights")
    runfolder.write_json(done.run_dir / "summary.json", {"name": done.name, "main_metric": "balanced_accuracy",
                                                        "best": {"epoch": 1}, "final": {}})
    (done.run_dir / "confusion_matrix.png").write_bytes(b"png")
    (done.run_dir / "posthoc_la.json").write_text("{}")
    write_results(plan_sweep(config, sweep_dir=sweep))
    kept = tmp_path / "kept"
    assert module.keep(sweep, kept) == (1, 1)
    assert sorted(p.name for p in (kept / done.name).iterdir()) == [
        "config.yaml", "posthoc_la.json", "split.json", "summary.json"]
    assert not (kept / killed.name).exists() and (kept / "sweep.json").is_file() and (kept / "results.csv").is_file()
    again = plan_sweep(config, sweep_dir=kept)  # the copy, continued: the finished cell is done, the other runs
    assert [cell_status(c)[0] for c in again.cells] == ["done", "pending"]
    assert not (kept / "tune").exists() and not (kept / "tune.db").exists()  # a sweep that does not tune


def test_kept_results_of_a_tuned_sweep_hold_its_studies_and_finished_trials(tmp_path):
    import sqlite3

    from lossbench.engine import runfolder

    spec = importlib.util.spec_from_file_location("keep_results", ROOT / "benchmarks" / "keep_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sweep = tmp_path / "sweep"
    (sweep / "tune").mkdir(parents=True)
    with sqlite3.connect(sweep / "tune.db") as db:  # still tuning (no sweep.json yet); held open, as the sweep holds it
        db.execute("CREATE TABLE trials (number INTEGER, state TEXT)")
        db.executemany("INSERT INTO trials VALUES (?, ?)", [(0, "COMPLETE"), (1, "RUNNING")])
        db.commit()
        (sweep / "tune" / "studies.json").write_text("{}")
        for trial, finished in (("s--t000", True), ("s--t001", False)):
            (sweep / "tune" / trial).mkdir()
            (sweep / "tune" / trial / "last.pt").write_bytes(b"weights")
            if finished:
                runfolder.write_json(sweep / "tune" / trial / "summary.json", {"final": {}})
        (sweep / "tune" / "s--t001.stop").touch()
        kept = tmp_path / "kept"
        assert module.keep(sweep, kept) == (0, 0)
    with sqlite3.connect(kept / "tune.db") as copy:
        assert copy.execute("SELECT number, state FROM trials").fetchall() == [(0, "COMPLETE"), (1, "RUNNING")]
    assert sorted(p.name for p in (kept / "tune").iterdir()) == ["s--t000", "studies.json"]
    assert sorted(p.name for p in (kept / "tune" / "s--t000").iterdir()) == ["summary.json"]
