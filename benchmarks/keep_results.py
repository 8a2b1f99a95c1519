"""Keep a long sweep's results in the repository, so a later session (or a reader) continues or re-reads it.

    PYTHONPATH=src python benchmarks/keep_results.py SWEEP_DIR benchmarks/results/NAME

A BENCHMARKS.md table takes longer than one session of this machine, and nothing
outside the repository outlives a session. This copies what the report and a
resumed sweep need of SWEEP_DIR into the destination: the sweep's own files
(``sweep.json``, ``results.csv``, the cells' configs and logs) and every
**finished** cell's run folder, without its checkpoints (``*.pt``, up to 170 MB
a cell) and its confusion-matrix PNG (the report draws its own). Cells not
finished are left out: the sweep trains them again. Run ``lossbench report
SWEEP_DIR`` first where the report scores post-hoc logit adjustment: it keeps
each result in the cell's ``posthoc_la.json``, which serves the report once the
checkpoint is gone. A tuned sweep's studies go too: ``tune.db`` (copied through
SQLite's backup, consistent while the sweep writes it), ``tune/studies.json`` and
the finished trials' run folders; a trial still training is left RUNNING in the
copied ``tune.db``, and the continued sweep queues its values again.

To continue: copy the folder back out, check out the commit the cells ran at
(BENCHMARKS.md names it) and run the same ``lossbench sweep ... --out`` on the
copy; finished cells are skipped.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
from pathlib import Path

from lossbench.engine.runfolder import is_finished
from lossbench.experiments.layout import (
    CONFIGS_DIR, LOCK_NAME, LOGS_DIR, RESULTS_CSV, STOP_NAME, SWEEP_JSON, TUNE_DB, studies_path, tune_dir,
)

LEFT_OUT = shutil.ignore_patterns("*.pt", "confusion_matrix.png", ".run.lock", LOCK_NAME, STOP_NAME, "*.tmp", "*.stop")
SWEEP_FILES = (SWEEP_JSON, RESULTS_CSV, "report.md", CONFIGS_DIR, LOGS_DIR)


def keep(sweep_dir: Path, dest: Path) -> tuple[int, int]:
    """Copy ``sweep_dir``'s finished cells and sweep files into ``dest`` (replacing what it held);
    (cells kept, cells left out as unfinished)."""
    if not (sweep_dir / SWEEP_JSON).is_file() and not (sweep_dir / TUNE_DB).is_file():  # tuning: no sweep.json yet
        raise SystemExit(f"{sweep_dir}: not a sweep folder (no sweep.json, no tune.db)")
    cells = [p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and (p / "config.yaml").is_file()]
    finished = [p for p in cells if is_finished(p)]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in SWEEP_FILES:
        src = sweep_dir / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=LEFT_OUT)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    for cell in finished:
        shutil.copytree(cell, dest / cell.name, ignore=LEFT_OUT)
    keep_studies(sweep_dir, dest)
    return len(finished), len(cells) - len(finished)


def keep_studies(sweep_dir: Path, dest: Path) -> None:
    """A tuned sweep's ``tune.db``, ``studies.json`` and finished trials (nothing, for a sweep that does not tune)."""
    if (sweep_dir / TUNE_DB).is_file():
        with sqlite3.connect(sweep_dir / TUNE_DB, timeout=30) as src, sqlite3.connect(dest / TUNE_DB) as copy:
            src.backup(copy)
    trials = tune_dir(sweep_dir)
    if not trials.is_dir():
        return
    tune_dir(dest).mkdir()
    if studies_path(sweep_dir).is_file():
        shutil.copy2(studies_path(sweep_dir), studies_path(dest))
    for trial in sorted(p for p in trials.iterdir() if p.is_dir() and is_finished(p)):
        shutil.copytree(trial, tune_dir(dest) / trial.name, ignore=LEFT_OUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    kept, unfinished = keep(args.sweep_dir, args.dest)
    print(f"{args.dest}: {kept} finished cells kept, {unfinished} unfinished left out (the sweep trains them again)")


if __name__ == "__main__":
    main()
