"""Small builders shared by the fault tests: tiny datasets, folder hashes; their CLI runs come from cli_helper."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from cli_helper import ENV, CliResult, forked_cell_process, forked_cli, run_cli, trial_states  # noqa: F401  (the fault tests' CLI runs)
from PIL import Image

#: what the suite measured (defects refused, kills survived, rows lost), printed at the end of a run
TALLY: Counter = Counter()


def assert_refused_in_one_line(res: CliResult, fragments) -> str:
    """The contract for a mistake a user can make: exit code 2, no traceback, one stderr line
    ``lossbench: error: ...`` holding every fragment; returns that line."""
    assert "Traceback" not in res.err, res.err
    assert res.code == 2, (res.code, res.out, res.err)
    assert len(res.err_lines) == 1, res.err
    line = res.err_lines[0]
    assert line.startswith("lossbench: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def tree_hash(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest), symlinks by their target."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def save_image(path: Path, array, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array), mode).save(path)
    return path


def class_folder(root: Path, classes=("a", "b"), n: int = 4, size: int = 8) -> Path:
    """root/<class>/<i>.png: tiny distinct RGB images."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        for i in range(n):
            save_image(root / name / f"{i}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return root


def csv_dataset(root: Path, rows: str, n: int = 4) -> Path:
    """root/img/<i>.png plus root/labels.csv holding ``rows``."""
    rng = np.random.default_rng(1)
    for i in range(n):
        save_image(root / "img" / f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    (root / "labels.csv").write_text(rows)
    return root


def seg_dataset(root: Path, n: int = 4) -> Path:
    """root/images/<i>.png with index masks root/masks/<i>.png (classes 0, 1)."""
    rng = np.random.default_rng(2)
    for i in range(n):
        save_image(root / "images" / f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        mask = np.zeros((8, 8), np.uint8)
        mask[2:6, 1 + i % 3:5] = 1
        save_image(root / "masks" / f"{i}.png", mask)
    return root


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` with one tiny (wrong) data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


class Payload:
    """A pickle whose loading would create ``marker`` (``__reduce__`` -> ``pathlib.Path.touch``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def write_evil_pickle(path: Path, marker: Path, torch_format: bool = True) -> Path:
    """A weights / checkpoint file that runs code when unpickled without ``weights_only``."""
    import pickle

    import torch

    obj = {"model": {"w": Payload(marker)}}
    if torch_format:
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    return path


@contextlib.contextmanager
def small_file_system(path: Path, megabytes: int):
    """A real tmpfs of ``megabytes`` MB mounted at ``path`` (root only: the test is skipped elsewhere)."""
    import subprocess

    import pytest

    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip() or res.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(folder: Path, leave_bytes: int) -> Path:
    """A file that takes all but ``leave_bytes`` of ``folder``'s file system; returns it (delete it to free space)."""
    import shutil

    filler = folder / "filler.bin"
    size = max(0, shutil.disk_usage(folder).free - leave_bytes)
    with filler.open("wb") as f:
        f.write(b"\0" * size)
    return filler


@contextlib.contextmanager
def read_only_file_system(path: Path):
    """A real, empty file system mounted read-only at ``path`` (a tmpfs remounted ro; root only, skipped elsewhere)."""
    import subprocess

    import pytest

    with small_file_system(path, 1) as mounted:
        res = subprocess.run(["mount", "-o", "remount,ro", str(mounted)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot remount a tmpfs read-only here ({res.stderr.strip()})")
        yield mounted
