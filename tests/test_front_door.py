"""One front door (issue 23): the conventions users expect from the command line, and loss classes for plain
PyTorch use."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml
from cli_helper import run_cli

from lossbench._version import __version__
from lossbench.config import load_experiments, read_documents, validate_experiment
from lossbench.losses import LOSSES, LossContext, build_loss

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_the_package_version():
    res = run_cli(["--version"])
    assert res.code == 0 and res.out.strip() == f"lossbench {__version__}"


@pytest.mark.parametrize("kind", ["losses", "models", "sources"])
def test_list_json_holds_every_entry_with_its_origin(kind):
    res = run_cli(["list", kind, "--json"])
    assert res.code == 0, res.err
    records = json.loads(res.out)
    from lossbench.data import SOURCES
    from lossbench.models import MODELS

    registry = {"losses": LOSSES, "models": MODELS, "sources": SOURCES}[kind]
    assert [r["name"] for r in records] == list(registry)
    assert all(r["origin"] == "built-in" for r in records)
    by_name = {r["name"]: r for r in records}
    if kind == "losses":
        assert by_name["focal"]["parameters"]["gamma"] == 2.0 and by_name["focal"]["class"] == "FocalLoss"
        assert by_name["ldam"]["capabilities"] == {"accepts_class_weights": True, "expects_cosine_logits": True,
                                                   "needs_class_counts": True}
    elif kind == "models":
        assert by_name["unet"]["task"] == "segmentation"
    else:
        assert by_name["seg_folder"]["tasks"] == ["segmentation"]


def test_config_show_prints_what_lossbench_reads_with_every_default(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("data: {source: synthetic, image_size: 8}\nloss: focal(gamma=2)\n")
    res = run_cli(["config", "show", config, "--set", "epochs=3"])
    assert res.code == 0, res.err
    [shown] = list(yaml.safe_load_all(res.out))
    assert shown["epochs"] == 3 and shown["optimizer"]["lr"] == 0.001 and shown["data"]["val_fraction"] == 0.2
    assert validate_experiment(shown, "shown").model_dump() == load_experiments(config, ["epochs=3"])[0].model_dump()
    res = run_cli(["config", "show", ROOT / "recipes" / "quickstart.yaml"])
    assert res.code == 0, res.err
    shown = list(yaml.safe_load_all(res.out))
    raw = read_documents(ROOT / "recipes" / "quickstart.yaml")
    assert [d.get("grid") for d in shown] == [d.get("grid") for d in raw]  # a sweep's grid as written
    res = run_cli(["config", "show", config, "--set", "epochs=0"])
    assert res.code == 2 and res.err_lines == [
        f"lossbench: error: {config}: epochs: Input should be greater than 0 (got 0)"], res.err


def test_config_schema_accepts_every_recipe_and_refuses_an_unknown_key(tmp_path):
    out = tmp_path / "lossbench.schema.json"
    res = run_cli(["config", "schema", "--out", out])
    assert res.code == 0, res.err
    schema = json.loads(out.read_text())
    assert json.loads(run_cli(["config", "schema"]).out) == schema
    validator = jsonschema.Draft202012Validator(schema)
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    assert len(recipes) > 5
    for recipe in recipes:
        for doc in yaml.safe_load_all(recipe.read_text()):
            assert list(validator.iter_errors(doc)) == [], recipe
    errors = list(validator.iter_errors({"loss": "ce", "optimizer": {"lrr": 0.1}}))
    assert len(errors) == 1 and "lrr" in errors[0].message
    assert list(validator.iter_errors({"epochs": 0}))


def test_loss_classes_are_importable_for_plain_pytorch():
    from lossbench.losses import CrossEntropy, DiceLoss, FocalLoss  # noqa: F401 - the documented imports

    assert {cls.__name__ for _, cls in LOSSES.items()} <= set(dir(__import__("lossbench.losses").losses))
    torch.manual_seed(0)
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    focal = FocalLoss(LossContext(num_classes=4), gamma=2)
    assert torch.equal(focal(logits, target), build_loss("focal(gamma=2)", 4)(logits, target))


TUNED = """\
name: tiny
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 4}}
model: {{name: resnet20}}
batch_size: 8
epochs: 1
device: cpu
grid:
  loss: [ce]
tune:
  trials: 2
  metric: loss
  startup_trials: 2   # drawn at random from the study's seed: the same trials on every run
  untuned: false
  space:
    optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
"""


def results_without_times(sweep_dir: Path) -> list[dict[str, str]]:
    import csv

    with (sweep_dir / "results.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(f)]


def test_the_python_sweep_tunes_exactly_as_the_command_line(tmp_path, forked_cells):
    import lossbench

    config = tmp_path / "tuned.yaml"
    config.write_text(TUNED.format(out=tmp_path / "runs"))
    res = run_cli(["sweep", config, "--out", tmp_path / "cli"])
    assert res.code == 0, res.err
    result = lossbench.sweep(config, out=tmp_path / "api", backend="local", jobs=1, log=lambda _: None)
    assert (tmp_path / "api" / "tune.db").is_file() and result.report == tmp_path / "api" / "report.html"
    from_cli, from_api = results_without_times(tmp_path / "cli"), results_without_times(tmp_path / "api")
    assert len(from_cli) == 1 and from_cli[0]["status"] == "done"
    assert from_api == from_cli
