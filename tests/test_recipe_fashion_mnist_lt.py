"""recipes/fashion_mnist_lt.yaml end to end on tiny IDX files in Fashion-MNIST's exact layout."""

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helper import run_cli

from lossbench.data import prepare_splits
from lossbench.errors import UserError
from lossbench.experiments.plan import plan_sweep

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fashion_mnist_lt.yaml"
CPU_RECIPE = ROOT / "recipes" / "fashion_mnist_lt_cpu.yaml"


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzip'd uint8 IDX file: magic 0 0 0x08 ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(root: Path, train_per_class: int = 120, test_per_class: int = 4) -> Path:
    """Balanced train and t10k IDX files, 10 classes of 28x28 images whose brightness follows the class."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (len(labels), 28, 28)) + labels[:, None, None] * 19
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


ROWS = 12  # configurations of the zipped grid, each run with every seed
VS_CE = 11  # contrasts against CE: every configuration but CE and the CB step control, and post-hoc LA


def test_recipes_plan_every_loss_seed_zero_first():
    for recipe, drw in ((RECIPE, 161), (CPU_RECIPE, 7)):
        plan = plan_sweep(recipe, sweep_dir="/nonexistent")
        assert len(plan.cells) == ROWS * 10  # seeds 0-9 planned; the rounds give 5 each, then what is undecided
        assert plan.sequential[plan.cells[0].document] == {"min": 5, "max": 10}
        assert [c.experiment.seed for c in plan.cells[:ROWS]] == [0] * ROWS
        exp = plan.cells[0].experiment
        assert exp.data.source == "fashion_mnist" and exp.data.eval_split == "test"
        assert exp.data.imbalance_ratio == 100 and exp.model.in_channels == 1
        assert exp.data.imbalance_order == "permuted"
        options = plan.report[plan.cells[0].document]
        assert {k: options[k] for k in ("baseline", "epoch", "posthoc_la", "margin")} == {
            "baseline": {"loss": "ce", "drw_epoch": None}, "epoch": "final", "posthoc_la": True, "margin": 1.0}
        ce = "loss=ce, drw_epoch=None, model.head=linear, model.bias_prior=None"
        ldam = "loss=ldam(s=30), drw_epoch=None, model.head=cosine, model.bias_prior=None"
        pairs = options["contrasts"]
        assert len(pairs) == 16 and [b for _, b in pairs[:VS_CE]] == [ce] * VS_CE
        cb = ("loss=cb(base=sigmoid_focal, beta=0.9999, gamma=1.0), drw_epoch=None, model.head=linear, "
              "model.bias_prior=0.1")
        assert pairs[VS_CE:] == [
            [ldam, "loss=ldam(s=30, max_margin=0), drw_epoch=None, model.head=cosine, model.bias_prior=None"],
            [f"loss=ldam(s=30), drw_epoch={drw}, model.head=cosine, model.bias_prior=None",
             f"loss=ce, drw_epoch={drw}, model.head=linear, model.bias_prior=None"],
            ["loss=logit_adjusted(tau=1), drw_epoch=None, model.head=linear, model.bias_prior=None",
             f"{ce} + post-hoc LA"],
            [cb, "loss=focal(gamma=1), drw_epoch=None, model.head=linear, model.bias_prior=None"],
            [cb.replace("gamma=1.0)", "gamma=1.0, normalize=samples)"), cb]]
    full = plan_sweep(RECIPE, sweep_dir="/nonexistent").cells[0].experiment
    assert (full.model.name, full.epochs, full.batch_size) == ("resnet32", 200, 128)
    assert (full.optimizer.name, full.optimizer.lr, full.optimizer.weight_decay) == ("sgd", 0.1, 2e-4)
    assert full.scheduler.milestones == [160, 180] and full.scheduler.warmup_epochs == 5


def _setting(cell):
    e = cell.experiment
    return e.loss, e.drw_epoch, e.model.head, e.model.bias_prior


def test_recipes_follow_the_official_code_where_the_schedule_allows():
    """LDAM-DRW's cifar_train.py: wd 2e-4 on all parameters, lr x0.01 twice, DRW after the first decay."""
    for recipe, (model, epochs, warmup, milestones, drw) in (
            (RECIPE, ("resnet32", 200, 5, [160, 180], 161)), (CPU_RECIPE, ("resnet20", 8, 1, [6, 7], 7))):
        cells = plan_sweep(recipe, sweep_dir="/nonexistent").cells
        exp = cells[0].experiment
        assert (exp.model.name, exp.epochs, exp.batch_size) == (model, epochs, 128)
        assert exp.optimizer.decay_norm_and_bias and exp.optimizer.momentum == 0.9
        sched = exp.scheduler
        assert (sched.name, sched.warmup_epochs, sched.milestones, sched.gamma) == ("multistep", warmup,
                                                                                  milestones, 0.01)
        assert exp.data.holdout and round(6000 * exp.data.val_fraction) == 1000 and exp.drw_beta == 0.9999
        if recipe == CPU_RECIPE:  # the table reads the final epoch: evaluated once, after it
            assert exp.eval_every == exp.epochs
            assert plan_sweep(recipe, sweep_dir="/x").report[cells[0].document]["epoch"] == "final"
        assert [_setting(c) for c in cells[:ROWS]] == [
            ("ce", None, "linear", None), ("focal(gamma=1)", None, "linear", None),
            ("cb(base=sigmoid_focal, beta=0.9999, gamma=1.0)", None, "linear", 0.1), ("ce", drw, "linear", None),
            ("ldam(s=30)", None, "cosine", None), ("ldam(s=30)", drw, "cosine", None),
            ("logit_adjusted(tau=1)", None, "linear", None), ("dice", None, "linear", None),
            ("dsc", None, "linear", None), ("focal(gamma=1) + dice", None, "linear", None),
            ("ldam(s=30, max_margin=0)", None, "cosine", None),
            ("cb(base=sigmoid_focal, beta=0.9999, gamma=1.0, normalize=samples)", None, "linear", 0.1)]


def test_recipe_holds_out_a_balanced_split_before_the_long_tail(tmp_path):
    root = fake_fashion_mnist(tmp_path / "fm")
    exp = plan_sweep(CPU_RECIPE, [f"data.root={root}"], tmp_path / "sweep").cells[0].experiment
    prepared = prepare_splits(exp)
    assert [prepared.holdout.targets.tolist().count(k) for k in range(10)] == [20] * 10
    counts = sorted(prepared.class_counts, reverse=True)  # imbalance_order: permuted: the seed picks who is rare
    assert counts[0] == 100 and len(prepared.val) == 40  # 120 - 20 held out; the t10k files


def test_eval_split_test_evaluates_the_balanced_test_set(tmp_path):
    root = fake_fashion_mnist(tmp_path / "fm")
    exp = plan_sweep(RECIPE, [f"data.root={root}", "data.holdout=false"], tmp_path / "sweep").cells[0].experiment
    prepared = prepare_splits(exp)
    assert len(prepared.val) == 40 and prepared.test is None  # the t10k files, all of them
    assert len(prepared.train) == sum(prepared.class_counts)
    counts = sorted(prepared.class_counts, reverse=True)  # permuted: the profile, in the seed's order
    assert counts[0] == 120 and counts[-1] == 1  # 120 * 100^(-k/9), at least 1
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(UserError, match="eval_split: test"):
        prepare_splits(exp)


def test_recipe_runs_end_to_end_and_reports_shot_accuracies(tmp_path, monkeypatch, forked_cells):
    root = fake_fashion_mnist(tmp_path / "fm", train_per_class=150)  # 125 a class left: a many-shot head
    out = tmp_path / "sweep"
    monkeypatch.setenv("LOSSBENCH_CACHE", str(tmp_path / "cache"))
    cmd = ["sweep", str(RECIPE), "--out", str(out),
           "--set", f"data.root={root}", "--set", "epochs=1", "--set", "batch_size=32", "--set", "data.image_size=8",
           "--set", "data.imbalance_order=fixed", "--set", "report.contrasts=baseline",
           "--set", 'grid={seed: [0], "loss, drw_epoch, model.head, model.bias_prior": [[ce, null, linear, null], '
           '["ldam(s=30)", null, cosine, null], ["cb(base=sigmoid_focal, beta=0.9999, gamma=1.0)", null, linear, 0.1]]}']
    proc = run_cli(cmd)
    assert proc.code == 0, proc.out + proc.err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["status"] for r in rows] == ["done"] * 3
    summary = json.loads((out / rows[0]["cell"] / "summary.json").read_text())
    assert summary["class_counts"][0] == 125 and sum(summary["class_counts"]) < 1250  # 25 a class held out
    split = json.loads((out / rows[0]["cell"] / "split.json").read_text())
    assert len(split["holdout"]) == 250 and not set(split["holdout"]) & set(split["train"])
    assert sum(map(sum, summary["best_confusion_matrix"])) == 40
    final = summary["final"]
    recall = [final[f"val_recall_{k}"] for k in range(10)]
    counts = summary["class_counts"]
    many = [r for r, n in zip(recall, counts) if n > 100]
    few = [r for r, n in zip(recall, counts) if n < 20]
    assert final["val_many_shot_accuracy"] == pytest.approx(np.mean(many))
    assert final["val_few_shot_accuracy"] == pytest.approx(np.mean(few))
    assert float(rows[0]["final_many_shot_accuracy"]) == pytest.approx(np.mean(many))
    report = (out / "report.md").read_text()
    assert "Metrics (final epoch)" in report
    assert "many_shot_accuracy" in report and "few_shot_accuracy" in report
    # the plain-CE configuration gets its post-hoc logit-adjusted twin, tau chosen on the held-out split
    assert "| loss=ce, drw_epoch=None, model.head=linear, model.bias_prior=None + post-hoc LA | 1 |" in report
    posthoc = json.loads((out / rows[0]["cell"] / "posthoc_la.json").read_text())["result"]
    assert posthoc["chosen_on"] == "holdout" and posthoc["checkpoint"] == "last.pt"

    # a declared contrast may name the post-hoc row; then only the declared pairs are compared
    again = run_cli(cmd + ["--set", 'report.contrasts=[["ldam(s=30), None, cosine, None", "ce, None, linear, None + '
                                    'post-hoc LA"]]'])
    assert again.code == 0, again.out + again.err
    report = (out / "report.md").read_text()
    compared = [line for line in report.splitlines() if line.startswith("| loss=") and " vs " in line]
    assert len(compared) == 1 and "+ post-hoc LA" in compared[0] and compared[0].startswith("| loss=ldam"), compared


def test_contrasts_may_name_the_post_hoc_row_only_with_posthoc_la(tmp_path):
    from lossbench.experiments.study import plan_studies

    pair = '[["ldam(s=30), None, cosine, None", "ce, None, linear, None + post-hoc LA"]]'
    plan = plan_sweep(CPU_RECIPE, ["grid.seed={min: 3, max: 4}", f"report.contrasts={pair}"], sweep_dir=tmp_path)
    options = plan.report[plan.cells[0].document]
    assert options["contrasts"] == [["loss=ldam(s=30), drw_epoch=None, model.head=cosine, model.bias_prior=None",
                                     "loss=ce, drw_epoch=None, model.head=linear, model.bias_prior=None + post-hoc LA"]]
    assert plan_studies(plan)[plan.cells[0].document].pairs == ()  # scored after training: not a stopping rule
    with pytest.raises(UserError, match=r"names 'ce, None, linear, None \+ post-hoc LA', which is not one "):
        plan_sweep(CPU_RECIPE, ["report.posthoc_la=false", f"report.contrasts={pair}"], sweep_dir=tmp_path)
