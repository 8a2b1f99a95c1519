"""The one way tests run the ``lossbench`` command: in this process, or as a real process when that is the point.

In-process runs skip seconds of imports per call and use one thread (a small,
shared test machine); a real process is for what only one can show: an exit
code of ``python -m lossbench``, a kill, output before anything is imported.
Between the two, :func:`forked_cli` starts a real process forked from a server
that has lossbench imported already (a kill, an exit code, its own memory; no
seconds of imports), and :func:`forked_cell_process` runs a sweep's cells that
way (the ``forked_cells`` fixture).
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

#: the environment of real processes: one thread, this checkout's sources first
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV["PYTHONPATH"] = SRC + (os.pathsep + ENV["PYTHONPATH"] if ENV.get("PYTHONPATH") else "")


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    via: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def run_cli(argv: list[str], cwd: Path | None = None, *, process: bool | str = False, timeout: float = 600
            ) -> CliResult:
    """``lossbench ARGV``: exit code, stdout and stderr (an exception escaping in-process is a traceback, code 1).

    ``process=True``: a fresh ``python -m lossbench`` process; ``process="forked"``: a process forked with
    lossbench imported (:func:`forked_cli`), whose stdout and stderr are its own file descriptors 1 and 2.
    """
    if process == "forked":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="forked-cli-") as logs:
            out, err = Path(logs) / "out", Path(logs) / "err"
            proc = forked_cli(argv, out, err_path=err, cwd=cwd)
            proc.join(timeout)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
                raise TimeoutError(f"lossbench {' '.join(map(str, argv))} ran over {timeout} s")
            read = lambda path: path.read_text() if path.exists() else ""  # noqa: E731
            return CliResult(proc.exitcode, read(out), read(err), "forked")
    if process:
        res = subprocess.run([sys.executable, "-m", "lossbench", *map(str, argv)], capture_output=True, text=True,
                             env=ENV, cwd=cwd, timeout=timeout)
        return CliResult(res.returncode, res.stdout, res.stderr, "subprocess")
    import torch

    from lossbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    old, threads = Path.cwd(), torch.get_num_threads()
    torch.set_num_threads(1)  # spinning OpenMP threads on a small shared machine slow tiny runs many times over
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            _process_warning_filters()  # warnings reach stderr as they would in a fresh `python -m lossbench`
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - exactly what the tests look for
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(old)
        torch.set_num_threads(threads)
    return CliResult(code, out.getvalue(), err.getvalue(), "in-process")


def _process_warning_filters() -> None:
    """Python's default warning filters, printing to the (redirected) sys.stderr."""
    warnings.resetwarnings()
    for action, category in (("ignore", ResourceWarning), ("ignore", ImportWarning),
                             ("ignore", PendingDeprecationWarning), ("ignore", DeprecationWarning)):
        warnings.simplefilter(action, category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
        warnings.formatwarning(message, category, filename, lineno, line))


# --- lossbench processes forked from a preloaded server (no seconds of imports per process) -----------


def cli_child(argv: list[str], out_path: str, err_path: str | None = None, slow_fsync: float = 0.0,
              env: dict[str, str] | None = None, cwd: str | None = None, fork_cells: bool = False) -> None:
    """Body of a forked ``lossbench ARGV`` process: stdout to ``out_path`` (stderr too, unless ``err_path``),
    exit with the CLI's code, as ``python -m lossbench`` would.

    ``env`` / ``cwd``: the environment and folder it runs in (a fresh process would inherit them; a forked
    one has the server's), its thread count from ``OMP_NUM_THREADS`` there. ``slow_fsync`` simulates a slow
    disk: every fsync of a checkpoint's temp file (``.last.pt.*.tmp``, ``.best.pt.*.tmp``) takes that many
    seconds longer, so a kill can be timed to land inside the write. ``fork_cells``: a sweep it runs starts its
    cells with :func:`forked_cell_process` (from a fork server of its own).
    """
    import signal
    import time

    import torch

    # Ctrl-C as in a terminal's foreground: a suite started in the background (`make test &`, a CI runner) hands its
    # processes SIGINT ignored, and the fork server passes that on, so the interrupt tests would see it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
        # a fresh process would put PYTHONPATH's folders on sys.path (where plugin packages may lie)
        sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    if cwd is not None:
        os.chdir(cwd)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    for fileno, path in ((1, out_path), (2, err_path or out_path)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, fileno)
        os.close(fd)
    if slow_fsync:
        real_fsync = os.fsync

        def fsync(fileno: int) -> None:
            if ".pt." in os.readlink(f"/proc/self/fd/{fileno}"):
                time.sleep(slow_fsync)
            real_fsync(fileno)

        os.fsync = fsync
    if fork_cells:
        fork_sweep_cells()
    from lossbench.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - a traceback is what a fresh process prints, and what tests look for
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_SERVER = None
#: what a forked process finds imported: the CLI and the engine, the sweep, its report and tuning, and what a
#: training run otherwise imports lazily (smp, timm and the Hugging Face hub, for the versions in config.yaml;
#: lossbench reads the hub cache's location from the environment itself, per call), and matplotlib's fonts
#: (warm_plots draws one figure)
PRELOAD = ["torch", "lossbench.cli", "lossbench.engine.fit", "lossbench.experiments.sweep",
           "lossbench.experiments.tune", "lossbench.experiments.report", "lossbench.plots",
           "segmentation_models_pytorch", "warm_plots"]


def _forkserver():
    """This process's fork server, started once with :data:`PRELOAD` imported, one thread."""
    import multiprocessing

    global _SERVER
    if _SERVER is None:
        _SERVER = multiprocessing.get_context("forkserver")
        _SERVER.set_forkserver_preload(PRELOAD + [__name__])
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            from multiprocessing import forkserver

            forkserver.ensure_running()
        finally:
            if saved is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = saved
    return _SERVER


def forked_cli(argv: list[str], log_path: Path, slow_fsync: float = 0.0, *, err_path: Path | None = None,
               env: dict[str, str] | None = None, cwd: Path | None = None, daemon: bool = True,
               fork_cells: bool = False):
    """Start ``lossbench ARGV`` as a process forked from a server that has lossbench imported; returns it
    (a ``multiprocessing.Process``: ``pid``, ``join``, ``exitcode``, negative when a signal ended it).

    It runs in ``env`` (default: this process's environment, one thread, this checkout's sources first) and
    ``cwd`` (default: this process's folder), as a fresh process started from here would. ``daemon=False`` lets
    it start processes of its own (DataLoader workers, forked cells); the caller must then join it.
    ``fork_cells``: a sweep it runs forks its cells too (:func:`cli_child`).
    """
    args = (list(map(str, argv)), str(log_path), err_path and str(err_path), slow_fsync,
            {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ENV["PYTHONPATH"]} if env is None else env,
            str(cwd or Path.cwd()), fork_cells)
    proc = _forkserver().Process(target=cli_child, args=args, daemon=daemon and not fork_cells)
    proc.start()
    return proc


def _call_child(target, args: tuple, log_path: str, env: dict[str, str], cwd: str) -> None:
    """Body of :func:`forked_call`: ``target(*args)`` with output to ``log_path``; exit code 0, or 1 and a traceback."""
    import torch

    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    torch.set_num_threads(1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 0
    try:
        target(*args)
    except BaseException:  # noqa: BLE001 - a traceback, as a fresh process would print
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def train_until_killed_after_epoch(config: str, epoch: int) -> None:
    """A training process that SIGKILLs itself right after ``epoch`` (start it with :func:`forked_call`)."""
    import signal

    from lossbench.config import load_experiment
    from lossbench.engine import train

    train(load_experiment(config), on_epoch_end=lambda e: e == epoch and os.kill(os.getpid(), signal.SIGKILL))


def metrics_without_time(run: Path) -> list[dict[str, str]]:
    """The rows of run folder ``run``'s metrics.csv without their wall-clock column ``seconds``."""
    import csv

    with (run / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def forked_call(target, *args, log: Path, daemon: bool = True):
    """Start ``target(*args)`` (a module-level function) in a process forked with lossbench imported, one thread,
    output to ``log``; returns the ``multiprocessing.Process`` (``daemon=False``: it may start processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ENV["PYTHONPATH"]}
    proc = _forkserver().Process(target=_call_child, args=(target, args, str(log), env, str(Path.cwd())),
                                 daemon=daemon)
    proc.start()
    return proc


def forked_cell_process(command: list[str], log, env: dict[str, str], preexec, stop_file: Path | None
                        ) -> tuple[int, str, bool]:
    """``lossbench.experiments.sweep._run_process`` for a ``python -m lossbench`` cell command, in a forked process.

    The same contract as the sweep's own: (return code, stderr, stopped); stdout appended to the cell's log; the
    process ended (SIGTERM) once ``stop_file`` exists, killed when this call is interrupted.
    """
    import tempfile

    from lossbench.experiments.forked_cells import wait_for_cell
    from lossbench.experiments.sweep import STOP_POLL_SECONDS

    assert command[:3] == [sys.executable, "-m", "lossbench"], command
    log.flush()
    with tempfile.NamedTemporaryFile("r", prefix="cell-stderr-", suffix=".txt", encoding="utf-8") as err:
        proc = forked_cli(command[3:], Path(log.name), err_path=Path(err.name), env=env, daemon=False)
        stopped = wait_for_cell(proc, stop_file, STOP_POLL_SECONDS)
        return proc.exitcode, err.read(), stopped


def fork_sweep_cells() -> None:
    """In this process, sweeps start their cells with :func:`forked_cell_process` (a Ray worker's setup hook)."""
    from lossbench.experiments import sweep

    sweep._run_process = forked_cell_process


#: the environment of a sweep whose cells may run on Ray: this checkout's sources first, and tests/ for the Ray
#: workers' setup hook (:func:`fork_sweep_cells`)
RAY_ENV = {**ENV, "PYTHONPATH": os.pathsep.join([ENV["PYTHONPATH"], str(Path(__file__).resolve().parent)])}


def start_local_ray():
    """A local Ray with one CPU (one worker process to start), whose workers start cells as forked processes;
    yields the ray module and shuts it down after (the body of the suite's ``ray_local`` fixture)."""
    import ray

    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = RAY_ENV["PYTHONPATH"]  # Ray's workers inherit this process's environment
    try:  # a new one, ours
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": "cli_helper.fork_sweep_cells"})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield ray
    ray.shutdown()


def markdown_table(md: str, first_column: str) -> dict[str, list[str]]:
    """Rows of the Markdown table whose header starts with ``first_column``, by their first cell."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        out[cells[0]] = cells[1:]
    return out


def trial_states(db: Path) -> list[str]:
    """The states of a tuned sweep's Optuna trials in ``tune.db``, read-only ([] while it is not written yet)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return [row[0] for row in conn.execute("SELECT state FROM trials")]
    except sqlite3.Error:  # not created yet, or being written
        return []
