"""Tuning faults (issue 27, items 4 and 5): values a trial cannot run are refused when the sweep is planned, not
trial by trial; a damaged Optuna study file is one line saying what to do, and is never overwritten."""

from __future__ import annotations

import hashlib

import pytest

from .helpers import TALLY, assert_refused_in_one_line, run_cli

HEAD = """\
name: tiny
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 4, val_per_class: 2}}
model: {{name: resnet20}}
epochs: 1
grid:
  loss: [ce]
  seed: [0]
tune:
  trials: 2
  space:
"""

SPACES = {
    "unknown-model": ("    model.name: [resnet20, resnet19]\n",
                      ["tune.space.model.name: 'resnet19' does not fit", "unknown model 'resnet19'"]),
    "segmenter-for-a-classifier": ("    model.name: [resnet20, unet]\n",
                                   ["tune.space.model.name: 'unet' does not fit", "is a segmentation model"]),
    "stem-the-model-lacks": ("    model.stem: [null, cifar]\n", ["tune.space.model.stem: 'cifar' does not fit"]),
    "unknown-source": ("    data.source: [synthetic, foldr]\n",
                       ["tune.space.data.source: 'foldr' does not fit", "unknown source 'foldr'"]),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_tuning_values_that_cannot_run_are_refused_at_plan_time(name, tmp_path):
    space, fragments = SPACES[name]
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(HEAD.format(out=tmp_path / "runs") + space)
    res = run_cli(["sweep", str(cfg)], cwd=tmp_path)
    assert_refused_in_one_line(res, [str(cfg), *fragments])
    assert not (tmp_path / "runs").exists(), "a trial ran"
    TALLY["tuning values refused at plan time"] += 1


def real_study_file(tmp_path, db):
    """A tune.db as a sweep leaves it: the plan's study with one finished trial."""
    from lossbench.experiments.plan import plan_sweep
    from lossbench.experiments.tune import open_studies
    from lossbench.experiments.tune_plan import plan_tuning

    cfg = tmp_path / "real.yaml"
    cfg.write_text(HEAD.format(out=tmp_path / "runs") + "    optimizer.lr: [0.1, 0.01]\n")
    run = open_studies(db, plan_tuning(plan_sweep(cfg)))[0]
    trial, _ = run.ask(tmp_path / "runs")
    run.study.tell(trial, 0.5)
    return db


DAMAGE = {
    "garbage": lambda tmp, db: db.write_bytes(b"\x00garbage, not a database\n" * 40),
    "truncated": lambda tmp, db: db.write_bytes(real_study_file(tmp, db).read_bytes()[:6000]),
    "header-only": lambda tmp, db: db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 84),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_study_file_is_refused_and_kept(name, tmp_path):
    sweep = tmp_path / "runs" / "tune"  # the sweep folder is named by the config file
    sweep.mkdir(parents=True)
    db = sweep / "tune.db"
    DAMAGE[name](tmp_path, db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(HEAD.format(out=tmp_path / "runs") + "    optimizer.lr: [0.1, 0.01]\n")
    res = run_cli(["sweep", str(cfg)], cwd=tmp_path)
    assert_refused_in_one_line(res, [str(db), "the tuning studies' file is damaged", "move it away",
                                     "or restore it"])
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (sweep / "tune").exists() or not any((sweep / "tune").iterdir()), "a trial ran"
    TALLY["damaged study files refused, kept"] += 1
