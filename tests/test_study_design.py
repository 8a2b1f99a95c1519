"""experiments/study_design.py: report.margin, report.contrasts and a grid's seed: {min, max}."""

import pytest
from pydantic import ValidationError

from lossbench.errors import UserError
from lossbench.experiments.study_design import SeedRange, StudyOptions, parse_seed_entry, resolve_contrasts

CONFIGS = {"loss=ce": {"loss": "ce"}, "loss=focal": {"loss": "focal"}, "loss=ldam": {"loss": "ldam"}}


def test_margin_has_no_default_and_must_be_positive():
    assert StudyOptions().margin is None and StudyOptions().contrasts == "baseline"
    assert StudyOptions(margin=1.0).margin == 1.0
    for bad in (0, -1.0, "wide"):
        with pytest.raises(ValidationError):
            StudyOptions(margin=bad)


def test_contrasts_default_to_everything_against_the_baseline():
    assert resolve_contrasts("baseline", "loss=ce", CONFIGS, "s.yaml") == [("loss=focal", "loss=ce"),
                                                                           ("loss=ldam", "loss=ce")]


def test_contrasts_by_label_value_or_mapping():
    options = StudyOptions(contrasts=[["focal", "loss=ce"], [{"loss": "ldam"}, "focal"]])
    assert resolve_contrasts(options.contrasts, "loss=ce", CONFIGS, "s.yaml") == [
        ("loss=focal", "loss=ce"), ("loss=ldam", "loss=focal")]


@pytest.mark.parametrize(("pairs", "message"), [
    ([["focal", "dice"]], "pair 1 names 'dice', which is not one configuration of the grid; the configurations "
                          "are: loss=ce; loss=focal; loss=ldam"),
    ([["focal", "focal"]], "compares loss=focal with itself"),
    ([["focal", "ce"], ["ce", "focal"]], "pair 2 (loss=ce vs loss=focal) is declared twice"),
])
def test_bad_contrasts_are_refused_in_one_line(pairs, message):
    with pytest.raises(UserError) as err:
        resolve_contrasts(StudyOptions(contrasts=pairs).contrasts, "loss=ce", CONFIGS, "s.yaml")
    assert str(err.value).startswith("s.yaml: report.contrasts: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_numbers_name_configurations_by_their_text():
    configs = {"optimizer.lr=0.05": {"optimizer.lr": 0.05}, "optimizer.lr=1e-07": {"optimizer.lr": 1e-07}}
    options = StudyOptions(contrasts=[[1e-07, 0.05]])
    assert resolve_contrasts(options.contrasts, "", configs, "s") == [("optimizer.lr=1e-07", "optimizer.lr=0.05")]


def test_a_value_shared_by_two_configurations_names_neither():
    configs = {"loss=ce, lr=0.1": {"loss": "ce", "lr": 0.1}, "loss=ce, lr=0.2": {"loss": "ce", "lr": 0.2}}
    with pytest.raises(UserError, match="not one configuration"):
        resolve_contrasts([({"loss": "ce"}, "ce, 0.2")], "loss=ce, lr=0.1", configs, "s.yaml")
    assert resolve_contrasts([("ce, 0.2", {"lr": 0.1})], "", configs, "s") == [("loss=ce, lr=0.2", "loss=ce, lr=0.1")]


def test_seed_entry_list_or_range():
    assert parse_seed_entry([0, 1, 2], "s.yaml") == [0, 1, 2]
    seeds = parse_seed_entry({"min": 3, "max": 5}, "s.yaml")
    assert isinstance(seeds, SeedRange) and (seeds.min, seeds.max, seeds.seeds) == (3, 5, [0, 1, 2, 3, 4])
    assert parse_seed_entry({}, "s.yaml") == SeedRange(min=3, max=10)


@pytest.mark.parametrize(("value", "message"), [
    ({"min": 2, "max": 5}, "seed.min: Input should be greater than or equal to 3"),
    ({"min": 6, "max": 5}, "max (5) is below min (6)"),
    ({"min": 3, "max": 5, "step": 1}, "seed.step: unknown key"),
    (7, "grid.seed: 7; give a list of seeds"),
])
def test_bad_seed_entries_are_refused_in_one_line(value, message):
    with pytest.raises(UserError) as err:
        parse_seed_entry(value, "s.yaml")
    assert str(err.value).startswith("s.yaml: ") and message in str(err.value), str(err.value)
