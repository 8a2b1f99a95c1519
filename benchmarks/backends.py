"""Sweep backends: the wall time of one small sweep on Ray against the same sweep on the local pool.

Both run ``lossbench sweep CONFIG --jobs J`` in a fresh folder, as a user would: the local pool
(the default) and ``--backend ray`` without ``--address``, which starts Ray on this machine and
stops it at the end, so the Ray column includes what a user pays for Ray (start-up, a task per
cell, stopping it). The cells are the same tiny synthetic runs (``--cells`` seeds of one config),
so the difference is the backend's overhead; the ratio Ray / local is that overhead as a factor.
The training seconds the cells record are printed beside each, to show how much of each wall
time is training at all: on a real sweep (minutes per cell) Ray's fixed cost shrinks to nothing.

    PYTHONPATH=src python benchmarks/backends.py [--cells 8] [--jobs 2] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """\
name: backends
data: {{source: synthetic, num_classes: 3, image_size: 16, train_per_class: 32, val_per_class: 8}}
model: {{name: resnet20}}
batch_size: 16
epochs: {epochs}
device: cpu
grid:
  seed: {seeds}
"""


def run_sweep(config: Path, out: Path, jobs: int, backend: str) -> tuple[float, float]:
    """(wall seconds of the whole ``lossbench sweep``, training seconds its cells record)."""
    env = dict(os.environ, LOSSBENCH_CACHE=str(out.parent / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "lossbench", "sweep", str(config), "--out", str(out), "--jobs", str(jobs),
           "--backend", backend]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{backend} sweep failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    train = sum(json.loads(p.read_text()).get("wall_seconds", 0.0) for p in out.glob("*/summary.json"))
    return wall, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=8, help="cells of the sweep (seeds of one config)")
    parser.add_argument("--jobs", type=int, default=2, help="cells at a time, on both backends")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("the backends benchmark needs Ray: pip install 'lossbench[ray]'") from None
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.cells} cells of a tiny synthetic config (ResNet-20, {args.epochs} epoch), --jobs {args.jobs}, "
          f"load average before: {load}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="lossbench-backends-") as tmp:
        config = Path(tmp) / "backends.yaml"
        config.write_text(CONFIG.format(epochs=args.epochs, seeds=list(range(args.cells))))
        for backend in ("local", "ray"):
            results[backend] = run_sweep(config, Path(tmp) / backend, args.jobs, backend)
    print(f"{'backend':<10}{'wall time (s)':>16}{'training its cells record (s)':>32}")
    for backend, (wall, train) in results.items():
        print(f"{backend:<10}{wall:16.1f}{train:32.1f}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"ratio Ray / local wall time: {results['ray'][0] / results['local'][0]:.2f}  (load average after: {load})")


if __name__ == "__main__":
    main()
