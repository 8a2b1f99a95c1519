"""SIGINT (Ctrl-C) on a running sweep: every finished cell is recorded as done in results.csv before it exits, the
cell it started is stopped (no process left training), and running the sweep again finishes the rest
(issue 27, item 12). Real processes: the sweep and its cells are forked with lossbench imported."""

from __future__ import annotations

import csv
import os
import signal
import time

import yaml

from .helpers import TALLY, forked_cli, trial_states

CONFIG = {"name": "ctrl_c", "data": {"source": "synthetic", "num_classes": 3, "image_size": 8, "train_per_class": 4,
                                     "val_per_class": 2},
          "model": {"name": "resnet20"}, "batch_size": 4, "device": "cpu",
          "grid": {"seed, epochs": [[0, 1], [1, 400]]}}  # a quick cell, then a long one


def rows(sweep):
    path = sweep / "results.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {r["cell"]: r["status"] for r in csv.DictReader(f)}


def start_sweep(tmp_path, name, config):
    """``lossbench sweep`` on ``config`` as a forked process with its cells forked; (process, sweep folder, output)."""
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({**config, "output_dir": str(tmp_path / "runs")}))
    out = tmp_path / "sweep.out"
    proc = forked_cli(["sweep", str(cfg)], out, err_path=tmp_path / "sweep.err", cwd=tmp_path, fork_cells=True)
    return proc, tmp_path / "runs" / name, out  # a sweep is named after its file


def interrupt(proc, out):
    """SIGINT to the sweep: it must exit 130 within 30 s."""
    os.kill(proc.pid, signal.SIGINT)
    stopped_at = time.monotonic()
    proc.join(60)
    assert proc.exitcode == 130, (proc.exitcode, out.read_text())
    assert time.monotonic() - stopped_at < 30


def epochs_after_a_pause(run):
    """The epochs ``run`` has logged, asserting it logs no more (its process was stopped)."""
    epochs = len((run / "metrics.csv").read_text().splitlines())
    time.sleep(1.5)
    assert len((run / "metrics.csv").read_text().splitlines()) == epochs, "the stopped run still trains"
    return epochs


def test_sigint_records_finished_cells_and_stops_the_running_one(tmp_path):
    proc, sweep, out = start_sweep(tmp_path, "ctrl_c", CONFIG)
    long_cell = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.is_alive():
        running = [p for p in sweep.glob("*/metrics.csv") if not (p.parent / "summary.json").exists()]
        if running and any((p.parent / "summary.json").exists() for p in sweep.glob("*/metrics.csv")):
            long_cell = running[0].parent
            break
        time.sleep(0.05)
    assert long_cell is not None, out.read_text()
    interrupt(proc, out)
    status = rows(sweep)
    done = [c for c, s in status.items() if s == "done"]
    assert len(done) == 1 and long_cell.name not in done, status
    assert "sweep interrupted: 1 of 2 cells done" in out.read_text()
    assert not (sweep / ".sweep.stop").exists()
    epochs = epochs_after_a_pause(long_cell)
    assert epochs - 1 < 400 and not (long_cell / "summary.json").exists()
    TALLY["interrupted sweeps: finished cells recorded, running cells stopped"] += 1


def test_the_stop_file_stays_until_every_running_cell_has_ended(tmp_path, monkeypatch):
    """A cell that has not seen the stop file when the sweep's wait ends (a machine too busy) must still see it:
    without the file it would train to its end while the interrupted sweep waits for it."""
    from concurrent.futures import Future

    from lossbench.experiments import sweep
    from lossbench.experiments.layout import STOP_NAME
    from lossbench.experiments.plan import plan_sweep

    cfg = tmp_path / "ctrl_c.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(tmp_path / "runs")}))
    plan = plan_sweep(cfg)
    plan.sweep_dir.mkdir(parents=True)
    monkeypatch.setattr(sweep, "STOP_POLL_SECONDS", 0.01)
    stop, lines = plan.sweep_dir / STOP_NAME, []
    still_running = Future()
    assert still_running.set_running_or_notify_cancel()  # started: cannot be cancelled, never ends here
    sweep.stop_cells(plan, [still_running], stop, lines.append)
    assert stop.exists() and lines[-1].startswith("sweep interrupted: 0 of 2 cells done")
    ended = Future()
    ended.set_running_or_notify_cancel()
    ended.set_result(("stopped", "", 0.0))
    sweep.stop_cells(plan, [ended], stop, lines.append)
    assert not stop.exists()


TUNED = {**CONFIG, "epochs": 400, "grid": {"seed": [0]}, "report": {"epoch": "final"},
         "tune": {"trials": 2, "metric": "loss", "untuned": False,
                  "space": {"optimizer.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}}}}


def test_sigint_mid_study_stops_the_trial_at_once_and_leaves_it_to_continue(tmp_path):
    """Ctrl-C while a trial trains: the sweep ends within seconds with one line (before, it waited for the trial
    to train to its end, silently), the trial's process is stopped, and tune.db keeps it RUNNING: the next sweep
    queues its values again and it continues from its last checkpoint (test_tune.py checks that part)."""
    proc, sweep, out = start_sweep(tmp_path, "tuned", TUNED)
    trial = None
    deadline = time.monotonic() + 120
    while trial is None and time.monotonic() < deadline and proc.is_alive():
        trial = next((p.parent for p in sweep.glob("tune/*/metrics.csv") if len(p.read_text().splitlines()) > 2),
                     None)
        time.sleep(0.05)
    assert trial is not None, out.read_text()
    interrupt(proc, out)
    assert "tuning interrupted: 1 running trial(s) stopped" in out.read_text()
    epochs_after_a_pause(trial)
    assert trial_states(sweep / "tune.db") == ["RUNNING"]
    assert not list(sweep.glob("tune/*.stop"))
    TALLY["interrupted sweeps: finished cells recorded, running cells stopped"] += 1
