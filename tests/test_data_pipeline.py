"""Transforms, imbalance tools, the decode-once cache, loaders and the ``data`` commands."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lossbench.cli import main
from lossbench.config import AugmentConfig, Experiment
from lossbench.data import build_data, decode, files, prepare_splits
from lossbench.data.imbalance import class_subset_map, long_tail_counts, long_tail_indices, stratified_split
from lossbench.data.loaders import DistributedWeightedSampler, build_loaders
from lossbench.data.stats import data_stats
from lossbench.data.transforms import SampleTransform, adapt_channels


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array), mode).save(path)


def blocky_image(seed, size=16, block=4):
    """An image whose first channel is bright exactly where the mask is 1, in square blocks."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(size // block, size // block, generator=g) > 0.5
    mask = blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = torch.stack([mask * 255, torch.full_like(mask, 7, dtype=torch.long), 255 - mask * 255]).to(torch.uint8)
    return image, mask.to(torch.uint8)


@pytest.mark.parametrize("augment", [
    {"hflip": 1.0}, {"vflip": 1.0}, {"crop_padding": 4, "hflip": 0.5}, {"rotation": 90.0, "vflip": 0.5},
])
def test_geometric_transforms_keep_image_and_mask_aligned(augment):
    torch.manual_seed(0)
    tf = SampleTransform(16, 3, None, None, AugmentConfig(**augment))
    changed = False
    for seed in range(8):
        image, mask = blocky_image(seed)
        out, target = tf(image, mask)
        assert target.dtype == torch.int64 and target.shape == (16, 16)
        inside = target != 255
        assert torch.equal((out[0] > 0.5)[inside], (target == 1)[inside])
        assert ((out[0] == 0) & (out[2] == 0))[~inside].all()
        changed |= not torch.equal(target, mask.long())
    assert changed


def test_random_resized_crop_keeps_alignment_up_to_interpolation():
    torch.manual_seed(1)
    tf = SampleTransform(32, 3, None, None, AugmentConfig(random_resized_crop=(0.3, 0.6), hflip=0.5))
    for seed in range(8):
        image, mask = blocky_image(seed, size=32, block=8)
        out, target = tf(image, mask)
        assert set(target.unique().tolist()) <= {0, 1}
        agree = ((out[0] > 0.5) == (target == 1)).float().mean()
        assert agree > 0.9


def test_multilabel_mask_stays_float_and_aligned():
    tf = SampleTransform(16, 3, None, None, AugmentConfig(hflip=1.0, crop_padding=2))
    image, mask = blocky_image(3)
    out, target = tf(image, mask.unsqueeze(0))
    assert target.dtype == torch.float32 and target.shape == (1, 16, 16)
    assert torch.equal(out[0] > 0.5, target[0] > 0.5)


def test_normalization_and_channels():
    image = torch.full((1, 4, 4), 255, dtype=torch.uint8)
    out, label = SampleTransform(4, 3, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])(image, 3)
    assert out.shape == (3, 4, 4) and torch.allclose(out, torch.full_like(out, 2.0)) and label == 3
    rgba = torch.randint(0, 255, (4, 4, 4), dtype=torch.uint8)
    assert torch.equal(adapt_channels(rgba, 3), rgba[:3])
    assert adapt_channels(rgba, 1).shape == (1, 4, 4)


def test_decode_rgba_drops_alpha_and_gray_becomes_rgb(tmp_path):
    arr = np.zeros((6, 6, 4), np.uint8)
    arr[..., 0], arr[..., 3] = 200, 0
    save(tmp_path / "a.png", arr, "RGBA")
    image, size = decode.read_image(tmp_path / "a.png", 3, 6)
    assert size == (6, 6) and image.shape == (3, 6, 6) and (image[0] == 200).all() and (image[1] == 0).all()
    save(tmp_path / "g.png", np.full((5, 7), 90, np.uint8))
    image, size = decode.read_image(tmp_path / "g.png", 3, 4)
    assert size == (7, 5) and image.shape == (3, 4, 4) and (image == 90).all()
    save(tmp_path / "g16.png", np.full((5, 5), 65535, np.uint16))
    assert (decode.read_image(tmp_path / "g16.png", 1, 5)[0] == 255).all()


def test_long_tail_profile_counts_and_determinism():
    labels = torch.arange(5).repeat_interleave(100)
    keep = long_tail_indices(labels, 5, 10.0, seed=0)
    counts = torch.bincount(labels[keep], minlength=5).tolist()
    assert counts == long_tail_counts(100, 5, 10.0) == [100, 56, 31, 17, 10]
    assert keep == long_tail_indices(labels, 5, 10.0, seed=0)
    assert keep != long_tail_indices(labels, 5, 10.0, seed=1)
    uneven = torch.cat([torch.zeros(50), torch.ones(80), torch.full((30,), 2)]).long()
    counts = torch.bincount(uneven[long_tail_indices(uneven, 3, 4.0, 0)]).tolist()
    assert counts == [50, 25, 12]


def test_stratified_split_per_class_and_by_seed():
    labels = [0] * 10 + [1] * 5 + [2] * 1
    train, val = stratified_split(labels, 16, 0.2, seed=3)
    assert sorted(train + val) == list(range(16))
    assert [sum(labels[i] == k for i in val) for k in range(3)] == [2, 1, 0]
    assert (train, val) == stratified_split(labels, 16, 0.2, seed=3)
    assert val != stratified_split(labels, 16, 0.2, seed=4)[1]


def test_class_subset_map_names_and_errors():
    assert class_subset_map(["c", 0], ["a", "b", "c"]) == {2: 0, 0: 1}
    with pytest.raises(ValueError, match="unknown class 'z'"):
        class_subset_map(["z"], ["a", "b"])
    with pytest.raises(ValueError, match="not in 0..1"):
        class_subset_map([5], ["a", "b"])


def folder_dataset(root, n=4):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for i in range(n):
            save(root / name / f"{i}.jpg", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))


def folder_exp(tmp_path, **data):
    return Experiment(data={"source": "folder", "root": str(tmp_path / "d"), "image_size": 12,
                            "cache_dir": str(tmp_path / "cache"), "normalize": "none", **data})


def test_cache_returns_same_tensors_as_uncached_and_is_reused(tmp_path, monkeypatch):
    folder_dataset(tmp_path / "d")
    plain = prepare_splits(folder_exp(tmp_path))
    cached = prepare_splits(folder_exp(tmp_path, cache=True))
    assert plain.train.names == cached.train.names
    for a, b in ((plain.train, cached.train), (plain.val, cached.val)):
        for i in range(len(a)):
            assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    assert list((tmp_path / "cache").glob("folder-train-12px-*/images.npy"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(files, "read_image", no_decoding)
    again = prepare_splits(folder_exp(tmp_path, cache=True))
    assert torch.equal(again.train[0][0], cached.train[0][0])
    assert isinstance(pickle.loads(pickle.dumps(again.train))[1][0], torch.Tensor)


def test_cache_key_changes_when_a_file_changes(tmp_path):
    folder_dataset(tmp_path / "d")
    prepare_splits(folder_exp(tmp_path, cache=True))
    save(tmp_path / "d" / "a" / "0.jpg", np.full((20, 24, 3), 250, np.uint8))
    second = prepare_splits(folder_exp(tmp_path, cache=True))
    assert len(list((tmp_path / "cache").glob("folder-train-12px-*"))) == 2
    split = second.train if "a/0.jpg" in second.train.names else second.val
    assert (split[split.names.index("a/0.jpg")][0] > 200).all()


def test_cached_segmentation_masks_equal_uncached(tmp_path):
    root = tmp_path / "d"
    for i in range(4):
        save(root / "images" / f"{i}.png", np.full((10, 10, 3), 20 * i, np.uint8))
        m = np.zeros((10, 10), np.uint8)
        m[i:i + 4, 2:6] = 1
        m[9, 9] = 2
        save(root / "masks" / f"{i}.png", m)
    e = dict(source="seg_folder", root=str(root), image_size=10, cache_dir=str(tmp_path / "c"))
    plain = build_data(Experiment(task="segmentation", data=e))
    cached = build_data(Experiment(task="segmentation", data={**e, "cache": True}))
    assert plain.class_counts == cached.class_counts and plain.class_names == ["background", "class1", "class2"]
    for i in range(len(plain.train)):
        assert torch.equal(plain.train[i][0], cached.train[i][0]) and torch.equal(plain.train[i][1], cached.train[i][1])


def test_auto_normalization_computed_once_and_cached(tmp_path, monkeypatch):
    folder_dataset(tmp_path / "d")
    b = build_data(folder_exp(tmp_path, normalize="auto"))
    stack = torch.stack([b.train[i][0] for i in range(len(b.train))])
    assert torch.allclose(stack.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(stack.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    import lossbench.data as data_module

    monkeypatch.setattr(data_module, "channel_mean_std", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = build_data(folder_exp(tmp_path, normalize="auto"))
    assert again.mean == b.mean and json.loads(again.run_files["normalization.json"])["std"] == b.std


def test_balanced_sampler_evens_out_classes(tmp_path):
    b = build_data(Experiment(data={"num_classes": 3, "train_per_class": 60, "imbalance_ratio": 10,
                                    "image_size": 8, "sampler": "balanced", "cache_dir": str(tmp_path)}))
    assert b.class_counts[0] >= 8 * b.class_counts[2]
    train, _ = build_loaders(b, batch_size=512, num_workers=0, seed=0)
    labels = torch.cat([y for _ in range(20) for _, y in train])
    share = torch.bincount(labels, minlength=3).float() / len(labels)
    assert (share - 1 / 3).abs().max() < 0.06
    shards = [list(DistributedWeightedSampler(b.sample_weights, 2, r, seed=0)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == -(-len(b.sample_weights) // 2)


def test_data_stats_cli(tmp_path, capsys):
    folder_dataset(tmp_path / "d")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: pets\ndata: {{source: folder, root: {tmp_path / 'd'}, cache_dir: {tmp_path / 'c'}}}\n")
    assert main(["data", "stats", str(cfg), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 6 images" in out and "val: 2 images" in out and "24-24 x 20-20" in out
    assert "train mean" in out and "50.0%" in out
    assert (tmp_path / "pets_class_distribution.png").stat().st_size > 1000


def test_data_stats_of_a_shipped_sweep_recipe_and_of_a_grid_over_data_keys(tmp_path, capsys):
    """A grid trains many runs on one data section: stats describe it once (or once per data.* value)."""
    for split, n in (("train", 3), ("val", 1)):
        for name in ("ants", "bees"):
            for i in range(n):
                save(tmp_path / "h" / split / name / f"{i}.jpg", np.full((20, 24, 3), 60 * i, np.uint8))
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "hymenoptera.yaml"
    sets = ["--set", f"data.root={tmp_path / 'h'}", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    assert main(["data", "stats", str(recipe), "--out", str(tmp_path), *sets]) == 0
    out = capsys.readouterr().out
    assert out.count("source folder") == 1 and "train: 6 images" in out and "val: 2 images" in out
    assert (tmp_path / "hymenoptera_class_distribution.png").is_file()
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(f"name: lt\ndata: {{source: synthetic, image_size: 8, train_per_class: 8, val_per_class: 2}}\n"
                   "grid: {loss: [ce, focal], data.imbalance_ratio: [1, 4], seed: [0, 1]}\n")
    assert main(["data", "stats", str(cfg), "--out", str(tmp_path)]) == 0
    blocks = capsys.readouterr().out.split("class-distribution chart")
    assert len(blocks) == 3 and "train: 32 images" in blocks[0] and "train: 18 images" in blocks[1]
    assert {p.name for p in tmp_path.glob("lt*.png")} == {"lt--imbalance_ratio-1_class_distribution.png",
                                                          "lt--imbalance_ratio-4_class_distribution.png"}


def test_prepare_dsb2018_merges_instance_masks(tmp_path):
    src = tmp_path / "dsb" / "stage1_train"
    for k in range(2):
        sample = src / f"id{k}"
        save(sample / "images" / f"id{k}.png", np.full((20, 20, 4), 100 + k, np.uint8), "RGBA")
        for j in range(3):
            m = np.zeros((20, 20), np.uint8)
            m[5 * j: 5 * j + 4, 2:8] = 255
            save(sample / "masks" / f"m{j}.png", m)
    assert main(["data", "prepare-dsb2018", str(tmp_path / "dsb"), str(tmp_path / "out"), "--size", "10"]) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "0" / "id1.png"))
    assert mask.shape == (10, 10) and set(np.unique(mask)) == {0, 255}
    assert (mask > 0).sum() == 3 * 2 * 3
    image = Image.open(tmp_path / "out" / "images" / "id1.png")
    assert image.mode == "RGB" and image.size == (10, 10)
    b = build_data(Experiment(task="segmentation", data={"source": "seg_folder", "root": str(tmp_path / "out"),
                                                         "image_size": 10, "cache_dir": str(tmp_path / "c")}))
    assert b.class_names == ["background", "0"] and b.class_counts[1] > 0
    seg = Experiment(name="nuclei", task="segmentation", data={
        "source": "seg_folder", "root": str(tmp_path / "out"), "image_size": 10, "cache_dir": str(tmp_path / "c")})
    lines = data_stats(seg, tmp_path / "nuclei.png")
    assert any("pixels" in line and line.split()[0] == "0" for line in lines)
    assert (tmp_path / "nuclei.png").is_file()


@pytest.mark.parametrize("text, expected", [
    ("data: {normalize: foo}\n", "data.normalize: use imagenet, auto, none"),
    ("data: {normalize: {mean: [0.5], std: [0.1, 0.2]}}\n", "mean has 1 values and std 2"),
    ("data: {augment: {hflip: 2}}\n", "data.augment.hflip: Input should be less than or equal to 1"),
    ("data: {csv: {id_col: x}}\n", "data.csv.id_col: unknown key; valid keys here:"),
    ("data: {sampler: weighted}\n", "data.sampler: Input should be 'shuffle' or 'balanced'"),
])
def test_bad_data_config_is_one_line(tiny_config, text, expected):
    from lossbench.config import load_experiment
    from lossbench.errors import UserError

    with pytest.raises(UserError) as err:
        load_experiment(tiny_config(text))
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("cache", [False, True])
def test_loader_workers_read_the_same_batches(tmp_path, cache):
    folder_dataset(tmp_path / "d")
    b = build_data(folder_exp(tmp_path, cache=cache))
    _, val0 = build_loaders(b, batch_size=4, num_workers=0, seed=0)
    _, val1 = build_loaders(b, batch_size=4, num_workers=1, seed=0)
    for (x0, y0), (x1, y1) in zip(val0, val1):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert sum(len(y) for _, y in val1) == len(b.val)


def test_validation_loader_is_the_whole_set_in_order_under_ddp(tmp_path):
    """build_loaders shards training only; the engine's exact_eval_loader shards validation (no padded copy here)."""
    folder_dataset(tmp_path / "d")
    b = build_data(folder_exp(tmp_path))
    _, whole = build_loaders(b, batch_size=4, num_workers=0, seed=0)
    train, val = build_loaders(b, batch_size=4, num_workers=0, seed=0, world_size=2, rank=1)
    assert len(train.sampler) == -(-len(b.train) // 2)
    assert torch.equal(torch.cat([y for _, y in val]), torch.cat([y for _, y in whole]))
