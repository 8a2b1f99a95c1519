"""Degenerate data refused in one line before training (issue 27, items 6, 7 and 12): a training set of one class,
a class count whose confusion matrix would not fit in memory, NaN / Inf pixels in a float TIFF."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from .helpers import TALLY, assert_refused_in_one_line, class_folder, csv_dataset, run_cli


def write_config(tmp, data: dict, **extra) -> str:
    cfg = tmp / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"name": "degenerate", "output_dir": str(tmp / "runs"), "data": data,
                                   "model": {"name": "resnet20"}, "epochs": 1, "batch_size": 4, "device": "cpu",
                                   **extra}))
    return str(cfg)


def test_one_class_is_refused_before_training(tmp_path):
    root = class_folder(tmp_path / "data", classes=("only",))
    res = run_cli(["train", write_config(tmp_path, {"source": "folder", "root": str(root), "image_size": 8})])
    assert_refused_in_one_line(res, [str(root), "has 1 class (only)", "at least two"])
    assert not (tmp_path / "runs").exists()
    TALLY["degenerate data refused"] += 1


def test_a_class_count_beyond_the_memory_is_refused_with_the_numbers(tmp_path):
    """100000 declared classes: a 100000 x 100000 confusion matrix (80 GB of counts) is refused, not allocated."""
    root = csv_dataset(tmp_path / "data", "image,label\n0.png,0\n1.png,1\n2.png,0\n3.png,1\n")
    data = {"source": "csv", "root": str(root), "num_classes": 100000, "image_size": 8, "val_fraction": 0.5,
            "csv": {"train": "labels.csv", "images": "img"}}
    res = run_cli(["train", write_config(tmp_path, data)])
    warning, error = res.err_lines  # the declared classes without images, named (10 of them), then the refusal
    assert warning.startswith("lossbench: warning: ") and "and 99988 more" in warning and len(warning) < 400
    res.err = error
    assert_refused_in_one_line(res, ["100000 classes", "100000 x 100000 confusion matrix", "GB of memory",
                                     "GB is available", "data.num_classes"])
    assert not (tmp_path / "runs").exists()
    TALLY["degenerate data refused"] += 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_float_tiff_with_non_finite_pixels_is_refused_with_its_name(bad, tmp_path):
    """They used to become 0 without a word."""
    root = class_folder(tmp_path / "data")
    pixels = np.full((8, 8), 100.0, np.float32)
    pixels[2, 3] = bad
    tiff = root / "a" / "float.tif"
    Image.fromarray(pixels, "F").save(tiff)
    res = run_cli(["train", write_config(tmp_path, {"source": "folder", "root": str(root), "image_size": 8})])
    assert_refused_in_one_line(res, [str(tiff), "float image with 1 NaN or infinite pixel"])
    assert not (tmp_path / "runs").exists()
    TALLY["degenerate data refused"] += 1


def test_drw_epoch_past_the_last_epoch_is_warned_about(tmp_path):
    """A recipe shortened with --set epochs=1 keeps its drw_epoch: the run says that re-weighting never starts."""
    data = {"source": "synthetic", "num_classes": 3, "image_size": 8, "train_per_class": 4, "val_per_class": 2}
    cfg = write_config(tmp_path, data, drw_epoch=3)
    res = run_cli(["train", cfg])
    assert res.code == 0, res.err
    assert f"warning: {cfg}: drw_epoch: 3 is past the last epoch (1), so deferred re-weighting never starts" in res.out
    res = run_cli(["train", cfg, "--overwrite", "--set", "drw_epoch=1"])
    assert res.code == 0 and "re-weighting never starts" not in res.out, res.out
    TALLY["degenerate settings warned about"] += 1
