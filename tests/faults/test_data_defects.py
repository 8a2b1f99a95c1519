"""Data that would once have trained, evaluated or been converted silently wrong, fed to the real command line.

The same contract as :mod:`test_bad_input_corpus`: exit code 2, one stderr line
naming the file / line / key at fault, no traceback, the finished run folder
unchanged; a converter's source tree is unchanged as well. Each defect is its
own test id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from .helpers import (TALLY, assert_refused_in_one_line, class_folder, csv_dataset, run_cli, save_image, seg_dataset,
                      tree_hash)
from .test_bad_input_corpus import train_with as corpus_train


@dataclass
class Setup:
    """A defect planted in ``tmp``: the command, fragments of its one error line, folders it must not change."""

    argv: list[str]
    fragments: list[str]
    watched: list[Path] = field(default_factory=list)


def train_with(tmp: Path, run: Path, fragments: list[str], **sections) -> Setup:
    """``train`` of a one-epoch experiment over ``tmp/data`` aimed at the finished run (see the corpus)."""
    setup = corpus_train(tmp, run, fragments, **sections)
    return Setup(setup.argv, setup.fragments)

# --- class counts -------------------------------------------------------------------------------


def _csv_label_typo(tmp: Path, run: Path) -> Setup:
    """Labels 0-4 and one mistyped 7: an 8-class model with two classes that have no image."""
    rows = "image,label\n" + "".join(f"{i}.png,{label}\n" for i, label in enumerate([0, 1, 2, 3, 4, 7, 0, 1]))
    root = csv_dataset(tmp / "data", rows, n=8)
    data = {"source": "csv", "csv": {"train": "labels.csv", "images": "img"}}
    return train_with(tmp, run, [str(root / "labels.csv"), "line 7", "label 7", "5, 6"], data=data)


def _folder_num_classes(tmp: Path, run: Path) -> Setup:
    class_folder(tmp / "data")
    return train_with(tmp, run, ["data.num_classes", "3", "2 classes", "a, b"], data={"num_classes": 3})


def seg_train(tmp: Path, run: Path, fragments: list[str], **data) -> Setup:
    return train_with(tmp, run, fragments, task="segmentation", data={"source": "seg_folder", **data},
                      model={"name": "unet", "encoder": "resnet18", "encoder_depth": 3})


def _seg_index_value_gap(tmp: Path, run: Path) -> Setup:
    """Index masks of classes 0 and 1, one with a stray 5: six classes, three of them never seen."""
    root = seg_dataset(tmp / "data")
    mask = np.zeros((8, 8), np.uint8)
    mask[1:3, 1:3] = 5
    save_image(root / "masks" / "2.png", mask)
    return seg_train(tmp, run, [str(root / "masks" / "2.png"), "value 5", "2, 3, 4"])


def _binary_masks(root: Path, values: dict[int, int]) -> Path:
    """root/images/<i>.png with one binary mask folder root/masks/0/<i>.png (0 / 255, or 0 / values[i])."""
    rng = np.random.default_rng(3)
    for i in range(4):
        save_image(root / "images" / f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        mask = np.zeros((8, 8), np.uint8)
        mask[2:6, 2:6] = 255
        if i in values:
            mask[2, 2] = values[i]
        save_image(root / "masks" / "0" / f"{i}.png", mask)
    return root


def _seg_nested_num_classes(tmp: Path, run: Path) -> Setup:
    _binary_masks(tmp / "data", {})
    return seg_train(tmp, run, ["data.num_classes", "5", "2 classes", str(tmp / "data" / "masks")], num_classes=5)


def _binary_mask_stray_value(tmp: Path, run: Path) -> Setup:
    """A 77 in a folder of 0 / 255 masks documented as inside / outside."""
    root = _binary_masks(tmp / "data", {1: 77})
    return seg_train(tmp, run, [str(root / "masks" / "0" / "1.png"), "77", "255"])


# --- eval on another dataset --------------------------------------------------------------------


def _eval_other_class_names(tmp: Path, run: Path) -> Setup:
    """The run knows a, b; the other dataset has a and c: c cannot be scored."""
    other = class_folder(tmp / "other", classes=("a", "c"))
    return Setup(["eval", str(run), "--data", f"root={other}", "--device", "cpu"], ["--data", "'c'", "a, b"])


# --- converters ---------------------------------------------------------------------------------


def dsb2018_tree(src: Path) -> Path:
    """src/stage1_train/id0/{images/id0.png, masks/m0.png}: one tiny DSB 2018 sample."""
    sample = src / "stage1_train" / "id0"
    save_image(sample / "images" / "id0.png", np.full((8, 8, 4), 90, np.uint8), "RGBA")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    save_image(sample / "masks" / "m0.png", mask)
    return src


def dsb2018_defect(dest: Callable[[Path], Path], *fragments: str, src_in_dest: bool = False):
    def make(tmp: Path, run: Path) -> Setup:
        src = dsb2018_tree(tmp / "out" / "dsb" if src_in_dest else tmp / "dsb")
        dst = dest(src)
        return Setup(["data", "prepare-dsb2018", str(src), str(dst), "--size", "8"],
                     [str(dst), *fragments], watched=[src])

    return make


def _link_into(src: Path) -> Path:
    link = src.parent / "dsb-96"
    link.symlink_to(src / "stage1_train" / "id0", target_is_directory=True)
    return link


DEFECTS: dict[str, Callable[[Path, Path], Setup]] = {
    "csv-label-typo-leaves-classes-empty": _csv_label_typo,
    "folder-num-classes-disagrees": _folder_num_classes,
    "mask-index-value-leaves-classes-empty": _seg_index_value_gap,
    "mask-folders-num-classes-disagrees": _seg_nested_num_classes,
    "mask-binary-stray-value": _binary_mask_stray_value,
    "eval-data-class-names-unmappable": _eval_other_class_names,
    "dsb2018-dest-inside-src": dsb2018_defect(lambda s: s / "stage1_train" / "id0", "inside", "SRC"),
    "dsb2018-dest-is-src": dsb2018_defect(lambda s: s, "SRC"),
    "dsb2018-src-inside-dest": dsb2018_defect(lambda s: s.parent.parent, "inside", "DEST", src_in_dest=True),
    "dsb2018-dest-symlink-into-src": dsb2018_defect(_link_into, "inside", "SRC"),
}


@pytest.mark.parametrize("name", list(DEFECTS))
def test_data_defect_is_refused_in_one_line(name, tmp_path, kept_run):
    setup = DEFECTS[name](tmp_path, kept_run)
    watched = [kept_run.parent, *setup.watched]
    before = [tree_hash(folder) for folder in watched]
    res = run_cli(setup.argv, cwd=tmp_path)
    assert_refused_in_one_line(res, setup.fragments)
    assert [tree_hash(folder) for folder in watched] == before, "a run folder or a source tree changed"
    TALLY["defects refused (in-process)"] += 1
