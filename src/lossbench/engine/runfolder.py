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
import fcntl
import io
import json
import os
import platform
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from lossbench.config import Experiment, yaml_io
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
    """Write ``data`` to ``path`` through a temp file and an atomic rename; a full disk is one line (the previous
    file is kept, the temp file removed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_temp_sibling(path)
    except OSError as exc:
        _refuse_full_or_unwritable(path, len(data), exc)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _refuse_full_or_unwritable(path, len(data), exc)
        raise


#: what stops a write for good: a read-only file system, no permission, a name too long, a file where a folder goes
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST)


def _refuse_full_or_unwritable(path: Path, size: int, exc: OSError) -> None:
    """A ``UserError`` naming ``path``, the bytes it needed and the space left, when ``exc`` says the disk is full,
    or the reason when the location cannot be written at all."""
    if exc.errno in UNWRITABLE:
        raise UserError(f"{path}: cannot write it ({exc.strerror}); choose a writable location") from None
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MB free"
    except OSError:
        free = "free space unknown"
    kept = "the previous file is kept" if path.exists() else "nothing was written"
    raise UserError(f"{path}: the disk is full ({size / 2**20:.1f} MB to write, {free} on {path.parent}); {kept}; "
                    "free some space or choose another output_dir") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    atomic_write_text(path, yaml_io.dump(obj, sort_keys=False))


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


def read_json_record(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object lossbench wrote (a summary, a sweep's record); one line naming the file and ending in ``fix``
    (what to do) when it is cut off, damaged or not an object."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read as JSON ({type(exc).__name__}: cut off or damaged); {fix}") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: holds a {type(record).__name__}, not what lossbench writes there; {fix}")
    return record


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A finished run's ``summary.json``; one line naming the file when it cannot be read."""
    return read_json_record(run_dir / SUMMARY, "the run's record is damaged, train it again with --overwrite")


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
    try:
        if best is not None:
            save_checkpoint(run_dir / PENDING_BEST, best)
        write_csv(run_dir / "metrics.csv", rows)
        save_checkpoint(run_dir / "last.pt", last)
    except UserError:  # a full disk: the epoch is not saved, a resume trains it again
        (run_dir / PENDING_BEST).unlink(missing_ok=True)
        raise
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


#: the run folder's lock file: held by the one process training or resuming the run
RUN_LOCK = ".run.lock"


class FolderLock:
    """An exclusive ``flock`` on ``folder/name`` (holding the holder's pid), released when the process ends.

    ``busy`` is the refusal when another process holds it: a sentence taking ``{folder}`` and ``{pid}``.
    """

    def __init__(self, folder: Path, name: str, busy: str) -> None:
        self.path, self.busy = folder / name, busy
        self.fd: int | None = None

    def refuse_if_held(self) -> None:
        """Refuse when another process holds the lock now; creates nothing (no lock file: nobody holds it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except (OSError, ValueError):
            return
        try:
            self._lock_or_refuse(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def acquire(self) -> None:
        """Take the lock (creating its file), or refuse in one line naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            self._lock_or_refuse(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)

    def _lock_or_refuse(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(self.busy.format(folder=self.path.parent, pid=holder)) from None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def run_lock(run_dir: Path) -> FolderLock:
    """The lock a training or resume holds on its run folder, so a run folder never mixes two runs' files."""
    return FolderLock(run_dir, RUN_LOCK, "{folder}: another lossbench process (pid {pid}) is training this run; "
                                         "wait for it to finish, or set name: to another name")


def _holds_a_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(p.name != RUN_LOCK for p in run_dir.iterdir())


def _check_no_run_is_clobbered(run_dir: Path, overwrite: bool) -> None:
    if _holds_a_run(run_dir) and not overwrite:
        if (run_dir / "last.pt").is_file() and not is_finished(run_dir):
            raise UserError(f"{run_dir}: holds an unfinished run; continue it with lossbench train --resume {run_dir}, "
                            "or pass --overwrite to start again")
        raise UserError(
            f"{run_dir}: run folder already exists; pass --overwrite to replace it or set name: to another name"
        )


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse, creating nothing, to clobber a finished or unfinished run, to write a folder another process is
    training in, or to write where no folder can be made."""
    if "\0" not in str(run_dir):
        _check_name_length(run_dir)
    run_lock(run_dir).refuse_if_held()
    _check_no_run_is_clobbered(run_dir, overwrite)
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


def create_run_dir(run_dir: Path, overwrite: bool, lock: FolderLock) -> None:
    """Create the run folder (once the run is sure to start: a refused run leaves none), take its ``lock`` (held
    until the run ends), and check again what :func:`check_run_dir` checked: another run may have started since."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except (OSError, ValueError) as exc:
        _unwritable(run_dir, exc)
    try:
        _check_no_run_is_clobbered(run_dir, overwrite)
    except BaseException:
        lock.release()
        raise


def check_writable_folder(folder: Path, hint: str) -> None:
    """Create ``folder`` if needed and make sure a file can be created in it (a read-only file system, or a
    mount root cannot write to, fails here, not after the work); otherwise one line naming it, ending in ``hint``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = _open_temp_sibling(folder / "write-test")
        os.close(fd)
        probe.unlink()
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}: cannot write here ({getattr(exc, 'strerror', None) or exc}); {hint}") from None


def _check_name_length(run_dir: Path) -> None:
    """Refuse a run name (or output_dir) longer than the file system allows, naming the limit."""
    existing = run_dir.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    if len(os.fsencode(run_dir.name)) > name_max:
        raise UserError(f"{run_dir.parent}: the run name is {len(os.fsencode(run_dir.name))} bytes long, this file "
                        f"system allows {name_max}; set a shorter name:")
    if len(os.fsencode(str(run_dir.absolute()))) >= path_max:
        raise UserError(f"{run_dir.parent}: the run folder's path is longer than this file system allows "
                        f"({path_max} bytes); choose a shorter output_dir or name:")


def _unwritable(run_dir: Path, exc: Exception) -> None:
    reason = getattr(exc, "strerror", None) or str(exc)
    raise UserError(f"{run_dir}: cannot write the run folder ({reason}); choose a writable output_dir") from None
