"""A tiny tuned sweep end to end on both backends, Optuna and Ray for real.

One test, because its two halves share a run: ``lossbench sweep`` (local pool, ``--jobs 2``) is
SIGKILLed mid-study and run again, and must finish every study's budget without losing or
repeating a trial; then the same config runs on Ray (the session's local one-CPU Ray, conftest's ray_local) and must
give the same trials and the same metrics, record the failing cell's error like the local
backend, and skip everything finished when run again.

The killed sweep is a process forked with lossbench imported; the cells it starts are fresh
``python -m lossbench train`` processes that must die with it. The re-run (in this process) and
the Ray workers start their cells as forked processes (cli_helper.forked_cell_process): the same
trials, without seconds of imports each.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import time
from pathlib import Path

from cli_helper import RAY_ENV, forked_cli, run_cli, trial_states

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
def sweep(cfg: Path, out: Path, logs: Path):
    """``lossbench sweep --jobs 2`` as a forked process (output in ``logs``.{out,err}); its cells are fresh processes."""
    return forked_cli(["sweep", str(cfg), "--out", str(out), "--jobs", "2"], logs.with_suffix(".out"),
                      err_path=logs.with_suffix(".err"), env=RAY_ENV)


def cells_of(sweep_pid: int) -> set[int]:
    """pids of the ``python -m lossbench train`` processes the sweep ``sweep_pid`` runs."""
    found = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == sweep_pid and cmdline[1:4] == [b"-m", b"lossbench", b"train"]:
            found.add(int(entry))
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (not yet reaped zombies count as ended)."""
    running = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                running.add(pid)
        except OSError:
            pass
    return running


def kill_mid_study(cfg: Path, out: Path, logs: Path) -> list[str]:
    """Start the sweep, SIGKILL it once a trial has finished and another is training; the states it left.
    The training processes it started must end with it (PR_SET_PDEATHSIG)."""
    proc = sweep(cfg, out, logs)
    end = time.monotonic() + 600
    cells: set[int] = set()
    while time.monotonic() < end and proc.is_alive():
        states = trial_states(out / "tune.db")
        cells = cells_of(proc.pid)
        if "COMPLETE" in states and "RUNNING" in states and cells:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, "the sweep ended before it could be killed mid-study"
    end = time.monotonic() + 30
    while alive(cells) and time.monotonic() < end:
        time.sleep(0.1)
    assert not alive(cells), "the killed sweep's training processes went on without it"
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


def test_tuned_sweep_resumes_after_a_kill_and_runs_the_same_on_ray(tmp_path, ray_local, forked_cells):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "runs"))
    local = tmp_path / "local"

    left = kill_mid_study(cfg, local, tmp_path / "killed")
    assert "RUNNING" in left
    rerun = run_cli(["sweep", str(cfg), "--out", str(local), "--jobs", "2"])
    out, err = rerun.out, rerun.err
    assert rerun.code == 1, err  # the broken document's cell fails; everything else finishes
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
    from lossbench.experiments.plan import plan_sweep
    from lossbench.experiments.tune import run_tuned_sweep

    on_ray = tmp_path / "ray"
    lines: list[str] = []
    backend = RayBackend()  # one cell at a time: one per CPU of the cluster
    assert backend.jobs == backend.threads == 1 and "1 at a time on Ray (1 CPU per cell)" in backend.describe()
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
