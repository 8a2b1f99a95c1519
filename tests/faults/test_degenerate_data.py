"""Degenerate data refused in one line before training (issue 27, items 6, 7 and 12): a training set of one class,
a class count whose confusion matrix would not fit in memory, NaN / Inf pixels in a float TIFF."""

from __future__ import annotations

import yaml

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
