"""`lossbench report` on a sweep folder whose records were cut off (a full disk, a copy stopped half way): one line
naming the file and what to do, never a traceback (issue 27, item 9)."""

from __future__ import annotations

import pytest
import yaml

from .helpers import TALLY, assert_refused_in_one_line, run_cli

CONFIG = {"name": "tiny", "data": {"source": "synthetic", "num_classes": 3, "image_size": 8, "train_per_class": 4,
                                   "val_per_class": 2},
          "model": {"name": "resnet20"}, "epochs": 1, "batch_size": 4, "device": "cpu", "grid": {"seed": [0]}}


@pytest.fixture
def sweep_folder(tmp_path, forked_cells):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(tmp_path / "runs")}))
    res = run_cli(["sweep", str(cfg)], cwd=tmp_path)
    assert res.code == 0, res.err
    return tmp_path / "runs" / "tiny"


def cut_in_half(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path


def test_cut_off_records_are_refused_in_one_line(sweep_folder):
    assert run_cli(["report", str(sweep_folder)]).code == 0
    cases = [
        (lambda: cut_in_half(sweep_folder / "sweep.json"), "run `lossbench sweep` on its config again"),
        (lambda: cut_in_half(next(sweep_folder.glob("*/summary.json"))), "train it again with --overwrite"),
    ]
    for damage, advice in cases:
        kept = {p: p.read_bytes() for p in sweep_folder.rglob("*.json")}
        path = damage()
        res = run_cli(["report", str(sweep_folder)])
        assert_refused_in_one_line(res, [str(path), "cannot be read as JSON", "cut off or damaged", advice])
        for p, data in kept.items():
            p.write_bytes(data)
        TALLY["cut-off records refused by report"] += 1
    studies = sweep_folder / "tune" / "studies.json"
    studies.parent.mkdir()
    studies.write_text('{"tuned_documents": {"tiny": {"metric": "val_balanced_accuracy", "stud')
    res = run_cli(["report", str(sweep_folder)])
    assert_refused_in_one_line(res, [str(studies), "cut off or damaged", "rewrite it from tune.db"])
    TALLY["cut-off records refused by report"] += 1
