"""Running a planned sweep: each cell trained by its own ``lossbench train`` process, results kept current.

A crash, NaN or out-of-memory in one cell is recorded as that cell's one-line
error while the others go on. Where those processes run is the backend's
business (experiments/backends.py: this machine's pool, or Ray tasks on a
cluster). Re-running a sweep skips finished cells that recorded what the sweep
would run now (experiments/cells.py), continues unchanged cells that were
interrupted mid-run (``last.pt`` but no summary) with ``train --resume``, and
retries failed and changed cells from the start. A lock file keeps two sweeps
from writing one folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, as_completed, wait
from pathlib import Path
from typing import Any

from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.backends import LocalBackend
from lossbench.experiments.cells import cell_status, changed_cells, resumable
from lossbench.experiments.forked_cells import run_forked
from lossbench.experiments.layout import LOCK_NAME, RESULTS_CSV, STOP_NAME, config_path, log_path
from lossbench.experiments.plan import Cell, SweepPlan
from lossbench.experiments.progress import Progress
from lossbench.experiments.results import collect_results, write_results

STOP_POLL_SECONDS = 0.5  # how often a cell looks for its stop file (a pruned trial, an interrupted sweep)


class SweepLock:
    """An exclusive ``flock`` on the sweep folder (:class:`lossbench.engine.runfolder.FolderLock`); a second sweep
    refuses with one line."""

    def __init__(self, sweep_dir: Path) -> None:
        self.lock = runfolder.FolderLock(sweep_dir, LOCK_NAME, "{folder}: another lossbench sweep (pid {pid}) is "
                                         "using this folder; wait for it to finish or choose another folder")

    def __enter__(self) -> "SweepLock":
        try:
            self.lock.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            reason = getattr(exc, "strerror", None) or exc
            raise UserError(f"{self.lock.path.parent}: cannot write the sweep folder ({reason}); "
                            "choose a writable --out or output_dir") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _death_signal_setter() -> Any:
    """A ``preexec_fn`` that makes the cell's process get SIGKILL when the sweep's thread that started it
    dies (Linux ``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan training into a folder the next
    sweep will use; None elsewhere.

    libc is looked up here, in the sweep, not in the forked child: with ``--jobs`` other threads may hold
    the dynamic loader's lock at fork time, and the child must only call an already resolved function.
    """
    if sys.platform != "linux":
        return None
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sigkill = int(signal.SIGKILL)
    return lambda: prctl(1, sigkill)  # 1 = PR_SET_PDEATHSIG


def _error_line(stderr: str, returncode: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("lossbench: error:"):
            return line.removeprefix("lossbench: error:").strip()
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return lines[-1] if lines else f"exited with code {returncode}"


def _run_process(command: list[str], log: Any, env: dict[str, str], preexec: Any, stop_file: Path | None
                 ) -> tuple[int, str, bool]:
    """(return code, stderr, stopped) of one training process; it is ended (SIGTERM) once ``stop_file`` exists,
    and killed when this call is interrupted (a cancelled Ray task), so it never outlives its cell."""
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=preexec)
    stopped = False
    try:
        while True:
            try:
                _, stderr = proc.communicate(timeout=None if stop_file is None else STOP_POLL_SECONDS)
                return proc.returncode, stderr, stopped
            except subprocess.TimeoutExpired:
                if not stopped and stop_file is not None and stop_file.exists():
                    proc.terminate()
                    stopped = True
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _attempts(cell: Cell, config: Path) -> list[list[str]]:
    """The commands that train a cell: resume an interrupted run first (then start again if that fails), or start."""
    fresh = [sys.executable, "-m", "lossbench", "train", str(config), "--overwrite"]
    if resumable(cell):
        return [[sys.executable, "-m", "lossbench", "train", "--resume", str(cell.run_dir)], fresh]
    return [fresh]


def _train(attempts: list[list[str]], log_file: Path, env: dict[str, str], stop_file: Path | None,
           forked: bool = False) -> tuple[int, str, bool]:
    """(return code, stderr, stopped) of the last attempt run, each command logged to ``log_file``; ``forked``:
    each a process forked from a preloaded server (experiments/forked_cells.py), not a fresh interpreter."""
    preexec = None if forked else _death_signal_setter()
    with log_file.open("a", encoding="utf-8") as log:
        for i, command in enumerate(attempts):
            log.write(f"$ {' '.join(command[1:])}\n")
            log.flush()
            returncode, stderr, stopped = (run_forked(command, log, env, stop_file, STOP_POLL_SECONDS) if forked
                                           else _run_process(command, log, env, preexec, stop_file))
            log.write(stderr)
            if returncode == 0 or returncode < 0 or i == len(attempts) - 1:
                break
            # the interrupted run could not be continued (e.g. its checkpoint is damaged): start it again
            log.write(f"resume failed ({_error_line(stderr, returncode)}); starting the cell again\n")
    return returncode, stderr, stopped


def run_cell(cell: Cell, sweep_dir: Path, threads: int, gpu: int | None, stop_file: Path | None = None,
             forked: bool = False) -> tuple[str, str, float]:
    """Train one cell in a subprocess (``forked``: from the preloaded server); returns (status, error line, seconds).

    With ``stop_file`` (a tuning trial that may be pruned, a sweep that may be interrupted) the process is
    ended once that file appears, and the status is ``stopped``: the run folder keeps the epochs it finished.
    """
    config = config_path(sweep_dir, cell.name)
    runfolder.write_yaml(config, cell.experiment.model_dump(mode="json", exclude_none=True))
    log_file = log_path(sweep_dir, cell.name)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), LOSSBENCH_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    start = time.perf_counter()
    attempts = _attempts(cell, config)
    (cell.run_dir / "error.txt").unlink(missing_ok=True)
    returncode, stderr, stopped = _train(attempts, log_file, env, stop_file, forked)
    seconds = time.perf_counter() - start
    if returncode == 0 and runfolder.is_finished(cell.run_dir):
        return "done", "", seconds
    if stopped:
        return "stopped", "", seconds
    error = _error_line(stderr, returncode).removeprefix(f"{config}: ")  # the row names the cell already
    runfolder.atomic_write_text(cell.run_dir / "error.txt", error + "\n")
    return "failed", error, seconds


def cell_outcome(cell: Cell, future: Future) -> tuple[str, str, float]:
    """(status, error line, seconds) of a finished cell; a call that raised (a lost Ray worker) fails the cell."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - recorded as the cell's error, the other cells go on
        error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[-1]}"[:300]
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        runfolder.atomic_write_text(cell.run_dir / "error.txt", error + "\n")
        return "failed", error, 0.0


def run_cells(plan: SweepPlan, cells: list[Cell], backend: Any, log: Callable[[str], Any]) -> None:
    """Train ``cells`` on ``backend`` (as many at a time as it runs); results.csv is rewritten as each one ends,
    and its line says how long the sweep has run and about how long is left (experiments/progress.py).

    Interrupted (Ctrl-C, SIGINT), the sweep stops the cells it started (through a stop file each polls), cancels
    the others, records every finished cell in results.csv, then lets the interruption go on.
    """
    stop = plan.sweep_dir / STOP_NAME
    stop.unlink(missing_ok=True)  # left by a sweep killed while it stopped its cells
    futures = {backend.submit(run_cell, cell, plan.sweep_dir, stop_file=stop): cell for cell in cells}
    progress = Progress(len(cells), "cell", log, jobs=backend.jobs)
    try:
        for n, future in enumerate(as_completed(futures), 1):
            cell = futures[future]
            status, error, seconds = cell_outcome(cell, future)
            write_results(plan)
            detail = f"error: {error}" if error else "ok"
            progress.done(f"[{n}/{len(cells)}] {status} {cell.name} ({seconds:.2f}s) {detail}", seconds)
    except KeyboardInterrupt:
        progress.close()
        stop_cells(plan, list(futures), stop, log)
        raise
    finally:
        progress.close()


def stop_cells(plan: SweepPlan, futures: list[Future], stop: Path, log: Callable[[str], Any]) -> None:
    """End the running cells (their processes see ``stop``), cancel those not started, and write results.csv.

    ``stop`` is removed once every running cell has ended; one still running after the wait (a machine too busy
    to let it see the file in time) keeps seeing it, so the backend's shutdown does not wait for it to train to
    its end. A sweep removes a ``stop`` left behind when it starts."""
    stop.touch()
    running = [f for f in futures if not f.cancel()]
    _, still_running = wait(running, timeout=STOP_POLL_SECONDS * 20)
    write_results(plan)
    rows = collect_results(plan)
    if not still_running:
        stop.unlink(missing_ok=True)
    done = sum(r["status"] == "done" for r in rows)
    log(f"sweep interrupted: {done} of {len(rows)} cells done and recorded in {plan.sweep_dir / RESULTS_CSV}; "
        f"{len(running)} stopped; run the sweep again to finish the rest")


def run_in_rounds(plan: SweepPlan, todo: list[Cell], backend: Any, log: Callable[[str], Any]) -> None:
    """Run the cells of ``todo`` the sweep has given (every cell of a fixed document; a sequential document's
    seeds so far), then the seeds the next round gives, until no round gives a new one. Each cell runs at most
    once per sweep: a failed seed counts as run (run the sweep again to retry it)."""
    waiting = {c.name: c for c in todo}
    while True:
        given = {row["cell"] for row in collect_results(plan)}
        now = [cell for name, cell in waiting.items() if name in given]
        if not now:
            return
        if plan.sequential and len(now) < len(waiting):
            log(f"round: {len(now)} cells")
        run_cells(plan, now, backend, log)
        for cell in now:
            del waiting[cell.name]


def cells_to_run(plan: SweepPlan, rerun_changed: bool, held: set[str] = frozenset()) -> list[Cell]:
    """The plan's cells that are not done, ``held`` ones aside; with ``rerun_changed``, finished cells that
    would run differently now lose their old results first, so they are never reported as done again."""
    for cell in changed_cells(plan, plan.cells, rerun_changed):
        runfolder.clear_previous_run(cell.run_dir)
    return [c for c in plan.cells if c.name not in held and cell_status(c, plan.memo)[0] != "done"]


def run_sweep(plan: SweepPlan, jobs: int = 1, log=print, backend: Any = None,
              prepare: Callable[[SweepPlan, Any, Callable], set[str] | None] | None = None,
              rerun_changed: bool = False) -> list[dict[str, Any]]:
    """Run every unfinished cell on ``backend`` (default: this machine, ``jobs`` at a time), keep results.csv
    current, return its rows.

    A finished cell whose recorded config or data differs from what it would run now stops the sweep before
    anything runs (:func:`changed_cells`), or, with ``rerun_changed``, loses its old results and trains again.
    ``prepare(plan, backend, log)`` runs first, under the sweep's lock: tuning
    (:func:`lossbench.experiments.tune.run_studies`) runs its studies there and adds the tuned cells to
    ``plan.cells``; it returns the names of cells to record but not train (a study that found nothing).
    """
    started = time.perf_counter()
    changed_cells(plan, plan.cells, rerun_changed)  # a refusal before the lock and tuning leaves no byte changed
    own = backend is None
    backend = LocalBackend(jobs) if own else backend
    try:
        with SweepLock(plan.sweep_dir):
            held = (prepare(plan, backend, log) or set()) if prepare is not None else set()
            todo = cells_to_run(plan, rerun_changed, held)
            done = sum(cell_status(c, plan.memo)[0] == "done" for c in plan.cells)
            log(f"sweep {plan.sweep_dir}: {len(plan.cells)} cells, {done} already done, {len(todo)} to run, "
                f"{backend.describe()}" + (" (sequential seeds: as many as the answers need)" if plan.sequential
                                           else ""))
            write_results(plan)
            run_in_rounds(plan, todo, backend, log)
            rows = collect_results(plan)
            write_results(plan)
    finally:
        if own:
            backend.close()
    failed = [r for r in rows if r["status"] != "done"]
    log(f"sweep finished in {time.perf_counter() - started:.0f}s: {len(rows) - len(failed)} done, "
        f"{len(failed)} failed -> {plan.sweep_dir / RESULTS_CSV}")
    return rows
