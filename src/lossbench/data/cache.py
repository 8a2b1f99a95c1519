"""Where derived data lives: the decode-once image cache, scan results and dataset statistics; the data's identity.

The cache folder is ``data.cache_dir``, else ``$LOSSBENCH_CACHE``, else
``$XDG_CACHE_HOME/lossbench`` (``~/.cache/lossbench``). Entries are keyed by a
hash of what produced them (source, image size, channels, mask handling and a
fingerprint of every file's path, size and modification time), so a changed
file or setting gets a new entry and a stale one is never read. Entries are
written to a temporary name and renamed into place, so a crash (or two DDP
ranks building at once) never leaves a half-written entry that looks complete.

:func:`data_identity` keys a run's data the same way, over every file under
``data.root``: a run records it in ``config.yaml``, and a re-run sweep reuses
a finished cell only while its data still has the identity it trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.config import DataConfig, Experiment
from lossbench.data.decode import IMAGE_EXTENSIONS
from lossbench.errors import UserError

#: a file under data.root that is no image and at most this large (a label CSV, a class list) is keyed by its
#: content, so an edit that keeps its size and modification time is seen; every other file by size and mtime
CONTENT_KEYED_BYTES = 1 << 20


def cache_root(cfg: DataConfig) -> Path:
    """The configured cache folder (not created)."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir).expanduser()
    if os.environ.get("LOSSBENCH_CACHE"):
        return Path(os.environ["LOSSBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lossbench"


def digest(obj: Any) -> str:
    """A stable hex hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when it is missing or unreadable (a cache miss)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, obj: Any) -> bool:
    """Write JSON via a temporary file and rename; False (no error) when the folder is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)
        return True
    except OSError:
        return False


class ArrayCacheWriter:
    """Builds one cache entry: uint8 arrays filled row by row, then published atomically."""

    def __init__(self, final_dir: Path, shapes: dict[str, tuple[int, ...]]) -> None:
        self.final_dir = final_dir
        self.tmp_dir = final_dir.with_name(f".{final_dir.name}.{os.getpid()}.tmp")
        try:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir.mkdir(parents=True)
            self.arrays = {
                name: np.lib.format.open_memmap(self.tmp_dir / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
                for name, shape in shapes.items()
            }
        except OSError as exc:
            raise UserError(f"{final_dir.parent}: cannot write the data cache ({exc.strerror}); "
                            f"set data.cache_dir to a writable folder or data.cache: false") from None

    def publish(self, meta: dict[str, Any]) -> None:
        """Flush, write ``meta.json`` last, and move the entry into place (keeping a concurrent winner)."""
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()
        (self.tmp_dir / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(self.tmp_dir, self.final_dir)
        except OSError:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)


def open_cached_arrays(entry: Path, names: list[str]) -> tuple[dict[str, Any], dict[str, np.memmap]] | None:
    """``(meta, read-only memmaps)`` of a complete cache entry, or None when there is none."""
    meta = read_json(entry / "meta.json")
    if meta is None:
        return None
    try:
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in names}
    except (OSError, ValueError):
        return None
    return meta, arrays


def _stamp(path: str) -> list[Any]:
    """What identifies one file: its content (small files that are no images) or its size and mtime."""
    try:
        st = os.stat(path)
        if st.st_size <= CONTENT_KEYED_BYTES and os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
            with open(path, "rb") as f:
                return ["sha256", hashlib.sha256(f.read()).hexdigest()]
        return [st.st_size, st.st_mtime_ns]
    except OSError as exc:  # a dangling link, a file without read permission
        return ["unreadable", exc.errno]


def data_identity(exp: Experiment) -> str | None:
    """A hash of every file under ``exp.data.root`` (relative path and :func:`_stamp`); None without a root.

    Hidden files and folders, the data cache and the runs' own folder
    (``output_dir``) are left out: they change without the data changing.
    Linked folders are followed, each real folder once.
    """
    cfg = exp.data
    if cfg.root is None:
        return None
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        return digest([root.name, _stamp(str(root))] if root.exists() else "missing")
    skipped = {os.path.realpath(p) for p in (exp.output_dir, cache_root(cfg))}
    seen = {os.path.realpath(root)}
    rows = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(folder, name))
            if not name.startswith(".") and real not in skipped and real not in seen:
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        rel = os.path.relpath(folder, root)
        rows += [[os.path.join(rel, name), _stamp(os.path.join(folder, name))]
                 for name in sorted(files) if not name.startswith(".")]
    return digest(rows)
