"""A run (or sweep) whose output folder cannot be written fails at start in one line, before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .helpers import TALLY, run_cli

CONFIG = {"data": {"source": "synthetic", "num_classes": 3, "image_size": 8, "train_per_class": 8, "val_per_class": 2},
          "model": {"name": "resnet20"}, "epochs": 1, "batch_size": 8, "device": "cpu"}


def write_config(tmp: Path, output_dir: str, name: str = "run", **extra) -> Path:
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "name": name, "output_dir": output_dir, **extra}))
    return path


def under_a_file(tmp: Path):
    (tmp / "blocker").write_text("a regular file")
    return ["train", str(write_config(tmp, str(tmp / "blocker" / "runs")))], str(tmp / "blocker" / "runs")


def run_folder_is_a_file(tmp: Path):
    (tmp / "runs").mkdir()
    (tmp / "runs" / "run").write_text("a regular file where the run folder goes")
    return ["train", str(write_config(tmp, str(tmp / "runs"))), "--overwrite"], str(tmp / "runs" / "run")


def nul_in_output_dir(tmp: Path):
    return ["train", str(write_config(tmp, str(tmp / "ru\0ns")))], "cannot write the run folder"


def read_only_parent(tmp: Path):
    parent = tmp / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        (parent / "probe").touch()
    except PermissionError:
        return ["train", str(write_config(tmp, str(parent / "runs")))], str(parent / "runs")
    (parent / "probe").unlink()
    parent.chmod(0o755)
    pytest.skip("running as root (or on a file system that ignores modes): chmod 0o555 does not stop writes here; "
                "the other variants cover unwritable folders")


def sweep_under_a_file(tmp: Path):
    (tmp / "blocker").write_text("a regular file")
    cfg = write_config(tmp, str(tmp / "runs"), grid={"seed": [0]})
    return ["sweep", str(cfg), "--out", str(tmp / "blocker" / "sweep")], str(tmp / "blocker" / "sweep")


CASES = {"output-dir-under-a-file": under_a_file, "run-folder-is-a-file": run_folder_is_a_file,
         "nul-byte-in-output-dir": nul_in_output_dir, "chmod-0555-parent": read_only_parent,
         "sweep-folder-under-a-file": sweep_under_a_file}


@pytest.mark.parametrize("name", list(CASES))
def test_unwritable_output_fails_at_start_in_one_line(name, tmp_path, monkeypatch):
    argv, fragment = CASES[name](tmp_path)

    def started(*_, **__):
        raise AssertionError("training started")

    monkeypatch.setattr("lossbench.engine.fit.build_data", started)
    monkeypatch.setattr("lossbench.experiments.sweep.run_cell", started)
    try:
        res = run_cli(argv, cwd=tmp_path)
    finally:
        (tmp_path / "locked").exists() and (tmp_path / "locked").chmod(0o755)
    assert res.code == 2 and "Traceback" not in res.err, res.err
    assert len(res.err_lines) == 1 and fragment in res.err_lines[0], res.err
    assert "write" in res.err_lines[0]
    TALLY["unwritable outputs refused at start"] += 1


def test_unwritable_output_in_a_real_process(tmp_path):
    """A process of its own (forked with lossbench imported, nothing patched): one line, no data read."""
    argv, fragment = under_a_file(tmp_path)
    res = run_cli(argv, cwd=tmp_path, process="forked")
    assert res.code == 2 and "Traceback" not in res.err and len(res.err_lines) == 1, res.err
    assert fragment in res.err_lines[0] and "choose a writable output_dir" in res.err_lines[0]
    assert "train /" not in res.out, "data was read before the folder was checked"
    assert not any(Path(tmp_path).rglob("*.pt"))
