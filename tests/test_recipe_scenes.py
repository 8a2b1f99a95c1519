"""recipes/fashion_mnist_scenes.yaml: its grid, and a tiny sweep of it end to end on fake IDX files."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helper import run_cli

from lossbench.data import prepare_splits
from lossbench.experiments.plan import plan_sweep
from test_scenes import fake_scenes_root

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fashion_mnist_scenes.yaml"
LOSSES = ["ce", "ce(weight=balanced)", "focal", "dice", "dice(skip_empty=true)", "dice(log_loss=true)",
          "generalized_dice", "jaccard", "tversky", "lovasz_softmax", "ce + dice", "focal + dice"]


def test_recipe_plans_twelve_losses_with_sequential_seeds_on_the_test_canvases():
    plan = plan_sweep(RECIPE, sweep_dir="/nonexistent")
    assert len(plan.cells) == 12 * 10 and plan.sequential[plan.cells[0].document] == {"min": 5, "max": 10}
    assert [c.experiment.loss for c in plan.cells[:12]] == LOSSES
    assert {c.experiment.seed for c in plan.cells} == set(range(10))
    exp = plan.cells[0].experiment
    assert (exp.task, exp.data.source, exp.data.eval_split, exp.data.cache) == \
           ("segmentation", "fashion_mnist_scenes", "test", True)
    assert (exp.model.name, exp.model.encoder, exp.model.pretrained) == ("unet", "resnet18", None)
    options = plan.report[plan.cells[0].document]
    assert {k: options[k] for k in ("baseline", "epoch", "margin")} == {"baseline": {"loss": "ce"}, "epoch": "final",
                                                                        "margin": 1.0}
    assert [b for _, b in options["contrasts"]] == ["loss=ce"] * 11 + ["loss=lovasz_softmax"] * 3
    assert [a for a, _ in options["contrasts"][11:]] == ["loss=dice", "loss=dice(skip_empty=true)",
                                                         "loss=dice(log_loss=true)"]


def test_recipe_runs_end_to_end_on_tiny_canvases(tmp_path, monkeypatch, forked_cells):
    root = fake_scenes_root(tmp_path / "fm")
    out = tmp_path / "sweep"
    overrides = [f"data.root={root}", "data.image_size=32", "data.scenes.train_canvases=12",
                 "data.scenes.val_canvases=4", "data.scenes.test_canvases=6", "epochs=1", "batch_size=6",
                 "grid.seed=[0]", "grid.loss=[ce, dice]", "report.contrasts=baseline"]
    monkeypatch.setenv("LOSSBENCH_CACHE", str(tmp_path / "cache"))
    proc = run_cli(["sweep", str(RECIPE), "--out", str(out)] + [a for o in overrides for a in ("--set", o)])
    assert proc.code == 0, proc.out + proc.err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["loss"], r["status"]) for r in rows] == [("ce", "done"), ("dice", "done")]

    # the evaluated split is the test canvases, every pixel of them, and the class counts are the train masks'
    prepared = prepare_splits(plan_sweep(RECIPE, overrides, tmp_path / "plan").cells[0].experiment)
    test_pixels = np.bincount(np.asarray(prepared.val.masks).reshape(-1), minlength=11)
    train_pixels = np.bincount(np.asarray(prepared.train.masks).reshape(-1), minlength=11)
    assert prepared.val.names[0].startswith("test/") and prepared.test is None
    for row in rows:
        summary = json.loads((out / row["cell"] / "summary.json").read_text())
        assert summary["class_counts"] == train_pixels.tolist()
        confusion = np.asarray(summary["best_confusion_matrix"])
        assert confusion.sum(1).tolist() == test_pixels.tolist()
        final = summary["final"]
        iou = np.array([final[f"val_iou_{k}"] for k in range(11)], dtype=float)
        assert final["val_fg_miou"] == pytest.approx(np.nanmean(iou[1:]))
        split = json.loads((out / row["cell"] / "split.json").read_text())
        assert split["val"] == prepared.val.names
