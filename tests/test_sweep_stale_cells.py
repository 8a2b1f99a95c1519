"""A re-run sweep reuses a finished cell only when the cell would run exactly the same now.

The cell name shows only the grid values; a change elsewhere in the config
(data root, image size, epochs, pet_classes) or in the files under data.root
(a label file fixed in place) leaves the name as it was. Such a cell is not
done: the sweep refuses in one line naming the cell and what changed, or,
with --rerun-changed, trains it again. Plan-level: the finished cells here
are what a run records (``runfolder.recorded_config``, the engine's own
config.yaml writer) plus a summary; nothing trains.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.cells import cell_status, changed_cells, changed_setting
from lossbench.experiments.plan import Cell, plan_sweep
from lossbench.experiments.sweep import cells_to_run, run_sweep

CSV_SWEEP = """
output_dir: OUT
data: {source: csv, root: DATA, image_size: 8, csv: {train: labels.csv, images: img}}
model: {name: resnet20}
epochs: 1
batch_size: 4
device: cpu
grid: {seed: [0]}
"""

PET_SWEEP = """
output_dir: OUT
task: segmentation
data: {source: oxford_pet, root: DATA, image_size: 8}
model: {name: unet, encoder: resnet18, encoder_depth: 3}
epochs: 1
grid: {seed: [0]}
"""


def csv_data(root: Path) -> Path:
    """root/img/<i>.png and root/labels.csv (labels 0 1 0 1)."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
    (root / "labels.csv").write_text("image,label\n0.png,0\n1.png,1\n2.png,0\n3.png,1\n")
    return root


def only_cell(config: Path, overrides: list[str] = ()) -> Cell:
    (cell,) = plan_sweep(config, list(overrides)).cells
    return cell


def finish(cell: Cell) -> None:
    """The cell's run folder as a finished run of its experiment leaves it: config.yaml as the engine records it,
    and a summary."""
    runfolder.start_run(cell.run_dir, runfolder.recorded_config(cell.experiment), {})
    runfolder.write_json(cell.run_dir / "summary.json", {"name": cell.name, "epochs": cell.experiment.epochs})


@pytest.fixture
def csv_sweep(tiny_config, tmp_path) -> Path:
    return tiny_config(CSV_SWEEP.replace("DATA", str(csv_data(tmp_path / "data"))), "sweep.yaml")


@pytest.mark.parametrize("change, key", [
    ("data.image_size=16", "data.image_size was 8 and the config now gives 16"),
    ("epochs=2", "epochs was 1 and the config now gives 2"),
    ("data.root=COPY", "data.root was"),
])
def test_a_changed_setting_the_cell_name_does_not_show_is_named(csv_sweep, tmp_path, change, key):
    cell = only_cell(csv_sweep)
    finish(cell)
    assert changed_setting(cell) is None and cell_status(cell) == ("done", "")
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    changed = only_cell(csv_sweep, [change.replace("COPY", str(tmp_path / "copy"))])
    assert changed.name == cell.name and changed.run_dir == cell.run_dir
    assert key in changed_setting(changed)
    status, error = cell_status(changed)
    assert status == "changed" and key in error


def test_pet_classes_is_a_change(tiny_config, tmp_path):
    (tmp_path / "data" / "annotations").mkdir(parents=True)
    config = tiny_config(PET_SWEEP.replace("DATA", str(tmp_path / "data")), "sweep.yaml")
    finish(only_cell(config))
    assert "data.pet_classes was 3 and the config now gives 2" in changed_setting(
        only_cell(config, ["data.pet_classes=2"]))


@pytest.mark.parametrize("edit", ["label file rewritten, same size", "image added", "image removed"])
def test_changed_files_under_data_root_are_a_change(csv_sweep, tmp_path, edit):
    cell = only_cell(csv_sweep)
    finish(cell)
    data = tmp_path / "data"
    if edit.startswith("label"):
        labels = data / "labels.csv"
        stat = labels.stat()
        labels.write_text("image,label\n0.png,1\n1.png,0\n2.png,0\n3.png,1\n")  # two labels fixed, same size
        os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    elif edit == "image added":
        shutil.copy(data / "img" / "0.png", data / "img" / "4.png")
    else:
        (data / "img" / "3.png").unlink()
    why = changed_setting(only_cell(csv_sweep))
    assert why is not None and "the files under data.root" in why and str(data) in why


def test_what_does_not_change_a_run_is_no_change(csv_sweep, tmp_path):
    cell = only_cell(csv_sweep)
    finish(cell)
    data = tmp_path / "data"
    (data / ".DS_Store").write_text("finder")  # hidden files, the cache, tracking: not the data or the recipe
    (data / ".cache").mkdir()
    (data / ".cache" / "entry.npy").write_bytes(b"x")
    for overrides in ([], ["data.cache=false"], [f"data.cache_dir={tmp_path / 'elsewhere'}"], ["tracking=[]"]):
        assert changed_setting(only_cell(csv_sweep, overrides)) is None, overrides


def test_a_changed_finished_cell_stops_the_sweep_in_one_line_before_anything_runs(csv_sweep, tmp_path):
    cell = only_cell(csv_sweep)
    finish(cell)
    plan = plan_sweep(csv_sweep, ["data.image_size=16"])
    before = sorted(p.name for p in plan.sweep_dir.iterdir())
    with pytest.raises(UserError) as err:
        run_sweep(plan, log=lambda *_: None)
    line = str(err.value)
    assert "\n" not in line and cell.name in line and "data.image_size was 8" in line and "--rerun-changed" in line
    assert sorted(p.name for p in plan.sweep_dir.iterdir()) == before  # no lock, no results, nothing trained
    assert [c.name for c in changed_cells(plan, plan.cells, rerun_changed=True)] == [cell.name]


def test_rerun_changed_drops_the_old_results_and_trains_the_cell_again(csv_sweep):
    finish(only_cell(csv_sweep))
    plan = plan_sweep(csv_sweep, ["epochs=2"])
    (cell,) = plan.cells
    assert cells_to_run(plan, rerun_changed=True) == [cell]  # trained from the start by run_cell (--overwrite)
    assert not (cell.run_dir / "summary.json").exists() and cell_status(cell) == ("pending", "")
    unchanged = plan_sweep(csv_sweep)
    assert cells_to_run(unchanged, rerun_changed=False) == unchanged.cells  # its old run is gone for good
