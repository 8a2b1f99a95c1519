"""data.imbalance_order (issue 21 item 7): which classes are rare, and what else every seed draws for itself."""

import json

import pytest

from lossbench.config import validate_experiment
from lossbench.data import build_data, prepare_splits
from lossbench.data.imbalance import class_counts, frequency_ranks, long_tail_counts
from lossbench.data.loaders import build_loaders
from lossbench.errors import UserError
from test_data_holdout import lt_experiment
from test_recipe_fashion_mnist_lt import fake_fashion_mnist

PROFILE = long_tail_counts(100, 10, 100)  # 120 a class, 1/6 held out: the other 100 in CIFAR-10-LT's profile


@pytest.fixture(scope="module")
def fm_root(tmp_path_factory):
    return fake_fashion_mnist(tmp_path_factory.mktemp("fm"), train_per_class=120, test_per_class=2)


def test_fixed_keeps_class_0_the_most_frequent_and_records_it(fm_root):
    exp = lt_experiment(fm_root)
    assert exp.data.imbalance_order == "fixed"
    assert prepare_splits(exp).class_counts == PROFILE
    record = json.loads(build_data(exp).run_files["split.json"])
    assert record["imbalance_order"] == "fixed" and record["frequency_ranks"] == list(range(10))


def test_permuted_each_seed_draws_which_classes_get_which_frequency(fm_root):
    ranks = {}
    for seed in (0, 1, 2):
        exp = lt_experiment(fm_root, seed=seed, imbalance_order="permuted")
        p = prepare_splits(exp)
        ranks[seed] = p.frequency_ranks
        assert sorted(ranks[seed]) == list(range(10))
        assert p.class_counts == [PROFILE[r] for r in ranks[seed]]  # the profile, dealt out by rank
        assert class_counts(p.holdout.targets, 10) == [20] * 10  # the held-out split stays balanced
        record = json.loads(build_data(exp).run_files["split.json"])
        assert record["imbalance_order"] == "permuted" and record["frequency_ranks"] == ranks[seed]
    assert len({tuple(r) for r in ranks.values()}) == 3  # every seed its own rare classes
    assert ranks[0] != list(range(10))
    # the same seed gives the same ranks, so cells of a sweep sharing a seed are paired
    assert prepare_splits(lt_experiment(fm_root, seed=1, imbalance_order="permuted")).frequency_ranks == ranks[1]
    assert frequency_ranks(10, "permuted", 1) == ranks[1] and frequency_ranks(4, "fixed", 1) == [0, 1, 2, 3]


def test_a_class_subset_is_ranked_among_itself(fm_root):
    p = prepare_splits(lt_experiment(fm_root, seed=3, imbalance_order="permuted", classes=[2, 5, 7]))
    assert sorted(p.frequency_ranks) == [0, 1, 2]
    assert p.class_counts == [long_tail_counts(100, 3, 100)[r] for r in p.frequency_ranks]


def test_the_synthetic_source_deals_its_long_tail_by_the_seed_too():
    def counts(seed, order):
        exp = validate_experiment({"data": {"num_classes": 5, "image_size": 8, "train_per_class": 40,
                                            "val_per_class": 2, "imbalance_ratio": 8, "imbalance_order": order},
                                   "seed": seed}, "exp.yaml")
        p = prepare_splits(exp)
        return p.class_counts, p.frequency_ranks

    profile = long_tail_counts(40, 5, 8)
    assert counts(0, "fixed") == (profile, [0, 1, 2, 3, 4])
    drawn, ranks = counts(4, "permuted")
    assert drawn == [profile[r] for r in ranks] and ranks == frequency_ranks(5, "permuted", 4) != [0, 1, 2, 3, 4]


def test_permuted_is_refused_where_no_long_tail_can_be_permuted():
    exp = validate_experiment({"task": "segmentation", "data": {"imbalance_order": "permuted", "image_size": 8,
                                                                 "train_per_class": 2, "val_per_class": 2}},
                              "exp.yaml")
    with pytest.raises(UserError, match="data.imbalance_order: permuted is for classification") as err:
        prepare_splits(exp)
    assert "\n" not in str(err.value)


def test_every_seed_draws_its_own_long_tail_subsample_holdout_and_data_order(fm_root):
    def drawn(seed):
        exp = lt_experiment(fm_root, seed=seed)
        p = prepare_splits(exp)
        train, _ = build_loaders(build_data(exp), batch_size=16, num_workers=0, seed=seed)
        return p.train.names, p.holdout.names, list(train.batch_sampler)

    a, b, again = drawn(0), drawn(1), drawn(0)
    assert a == again  # a seed draws the same data every time
    for part in range(3):  # long-tail subsample, held-out split, order of the training batches
        assert a[part] != b[part], ("subsample", "holdout", "order")[part]
