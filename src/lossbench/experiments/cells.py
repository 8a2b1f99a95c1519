"""What a cell's run folder holds: done, failed, changed since it ran, or pending; whether it can resume.

A finished cell counts as done only while its ``config.yaml`` records exactly what the
sweep would run now (every key but where the run and its caches live, and the identity
of its data's files, :func:`lossbench.data.cache.data_identity`); a finished cell
trained on another config or other data stops the sweep in one line naming the cell and
what changed, unless ``rerun_changed`` (``--rerun-changed``) trains it again.
"""

from __future__ import annotations

import json
from typing import Any

from lossbench.config import RECORDED_KEYS, load_run_config
from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.plan import Cell, SweepPlan
from lossbench.plugins import plugin_differences


#: keys that do not change what a run computes: where it and its caches live, what it records, its trackers,
#: how often it checkpoints
OUTCOME_NEUTRAL_KEYS = frozenset({*RECORDED_KEYS, "name", "output_dir", "data.cache", "data.cache_dir", "tracking",
                                  "tracking_uri", "tracking_experiment", "checkpoint_every"})


def _first_difference(recorded: Any, now: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """``(dotted key, recorded value, value now)`` of the first setting that differs, outcome-neutral keys aside."""
    if key in OUTCOME_NEUTRAL_KEYS:
        return None
    if isinstance(recorded, dict) and isinstance(now, dict):
        for k in [*recorded, *(k for k in now if k not in recorded)]:
            found = _first_difference(recorded.get(k), now.get(k), f"{key}.{k}" if key else str(k))
            if found:
                return found
        return None
    return None if recorded == now else (key, recorded, now)


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _recorded_change(cell: Cell) -> tuple[str | None, str | None]:
    """(what differs between the config the cell's folder recorded and the cell's, the recorded data identity)."""
    try:
        recorded = load_run_config(cell.run_dir)
    except UserError as exc:
        return f"its config.yaml cannot be read ({str(exc)[:100]})", None
    found = _first_difference(recorded.model_dump(mode="json"), cell.experiment.model_dump(mode="json"))
    if found:
        key, old, new = found
        return f"{key} was {_shown(old)} and the config now gives {_shown(new)}", None
    for name, then, now in plugin_differences(recorded.versions):  # the same plugins:, but their code changed
        return f"plugin {name} was {then} and is {now} now", None
    return None, recorded.data_identity


def changed_setting(cell: Cell, memo: dict[str, Any] | None = None) -> str | None:
    """What differs between the run the cell's folder recorded and the run the sweep would start now
    (None: nothing). ``memo`` (a plan's) keeps what was read and hashed: each recorded config while its file is
    unchanged, and the data's identity for every cell that shares the data."""
    from lossbench.data.cache import data_identity

    memo = {} if memo is None else memo
    config = cell.run_dir / "config.yaml"
    try:
        stamp = config.stat()
    except OSError:
        return "its config.yaml is missing"
    key = f"config {config} {stamp.st_mtime_ns} {stamp.st_size}"
    if key not in memo:
        memo[key] = _recorded_change(cell)
    change, identity = memo[key]
    if change is not None or identity is None:  # None: generated data, or a run from before identities
        return change
    key = json.dumps(["data", cell.experiment.data.model_dump(mode="json"), str(cell.experiment.output_dir)])
    if key not in memo:
        memo[key] = data_identity(cell.experiment)
    if memo[key] != identity:
        return f"the files under data.root ({cell.experiment.data.root}) changed since it trained"
    return None


def cell_status(cell: Cell, memo: dict[str, Any] | None = None) -> tuple[str, str]:
    """('done' | 'failed' | 'changed' | 'pending', error line) from what the cell's run folder holds: done only
    when it finished the very run the sweep would start now."""
    finished = runfolder.is_finished(cell.run_dir)
    change = changed_setting(cell, memo) if finished else None
    if finished and change is None:
        return "done", ""
    error = cell.run_dir / "error.txt"
    if error.is_file():
        return "failed", error.read_text(encoding="utf-8").strip()
    if finished:
        return "changed", f"finished, but {change}"
    return "pending", ""


def resumable(cell: Cell) -> bool:
    """True when the cell's run stopped part-way without an error of its own (killed): it has
    ``last.pt`` and no summary, and either no ``error.txt`` or one saying it was killed."""
    run = cell.run_dir
    if runfolder.is_finished(run) or not (run / "last.pt").is_file() or not (run / "config.yaml").is_file():
        return False
    error = run / "error.txt"
    if error.is_file() and not error.read_text(encoding="utf-8").startswith("killed by signal"):
        return False
    return changed_setting(cell) is None  # continue only the same run: a changed config or data starts it again


def changed_cells(plan: SweepPlan, cells: list[Cell], rerun_changed: bool) -> list[Cell]:
    """The finished ``cells`` that would run differently now, to train again (``rerun_changed``); otherwise one
    line naming the first of them, what changed and the flag that retrains them."""
    changed = [(c, why) for c in cells if runfolder.is_finished(c.run_dir)
               and (why := changed_setting(c, plan.memo)) is not None]
    if changed and not rerun_changed:
        cell, why = changed[0]
        more = f" (and {len(changed) - 1} more finished cells changed)" if len(changed) > 1 else ""
        raise UserError(f"{plan.sweep_dir}: cell {cell.name} finished, but {why}{more}; its results are not "
                        f"this config's: retrain changed cells with lossbench sweep {plan.source or 'CONFIG'} "
                        "--rerun-changed, or choose another --out")
    return [c for c, _ in changed]
