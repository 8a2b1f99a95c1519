"""Where a sweep's cells run: this machine's pool of processes, or the tasks of a Ray cluster.

A backend runs calls of one function, ``jobs`` at a time: ``submit(task, *args, **kwargs)``
returns a :class:`concurrent.futures.Future` of ``task(*args, threads=T, gpu=G, **kwargs)``,
where ``threads`` is the number of CPU threads the call may use and ``gpu`` the GPU index to pin
(None: keep the ``CUDA_VISIBLE_DEVICES`` the call runs with). The sweep's task is
:func:`lossbench.experiments.sweep.run_cell`, which trains one cell in its own ``lossbench train``
process; both backends run that same function, so resuming, the one-line error of a failed cell
and the kill-with-its-parent handling are the same on one machine and on a cluster.

- :class:`LocalBackend` (the default): a thread per slot on this machine, each waiting on its
  cell's process; every cell gets ``usable CPUs // jobs`` threads and the GPUs round robin. Its
  calls get ``forked=True``: the cell's process is forked from a server that imported torch and
  lossbench once (experiments/forked_cells.py), not started as a fresh interpreter.
- :class:`RayBackend` (``pip install 'lossbench[ray]'``): each call is a Ray task asking for its
  share of the cluster's CPUs and, when the cluster has GPUs, one GPU. The sweep folder must be on
  storage every node mounts at the same path (cells read their configs and write their run
  folders there), and lossbench must be installed on every node.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lossbench.errors import UserError
from lossbench.experiments.forked_cells import can_fork_cells, cell_server

BACKENDS = ("local", "ray")


def gpu_count() -> int:
    """CUDA devices this process sees (0 without a usable CUDA)."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA is the same as none
        return 0


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under ``taskset``), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class LocalBackend:
    """Calls on this machine, ``jobs`` at a time, each with ``usable CPUs // jobs`` threads; ``fork``: cells
    forked from a preloaded server (the default; not in a daemonic worker), else fresh interpreters."""

    name = "local"

    def __init__(self, jobs: int = 1, fork: bool = True) -> None:
        if jobs < 1:
            raise UserError(f"--jobs {jobs}: run at least one cell at a time (--jobs 1 or more)")
        self.jobs = jobs
        self.fork = fork and can_fork_cells()
        self.threads = max(1, usable_cpus() // jobs)
        self._gpus = gpu_count()
        self._submitted = 0
        self._pool = ThreadPoolExecutor(max_workers=jobs)

    def describe(self) -> str:
        return f"{self.jobs} at a time"

    def submit(self, task: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        gpu = self._submitted % self._gpus if self._gpus else None
        self._submitted += 1
        if self.fork and self._submitted == 1:
            cell_server()  # started here, before the pool's threads, while no cell waits for it
        return self._pool.submit(task, *args, threads=self.threads, gpu=gpu, forked=self.fork, **kwargs)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "LocalBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def import_ray() -> Any:
    """The ``ray`` module, or one line naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'lossbench[ray]'") from None
    return ray


def _call_in(cwd: str, task: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """Run ``task`` in the sweep's working directory, so relative paths mean what they meant to the sweep."""
    if not os.path.isdir(cwd):
        raise UserError(f"{cwd}: the sweep's working directory is not on this Ray node; run the sweep from a "
                        "folder on storage every node mounts at the same path")
    os.chdir(cwd)
    return task(*args, **kwargs)


class RayBackend:
    """Calls as Ray tasks, each asking for ``threads`` CPUs (its share) and one GPU when the cluster has GPUs.

    ``address``: None uses the Ray this process already started, else Ray's own default (the cluster
    ``RAY_ADDRESS`` names or ``ray start`` runs on this machine, else a new Ray on this machine, stopped
    at the end); ``auto`` joins the cluster ``ray start`` runs here; ``ray://HOST:PORT`` joins a remote
    one through Ray Client. ``jobs``: cells in flight; default one per GPU of the cluster, or one per
    CPU when it has none. A task's share of CPUs is the cluster's CPUs // jobs, at most one node's.
    """

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None) -> None:
        ray = import_ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise UserError(f"--address {address or '(none)'}: cannot start or reach a Ray cluster ({first}); "
                                "start one with `ray start --head` and pass --address auto") from None
            self._started = True
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [cpus])
        if jobs is not None and jobs < 1:
            raise UserError(f"--jobs {jobs}: run at least one cell at a time (--jobs 1 or more)")
        self.jobs = jobs or gpus or cpus
        self.threads = max(1, min(node_cpus, cpus // self.jobs))
        self.gpus = 1 if gpus else 0
        self._remote = ray.remote(_call_in).options(num_cpus=self.threads, num_gpus=self.gpus)
        self._running: list[tuple[Any, Future]] = []

    def describe(self) -> str:
        return f"{self.jobs} at a time on Ray ({self.threads} CPU{'s' if self.threads > 1 else ''}" \
               + (" and 1 GPU" if self.gpus else "") + " per cell)"

    def submit(self, task: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        ref = self._remote.remote(os.getcwd(), task, args, {**kwargs, "threads": self.threads, "gpu": None})
        future = ref.future()
        self._running = [(r, f) for r, f in self._running if not f.done()] + [(ref, future)]
        return future

    def close(self) -> None:
        """Cancel what still runs (its worker ends, and the cell's process with it); stop a Ray this backend started."""
        for ref, future in self._running:
            if not future.done():
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - it finished or its worker is gone already
                    pass
        self._running = []
        if self._started:
            self._ray.shutdown()

    def __enter__(self) -> "RayBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_backend(name: str, address: str | None = None, jobs: int | None = None) -> LocalBackend | RayBackend:
    """The backend ``lossbench sweep --backend NAME [--address A] [--jobs N]`` asks for."""
    if name == "ray":
        return RayBackend(address, jobs)
    if address is not None:
        raise UserError("--address is the Ray cluster to run on; use it with --backend ray")
    return LocalBackend(1 if jobs is None else jobs)
