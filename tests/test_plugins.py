"""Plugins (issue 23): a config's ``plugins:`` and installed entry points, in every process that builds things.

Every run that loads a plugin is a process of its own (forked with lossbench imported): a plugin registers
into the process's registries, which the other tests of this process must not see. An installed package is
a real ``*.dist-info/entry_points.txt`` on the process's path, read by importlib.metadata, no mocks.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from cli_helper import ENV, forked_call, forked_cli, run_cli

EXP = """\
name: exp
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 4}}
model: {{name: resnet20}}
loss: {loss}
batch_size: 8
epochs: 1
device: cpu
"""

GOOD_LOSS = """\
from torch import nn
from lossbench.losses import register_loss

@register_loss("doubled_ce")
class DoubledCE(nn.Module):
    \"\"\"Twice the cross-entropy.\"\"\"

    def __init__(self, ctx, factor: float = 2.0):
        super().__init__()
        self.factor = factor

    def forward(self, logits, target):
        return self.factor * nn.functional.cross_entropy(logits, target)
"""


def write_config(tmp_path: Path, plugins: list[str], loss: str = "ce", name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    text = EXP.format(out=tmp_path / "runs", loss=loss)
    path.write_text(f"plugins: {plugins!r}\n" + text if plugins else text)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_a_plugin_file_trains_is_recorded_listed_and_loaded_again_by_eval(tmp_path):
    write(tmp_path / "mine" / "doubled.py", GOOD_LOSS)
    config = write_config(tmp_path, ["mine/doubled.py"], loss="doubled_ce(factor=3)")
    elsewhere = tmp_path / "elsewhere"  # relative to the config file, not to the working folder
    elsewhere.mkdir()
    res = run_cli(["train", config], cwd=elsewhere, process="forked")
    assert res.code == 0, res.err
    run = tmp_path / "runs" / "exp"
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    plugin = str((tmp_path / "mine" / "doubled.py").resolve())
    assert recorded["plugins"] == [plugin]
    assert recorded["versions"][f"plugin {plugin}"].startswith("sha256:")
    res = run_cli(["eval", run], cwd=elsewhere, process="forked")
    assert res.code == 0 and (run / "eval" / "metrics.json").is_file() and "changed" not in res.err, res.err
    with (tmp_path / "mine" / "doubled.py").open("a") as f:
        f.write("# edited after the run\n")
    res = run_cli(["eval", run], cwd=elsewhere, process="forked")
    digest = recorded["versions"][f"plugin {plugin}"]
    assert res.code == 0 and f"{run}: {plugin}: the plugin changed since the run trained ({digest} then, " in res.err
    res = run_cli(["list", "losses", "--config", config], process="forked")
    assert res.code == 0, res.err
    assert f"doubled_ce(factor=2.0)  [plugin file {plugin}]" in res.out.splitlines()
    assert "ce(weight=None, label_smoothing=0.0)" in res.out.splitlines()  # built-ins carry no origin


BAD = {
    "does_not_import": ("import numpy\nnumpy.no_such_thing\n",
                        "{where}: plugin file {file} does not import: AttributeError: module 'numpy' has no "
                        "attribute 'no_such_thing' ({file}, line 2)"),
    "clashes_with_built_in": (GOOD_LOSS.replace('"doubled_ce"', '"focal"'),
                              "{where}: loss 'focal' from plugin file {file} clashes with the loss 'focal' from "
                              "built-in; rename one of them"),
    "not_a_module": ("from lossbench.losses import register_loss\n\n"
                     "@register_loss('plain')\ndef plain(logits, target):\n    return logits.sum()\n",
                     "{where}: loss 'plain' from plugin file {file} is not an nn.Module class (got function); "
                     "register a subclass of torch.nn.Module"),
    "required_argument": (GOOD_LOSS.replace("factor: float = 2.0", "factor: float"),
                          "{where}: loss 'doubled_ce' from plugin file {file} has a required argument 'factor' "
                          "without a default; give every parameter after ctx a default (a spec may name the loss "
                          "alone)"),
    "capability_contradicted": (GOOD_LOSS.replace('"doubled_ce"', '"doubled_ce", accepts_class_weights=True'),
                                "{where}: plugin file {file} does not import: ValueError: loss 'doubled_ce': "
                                "accepts_class_weights=True but the class has no set_class_weights ({file}, line 4)"),
    "undeclared": ("from torch import nn\nfrom lossbench.losses import LOSSES\n\n"
                   "class Bare(nn.Module):\n    def __init__(self, ctx):\n        super().__init__()\n\n"
                   "LOSSES.register('bare')(Bare)\n",
                   "{where}: loss 'bare' from plugin file {file} declares no capabilities; register the class "
                   "with @register_loss(name, ...)"),
    "model_head": ("from lossbench.models.registry import register_model\nfrom torch import nn\n\n"
                   "@register_model('tiny', 'classification', head=('fc',))\n"
                   "def build(cfg, num_classes):\n    return nn.Linear(3, num_classes)\n",
                   "{where}: model 'tiny' from plugin file {file} declares head ('fc',); give the head's "
                   "parameter prefixes, each ending in '.', e.g. ('fc.',)"),
    "source_signature": ("from lossbench.data.registry import register_source\n\n"
                         "@register_source('rows', tasks=('classification',))\ndef load(cfg):\n    return None\n",
                         "{where}: source 'rows' from plugin file {file} has a loader that cannot be called as "
                         "load(cfg, task, seed)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_plugin_stops_train_in_one_line_before_any_run_folder(tmp_path, case):
    code, expected = BAD[case]
    plugin = write(tmp_path / f"{case}.py", code)
    config = write_config(tmp_path, [plugin.name])
    res = run_cli(["train", config], process="forked")
    assert res.code == 2 and res.err_lines == ["lossbench: error: " + expected.format(
        where=f"{config}: plugins", file=plugin)], res.err
    assert not (tmp_path / "runs").exists()


def test_a_missing_plugin_file_and_an_unknown_module_are_one_line_each(tmp_path):
    config = write_config(tmp_path, ["nowhere/mine.py"])
    res = run_cli(["train", config], process="forked")
    assert res.code == 2 and res.err_lines == [
        f"lossbench: error: {config}: plugins: {tmp_path / 'nowhere' / 'mine.py'}: no such plugin file; give a .py "
        "file relative to the config file, or a module name"], res.err
    config = write_config(tmp_path, ["no_such_plugin_module"])
    res = run_cli(["train", config], process="forked")
    assert res.code == 2 and res.err_lines == [
        f"lossbench: error: {config}: plugins: no_such_plugin_module: no module of that name; install it, or give "
        "a .py file relative to the config file"], res.err


def test_two_plugins_with_one_name_say_both_origins(tmp_path):
    first = write(tmp_path / "a" / "first.py", GOOD_LOSS)
    second = write(tmp_path / "b" / "second.py", GOOD_LOSS)
    config = write_config(tmp_path, ["a/first.py", "b/second.py"])
    res = run_cli(["train", config], process="forked")
    assert res.code == 2 and res.err_lines == [
        f"lossbench: error: {config}: plugins: loss 'doubled_ce' from plugin file {second} clashes with the loss "
        f"'doubled_ce' from plugin file {first}; rename one of them"], res.err


def install(site: Path, package: str, module_text: str, entry_points: str) -> None:
    """A package ``package`` as pip leaves it in ``site``: its module and a dist-info with entry_points.txt."""
    write(site / package / "__init__.py", module_text)
    info = site / f"{package}-1.2.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.2\n")
    write(info / "entry_points.txt", entry_points)


def forked_cli_with_path(argv: list, site: Path, tmp_path: Path):
    """``lossbench ARGV`` in a process whose PYTHONPATH has ``site`` (where the test installed a package)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(site), ENV["PYTHONPATH"]])}
    out, err = tmp_path / "cli.out", tmp_path / "cli.err"
    out.unlink(missing_ok=True)
    err.unlink(missing_ok=True)
    proc = forked_cli(argv, out, err_path=err, env=env, daemon=False, fork_cells=True)
    proc.join(600)
    return proc.exitcode, out.read_text() if out.exists() else "", err.read_text() if err.exists() else ""


def test_an_installed_entry_point_is_listed_with_its_package_and_trains(tmp_path):
    site = tmp_path / "site"
    install(site, "tiny_losses", GOOD_LOSS, "[lossbench.losses]\ndoubled_ce = tiny_losses\n")
    code, out, err = forked_cli_with_path(["list", "losses"], site, tmp_path)
    assert code == 0, err
    assert "doubled_ce(factor=2.0)  [package tiny_losses 1.2]" in out.splitlines()
    config = write_config(tmp_path, [], loss="doubled_ce")
    code, out, err = forked_cli_with_path(["train", config], site, tmp_path)
    assert code == 0, err
    recorded = yaml.safe_load((tmp_path / "runs" / "exp" / "config.yaml").read_text())
    assert recorded["versions"]["plugin tiny_losses"] == "tiny_losses 1.2"


def test_an_entry_point_that_registers_nothing_of_its_name_is_one_line(tmp_path):
    site = tmp_path / "site"
    install(site, "misnamed", GOOD_LOSS, "[lossbench.losses]\ndoubled = misnamed\n")
    code, out, err = forked_cli_with_path(["list", "losses"], site, tmp_path)
    assert code == 2 and err.splitlines() == [
        "lossbench: error: entry point doubled = misnamed in lossbench.losses (package misnamed): its module "
        "registered no loss named 'doubled'; register it with the decorator under that name, or rename the "
        "entry point"], err


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_loss"
#: the example sweep made tiny: 8x8 images, 1 epoch; its grid (ce, focal, seesaw x 2 seeds) as written
TINY = ["--set", "data.image_size=8", "--set", "data.train_per_class=8", "--set", "data.val_per_class=4",
        "--set", "data.imbalance_ratio=2", "--set", "epochs=1", "--set", "batch_size=8", "--set", "device=cpu"]
SEESAW = "seesaw(p=0.8, q=2)"


def seesaw_rows(sweep_dir: Path) -> dict[str, dict[str, str]]:
    import csv

    with (sweep_dir / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["loss"], r["seed"], r["status"]) for r in rows) == sorted(
        (loss, seed, "done") for loss in ("ce", "focal(gamma=2)", SEESAW) for seed in ("0", "1"))
    assert SEESAW in (sweep_dir / "report.md").read_text()
    return {r["seed"]: {k: v for k, v in r.items() if k.startswith("best_")} for r in rows if r["loss"] == SEESAW}


def sweep_example_on_ray(out: str) -> None:
    """In a process of its own: the example's tiny sweep through ``lossbench.sweep(..., backend="ray")`` on a new
    one-CPU Ray, whose workers start their cells as forked processes (cli_helper.fork_sweep_cells)."""
    import ray

    import lossbench

    tests = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([ENV["PYTHONPATH"], tests])  # the workers' setup hook is in tests/
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "cli_helper.fork_sweep_cells"})
    try:
        overrides = {item.split("=")[0].replace(".", "__"): yaml.safe_load(item.split("=")[1]) for item in TINY[1::2]}
        lossbench.sweep(EXAMPLE / "sweep.yaml", backend="ray", out=out, **overrides)
    finally:
        ray.shutdown()


def test_the_example_loss_is_swept_through_plugins_an_entry_point_and_ray_with_the_same_rows(tmp_path):
    """The example's 2-seed sweep from its config's plugins: (nothing installed); then with the package
    installed (a dist-info naming its entry point) and plugins: emptied; then from Python on Ray: the seesaw
    rows are done and equal."""
    code, out, err = forked_cli_with_path(["sweep", EXAMPLE / "sweep.yaml", *TINY, "--out", tmp_path / "file"],
                                          tmp_path / "nothing-installed", tmp_path)
    assert code == 0, out + err
    through_file = seesaw_rows(tmp_path / "file")
    site = tmp_path / "site"
    write(site / "lossbench_seesaw-0.1.0.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: lossbench-seesaw\nVersion: 0.1.0\n")
    assert '[project.entry-points."lossbench.losses"]\nseesaw = "lossbench_seesaw.seesaw"' in \
        (EXAMPLE / "pyproject.toml").read_text()  # what pip writes into entry_points.txt:
    write(site / "lossbench_seesaw-0.1.0.dist-info" / "entry_points.txt",
          "[lossbench.losses]\nseesaw = lossbench_seesaw.seesaw\n")
    path = Path(f"{site}{os.pathsep}{EXAMPLE}")
    code, out, err = forked_cli_with_path(["list", "losses", "--config", EXAMPLE / "sweep.yaml"], path, tmp_path)
    assert code == 0 and "seesaw(p=0.8, q=2.0)  [package lossbench-seesaw 0.1.0]" in out.splitlines(), out + err
    code, out, err = forked_cli_with_path(["sweep", EXAMPLE / "sweep.yaml", *TINY, "--set", "plugins=[]",
                                           "--out", tmp_path / "entry"], path, tmp_path)
    assert code == 0, out + err
    assert seesaw_rows(tmp_path / "entry") == through_file
    ray_run = forked_call(sweep_example_on_ray, str(tmp_path / "ray"), log=tmp_path / "ray.log", daemon=False)
    ray_run.join(600)
    assert ray_run.exitcode == 0, (tmp_path / "ray.log").read_text()
    on_ray = seesaw_rows(tmp_path / "ray")  # cells of one thread there: sums may differ in the last float bits
    assert on_ray.keys() == through_file.keys()
    for seed, row in on_ray.items():
        assert row.keys() == through_file[seed].keys()
        for key, value in row.items():
            assert value == through_file[seed][key] or math.isclose(float(value), float(through_file[seed][key]),
                                                                    rel_tol=1e-5), (seed, key)


MARKER = """\
from pathlib import Path

Path(__file__).with_suffix(".imported").touch()  # a trace of every process that imports this plugin
"""
SEGMENTATION_SWEEP = """\
name: seg
plugins: [marker.py]
task: segmentation
output_dir: {out}
data: {{source: synthetic, num_classes: 2, image_size: 16, train_per_class: 4, val_per_class: 2}}
model: {{name: nested_unet, base_channels: 4, encoder_depth: 2}}
batch_size: 4
epochs: 1
device: cpu
grid:
  loss: [ce]
"""


def test_report_imports_no_plugin_of_a_config_and_eval_does(tmp_path):
    """A plugin is code the user chose to run: the sweep and eval import it; the report of the sweep folder
    does not (its segmentation examples say why they are missing) and loads the installed entry points only."""
    write(tmp_path / "marker.py", MARKER)
    config = tmp_path / "seg.yaml"
    config.write_text(SEGMENTATION_SWEEP.format(out=tmp_path / "runs"))
    trace = tmp_path / "marker.imported"
    code, out, err = forked_cli_with_path(["sweep", config], tmp_path / "nothing-installed", tmp_path)
    assert code == 0 and trace.is_file(), out + err
    trace.unlink()
    res = run_cli(["report", tmp_path / "runs" / "seg"], process="forked")
    assert res.code == 0 and not trace.exists(), res.err
    cell = next(p for p in (tmp_path / "runs" / "seg").iterdir() if p.name.startswith("seg--"))
    assert ("No examples of best loss=ce: its runs use plugins, and a report imports no code a config names; draw "
            f"them with lossbench predict {cell} IMAGES.") in (tmp_path / "runs" / "seg" / "report.md").read_text()
    res = run_cli(["eval", cell], process="forked")
    assert res.code == 0 and trace.is_file(), res.err
    then = yaml.safe_load((cell / "config.yaml").read_text())["versions"][f"plugin {tmp_path / 'marker.py'}"]
    with (tmp_path / "marker.py").open("a") as f:
        f.write("# edited: the cell's results are not this code's\n")
    code, out, err = forked_cli_with_path(["sweep", config], tmp_path / "nothing-installed", tmp_path)
    assert code == 2 and f"{cell.parent}: cell {cell.name} finished, but plugin {tmp_path / 'marker.py'} was " \
        f"{then} and is sha256:" in err, out + err


MODEL_AND_SOURCE = """\
import torch
from torch import nn

from lossbench.data.registry import Splits, register_source
from lossbench.data.samples import TensorSamples
from lossbench.models.registry import register_model


class TinyCNN(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


@register_model("tiny_cnn", "classification", head=("fc.",))
def build(cfg, num_classes):
    \"\"\"One convolution and a linear head.\"\"\"
    return TinyCNN(cfg.in_channels, num_classes)


@register_source("stripes", tasks=("classification",))
def load(cfg, task, seed):
    \"\"\"Vertical (class 0) or horizontal (class 1) stripes.\"\"\"
    def split(n):
        images = torch.zeros(2 * n, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)
        images[:n, :, :, ::2] = 255
        images[n:, :, ::2, :] = 255
        return TensorSamples(images, torch.tensor([0] * n + [1] * n))
    return Splits(split(cfg.train_per_class), split(cfg.val_per_class), ["vertical", "horizontal"])
"""


def test_a_plugin_model_and_source_train_and_are_listed_with_their_origin(tmp_path):
    plugin = write(tmp_path / "parts.py", MODEL_AND_SOURCE)
    config = tmp_path / "exp.yaml"
    config.write_text(EXP.format(out=tmp_path / "runs", loss="ce")
                      .replace("source: synthetic, num_classes: 3", "source: stripes")
                      .replace("{name: resnet20}", "{name: tiny_cnn}") + "plugins: [parts.py]\n")
    res = run_cli(["train", config], process="forked")
    assert res.code == 0, res.err
    summary = json.loads((tmp_path / "runs" / "exp" / "summary.json").read_text())
    assert summary["class_names"] == ["vertical", "horizontal"]
    res = run_cli(["list", "models", "--config", config], process="forked")
    assert res.code == 0 and f"One convolution and a linear head.  [plugin file {plugin}]" in res.out, res.err
    res = run_cli(["list", "sources", "--config", config, "--json"], process="forked")
    assert res.code == 0, res.err
    [stripes] = [r for r in json.loads(res.out) if r["name"] == "stripes"]
    assert stripes == {"name": "stripes", "origin": f"plugin file {plugin}", "tasks": ["classification"],
                       "description": "Vertical (class 0) or horizontal (class 1) stripes."}
