"""The tune: section without training: its checks, loss parameters inside a spec, trials that never see
the test split, one study per configuration, and interrupted trials queued again (Optuna for real)."""

import sys

import pytest

from lossbench.cli import main
from lossbench.errors import UserError
from lossbench.experiments.plan import plan_sweep
from lossbench.experiments.tune import StudyRun
from lossbench.experiments.tune_plan import loss_key_applies, plan_tuning, set_loss_param, trial_cell
from lossbench.experiments.tuning_report import side_by_side, studies_table
from lossbench.losses.spec import format_spec, parse_spec

HEAD = """\
name: tiny
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 4, eval_split: test}
model: {name: resnet20}
epochs: 2
grid:
  loss: [ce, focal(gamma=2)]
  seed: [0, 1]
report: {baseline: {loss: ce}, epoch: final}
"""
TUNE = """\
tune:
  trials: 4
  space:
    optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    loss.gamma: {type: float, low: 0.5, high: 3.0}
"""


@pytest.mark.parametrize("spec, key, value, expected", [
    ("focal(gamma=2)", "loss.gamma", 1.5, "focal(gamma=1.5)"),
    ("focal(gamma=2) + 0.5 * dice", "loss.gamma", 1.0, "focal(gamma=1.0) + 0.5 * dice"),
    ("cb(base=focal, beta=0.9999)", "loss.gamma", 0.5, "cb(base='focal', beta=0.9999, gamma=0.5)"),
    ("ldam(s=1, drw_epoch=7)", "loss.max_margin", 0.3, "ldam(s=1, drw_epoch=7, max_margin=0.3)"),
    ("focal_dice(gamma=1) - 0.25 * focal", "loss.focal.gamma", 3.0, "focal_dice(gamma=1) - 0.25 * focal(gamma=3.0)"),
    ({"name": "focal", "gamma": 2}, "loss.gamma", 2.5, "focal(gamma=2.5)"),
])
def test_loss_parameter_keys_rewrite_the_spec(spec, key, value, expected):
    assert set_loss_param(spec, key, value) == expected


@pytest.mark.parametrize("spec", ["ce", "focal(gamma=2) + 0.5 * dice(smooth=1)", "-1.5 * ce + dice",
                                  "cb(base=focal, beta=0.9999)", "ce(weight=effective(beta=0.99))",
                                  "ce(weight=[1, 2.5, 3])", "focal(alpha=None, sigmoid=true)"])
def test_formatted_specs_parse_back_to_the_same_terms(spec):
    assert parse_spec(format_spec(parse_spec(spec))) == parse_spec(spec)


def test_loss_keys_apply_only_where_the_loss_takes_the_parameter():
    assert loss_key_applies("focal(gamma=2) + dice", "loss.gamma")
    assert not loss_key_applies("ce", "loss.gamma")
    assert not loss_key_applies("focal", "loss.ldam.max_margin")
    assert loss_key_applies("ldam", "loss.ldam.max_margin")


def test_each_configuration_gets_a_study_whose_trials_read_the_validation_split(tiny_config):
    plan = plan_sweep(tiny_config(HEAD + TUNE))
    studies = plan_tuning(plan)
    assert [s.label for s in studies] == ["loss=ce", "loss=focal(gamma=2)"]
    ce, focal = studies
    assert list(ce.space) == ["optimizer.lr"] and list(focal.space) == ["optimizer.lr", "loss.gamma"]
    assert [len(s.cells) for s in studies] == [2, 2]  # the seed axis is not a configuration
    tuning = focal.tuning
    assert (tuning.metric, tuning.direction, tuning.epoch, tuning.seed) == ("val_balanced_accuracy", "maximize",
                                                                           "final", 2)  # report.epoch; fresh seed
    assert tuning.startup == 2 and tuning.config.pruner == "median" and tuning.config.untuned
    cell = trial_cell(focal, "t0", {"optimizer.lr": 0.01, "loss.gamma": 1.25}, plan.sweep_dir)
    exp = cell.experiment
    assert exp.data.eval_split == "val" and exp.seed == 2  # the document evaluates test; its trials never do
    assert exp.loss == "focal(gamma=1.25)" and exp.optimizer.lr == 0.01
    assert exp.run_dir == plan.sweep_dir / "tune" / "t0"
    assert all(c.experiment.data.eval_split == "test" for c in plan.cells)
    # a different space is a different study (a changed config starts afresh); a larger budget is the same one
    wider = plan_tuning(plan_sweep(tiny_config(HEAD + TUNE.replace("high: 3.0", "high: 4.0"))))
    longer = plan_tuning(plan_sweep(tiny_config(HEAD + TUNE.replace("trials: 4", "trials: 9"))))
    assert wider[0].name == ce.name and wider[1].name != focal.name
    assert [s.name for s in longer] == [ce.name, focal.name]


@pytest.mark.parametrize("tune, message", [
    ("  metric: test_balanced_accuracy\n", "tune.metric: 'test_balanced_accuracy' is measured on the test split"),
    ("  metric: train_loss\n", "tune.metric: 'train_loss' is a training metric"),
    ("  metric: accuracyy\n", "tune.metric: unknown metric 'accuracyy'"),
    ("  trails: 3\n", "tune.trails: unknown key"),
    ("  space: {seed: [0, 1]}\n", "tune.space.seed: cannot be tuned"),
    ("  space: {data.eval_split: [val, test]}\n", "tune.space.data.eval_split: cannot be tuned (it decides the "
                                                  "split trials are judged on"),
    ("  space: {loss: [ce, dice]}\n", "tune.space.loss: is a grid key"),
    ("  space: {loss.max_margin: {type: float, low: 0.1, high: 0.5}}\n",
     "tune.space.loss.max_margin: no loss of tiny takes this parameter"),
    ("  space: {optimizer.lr: {type: float, low: -1.0, high: 0.1}}\n", "tune.space.optimizer.lr: -1.0 does not fit"),
    ("  space: {loss.gamma: {type: float, low: -1.0, high: 2.0}}\n", "gamma must be >= 0"),
    ("  space: {optimizer.lr: {type: float, low: 0.1}}\n", "tune.space.optimizer.lr: float takes low and high"),
    ("  space: {batch_size: {type: int, low: 8, high: 4}}\n", "low 8.0 is above high 4.0"),
])
def test_a_bad_tune_section_is_refused_in_one_line_naming_file_and_key(tiny_config, tune, message):
    text = HEAD + "tune:\n" + tune + ("" if "space" in tune else "  space: {optimizer.lr: [0.1, 0.01]}\n")
    path = tiny_config(text)
    with pytest.raises(UserError) as err:
        plan_tuning(plan_sweep(path))
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(path)) and message in line, line


def test_missing_extras_name_what_to_install(tiny_config, monkeypatch, capsys):
    path = tiny_config(HEAD + TUNE)
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if Optuna were not installed
    assert main(["sweep", str(path)]) == 2
    assert capsys.readouterr().err.strip() == ("lossbench: error: a tune: section needs Optuna: "
                                               "pip install 'lossbench[tune]'")
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["sweep", str(tiny_config(HEAD)), "--backend", "ray"]) == 2
    assert "pip install 'lossbench[ray]'" in capsys.readouterr().err
    assert main(["sweep", str(tiny_config(HEAD)), "--address", "auto"]) == 2
    assert "use it with --backend ray" in capsys.readouterr().err


def test_trials_left_running_by_a_killed_sweep_are_queued_again(tiny_config, tmp_path):
    """A sweep killed mid-trial leaves it RUNNING in tune.db: the next sweep marks it failed (interrupted, not
    counted) and asks the same values again, for the same run folder; re-opening twice queues it once."""
    import optuna

    plan = plan_sweep(tiny_config(HEAD + TUNE))
    focal = plan_tuning(plan)[1]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'tune.db'}")
    first = StudyRun(focal, storage)
    trial, cell = first.ask(plan.sweep_dir)
    first.study.tell(trial, 0.5)
    stale, stale_cell = first.ask(plan.sweep_dir)  # ... and the sweep is killed here
    StudyRun(focal, storage)
    again = StudyRun(focal, storage)
    trials = again.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert trials[1].user_attrs["interrupted"] and again.counted() == 1
    retry, retry_cell = again.ask(plan.sweep_dir)
    assert retry.params == stale.params and retry_cell.name == stale_cell.name != cell.name
    assert retry.user_attrs["retry_of"] == stale.number
    again.study.tell(retry, 0.6)
    fresh, _ = again.ask(plan.sweep_dir)
    again.study.tell(fresh, 0.7)
    killed_early = again.study.ask()  # killed before its values were drawn: nothing to queue, nothing ran
    after = StudyRun(focal, storage)
    trials = after.study.get_trials()
    assert trials[killed_early.number].user_attrs["interrupted"] and after.counted() == 3
    assert not any(t.state.name == "WAITING" for t in trials)
    # an uninterrupted study asks the same values: the seeds follow the trials asked, not the retries
    clean = StudyRun(focal, optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'clean.db'}"))
    asked = []
    for value in (0.5, 0.6, 0.7):
        asked.append(clean.ask(plan.sweep_dir)[0])
        clean.study.tell(asked[-1], value)
    assert [t.params for t in asked] == [t.params for t in (trial, stale, fresh)]


def test_untuned_and_tuned_comparisons_are_joined_on_the_configuration():
    untuned = (["configuration", "Δ", "p"], [["loss=ce", "baseline", ""], ["loss=focal", "+0.01", "0.3"]])
    tuned = (["configuration", "Δ", "p"], [["loss=focal", "+0.05", "0.01"], ["loss=ce", "baseline", ""]])
    header, body = side_by_side(untuned, tuned)
    assert header == ["configuration", "untuned: Δ", "untuned: p", "tuned: Δ", "tuned: p"]
    assert body == [["loss=ce", "baseline", "", "baseline", ""], ["loss=focal", "+0.01", "0.3", "+0.05", "0.01"]]
    info = {"metric": "val_accuracy", "studies": [
        {"label": "loss=ce", "space": {"optimizer.lr": {}}, "best": {"number": 2, "value": 0.5,
                                                                      "params": {"optimizer.lr": 0.0123456}},
         "trials": [{"state": s, "interrupted": i} for s, i in
                    [("COMPLETE", False), ("FAIL", True), ("PRUNED", False), ("COMPLETE", False)]]}]}
    assert studies_table(info)[1] == [["loss=ce", "2 / 1 / 0", "2", "0.5000", "optimizer.lr=0.01235"]]


def test_tuned_long_tail_recipe_gives_each_loss_the_same_study_on_the_validation_split():
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "fashion_mnist_lt_tuned.yaml"
    plan = plan_sweep(recipe, sweep_dir="/nonexistent")
    studies = plan_tuning(plan)
    assert [s.label for s in studies] == ["loss=ce", "loss=focal(gamma=1)", "loss=logit_adjusted(tau=1)"]
    shared = ["optimizer.lr", "optimizer.weight_decay"]
    assert [list(s.space) for s in studies] == [shared, shared + ["loss.gamma"], shared + ["loss.tau"]]
    for study in studies:
        assert study.tuning.config.trials == 6 and study.tuning.epoch == "final"  # the report's epoch
        assert study.tuning.config.untuned  # tuned beside untuned, on the same seeds
        assert study.base["seed"] == 3  # fresh: the grid has 0-2
    assert len(plan.cells) == 9 and all(c.experiment.data.eval_split == "test" for c in plan.cells)


def test_tuned_long_tail_recipe_shares_the_cpu_tables_data_protocol():
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    tuned = plan_sweep(recipes / "fashion_mnist_lt_tuned.yaml", sweep_dir="/nonexistent").cells[0].experiment
    table = plan_sweep(recipes / "fashion_mnist_lt_cpu.yaml", sweep_dir="/nonexistent").cells[0].experiment
    assert tuned.data == table.data and tuned.data.holdout and tuned.data.eval_split == "test"
    assert (tuned.model, tuned.batch_size) == (table.model.model_copy(update={"head": "linear"}), table.batch_size)
    assert tuned.optimizer.decay_norm_and_bias and tuned.optimizer.weight_decay == table.optimizer.weight_decay
    assert tuned.epochs == 3  # the schedule is the short one; every figure quoted from it says so


def test_a_study_without_a_completed_trial_records_its_tuned_cells_as_failed(tiny_config, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from lossbench.experiments.cells import cell_status
    from lossbench.experiments.tune import add_tuned_cells

    plan = plan_sweep(tiny_config(HEAD + TUNE.replace("trials: 4", "trials: 2")))
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'tune.db'}")
    runs = [StudyRun(study, storage) for study in plan_tuning(plan)]
    ce, focal = runs
    for _ in range(2):
        trial, _cell = ce.ask(plan.sweep_dir)
        ce.study.tell(trial, 0.4 + 0.1 * trial.number)
        trial, _cell = focal.ask(plan.sweep_dir)
        trial.set_user_attr("error", "loss became nan")
        focal.study.tell(trial, state=TrialState.FAIL)
    held = add_tuned_cells(plan, runs)
    names = [c.name for c in plan.cells]
    assert len(names) == 8 and [c.document for c in plan.cells] == ["tiny"] * 4 + ["tiny-tuned"] * 4
    tuned = plan.cells[4:]
    assert [c.values for c in tuned] == [c.values for c in plan.cells[:4]]  # the grid's order
    assert held == {c.name for c in tuned if c.values["loss"] != "ce"}
    best = ce.study.best_trial.params["optimizer.lr"]
    assert all(c.experiment.optimizer.lr == best for c in tuned if c.values["loss"] == "ce")
    assert all(c.experiment.data.eval_split == "test" and c.experiment.seed == c.values["seed"] for c in tuned)
    status, error = cell_status(next(c for c in tuned if c.name in held))
    assert status == "failed" and "none of 2 trials" in error and "loss became nan" in error
    assert plan.report["tiny-tuned"] == plan.report["tiny"]
