"""Nothing is chosen on the test split (issue 21 item 8) and eval names splits by what they are (issue 27 item 3).

With ``data.eval_split: test`` the best epoch, best.pt, early stopping and the plateau scheduler use the
held-out split (``data.holdout: true``) or are refused in one line; eval / predict / export default to a
checkpoint not chosen on the test split and say which they used.
"""

import csv
import json
import shutil

import pytest
import torch
from cli_helper import run_cli
from test_recipe_fashion_mnist_lt import fake_fashion_mnist

from lossbench.config import validate_experiment
from lossbench.engine.selection import plan_selection
from lossbench.errors import UserError

CONFIG = """name: {name}
task: classification
output_dir: {out}
epochs: 2
batch_size: 32
loss: ce
data: {{source: fashion_mnist, root: {root}, imbalance_ratio: 5, eval_split: test, holdout: {holdout},
       val_fraction: 0.25, image_size: 8, normalize: none}}
model: {{name: resnet20, in_channels: 1}}
optimizer: {{name: sgd, lr: 0.05}}
"""


@pytest.fixture(scope="module")
def fm_root(tmp_path_factory):
    return fake_fashion_mnist(tmp_path_factory.mktemp("fm"), train_per_class=24, test_per_class=3)


def write_config(tmp_path, root, name, holdout, extra=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name, out=tmp_path / "runs", root=root, holdout=str(holdout).lower()) + extra)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fm_root):
    """Two 2-epoch runs evaluated on test: one with a held-out split (early stopping and a plateau scheduler
    on it), one without; their folders and the train commands' output."""
    tmp = tmp_path_factory.mktemp("testsplit")
    held = write_config(tmp, fm_root, "held", True,
                        "early_stopping: {patience: 5}\nscheduler: {name: plateau, patience: 0}\n")
    plain = write_config(tmp, fm_root, "plain", False)
    out = {}
    for name, path in (("held", held), ("plain", plain)):
        res = run_cli(["train", str(path)])
        assert res.code == 0, res.err
        out[name] = (tmp / "runs" / name, res.out)
    return out


def experiment(holdout, **keys):
    data = {"source": "fashion_mnist", "eval_split": "test", "holdout": holdout}
    return validate_experiment({"data": data, "model": {"name": "resnet20"}, **keys}, "exp.yaml")


@pytest.mark.parametrize("keys, key", [
    ({"best_metric": "macro_f1"}, "exp.yaml: best_metric: macro_f1"),
    ({"best_metric": "val_loss"}, "exp.yaml: best_metric: val_loss"),
    ({"early_stopping": {"patience": 2}}, "exp.yaml: early_stopping: balanced_accuracy"),
    ({"early_stopping": {"metric": "val_loss"}}, "exp.yaml: early_stopping.metric: val_loss"),
    ({"scheduler": {"name": "plateau"}}, "exp.yaml: scheduler: plateau: balanced_accuracy"),
    ({"scheduler": {"name": "plateau", "monitor": "loss"}}, "exp.yaml: scheduler.monitor: loss"),
])
def test_choosing_on_the_test_split_is_refused_in_one_line_naming_the_key(keys, key, tmp_path, fm_root):
    with pytest.raises(UserError) as err:
        plan_selection(experiment(False, **keys), None)
    assert str(err.value).startswith(key) and "test split" in str(err.value) and "\n" not in str(err.value)
    assert "data.holdout: true" in str(err.value)
    # through the command: refused before any data is read, no run folder left
    path = write_config(tmp_path, fm_root, "refused", False, "".join(
        f"{k}: {json.dumps(v)}\n" for k, v in keys.items()))
    res = run_cli(["train", str(path)])
    assert res.code == 2 and res.err.count("\n") == 1 and "test split" in res.err
    assert not (tmp_path / "runs" / "refused").exists()
    # with a held-out split the same keys choose on it; naming a test-split column says which to use
    if "val_" not in json.dumps(keys):
        chosen = plan_selection(experiment(True, **keys), 10)
        assert all(c is None or c.startswith("holdout_") for c in (chosen.best, chosen.stopper, *chosen.monitors))
    else:
        with pytest.raises(UserError, match="use holdout_loss"):
            plan_selection(experiment(True, **keys), 10)


def test_with_a_holdout_everything_is_chosen_on_it():
    chosen = plan_selection(experiment(True, early_stopping={"patience": 2}, scheduler={"name": "plateau"}), 10)
    assert chosen.split == "holdout" and chosen.evaluates_holdout
    assert chosen.best == chosen.stopper == chosen.monitors[0] == "holdout_balanced_accuracy"
    on_train = plan_selection(experiment(False, best_metric="train_loss"), 10)
    assert on_train.best == "train_loss" and on_train.chosen_on == "train" and not on_train.evaluates_holdout
    assert chosen.chosen_on == "holdout" and plan_selection(experiment(False), 10).chosen_on is None
    loss = experiment(True, best_metric="loss")
    assert plan_selection(loss, 10).best_monitor(loss).mode == "min"  # holdout_loss: minimised like val_loss
    plain = plan_selection(experiment(False), 10)
    assert plain.split is None and plain.best is None and not plain.evaluates_holdout
    on_val = validate_experiment({"early_stopping": {"patience": 2}}, "exp.yaml")
    assert plan_selection(on_val, 4).stopper == "val_balanced_accuracy"  # eval_split: val as before


def test_the_best_epoch_best_pt_and_summary_are_chosen_on_the_holdout(runs):
    run_dir, out = runs["held"]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert "holdout_balanced_accuracy" in rows[0] and "val_balanced_accuracy" in rows[0]
    holdout = [float(r["holdout_balanced_accuracy"]) for r in rows]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_metric"] == "holdout_balanced_accuracy" and summary["selected_on"] == "holdout"
    best_epoch = summary["best"]["epoch"]
    assert holdout[best_epoch - 1] == max(holdout) and holdout.index(max(holdout)) == best_epoch - 1
    # the best_* values are the test split's at the epoch the held-out split chose (results.csv copies them)
    assert summary["best"]["val_balanced_accuracy"] == float(rows[best_epoch - 1]["val_balanced_accuracy"])
    best_pt = torch.load(run_dir / "best.pt", weights_only=True)
    assert best_pt["epoch"] == best_epoch and best_pt["selected_on"] == "holdout"
    assert f"best holdout_balanced_accuracy {max(holdout):.4f} at epoch {best_epoch}" in out
    assert "chosen on the holdout split" in out and (run_dir / "confusion_matrix.png").is_file()
    assert "holdout balanced_accuracy" in out and "test loss" in out  # the epoch lines name the splits


def test_without_a_holdout_nothing_is_chosen_and_the_final_epoch_is_reported(runs):
    run_dir, out = runs["plain"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_metric"] is None and summary["selected_on"] is None
    assert summary["best"]["epoch"] == 2 and summary["best_confusion_matrix"] == summary["final_confusion_matrix"]
    assert {k: v for k, v in summary["best"].items() if k.startswith("val_")} == summary["final"]
    assert not (run_dir / "best.pt").exists() and (run_dir / "confusion_matrix.png").is_file()
    assert "nothing chosen" in out and "best balanced" not in out
    assert not any(k.startswith("holdout_") for k in next(csv.DictReader((run_dir / "metrics.csv").open())))


def test_eval_predict_export_default_to_a_checkpoint_not_chosen_on_test(runs, tmp_path):
    held, _ = runs["held"]
    plain, _ = runs["plain"]
    res = run_cli(["eval", str(held), "--name", "default"])
    assert res.code == 0, res.err
    found = json.loads((held / "eval" / "default" / "metrics.json").read_text())
    assert found["checkpoint"] == "best.pt" and found["checkpoint_chosen_on"] == "holdout"
    assert "best.pt (epoch" in res.out and "chosen on the holdout split" in res.out
    res = run_cli(["eval", str(plain), "--name", "default"])
    assert res.code == 0, res.err
    assert json.loads((plain / "eval" / "default" / "metrics.json").read_text())["checkpoint"] == "last.pt"
    assert "last.pt (epoch 2, the final weights; nothing was chosen" in res.out
    res = run_cli(["eval", str(plain), "--checkpoint", "best"])
    assert res.code == 2 and "best.pt: no such checkpoint" in res.err and "--checkpoint last" in res.err
    # a run trained before best.pt recorded its split chose it on the test split: last.pt is taken instead
    old = tmp_path / "old"
    shutil.copytree(held, old)
    best = torch.load(old / "best.pt", weights_only=True)
    del best["selected_on"]
    torch.save(best, old / "best.pt")
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("L", (8, 8), 90).save(images / "a.png")
    for argv in (["eval", str(old)], ["predict", str(old), str(images)],
                 ["export", str(old), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]):
        res = run_cli(argv)
        assert res.code == 0, res.err
        assert "last.pt (epoch 2, the final weights; best.pt was chosen on the test split)" in res.out + res.err
    assert json.loads((tmp_path / "export.json").read_text())["checkpoint"] == "last.pt"
    res = run_cli(["eval", str(old), "--checkpoint", "best", "--name", "asked"])
    assert res.code == 0 and "chosen on the test split; its scores on the test split are optimistic" in res.out


def test_eval_names_the_splits_by_what_they_are(runs):
    held, _ = runs["held"]
    split = json.loads((held / "split.json").read_text())
    res = run_cli(["eval", str(held), "--checkpoint", "last", "--name", "default"])
    assert res.code == 0, res.err
    default = json.loads((held / "eval" / "default" / "metrics.json").read_text())
    assert default["split"] == "test" and default["num_images"] == len(split["val"]) == 30
    res = run_cli(["eval", str(held), "--checkpoint", "last", "--split", "test", "--name", "test"])
    assert res.code == 0, res.err
    test = json.loads((held / "eval" / "test" / "metrics.json").read_text())
    assert test["split"] == "test" and test["metrics"] == default["metrics"]
    res = run_cli(["eval", str(held), "--checkpoint", "last", "--split", "holdout", "--name", "holdout"])
    assert res.code == 0, res.err
    holdout = json.loads((held / "eval" / "holdout" / "metrics.json").read_text())
    assert holdout["split"] == "holdout" and holdout["num_images"] == len(split["holdout"])
    rows = list(csv.DictReader((held / "metrics.csv").open()))
    assert holdout["metrics"]["balanced_accuracy"] == pytest.approx(float(rows[-1]["holdout_balanced_accuracy"]))
    assert next(csv.DictReader((held / "eval" / "holdout" / "metrics.csv").open()))["split"] == "holdout"
    res = run_cli(["eval", str(held), "--split", "val"])
    assert res.code == 2 and res.err.count("\n") == 1 and "--split test" in res.err
    plain, _ = runs["plain"]
    res = run_cli(["eval", str(plain), "--split", "holdout"])
    assert res.code == 2 and "no held-out split" in res.err


def test_a_run_that_chose_on_the_test_split_before_cannot_be_resumed_on_the_holdout(runs, tmp_path):
    held, _ = runs["held"]
    old = tmp_path / "held"
    shutil.copytree(held, old)
    (old / "summary.json").unlink()
    last = torch.load(old / "last.pt", weights_only=True)
    last["rows"] = [{k: v for k, v in row.items() if not k.startswith("holdout_")} for row in last["rows"]]
    torch.save(last, old / "last.pt")
    res = run_cli(["train", "--resume", str(old)])
    assert res.code == 2 and res.err.count("\n") == 1
    assert "no holdout_balanced_accuracy column" in res.err and "--overwrite" in res.err


def test_a_sweep_that_would_choose_on_the_test_split_is_refused_when_planned(tmp_path, fm_root):
    from lossbench.experiments.plan import plan_sweep

    path = write_config(tmp_path, fm_root, "sweep", False, "grid: {loss: [ce, focal]}\nscheduler: {name: plateau}\n")
    with pytest.raises(UserError) as err:
        plan_sweep(path, sweep_dir=tmp_path / "sweep")
    assert "(cell sweep--loss-ce" in str(err.value) and "\n" not in str(err.value)
    assert "scheduler: plateau: balanced_accuracy is measured on the test split" in str(err.value)
    assert not (tmp_path / "sweep").exists()
