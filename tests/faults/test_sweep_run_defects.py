"""Defects of issue 14 in the sweep, the engine and the run folder, fed to the real ``lossbench`` command line.

Like tests/faults/test_bad_input_corpus.py: every bad input ends with exit
code 2, exactly one line on stderr naming the file / key at fault and what to
do, no traceback, and every file of an existing run or sweep folder
unchanged. Besides, a refused ``train`` leaves no run folder behind, a
re-run sweep never passes off a finished cell trained on another config or
other data as done, a resumed finished run keeps its record, and files get
the permissions of the user's umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .helpers import TALLY, class_folder, run_cli, tree_hash
from .test_bad_input_corpus import Setup, experiment


def test_resuming_a_finished_run_says_so_and_changes_no_byte(kept_run):
    before = tree_hash(kept_run.parent)
    res = run_cli(["train", "--resume", str(kept_run)])
    assert "Traceback" not in res.err, res.err
    assert res.code == 0, (res.code, res.err)
    lines = [ln for ln in res.out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "finished" in lines[0] and str(kept_run) in lines[0], res.out
    assert not res.err_lines, res.err
    assert tree_hash(kept_run.parent) == before, "resume changed a finished run's files"
    TALLY["finished runs kept by resume"] += 1


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_eval_files_get_the_permissions_of_the_umask(kept_run, umask):
    old = os.umask(umask)
    try:
        res = run_cli(["eval", str(kept_run), "--device", "cpu"])
    finally:
        os.umask(old)
    assert res.code == 0, res.err
    written = [p for p in (kept_run / "eval").rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
