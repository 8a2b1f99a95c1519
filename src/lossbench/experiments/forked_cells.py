"""A sweep's cells as ``python -m lossbench`` processes forked from a preloaded server: no seconds of imports each.

A fresh ``python -m lossbench train`` spends seconds importing torch, torchvision (with torch._dynamo), smp
and matplotlib; on a small machine that was a large part of a quickstart cell. The local
backend instead starts each cell from a server process (multiprocessing's ``forkserver``) that imported all
of that once per sweep. A cell is still a process of its own: its exit code, its stderr, a kill or a stop
file end it alone; it runs ``lossbench/__main__.py`` with the cell's arguments, environment and working
folder and its thread count, exactly what the fresh process would run. It dies with the sweep's process
(a thread waits for that process to end), so a killed sweep leaves no cell training. The server keeps the
code it imported: a long-lived Python session that edits lossbench meanwhile gets the old code in its
cells. ``LocalBackend(jobs, fork=False)`` starts fresh processes, as it does inside a daemonic
multiprocessing worker, which may not have children of its own.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

#: what the server imports once: everything a training cell imports, this module (the children's entry) and
#: fork_warmup (draws one figure, so matplotlib's fonts are loaded there, and loads the installed entry points)
PRELOAD = ["torch", "torchvision", "matplotlib.pyplot", "segmentation_models_pytorch",
           "lossbench.cli", "lossbench.engine.fit", "lossbench.plots", "lossbench.losses", "lossbench.models",
           "lossbench.data", "lossbench.experiments.fork_warmup", __name__]


def can_fork_cells() -> bool:
    """Whether this process may start forked cells: not inside a daemonic multiprocessing worker (a Pool's),
    which may not have children of its own; fresh processes work there."""
    return not multiprocessing.current_process().daemon


def cell_server() -> Any:
    """The ``forkserver`` context, its server started (once per process) with :data:`PRELOAD` imported."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    return context


def _die_with(pid: int) -> None:
    """SIGKILL this process once process ``pid`` (the sweep) has ended: a daemon thread waits on its pidfd
    (Linux 5.3+), else checks every half second. The server cannot do it: it lives while any cell does."""
    import signal
    import threading

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _exists(pid):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="lossbench-sweep-watch", daemon=True).start()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cell_main(argv: list[str], out_path: str, err_path: str, env: dict[str, str], cwd: str, sweep: int) -> None:
    """Body of a forked cell: ``python -m lossbench ARGV`` in ``env`` and ``cwd``, stdout appended to ``out_path``,
    stderr to ``err_path``, its exit code the CLI's; it dies with process ``sweep``."""
    import runpy
    import threading
    import traceback

    import torch
    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing one (a semaphore the resource tracker records); os._exit below skips
    # its clean-up, so the tracker would warn of one leaked semaphore per cell at the sweep's end
    tqdm.set_lock(threading.RLock())
    _die_with(sweep)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    torch.set_num_threads(int(env.get("OMP_NUM_THREADS") or 1))
    for fileno, path in ((1, out_path), (2, err_path)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, fileno)
        os.close(fd)
    sys.argv = [sys.executable, *argv]
    code: Any = 0
    try:
        runpy.run_module("lossbench", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # noqa: BLE001 - a traceback on stderr and code 1, as a fresh interpreter gives
        traceback.print_exc()
        code = 1
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_forked(command: list[str], log: IO[str], env: dict[str, str], stop_file: Path | None,
               poll_seconds: float) -> tuple[int, str, bool]:
    """(return code, stderr, stopped) of the ``python -m lossbench ...`` ``command``, run as a forked process.

    Its stdout is appended to ``log`` (the cell's log file); it is ended (SIGTERM) once ``stop_file`` exists,
    and killed when this call is interrupted, so it never outlives its cell.
    """
    assert command[1:3] == ["-m", "lossbench"], command
    log.flush()
    with tempfile.NamedTemporaryFile("r", prefix="lossbench-cell-", suffix=".err", encoding="utf-8",
                                     errors="replace") as err:
        proc = cell_server().Process(target=_cell_main, args=(command[3:], log.name, err.name, env, os.getcwd(),
                                                                    os.getpid()))
        proc.start()
        stopped = wait_for_cell(proc, stop_file, poll_seconds)
        return proc.exitcode, err.read(), stopped


def wait_for_cell(proc: Any, stop_file: Path | None, poll_seconds: float) -> bool:
    """Wait for the started ``proc`` (a ``multiprocessing.Process``) to end; end it (SIGTERM) once ``stop_file``
    exists, kill it when the wait is interrupted. Whether it was stopped."""
    stopped = False
    try:
        while True:
            proc.join(None if stop_file is None else poll_seconds)
            if proc.exitcode is not None:
                return stopped
            if not stopped and stop_file is not None and stop_file.exists():
                proc.terminate()
                stopped = True
    except BaseException:
        proc.kill()
        proc.join()
        raise
