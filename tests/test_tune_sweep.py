"""A tiny tuned sweep end to end on both backends, Optuna and Ray for real.

One test, because its two halves share a run: ``lossbench sweep`` (local pool, ``--jobs 2``) is
SIGKILLed mid-study and run again, and must finish every study's budget without losing or
repeating a trial; then the same config runs on Ray (started once per test session) and must
give the same trials and the same metrics, record the failing cell's error like the local
backend, and skip everything finished when run again.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = """\
name: tiny
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 4}}
model: {{name: resnet20}}
batch_size: 8
epochs: 1
device: cpu
grid:
  loss: [ce, focal(gamma=2)]
report: {{baseline: {{loss: ce}}}}
tune:
  trials: 3
  metric: loss        # the validation loss: unlike accuracy after one tiny epoch, it differs from trial to trial
  startup_trials: 3   # every trial drawn at random from its seed: the same trials, whichever finishes first
  untuned: false
  space:
    optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
    loss.gamma: {{type: float, low: 0.5, high: 3.0}}
---
name: broken
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 4}}
model: {{name: resnet20}}
loss: focal(gamma=-1)
epochs: 1
device: cpu
"""
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="session")
def ray_local():
    """One Ray instance for the whole test session (a start costs seconds): two CPUs on this machine."""
    import ray

    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = ENV["PYTHONPATH"]  # Ray's workers inherit this process's environment
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # a new one, ours
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield ray
    ray.shutdown()


def sweep(cfg: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lossbench", "sweep", str(cfg), "--out", str(out), "--jobs", "2",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def trial_states(db: Path) -> list[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return [row[0] for row in conn.execute("SELECT state FROM trials")]
    except sqlite3.Error:  # not created yet, or being written
        return []


def kill_mid_study(cfg: Path, out: Path) -> list[str]:
    """Start the sweep, SIGKILL it once a trial has finished and another is training; the states it left."""
    proc = sweep(cfg, out)
    end = time.monotonic() + 600
    while time.monotonic() < end and proc.poll() is None:
        states = trial_states(out / "tune.db")
        if "COMPLETE" in states and "RUNNING" in states:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed mid-study"
    return trial_states(out / "tune.db")


def studies(out: Path) -> dict[str, list]:
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'tune.db'}")
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
            for s in optuna.get_all_study_summaries(storage)}


def counted(trials: list) -> list:
    return [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]


def rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "results.csv").open(newline="") as f:
        return {r["cell"]: r for r in csv.DictReader(f)}


def outcome(trials: list) -> list[tuple]:
    """What the trials found, whatever their numbers: (values, state, metric), sorted."""
    return sorted((tuple(sorted(t.params.items())), t.state.name, t.value) for t in counted(trials))


def test_tuned_sweep_resumes_after_a_kill_and_runs_the_same_on_ray(tmp_path, ray_local):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "runs"))
    local = tmp_path / "local"

    left = kill_mid_study(cfg, local)
    assert "RUNNING" in left
    time.sleep(1)  # the killed sweep's training processes end with it (PR_SET_PDEATHSIG)
    rerun = sweep(cfg, local)
    out, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 1, err  # the broken document's cell fails; everything else finishes
    assert "Traceback" not in err and re.search(r"2 studies, 6 trials, [1-5] already done", out), out

    found = studies(local)
    assert len(found) == 2
    for name, trials in found.items():
        done = counted(trials)
        assert len(done) == 3, "every study completes its budget, no more"
        assert len({t.user_attrs["run"] for t in done}) == 3, "no trial ran twice"
        for stale in (t for t in trials if t.user_attrs.get("interrupted")):
            retry = next((t for t in trials if t.user_attrs.get("retry_of") == stale.number), None)
            if len(stale.params) == (2 if "focal" in name else 1):  # it was training: the same values, same folder
                assert retry.params == stale.params and retry.user_attrs["run"] == stale.user_attrs["run"]
            else:  # killed while drawing its values: nothing ran, they are drawn again
                assert retry is None
    assert sum(t.user_attrs.get("interrupted", False) for ts in found.values() for t in ts) == left.count("RUNNING")
    results = rows(local)
    tuned = {name: r for name, r in results.items() if r["document"] == "tiny-tuned"}
    assert len(tuned) == 2 and all(r["status"] == "done" for r in tuned.values())
    assert not any(r["document"] == "tiny" for r in results.values())  # untuned: false
    broken = next(r for r in results.values() if r["document"] == "broken")
    assert broken["status"] == "failed" and "gamma must be >= 0" in broken["error"]
    report = (local / "report.md").read_text()
    assert "Tuning: the same budget for every configuration" in report and "tiny-tuned-trials.png" in report

    from lossbench.experiments.backends import RayBackend
    from lossbench.experiments.sweep import plan_sweep
    from lossbench.experiments.tune import run_tuned_sweep

    on_ray = tmp_path / "ray"
    lines: list[str] = []
    backend = RayBackend(jobs=2)
    assert backend.threads == 1 and "on Ray" in backend.describe()
    run_tuned_sweep(plan_sweep(cfg, sweep_dir=on_ray), backend=backend, log=lines.append)
    ray_found = studies(on_ray)
    assert sorted(ray_found) == sorted(found)  # the same studies ...
    for name, trials in ray_found.items():
        assert outcome(trials) == outcome(found[name])  # ... with the same trials and metrics
    ray_results = rows(on_ray)
    metrics = ("status", "best_balanced_accuracy", "best_loss", "final_accuracy")
    assert {n: [r[k] for k in metrics] for n, r in ray_results.items() if r["document"] == "tiny-tuned"} == \
        {n: [r[k] for k in metrics] for n, r in tuned.items()}
    ray_broken = next(r for r in ray_results.values() if r["document"] == "broken")
    assert ray_broken["status"] == "failed" and ray_broken["error"] == broken["error"]

    finished = {p: p.stat().st_mtime_ns for p in on_ray.glob("*/summary.json")}
    lines.clear()
    run_tuned_sweep(plan_sweep(cfg, sweep_dir=on_ray), backend=backend, log=lines.append)
    assert any("6 trials, 6 already done, 0 to run" in line for line in lines), lines
    assert any("3 cells, 2 already done, 1 to run" in line for line in lines), lines  # only the failed one again
    assert {p: p.stat().st_mtime_ns for p in on_ray.glob("*/summary.json")} == finished
    backend.close()
    assert ray_local.is_initialized()  # a Ray the backend did not start is left running
