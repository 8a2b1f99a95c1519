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
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from lossbench.engine import runfolder
from lossbench.experiments.cells import cell_status
from lossbench.experiments.plan import plan_sweep

from .helpers import TALLY, assert_refused_in_one_line, class_folder, csv_dataset, run_cli, tree_hash
from .test_bad_input_corpus import Setup, experiment

# --- train: a refused run leaves no folder; loss errors name the file and the key ---------------------------


def refused_train(fragments: list[str], extra: list[str] = (), **sections) -> Callable[[Path, Path], Setup]:
    """``train`` of a new run, in a new output folder, that must be refused and leave neither folder behind
    (CONFIG and TMP in ``fragments`` stand for the config file and the test's folder)."""

    def make(tmp: Path, run: Path) -> Setup:
        class_folder(tmp / "data")
        new = tmp / "new-runs"
        path = tmp / "exp.yaml"
        text = yaml.safe_dump(experiment(tmp, new / "fresh", **sections)).replace("TMP", str(tmp))
        path.write_text(text)
        shown = [f.replace("CONFIG", str(path)).replace("TMP", str(tmp)) for f in fragments]
        return Setup(["train", str(path), *extra], shown, absent=[new])

    return make


def _csv_train_is_a_folder(tmp: Path, run: Path) -> Setup:
    root = csv_dataset(tmp / "data", "image,label\n0.png,0\n1.png,1\n")
    (root / "labels").mkdir()
    path = tmp / "exp.yaml"
    data = {"source": "csv", "csv": {"train": "labels", "images": "img"}}
    path.write_text(yaml.safe_dump(experiment(tmp, run, data=data)))
    return Setup(["train", str(path), "--overwrite"], ["data.csv.train", str(root / "labels"), "is a folder"])


# --- sweep: a typo in a cell's loss; a finished cell whose config or data changed ---------------------------


def _sweep_cell_unknown_loss(tmp: Path, run: Path) -> Setup:
    class_folder(tmp / "data")
    doc = {**experiment(tmp, run), "grid": {"loss": ["ce", "focall"]}}
    del doc["name"]
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return Setup(["sweep", str(path)],
                 [f"{path} (cell sweep--loss-focall-", "loss: unknown loss 'focall'; did you mean 'focal'? known "
                  "losses: "], absent=[run.parent / "sweep"])


def _set_key(doc: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[last] = value


def adopted_cell(key: str, value, fragment: str) -> Callable[[Path, Path], Setup]:
    """The finished run, exactly as it trained, becomes the one cell of a sweep of its own config (and is reused
    as done); then the sweep config's ``key`` changes to ``value`` (COPY: a copy of the run's data folder)."""

    def make(tmp: Path, run: Path) -> Setup:
        recorded = yaml.safe_load((run / "config.yaml").read_text())
        doc = {k: v for k, v in recorded.items() if k not in ("versions", "data_identity", "name")}
        doc |= {"output_dir": str(run.parent), "grid": {"seed": [recorded["seed"]]}}
        path = tmp / "sweep.yaml"
        path.write_text(yaml.safe_dump(doc))
        (cell,) = plan_sweep(path).cells
        shutil.copytree(run, cell.run_dir)
        assert cell_status(cell) == ("done", "")
        if value == "COPY":
            shutil.copytree(recorded["data"]["root"], tmp / "data-copy")
        _set_key(doc, key, str(tmp / "data-copy") if value == "COPY" else value)
        path.write_text(yaml.safe_dump(doc))
        return Setup(["sweep", str(path)], [str(cell.run_dir.parent), f"cell {cell.name} finished, but", fragment,
                                            f"lossbench sweep {path} --rerun-changed"])

    return make


def recorded_cell(doc: dict, change: Callable[[Path, dict], None], fragment: str) -> Callable[[Path, Path], Setup]:
    """A sweep of ``doc`` whose one cell finished (the finished run's files, with the config.yaml the engine
    records for this cell); then ``change(tmp, doc)`` changes the data or the sweep config."""

    def make(tmp: Path, run: Path) -> Setup:
        spec = yaml.safe_load(yaml.safe_dump(doc).replace("TMP", str(tmp)).replace("RUNS", str(run.parent)))
        if spec["data"]["source"] == "csv":
            csv_dataset(tmp / "data", "image,label\n0.png,0\n1.png,1\n2.png,0\n3.png,1\n")
        else:
            (tmp / "data").mkdir()
        path = tmp / "sweep.yaml"
        path.write_text(yaml.safe_dump(spec))
        (cell,) = plan_sweep(path).cells
        shutil.copytree(run, cell.run_dir)
        runfolder.write_yaml(cell.run_dir / "config.yaml", runfolder.recorded_config(cell.experiment))
        assert cell_status(cell) == ("done", "")
        change(tmp, spec)
        path.write_text(yaml.safe_dump(spec))
        return Setup(["sweep", str(path)], [f"cell {cell.name} finished, but", fragment, "--rerun-changed"])

    return make


CSV_SWEEP = {"output_dir": "RUNS", "device": "cpu", "epochs": 1, "model": {"name": "resnet20"},
             "data": {"source": "csv", "root": "TMP/data", "image_size": 8,
                      "csv": {"train": "labels.csv", "images": "img"}},
             "grid": {"seed": [0]}}
PET_SWEEP = {"output_dir": "RUNS", "device": "cpu", "epochs": 1, "task": "segmentation",
             "model": {"name": "unet", "encoder": "resnet18", "encoder_depth": 3},
             "data": {"source": "oxford_pet", "root": "TMP/data", "image_size": 8}, "grid": {"seed": [0]}}


def _fix_two_labels(tmp: Path, doc: dict) -> None:
    (tmp / "data" / "labels.csv").write_text("image,label\n0.png,1\n1.png,0\n2.png,0\n3.png,1\n")


DEFECTS: dict[str, Callable[[Path, Path], Setup]] = {
    "train-loss-unknown-name-leaves-no-folder": refused_train(
        ["CONFIG: loss: unknown loss 'focall'; did you mean 'focal'? known losses: "], loss="focall"),
    "train-loss-unknown-parameter-names-file-and-key": refused_train(
        ["CONFIG: loss: focal: unknown parameter 'gama'"], loss="focal(gama=2)"),
    "train-loss-bad-value-leaves-no-folder": refused_train(["CONFIG: loss: focal: gamma must be >= 0"],
                                                           loss="focal(gamma=-1)"),
    "train-set-loss-unknown-names-file-and-key": refused_train(["CONFIG: loss: unknown loss 'focall'"],
                                                               extra=["--set", "loss=focall"]),
    "train-data-missing-leaves-no-folder": refused_train(["data.root", "TMP/nowhere"],
                                                         data={"root": "TMP/nowhere"}),
    "train-scheduler-monitor-unknown-leaves-no-folder": refused_train(
        ["CONFIG: scheduler.monitor: unknown metric 'val_acc'"], scheduler={"name": "plateau", "monitor": "val_acc"}),
    "csv-train-is-a-folder": _csv_train_is_a_folder,
    "sweep-cell-unknown-loss": _sweep_cell_unknown_loss,
    "sweep-finished-cell-data-root-changed": adopted_cell("data.root", "COPY", "data.root was "),
    "sweep-finished-cell-image-size-changed": adopted_cell("data.image_size", 16,
                                                           "data.image_size was 8 and the config now gives 16"),
    "sweep-finished-cell-epochs-changed": adopted_cell("epochs", 2, "epochs was 1 and the config now gives 2"),
    "sweep-finished-cell-pet-classes-changed": recorded_cell(
        PET_SWEEP, lambda tmp, doc: _set_key(doc, "data.pet_classes", 2),
        "data.pet_classes was 3 and the config now gives 2"),
    "sweep-finished-cell-label-file-changed": recorded_cell(CSV_SWEEP, _fix_two_labels,
                                                            "the files under data.root"),
}


def test_corpus_covers_every_kind_of_change():
    changes = {name.removeprefix("sweep-finished-cell-").removesuffix("-changed") for name in DEFECTS
               if name.startswith("sweep-finished-cell-")}
    assert changes == {"data-root", "image-size", "epochs", "pet-classes", "label-file"}


@pytest.mark.parametrize("name", list(DEFECTS))
def test_defect_is_refused_in_one_line(name, tmp_path, kept_run):
    setup = DEFECTS[name](tmp_path, kept_run)
    before = tree_hash(kept_run.parent)  # the finished run, and the sweep folder beside it
    res = run_cli(setup.argv, cwd=tmp_path)
    assert_refused_in_one_line(res, setup.fragments)
    assert tree_hash(kept_run.parent) == before, "a run or sweep folder changed"
    for path in setup.absent:
        assert not path.exists(), f"{path} was created"
    TALLY["defects refused (in-process)"] += 1


# --- a finished run stays as it is; files get the umask's permissions ----------------------------------------


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
