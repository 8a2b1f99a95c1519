"""Issue 21's "Done when", end to end on tiny synthetic sweeps (resnet20, 8x8 images, one epoch): declared
contrasts with a margin give "equivalent" / "inconclusive" where they should, with power beside each verdict
and a forest plot; two seeds print no p-value; sequential seeds stop where the answer is known, resume after a
SIGKILL and give the same rows on Ray."""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import pytest
from cli_helper import RAY_ENV, forked_cli, markdown_table, run_cli

from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.plan import plan_sweep
from lossbench.experiments.report import build_report

HEAD = """
name: tiny
task: classification
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 16, val_per_class: 8}
model: {name: resnet20}
epochs: 1
batch_size: 16
device: cpu
"""
# the validation loss (a continuous metric): learning rates 0.01 % apart train almost alike; 1e-7 does not learn
GRID = """grid:
  optimizer.lr: [0.001, 0.0010001, 1.0e-7]
  seed: SEEDS
report:
  baseline: {optimizer.lr: 0.001}
  metric: loss
  epoch: final
  margin: MARGIN
  contrasts: [[0.0010001, 0.001], [1.0e-07, 0.001]]
"""


def config(tiny_config, seeds: str, margin: str = "0.05") -> object:
    return tiny_config(HEAD + GRID.replace("SEEDS", seeds).replace("MARGIN", margin))


def rows(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_unknown_contrast_labels_are_refused_before_training(tiny_config, tmp_path):
    path = tiny_config(HEAD + GRID.replace("SEEDS", "[0, 1, 2]").replace("MARGIN", "0.05")
                       .replace("[1.0e-07, 0.001]", "[0.1, 0.001]"))
    with pytest.raises(UserError, match=r"report\.contrasts: pair 2 names '0\.1', which is not one configuration"):
        plan_sweep(path)
    assert not (tmp_path / "runs").exists()
    res = run_cli(["sweep", str(path)])
    assert res.code == 2 and len(res.err_lines) == 1 and "Traceback" not in res.err


def test_fixed_seeds_margin_and_contrasts_give_equivalent_inconclusive_power_and_a_forest_plot(
        tiny_config, tmp_path, forked_cells):
    path = config(tiny_config, "[0, 1, 2, 3]")
    res = run_cli(["sweep", str(path), "--jobs", "2"])
    assert res.code == 0, res.err
    sweep_dir = tmp_path / "runs" / "exp"
    md = (sweep_dir / "report.md").read_text()
    rows = markdown_table(md, "contrast (a vs b) | paired seeds")
    same, other = rows["optimizer.lr=0.0010001 vs optimizer.lr=0.001"], rows["optimizer.lr=1e-07 vs optimizer.lr=0.001"]
    # learning rates 0.01 % apart: surely within the margin of 0.05; a model that does not learn: cannot tell
    assert same[-1].startswith("equivalent") and other[-1] == "inconclusive", md
    for row in (same, other):
        n, diff, interval, alpha, p, mde, needed, verdict = row
        assert n == "4" and alpha == "0.025" and float(p) >= 0 and float(mde) > 0 and interval.startswith("[")
    assert other[6] == "> 10000" or int(other[6]) > 4  # the seeds that would detect the margin
    assert md.index("forest.png") < md.index("### Metrics")  # the forest plot above the tables
    assert (sweep_dir / "report_files" / "0-forest.png").read_bytes().startswith(b"\x89PNG")
    assert "equivalent: it surely lies within ±0.05 metric units, your margin" in md
    # the same folder with two seeds: no p-value anywhere, only "too few seeds" and the seeds needed
    with (sweep_dir / "results.csv").open(newline="") as f:
        kept = [r for r in csv.DictReader(f) if int(r["seed"]) < 2]
    runfolder.write_csv(sweep_dir / "results.csv", kept)
    build_report(sweep_dir)
    rows = markdown_table((sweep_dir / "report.md").read_text(), "contrast (a vs b) | paired seeds")
    for n, diff, interval, alpha, p, mde, needed, verdict in rows.values():
        assert (n, p, verdict) == ("2", "–", "too few seeds") and (needed.isdigit() or needed == "> 10000")


#: more steps, so that lr 0.001 learns (balanced accuracy about 0.55) and lr 1e-7 stays near chance, seed by seed
SEQUENTIAL = HEAD.replace("train_per_class: 16", "train_per_class: 48").replace("batch_size: 16", "batch_size: 8") + """
grid:
  optimizer.lr: [1.0e-7, 0.001, 0.003]
  seed: {min: 3, max: 5}
report:
  baseline: {optimizer.lr: 1.0e-7}
  contrasts: [[0.001, 1.0e-07], [0.003, 0.001]]
"""
def kill_after_first_cells(cfg: Path, out: Path, logs: Path) -> None:
    """Start the sweep as a process, SIGKILL it once two cells have finished (the first round is under way)."""
    proc = forked_cli(["sweep", str(cfg), "--out", str(out), "--jobs", "2"], logs.with_suffix(".out"),
                      err_path=logs.with_suffix(".err"), env=RAY_ENV, fork_cells=True, daemon=False)
    end = time.monotonic() + 600
    while time.monotonic() < end and proc.is_alive():
        if len(list(out.glob("*/summary.json"))) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, "the sweep ended before it could be killed"


def test_sequential_seeds_stop_where_decided_resume_after_a_kill_and_match_on_ray(tmp_path, ray_local, forked_cells):
    cfg = tmp_path / "seq.yaml"
    cfg.write_text(SEQUENTIAL.replace("OUT", str(tmp_path / "runs")))
    local = tmp_path / "local"
    kill_after_first_cells(cfg, local, tmp_path / "killed")
    res = run_cli(["sweep", str(cfg), "--out", str(local), "--jobs", "2"])
    assert res.code == 0, res.err
    found = rows(local / "results.csv")
    seeds = {r["optimizer.lr"]: r["seeds_run"] for r in found}
    stopped = {r["optimizer.lr"]: r["stopped"] for r in found}
    # lr 0.001 is clearly better than 1e-7: that contrast is decided before 5 seeds and 1e-7 gets no more;
    # 0.003 against 0.001 cannot be told apart, so both run to the maximum
    assert int(seeds["1e-07"]) < 5 and stopped["1e-07"] == "all its contrasts decided", found
    assert seeds["0.001"] == seeds["0.003"] == "5" and stopped["0.003"] == "max seeds (5) reached"
    assert len(found) == int(seeds["1e-07"]) + 10 and all(r["status"] == "done" for r in found)
    md = (local / "report.md").read_text()
    contrasts = markdown_table(md, "contrast (a vs b) | paired seeds")
    assert contrasts["optimizer.lr=0.001 vs optimizer.lr=1e-07"][-1].startswith("better, decided at")
    assert contrasts["optimizer.lr=0.003 vs optimizer.lr=0.001"][-1] == "not significant"
    assert markdown_table(md, "configuration | seeds run")["optimizer.lr=1e-07"] == [seeds["1e-07"], "all its contrasts decided"]

    from lossbench.experiments.backends import RayBackend
    from lossbench.experiments.plan import plan_sweep as plan
    from lossbench.experiments.sweep import run_sweep

    backend = RayBackend()
    run_sweep(plan(cfg, sweep_dir=tmp_path / "ray"), backend=backend, log=lambda line: None)
    backend.close()
    keys = ("cell", "status", "seed", "final_balanced_accuracy", "best_loss", "seeds_run", "stopped")
    on_ray = rows(tmp_path / "ray" / "results.csv")
    assert [[r[k] for k in keys] for r in on_ray] == [[r[k] for k in keys] for r in found]
