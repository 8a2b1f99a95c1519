"""An unknown model or source, or a model of the other task, is refused in one line naming the config file and the
key, like every other config error, before any data is read (issue 27, item 10)."""

from __future__ import annotations

import pytest
import yaml

from .helpers import TALLY, assert_refused_in_one_line, class_folder, run_cli

CASES = {
    "unknown-model": ({"model": {"name": "resnet19"}}, ["exp.yaml: model.name: unknown model 'resnet19'",
                                                        "did you mean 'resnet18'"]),
    "segmentation-model-for-a-classifier": ({"model": {"name": "unet"}},
                                            ["exp.yaml: model.name: 'unet' is a segmentation model"]),
    "unknown-source": ({"data": {"source": "foldr"}}, ["exp.yaml: data.source: unknown source 'foldr'",
                                                       "did you mean 'folder'"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_unknown_name_names_the_file_and_key(name, tmp_path):
    change, fragments = CASES[name]
    root = class_folder(tmp_path / "data")
    raw = {"name": "names", "output_dir": str(tmp_path / "runs"), "model": {"name": "resnet20"}, "epochs": 1,
           "device": "cpu", "data": {"source": "folder", "root": str(root), "image_size": 8}}
    for key, value in change.items():
        raw[key] = {**raw[key], **value}
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    res = run_cli(["train", str(cfg)], cwd=tmp_path)
    assert_refused_in_one_line(res, fragments)
    assert "train /" not in res.out and not (tmp_path / "runs").exists()
    TALLY["defects refused (in-process)"] += 1
