"""The run folder: atomic writes of config, metrics, summary and checkpoints.

Every file is written to a temporary sibling and renamed into place, so a
process killed at any moment leaves the previous complete file. Every file
lossbench writes for a user (run folders, eval, predict, export, sweeps and
reports) goes through :func:`atomic_write_bytes` and gets the permissions the
user's umask gives any other file.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import platform
import secrets
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from lossbench.config import Experiment
from lossbench.errors import UserError
from lossbench.plugins import plugin_versions


def _open_temp_sibling(path: Path) -> tuple[int, Path]:
    """A new, exclusively created ``.<name>.<random>.tmp`` beside ``path``, open for writing.

    Created with mode 0666 so the user's umask decides its permissions, as for
    any file they write (``tempfile.mkstemp`` would make every file 0600, and a
    colleague or a web server could not read report.html).
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """All rows as CSV; columns are the union of the rows' keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def load_checkpoint(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, without torch's warnings about foreign pickles.

    Whatever such a file holds, the caller reports it in one line; a warning
    printed before that line would only bury it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through an atomic rename (loadable with ``weights_only=True``)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


#: written by a run's last step: a run folder holding it is finished
SUMMARY = "summary.json"


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run (its summary is written last)."""
    return (Path(run_dir) / SUMMARY).is_file()


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A finished run's ``summary.json``; one line naming the file when it cannot be read."""
    path = run_dir / SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read as JSON ({type(exc).__name__}); the run's record is damaged, "
                        "train it again with --overwrite") from None
    if not isinstance(summary, dict):
        raise UserError(f"{path}: holds a {type(summary).__name__}, not a run's summary; "
                        "train it again with --overwrite")
    return summary


#: a new best.pt waits here until last.pt, which records which epoch is best, has been written
PENDING_BEST = ".best.pending.pt"


#: files of a finished or interrupted run that a fresh run (``--overwrite``) must not inherit
PREVIOUS_RUN_FILES = (SUMMARY, "last.pt", "best.pt", PENDING_BEST, "metrics.csv", "confusion_matrix.png",
                      "skipped_files.json")


def clear_previous_run(run_dir: Path) -> None:
    """Delete an overwritten run's results, so a new run killed early never looks finished with old ones."""
    for name in PREVIOUS_RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def start_run(run_dir: Path, config: dict[str, Any], run_files: dict[str, str]) -> None:
    """Clear an overwritten run's results, then write the resolved ``config.yaml`` and the data layer's files."""
    clear_previous_run(run_dir)
    write_yaml(run_dir / "config.yaml", config)
    for name, text in run_files.items():
        atomic_write_text(run_dir / name, text)


def save_epoch(run_dir: Path, rows: list[dict[str, Any]], last: dict[str, Any], best: dict[str, Any] | None) -> None:
    """Write an epoch's ``metrics.csv`` and ``last.pt``, and ``best.pt`` when the epoch is the new best.

    A new best.pt takes its place only once last.pt records it as the best; a
    kill in between leaves it pending, and a resume commits or drops it
    (:func:`tidy_after_kill`).
    """
    if best is not None:
        save_checkpoint(run_dir / PENDING_BEST, best)
    write_csv(run_dir / "metrics.csv", rows)
    save_checkpoint(run_dir / "last.pt", last)
    if best is not None:
        os.replace(run_dir / PENDING_BEST, run_dir / "best.pt")


def tidy_after_kill(run_dir: Path, best_epoch: int | None) -> None:
    """Before a resume, clear what a killed run left half done.

    Temp files of interrupted writes are deleted. A pending best.pt is moved
    into place when last.pt names its epoch as the best (the kill came after
    last.pt was written), and dropped otherwise (its epoch will be trained again).
    """
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    pending = run_dir / PENDING_BEST
    if not pending.is_file():
        return
    try:
        epoch = load_checkpoint(pending).get("epoch")
    except Exception:  # noqa: BLE001 - an unreadable pending file is simply not committed
        epoch = None
    if epoch is not None and epoch == best_epoch:
        os.replace(pending, run_dir / "best.pt")
    else:
        pending.unlink()


def recorded_config(exp: Experiment) -> dict[str, Any]:
    """``config.yaml`` of a new run: the resolved experiment, the package versions and the data's identity
    (what a re-run sweep compares before it reuses a finished cell)."""
    from lossbench.data.cache import data_identity

    return {**exp.model_dump(mode="json"), "versions": versions(), "data_identity": data_identity(exp)}


def versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers, and of the plugins loaded (``plugin <module>``: a
    file's sha256, a package's version). smp's and torchmetrics' are read from their installed metadata:
    importing smp (and timm) would cost a run that uses neither about 1.7 s, torchmetrics (scipy.signal,
    matplotlib.pyplot) several seconds, and lossbench counts its metrics itself."""
    from importlib.metadata import version

    import torchvision

    from lossbench._version import __version__

    return {
        "lossbench": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "segmentation_models_pytorch": version("segmentation_models_pytorch"),
        "torchmetrics": version("torchmetrics"),
        **plugin_versions(),
    }


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse, creating nothing, to clobber a finished or unfinished run, or to write where no folder can be made."""
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        if (run_dir / "last.pt").is_file() and not is_finished(run_dir):
            raise UserError(f"{run_dir}: holds an unfinished run; continue it with lossbench train --resume {run_dir}, "
                            "or pass --overwrite to start again")
        raise UserError(
            f"{run_dir}: run folder already exists; pass --overwrite to replace it or set name: to another name"
        )
    try:
        if "\0" in str(run_dir):
            raise ValueError("embedded null byte")
        existing = run_dir
        while not os.path.lexists(existing) and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in output_dir
        _unwritable(run_dir, exc)


def create_run_dir(run_dir: Path) -> None:
    """Create the run folder (once the run is sure to start: a refused run leaves none) and make sure it takes files."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except (OSError, ValueError) as exc:
        _unwritable(run_dir, exc)


def _unwritable(run_dir: Path, exc: Exception) -> None:
    reason = getattr(exc, "strerror", None) or str(exc)
    raise UserError(f"{run_dir}: cannot write the run folder ({reason}); choose a writable output_dir") from None
