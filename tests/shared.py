"""Expensive test fixtures made once per test session, also under pytest-xdist (where each worker is a process).

``pytest -n 2`` runs two worker processes, and a module- or session-scoped
fixture is made once per worker that runs one of its tests. For fixtures
that train runs or run whole sweeps, :func:`once_per_session` makes them once
for the session: the first caller makes them under a file lock, the others
wait and read the result. Whatever runs on the shared folder must only read it
(or write what no other test reads).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def once_per_session(tmp_path_factory, name: str, make: Callable[[Path], Any]) -> tuple[Path, Any]:
    """``(folder, result)`` of ``make(folder)``, run once per test session; ``result`` must be JSON-able."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers' base folders share the session's parent folder
        base = base.parent
    folder = base / f"shared-{name}"
    with open(base / f".shared-{name}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        done = folder / "result.json"
        if not done.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            result = make(folder)
            tmp = done.with_name(".result.json.tmp")
            tmp.write_text(json.dumps(result), encoding="utf-8")
            tmp.replace(done)
        return folder, json.loads(done.read_text(encoding="utf-8"))
