"""Zipped grid keys: "a, b": [[a1, b1], [a2, b2]] gives rows, not the product (pytest.parametrize style)."""

import json

import pytest

from lossbench.errors import UserError
from lossbench.experiments.report_data import group_by_seed
from lossbench.experiments.plan import plan_sweep
from lossbench.experiments.results import write_results

BASE = """
name: zip
task: classification
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 16, train_per_class: 24, val_per_class: 8}
model: {name: resnet20}
epochs: 1
"""

ZIPPED = BASE + """
grid:
  seed: [0, 1, 2]
  "loss, drw_epoch, model.head": [[ce, null, linear], [ce, 7, linear], [ldam, null, cosine], [ldam, 7, cosine]]
"""

ROWS = [("ce", None, "linear"), ("ce", 7, "linear"), ("ldam", None, "cosine"), ("ldam", 7, "cosine")]


def test_zipped_keys_give_rows_crossed_with_the_other_keys(tiny_config):
    plan = plan_sweep(tiny_config(ZIPPED))
    assert plan.grid_keys == ["seed", "loss", "drw_epoch", "model.head"]
    assert len(plan.cells) == 12 and len({c.name for c in plan.cells}) == 12
    got = [(c.values["seed"], c.values["loss"], c.values["drw_epoch"], c.values["model.head"]) for c in plan.cells]
    assert got == [(seed, *row) for seed in (0, 1, 2) for row in ROWS]
    for cell in plan.cells:
        exp = cell.experiment
        assert (exp.seed, exp.loss, exp.drw_epoch, exp.model.head) == tuple(cell.values.values())


def test_each_cell_records_a_value_per_key_and_the_report_groups_by_all(tiny_config):
    plan = plan_sweep(tiny_config(ZIPPED))
    write_results(plan)
    meta = json.loads((plan.sweep_dir / "sweep.json").read_text())
    assert meta["grid_keys"] == ["seed", "loss", "drw_epoch", "model.head"]
    assert meta["cells"][1]["values"] == {"seed": 0, "loss": "ce", "drw_epoch": 7, "model.head": "linear"}
    rows = [{"cell": c.name, "task": "classification", "status": "pending", "seed": str(c.values["seed"])}
            for c in plan.cells]
    labels = [c.label for c in group_by_seed(meta, rows)]
    assert labels == [f"loss={a}, drw_epoch={b}, model.head={h}" for a, b, h in ROWS]


@pytest.mark.parametrize("grid, message", [
    ('"loss, drw_epoch": [[ce, null], [ce]]', r"grid.loss, drw_epoch: row 2 \['ce'\] has 1 value for 2 keys"),
    ('"loss, drw_epoch": [ce, focal]', "grid.loss, drw_epoch: row 1 'ce' is not a list for 2 keys"),
    ('"loss, drw_epoch": [[ce, 7]]\n  loss: [focal]', "grid: loss is named twice"),
    ('"loss, , seed": [[ce, 1, 2]]', "grid.loss, , seed: an empty key name"),
])
def test_bad_zipped_grids_are_one_line_errors_naming_file_and_key(tiny_config, grid, message):
    path = tiny_config(BASE + "grid:\n  " + grid + "\n")
    with pytest.raises(UserError, match=message) as err:
        plan_sweep(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
