"""Fixtures of the fault suite: a finished run that no failure may touch, and the suite's tallies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import TALLY, class_folder, run_cli

BASE = """\
name: {name}
output_dir: {runs}
data: {{source: folder, root: {root}, image_size: 8, cache_dir: {cache}}}
model: {{name: resnet20}}
epochs: 1
batch_size: 4
device: cpu
"""


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """runs/keep: a finished one-epoch run on a tiny class folder, made once per session."""
    base = tmp_path_factory.mktemp("kept")
    root = class_folder(base / "data")
    cfg = base / "keep.yaml"
    cfg.write_text(BASE.format(name="keep", runs=base / "runs", root=root, cache=base / "cache"))
    res = run_cli(["train", str(cfg)])
    assert res.code == 0, res.err
    return base / "runs" / "keep"


@pytest.fixture
def kept_run(finished_run, tmp_path) -> Path:
    """A private copy of the finished run (its hashes are checked by the test that uses it)."""
    dst = tmp_path / "runs" / "keep"
    shutil.copytree(finished_run, dst)
    return dst


def pytest_terminal_summary(terminalreporter):
    if TALLY:
        terminalreporter.write_line(
            "fault suite: " + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items())))
