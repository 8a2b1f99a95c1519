"""Outputs that cannot be written and inputs that cannot be read as text, each refused in one line (issue 27, item 9):
predict / export --out on a real read-only file system, a run name longer than the file system allows, and
eval --data given a file that is not UTF-8."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from .helpers import (
    TALLY, assert_refused_in_one_line, read_only_file_system, run_cli, save_image, tree_hash,
)

SEGMENTER = {"name": "seg", "task": "segmentation",
             "data": {"source": "synthetic", "num_classes": 3, "image_size": 16, "train_per_class": 2,
                      "val_per_class": 2},
             "model": {"name": "nested_unet", "encoder_depth": 2, "base_channels": 4}, "epochs": 1, "batch_size": 4,
             "device": "cpu"}


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    base = tmp_path_factory.mktemp("seg")
    cfg = base / "seg.yaml"
    cfg.write_text(yaml.safe_dump({**SEGMENTER, "output_dir": str(base / "runs")}))
    res = run_cli(["train", str(cfg)])
    assert res.code == 0, res.err
    return base / "runs" / "seg"


@pytest.mark.parametrize("command", ["predict", "export"])
def test_out_on_a_read_only_file_system_is_refused_in_one_line(command, segmenter, kept_run, tmp_path):
    image = save_image(tmp_path / "photo.png", np.zeros((16, 16, 3), np.uint8))
    with read_only_file_system(tmp_path / "ro") as ro:
        if command == "predict":
            run, argv = segmenter, ["predict", str(segmenter), str(image), "--out", str(ro / "masks")]
            fragment = str(ro / "masks")
        else:
            run, argv = kept_run, ["export", str(kept_run), "--format", "torchscript", "--out", str(ro / "m.pt")]
            fragment = str(ro)
        before = tree_hash(run)
        res = run_cli(argv)
        assert_refused_in_one_line(res, [fragment, "Read-only file system", "choose another --out"])
        assert tree_hash(run) == before
    TALLY["unwritable outputs refused at start"] += 1


def test_a_run_name_longer_than_the_file_system_allows(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({**SEGMENTER, "task": "classification", "model": {"name": "resnet20"},
                                   "name": "n" * 300, "output_dir": str(tmp_path / "runs")}))
    res = run_cli(["train", str(cfg)])
    assert_refused_in_one_line(res, [str(tmp_path / "runs"), "the run name is 300 bytes long", "allows 255",
                                     "set a shorter name:"])
    assert not (tmp_path / "runs").exists()
    TALLY["unwritable outputs refused at start"] += 1


def test_eval_data_file_that_is_not_utf8(kept_run, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_bytes("data: {source: folder, root: caf\xe9}\n".encode("latin-1"))
    before = tree_hash(kept_run)
    res = run_cli(["eval", str(kept_run), "--data", str(other)])
    assert_refused_in_one_line(res, [str(other), "cannot read it as UTF-8 text (byte 0xe9 at position 32)", "save it as UTF-8"])
    assert tree_hash(kept_run) == before
    TALLY["defects refused (in-process)"] += 1
