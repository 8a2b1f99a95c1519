"""The run folder's files: the permissions they get, and what a refused or repeated command leaves."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lossbench.engine import runfolder


@pytest.fixture(params=[0o022, 0o077], ids=["umask-022", "umask-077"])
def umask(request):
    """Run the test under this umask (process-wide; restored afterwards)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_permissions_of_the_umask(tmp_path, umask):
    """Every writer of the run folder, eval, export and the report goes through these: a colleague or a web
    server reads what any other file of the user's would let them read."""
    runfolder.atomic_write_text(tmp_path / "report.html", "<p>hi</p>")
    runfolder.write_json(tmp_path / "summary.json", {"a": 1})
    runfolder.save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    for name in ["report.html", "summary.json", "last.pt"]:
        assert mode(tmp_path / name) == 0o666 & ~umask, name
    runfolder.atomic_write_text(tmp_path / "report.html", "<p>again</p>")  # replacing keeps to the umask too
    assert mode(tmp_path / "report.html") == 0o666 & ~umask
    assert (tmp_path / "report.html").read_text() == "<p>again</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "report.html", "summary.json"]  # no temp left


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.csv"
    target.write_text("old\n")
    with pytest.raises(TypeError):
        runfolder.atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
