"""Every speed benchmark, each printing its measured ratio against a baseline run in the same process.

    PYTHONPATH=src python -m benchmarks                      # all, full size (CPU)
    PYTHONPATH=src python -m benchmarks --quick              # all, small counts (minutes)
    PYTHONPATH=src python -m benchmarks calibrate            # the reference workload alone (seconds)
    PYTHONPATH=src python -m benchmarks engine data --quick  # only some
    PYTHONPATH=src python -m benchmarks losses engine --gpu  # GPU columns: 512x512 losses; ResNet-50 bf16

``calibrate``: the reference workload (benchmarks/calibrate.py: 10 training
steps of ResNet-18 at 32 px, batch 64, one thread, Adam), the machine's speed
that other wall times are divided by; ``losses``: forward + backward of each loss vs segmentation_models_pytorch's
equivalent (benchmarks/losses.py); ``engine``: lossbench's training loop vs a
bare PyTorch loop (benchmarks/engine.py); ``data``: the cached loader vs a
per-item PIL pipeline (benchmarks/data.py); ``quickstart``: the wall time of
``lossbench sweep recipes/quickstart.yaml --jobs 2`` (``make demo``) into a temporary folder,
the old recipe (before issue 25) and today's, over the reference workload
(benchmarks/quickstart.py); ``backends``: the same small sweep on Ray
(``--backend ray``, Ray started on this machine) against the local pool
(benchmarks/backends.py, needs ``lossbench[ray]``). The header gives the machine, versions, date and
load average, which the numbers need beside them: on a shared machine ratios
near 1 move from run to run. ``make bench`` runs ``python -m benchmarks --quick``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("calibrate", "losses", "engine", "data", "quickstart", "backends")


def header() -> str:
    """Machine, versions, date and load: what a reader needs to weigh the ratios below."""
    import segmentation_models_pytorch as smp
    import torch
    import torchvision

    import lossbench

    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, load average {load}; GPU: {gpu}\n"
            f"# Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"smp {smp.__version__}, lossbench {getattr(lossbench, '__version__', '?')}")


def calibrate(quick: bool, gpu: bool) -> None:
    """The reference workload, the same with or without --quick (a ratio needs the same workload)."""
    from benchmarks import calibrate as bench

    bench.main()


def losses(quick: bool, gpu: bool) -> None:
    from benchmarks import losses as bench

    argv = ["--repeats", "5" if quick else "31"]
    if gpu:
        argv += ["--device", "cuda", "--size", "512"]
    bench.main(argv)


def engine(quick: bool, gpu: bool) -> None:
    from benchmarks import engine as bench

    if gpu:
        argv = ["--gpu"] + (["--images", "512", "--rounds", "3"] if quick else [])
    else:
        argv = ["--threads", "1"] + (["--images", "256", "--rounds", "3"] if quick else [])
    bench.main(argv)


def data(quick: bool, gpu: bool) -> None:
    from benchmarks import data as bench

    bench.main(["--images", "600", "--workers", "0"] if quick else [])


def quickstart(quick: bool, gpu: bool) -> None:
    """The old quickstart recipe and today's, each as `make demo` runs it, as multiples of the reference workload."""
    from benchmarks import quickstart as bench

    bench.main(["--quick"] if quick else [])


def backends(quick: bool, gpu: bool) -> None:
    """Wall time of a small sweep on Ray vs on the local pool (Ray's overhead as a ratio)."""
    from benchmarks import backends as bench

    bench.main(["--cells", "4" if quick else "8", "--jobs", "2"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run, of {', '.join(NAMES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small counts: minutes instead of tens of minutes")
    parser.add_argument("--gpu", action="store_true",
                        help="GPU columns: losses at 512x512 on CUDA, engine ResNet-50 224 bf16 + channels_last")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(NAMES)}")
    names = args.names or list(NAMES)
    print(header(), flush=True)
    for name in names:
        print(f"\n## {name}{' (quick)' if args.quick else ''}", flush=True)
        start = time.perf_counter()
        globals()[name](args.quick, args.gpu)
        print(f"# {name}: {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
