"""The local backend forks each cell from a preloaded server: a process of its own that ends with the sweep."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli_helper import ENV

SWEEP = """\
name: long
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 2}
model: {name: resnet20}
batch_size: 4
epochs: 200
device: cpu
grid: {seed: [0]}
"""


def process_writing(log: Path) -> int | None:
    """pid of the process whose stdout is ``log`` (a cell's), if any."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{entry}/fd/1") == str(log):
                return int(entry)
        except OSError:
            continue
    return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_cell_is_forked_from_the_server_and_dies_with_a_killed_sweep(tmp_path):
    cfg = tmp_path / "long.yaml"
    cfg.write_text(SWEEP.replace("OUT", str(tmp_path / "runs")))
    sweep_dir = tmp_path / "runs" / "long"
    sweep = subprocess.Popen([sys.executable, "-m", "lossbench", "sweep", str(cfg)], env=ENV, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end, cell = time.monotonic() + 240, None
        while cell is None and time.monotonic() < end and sweep.poll() is None:
            logs = list((sweep_dir / "logs").glob("*.log")) if (sweep_dir / "logs").is_dir() else []
            cell = process_writing(logs[0]) if logs else None
            time.sleep(0.05)
        assert cell is not None, "no cell process appeared"
        cmdline = Path(f"/proc/{cell}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        parent = int(Path(f"/proc/{cell}/stat").read_text().split(") ")[-1].split()[1])
        assert parent != sweep.pid and "forkserver" in cmdline, cmdline  # not a fresh `python -m lossbench train`
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait()
        end = time.monotonic() + 30
        while alive(cell) and time.monotonic() < end:
            time.sleep(0.1)
        assert not alive(cell), "the cell kept training after its sweep was killed"
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()


def backend_in_a_daemonic_worker_starts_fresh_processes() -> None:
    from lossbench.experiments.backends import LocalBackend

    with LocalBackend(1) as backend:
        assert backend.fork is False  # a daemonic process may not start children through multiprocessing


def test_inside_a_daemonic_worker_cells_are_fresh_processes(tmp_path):
    from cli_helper import forked_call

    from lossbench.experiments.backends import LocalBackend

    proc = forked_call(backend_in_a_daemonic_worker_starts_fresh_processes, log=tmp_path / "log", daemon=True)
    proc.join(120)
    assert proc.exitcode == 0, (tmp_path / "log").read_text()
    with LocalBackend(1) as backend:
        assert backend.fork is True


def test_a_forked_sweep_ends_without_leaked_semaphore_warnings(tmp_path):
    """Each forked cell ends with os._exit; tqdm's default (multiprocessing) lock would then be reported by the
    resource tracker as one leaked semaphore per cell when the sweep ends."""
    cfg = tmp_path / "short.yaml"
    cfg.write_text(SWEEP.replace("OUT", str(tmp_path / "runs")).replace("epochs: 200", "epochs: 1")
                   .replace("grid: {seed: [0]}", "grid: {seed: [0, 1]}"))
    done = subprocess.run([sys.executable, "-m", "lossbench", "sweep", str(cfg)], env=ENV, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 done, 0 failed" in done.stdout
    assert "leaked" not in done.stderr, done.stderr
