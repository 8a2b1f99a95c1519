"""The fashion_mnist_scenes source on tiny IDX files written in Fashion-MNIST's exact layout."""

import re

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from lossbench.config import Experiment, load_experiment
from lossbench.data import prepare_splits
from lossbench.data.formats.fashion_mnist_scenes import CLASS_NAMES, scale_range
from lossbench.data.imbalance import long_tail_counts
from lossbench.data.stats import data_stats
from lossbench.errors import UserError
from test_recipe_fashion_mnist_lt import write_idx

THRESHOLD = 25


def fake_items(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28 x 28 pictures: one rectangle whose gray value says the class, a faint (sub-threshold) top row."""
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for i, k in enumerate(labels):
        h, w = rng.integers(8, 27, 2)
        y, x = rng.integers(0, 29 - h), rng.integers(0, 29 - w)
        images[i, y:y + h, x:x + w] = 60 + 19 * k
        images[i, y, x:x + w] = 10
    return images, labels


def fake_scenes_root(root, train_per_class=30, test_per_class=8):
    """train and t10k IDX .gz files of fake_items, balanced."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        images, labels = fake_items(per_class, rng)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_scenes_root(tmp_path_factory.mktemp("fm"))


def scenes_exp(root, cache_dir, seed=0, scenes=None, **data):
    options = {"train_canvases": 60, "val_canvases": 20, "test_canvases": 20, **(scenes or {})}
    cfg = {"source": "fashion_mnist_scenes", "root": str(root), "image_size": 32, "imbalance_ratio": 10,
           "normalize": "none", "cache_dir": str(cache_dir), "scenes": options, **data}
    return Experiment(task="segmentation", data=cfg, model={"name": "unet", "in_channels": 1}, seed=seed)


def read_items(root, prefix):
    import gzip

    raw = gzip.open(root / f"{prefix}-images-idx3-ubyte.gz").read()
    labels = np.frombuffer(gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28), labels


def test_same_seed_same_canvases_eval_canvases_shared_by_every_seed(root, tmp_path):
    a, b = (prepare_splits(scenes_exp(root, tmp_path)) for _ in range(2))
    other = prepare_splits(scenes_exp(root, tmp_path, seed=1))
    assert a.class_names == CLASS_NAMES and a.class_names[0] == "background"
    for split in ("train", "val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert np.array_equal(x.images, y.images) and np.array_equal(x.masks, y.masks) and x.names == y.names
    assert not np.array_equal(a.train.masks, other.train.masks)
    assert np.array_equal(a.test.masks, other.test.masks) and np.array_equal(a.val.images, other.val.images)
    image, mask = a.train[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.uint8 and mask.shape == (32, 32)


def test_masks_and_canvases_are_the_items_painted_back_to_front(root, tmp_path):
    p = prepare_splits(scenes_exp(root, tmp_path))
    for split, prefix in (("train", "train"), ("test", "t10k")):
        items, labels = read_items(root, prefix)
        s = getattr(p, split)
        for i, placed in enumerate(s.objects):
            image, mask = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
            for label, index, x, y, side in placed:
                assert labels[index] == label - 1
                patch = F.resize(torch.from_numpy(items[index].copy())[None], [side, side], antialias=True)[0].numpy()
                inside = patch > THRESHOLD
                image[y:y + side, x:x + side][inside] = patch[inside]
                mask[y:y + side, x:x + side][inside] = label
            assert np.array_equal(np.asarray(s.images[i, 0]), image) and np.array_equal(np.asarray(s.masks[i]), mask)
            assert (image[mask == 0] == 0).all() and (image[mask > 0] > THRESHOLD).all()
    assert any(len(placed) > 1 for placed in p.train.objects)


def _item_refs(names):
    refs = [ref for name in names for ref in name.split("=", 1)[1].split("+")]
    return {ref.split(":")[0] for ref in refs}, {int(ref.split(":")[1]) for ref in refs}


def test_train_items_from_train_files_val_and_test_from_disjoint_halves_of_t10k(root, tmp_path):
    p = prepare_splits(scenes_exp(root, tmp_path, scenes={"val_canvases": 40, "test_canvases": 40}))
    files, train_idx = _item_refs(p.train.names)
    assert files == {"train"}
    (val_file,), val_idx = _item_refs(p.val.names)
    (test_file,), test_idx = _item_refs(p.test.names)
    assert val_file == test_file == "t10k"
    assert not val_idx & test_idx
    assert val_idx | test_idx == set(range(80))  # 80 t10k items, each used by one of the two splits
    for s in (p.train, p.val, p.test):
        assert [[obj[1] for obj in placed] for placed in s.objects] == \
               [[int(r.split(":")[1]) for r in n.split("=")[1].split("+")] for n in s.names]


def test_training_occurrence_follows_the_long_tail_profile_eval_is_balanced(root, tmp_path):
    p = prepare_splits(scenes_exp(root, tmp_path, scenes={"train_canvases": 200}, imbalance_ratio=20))
    counts = p.train.object_counts(11)
    assert counts[0] == 0 and counts[1:] == long_tail_counts(counts[1], 10, 20)
    assert counts[1] >= 20 * counts[10] > 0 and sum(counts) == pytest.approx(200 * 3, abs=10)
    per_canvas = [len(placed) for placed in p.train.objects]
    assert sum(2 <= n <= 4 for n in per_canvas) >= len(per_canvas) - 10
    for s in (p.val, p.test):
        assert len(set(s.object_counts(11)[1:])) == 1 and s.object_counts(11)[1] == 20 * 3 // 10


def test_item_sizes_follow_the_class_from_frequent_to_rare(root, tmp_path):
    e = scenes_exp(root, tmp_path, scenes={"scale_frequent": [0.5, 0.5], "scale_rare": [0.25, 0.25]})
    p = prepare_splits(e)
    sides = {}
    for placed in p.train.objects + p.test.objects:
        for label, _, x, y, side in placed:
            sides.setdefault(label, set()).add(side)
            assert 0 <= x <= 32 - side and 0 <= y <= 32 - side
    assert sides[1] == {16} and sides[10] == {8}
    lo, hi = scale_range(e.data.scenes, 4, 10)
    assert lo == hi == pytest.approx(0.5 - 3 / 9 * 0.25) and sides[4] == {round(lo * 32)}


def test_data_stats_reports_the_pixels_and_objects_of_each_class(root, tmp_path):
    e = scenes_exp(root, tmp_path)
    p = prepare_splits(e)
    lines = data_stats(e.model_copy(update={"name": "scenes"}), tmp_path / "chart.png")
    start = lines.index(next(line for line in lines if line.startswith("  train:")))
    pixels = np.bincount(np.asarray(p.train.masks).reshape(-1), minlength=11)
    objects = p.train.object_counts(11)
    for k, line in enumerate(lines[start + 1: start + 12]):
        m = re.match(r"\s+(.+?)\s+(\d+) pixels\s+([\d.]+)%\s+(\d+) objects", line)
        assert m and m.group(1) == CLASS_NAMES[k], line
        assert int(m.group(2)) == pixels[k] and int(m.group(4)) == objects[k]
        assert float(m.group(3)) == pytest.approx(100 * pixels[k] / pixels.sum(), abs=0.051)
    assert (tmp_path / "chart.png").is_file()


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"image_size": 64}, {"imbalance_ratio": 5}, {"scenes": {"threshold": 100}},
    {"scenes": {"objects": [1, 2]}}, {"scenes": {"scale_frequent": [0.3, 0.3]}},
    {"scenes": {"scale_rare": [0.5, 0.6]}}, {"scenes": {"train_canvases": 61, "test_canvases": 21}},
    {"scenes": {"eval_seed": 3}},
])
def test_cache_key_holds_every_option_that_changes_a_pixel(root, tmp_path, change):
    cached = prepare_splits(scenes_exp(root, tmp_path, cache=True))
    assert isinstance(cached.train.images, np.memmap)
    assert np.array_equal(prepare_splits(scenes_exp(root, tmp_path)).train.masks, cached.train.masks)
    changed = prepare_splits(scenes_exp(root, tmp_path, cache=True, **change))
    fresh = prepare_splits(scenes_exp(root, tmp_path, **change))
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(changed, split).images, getattr(fresh, split).images)
        assert np.array_equal(getattr(changed, split).masks, getattr(fresh, split).masks)
    differs = [s for s in ("train", "val", "test") if getattr(changed, s).masks.shape != getattr(cached, s).masks.shape
               or not np.array_equal(getattr(changed, s).masks, getattr(cached, s).masks)]
    assert differs


@pytest.mark.parametrize("override, fragment", [
    ("data.scenes.objects=[0, 3]", "data.scenes.objects: needs 1 <= min <= max"),
    ("data.scenes.objects=[4, 2]", "data.scenes.objects: needs 1 <= min <= max"),
    ("data.scenes.scale_rare=[0.5, 0.2]", "data.scenes.scale_rare: needs 0 < min <= max <= 1"),
    ("data.scenes.scale_frequent=[0, 0.5]", "data.scenes.scale_frequent: needs 0 < min <= max <= 1"),
    ("data.scenes.threshold=255", "data.scenes.threshold: Input should be less than or equal to 254"),
    ("data.scenes.train_canvases=0", "data.scenes.train_canvases: Input should be greater than 0"),
    ("data.scenes.canvases=10", "data.scenes.canvases: unknown key"),
    ("data.num_classes=3", "data.num_classes: fashion_mnist_scenes has 11 classes"),
    ("task=classification", "gives segmentation data, but task is 'classification'"),
])
def test_bad_options_refused_in_one_line_naming_the_key(root, tmp_path, tiny_config, override, fragment):
    path = tiny_config(f"task: segmentation\ndata: {{source: fashion_mnist_scenes, root: {root}}}\n")
    with pytest.raises(UserError) as err:
        prepare_splits(load_experiment(path, [override]))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_missing_t10k_files_named(tmp_path):
    root = fake_scenes_root(tmp_path / "fm")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="no t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz"):
        prepare_splits(scenes_exp(root, tmp_path))
