"""data.holdout: a validation split held out of training when the test split is the one evaluated."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lossbench.config import validate_experiment
from lossbench.data import build_data, prepare_splits
from lossbench.data.imbalance import class_counts, long_tail_counts, long_tail_indices, stratified_split
from lossbench.errors import UserError
from test_recipe_fashion_mnist_lt import fake_fashion_mnist  # tiny IDX files in Fashion-MNIST's layout


def lt_experiment(root, seed=0, **data):
    """Long-tailed Fashion-MNIST as the recipes set it up: test evaluated, 1/6 of train held out."""
    cfg = {"source": "fashion_mnist", "root": str(root), "image_size": 28, "imbalance_ratio": 100,
           "eval_split": "test", "holdout": True, "val_fraction": 1 / 6, "normalize": "none", **data}
    return validate_experiment({"data": cfg, "model": {"name": "resnet20", "in_channels": 1}, "seed": seed},
                               "exp.yaml")


@pytest.fixture(scope="module")
def fm_root(tmp_path_factory):
    return fake_fashion_mnist(tmp_path_factory.mktemp("fm"), train_per_class=120, test_per_class=4)


def test_holdout_is_a_balanced_share_of_train_taken_before_the_long_tail(fm_root):
    p = prepare_splits(lt_experiment(fm_root))
    assert class_counts(p.holdout.targets, 10) == [20] * 10  # 120 / 6 of every class
    assert p.class_counts == long_tail_counts(100, 10, 100)  # the other 100 a class, then the long tail
    assert p.generated_holdout and not p.generated_val and p.test is None
    train, holdout, evaluated = set(p.train.names), set(p.holdout.names), set(p.val.names)
    assert evaluated == {f"t10k:{i}" for i in range(40)}  # every test image, evaluated per epoch as before
    assert not (train & holdout) and not (train & evaluated) and not (holdout & evaluated)
    assert all(name.startswith("train:") for name in train | holdout)


def test_fashion_mnist_sizes_give_exactly_the_cifar10_lt_profile():
    """6000 a class, 1/6 held out: a balanced 1000-a-class validation split and CIFAR-10-LT's 5000 ... 50."""
    labels = torch.arange(10).repeat_interleave(6000)
    rest, held = stratified_split(labels, len(labels), 1 / 6, seed=0)
    assert class_counts(labels[held], 10) == [1000] * 10
    kept = long_tail_indices(labels[rest], 10, 100, seed=0)
    assert class_counts(labels[rest][kept], 10) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_split_json_and_the_bundle_carry_the_holdout(fm_root):
    exp = lt_experiment(fm_root)
    bundle = build_data(exp)
    record = json.loads(bundle.run_files["split.json"])
    prepared = prepare_splits(exp)
    assert record["eval_split"] == "test" and record["generated_holdout"] is True
    assert record["val_fraction"] == pytest.approx(1 / 6) and record["seed"] == 0
    assert record["holdout"] == prepared.holdout.names and record["val"] == prepared.val.names
    assert record["train"] == prepared.train.names and "test" not in record
    assert len(bundle.holdout) == 200 and len(bundle.val) == 40
    image, label = bundle.holdout[0]
    assert image.shape == (1, 28, 28) and 0 <= label < 10


def test_the_holdout_is_drawn_by_the_seed(fm_root):
    a, b, c = (prepare_splits(lt_experiment(fm_root, seed=s)).holdout.names for s in (0, 0, 1))
    assert a == b and a != c


def test_without_holdout_nothing_changes(fm_root):
    p = prepare_splits(lt_experiment(fm_root, holdout=False))
    assert p.holdout is None and p.class_counts[0] == 120  # all of train goes into the long tail
    v = prepare_splits(lt_experiment(fm_root, holdout=False, eval_split="val"))
    assert v.holdout is None and v.generated_val and len(v.test) == 40
    assert class_counts(v.val.targets, 10) == [20] * 10 and v.class_counts[0] == 100
    assert "holdout" not in json.loads(build_data(lt_experiment(fm_root, holdout=False)).run_files["split.json"])


def test_holdout_needs_eval_split_test():
    with pytest.raises(UserError, match="exp.yaml: data: holdout: true needs eval_split: test") as err:
        validate_experiment({"data": {"holdout": True}}, "exp.yaml")
    assert "\n" not in str(err.value)


def test_a_source_with_its_own_val_split_holds_that_out(tmp_path):
    root = tmp_path / "csv"
    (root / "imgs").mkdir(parents=True)
    for i in range(9):
        Image.fromarray(np.full((8, 8), 20 * i, dtype=np.uint8)).save(root / "imgs" / f"s{i}.png")
    for split, ids in (("train", range(5)), ("val", (5, 6)), ("test", (7, 8))):
        (root / f"{split}_x.csv").write_text("\n".join(f"s{i}.png" for i in ids) + "\n")
        (root / f"{split}_y.csv").write_text("\n".join(str(i % 2) for i in ids) + "\n")
    csv = {f"{s}{suffix}": f"{s}_{xy}.csv" for s in ("train", "val", "test") for suffix, xy in (("", "x"),
                                                                                             ("_labels", "y"))}
    exp = validate_experiment({"data": {"source": "csv", "root": str(root), "image_size": 8, "eval_split": "test",
                                        "holdout": True, "csv": {**csv, "images": "imgs"}}}, "exp.yaml")
    p = prepare_splits(exp)
    assert p.holdout.names == ["s5.png", "s6.png"] and not p.generated_holdout
    assert len(p.train) == 5 and p.val.names == ["s7.png", "s8.png"]
