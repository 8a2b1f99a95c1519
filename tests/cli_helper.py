"""The one way tests run the ``lossbench`` command: in this process, or as a real process when that is the point.

In-process runs skip seconds of imports per call and use one thread (a small,
shared test machine); a real process is for what only one can show: an exit
code of ``python -m lossbench``, a kill, output before anything is imported.
"""

from __future__ import annotations

import contextlib
import io
import os
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


def run_cli(argv: list[str], cwd: Path | None = None, *, process: bool = False, timeout: float = 600) -> CliResult:
    """``lossbench ARGV``: exit code, stdout and stderr (an exception escaping in-process is a traceback, code 1)."""
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
