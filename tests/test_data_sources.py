"""Each data source on a tiny fixture written in its exact on-disk layout."""

import gzip
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lossbench.config import Experiment
from lossbench.data import build_data, prepare_splits


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array), mode).save(path)


def rgb(value, size=8):
    return np.full((size, size, 3), value, dtype=np.uint8)


def exp(tmp_path, task="classification", in_channels=3, **data):
    data.setdefault("cache_dir", str(tmp_path / "cache"))
    data.setdefault("image_size", 8)
    return Experiment(task=task, data=data, model={"in_channels": in_channels})


def test_folder_single_root_split_by_config_ignores_junk(tmp_path):
    root = tmp_path / "pets"
    for k, name in enumerate(["cat", "dog"]):
        for i in range(5):
            save(root / name / f"{i}.png", rgb(40 * k + i))
    (root / "cat" / ".DS_Store").write_bytes(b"\x00junk")
    (root / "cat" / "Thumbs.db").write_bytes(b"junk")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    save(root / "dog" / ".hidden.png", rgb(1))
    b = build_data(exp(tmp_path, source="folder", root=str(root), val_fraction=0.4, normalize="none"))
    assert b.class_names == ["cat", "dog"]
    assert len(b.train) + len(b.val) == 10
    assert b.class_counts == [3, 3]
    split = json.loads(b.run_files["split.json"])
    assert sorted(split["train"] + split["val"]) == sorted(f"{c}/{i}.png" for c in ("cat", "dog") for i in range(5))
    assert split["generated_val"] is True
    assert json.loads(b.run_files["class_counts.json"]) == {"cat": 3, "dog": 3}
    image, label = b.train[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and label in (0, 1)


def test_folder_train_val_layout_keeps_given_split(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for name in ("a", "b"):
            for i in range(n):
                save(tmp_path / "d" / split / name / f"{i}.jpg", rgb(200 if name == "b" else 10))
    p = prepare_splits(exp(tmp_path, source="folder", root=str(tmp_path / "d")))
    assert (len(p.train), len(p.val)) == (6, 4) and not p.generated_val
    assert p.val.targets.tolist() == [0, 0, 1, 1]
    assert p.val.names[0] == "val/a/0.jpg"


def test_csv_kaggle_layout_every_row_used(tmp_path):
    root = tmp_path / "dr"
    rows = ["image,level"] + [f"img{i},{i % 3}" for i in range(9)]
    (root / "train").mkdir(parents=True)
    (root / "trainLabels.csv").write_text("\n".join(rows) + "\n")
    for i in range(9):
        save(root / "train" / f"img{i}.jpeg", rgb(i * 20))
    cfg = dict(source="csv", root=str(root), csv={"train": "trainLabels.csv", "images": "train",
                                                    "id_column": "image", "label_column": "level",
                                                    "extension": ".jpeg"})
    p = prepare_splits(exp(tmp_path, **cfg))
    assert len(p.train) + len(p.val) == 9
    assert p.class_names == ["0", "1", "2"]
    assert sorted(p.train.names + p.val.names) == sorted(f"img{i}.jpeg" for i in range(9))


def test_csv_two_file_form_first_row_is_data(tmp_path):
    root = tmp_path / "lab"
    for i in range(6):
        save(root / "imgs" / f"s{i}.png", rgb(30 * i))
    (root / "train_x.csv").write_text("\n".join(f"s{i}.png" for i in range(4)) + "\n")
    (root / "train_y.csv").write_text("\n".join(str(i % 2) for i in range(4)) + "\n")
    (root / "val_x.csv").write_text("s4.png\ns5.png\n")
    (root / "val_y.csv").write_text("0\n1\n")
    p = prepare_splits(exp(tmp_path, source="csv", root=str(root), csv={
        "train": "train_x.csv", "train_labels": "train_y.csv", "val": "val_x.csv", "val_labels": "val_y.csv",
        "images": "imgs", "class_names": ["neg", "pos"]}))
    assert p.train.names == ["s0.png", "s1.png", "s2.png", "s3.png"]
    assert p.train.targets.tolist() == [0, 1, 0, 1]
    assert p.val.names == ["s4.png", "s5.png"] and p.class_names == ["neg", "pos"]


def _seg_image(i):
    img = np.zeros((12, 12, 3), dtype=np.uint8)
    img[2 + i % 3: 8, 3:9] = 200
    return img


def test_seg_folder_nested_binary_masks_rgb_and_16bit(tmp_path):
    root = tmp_path / "nuclei"
    for i in range(5):
        img = _seg_image(i)
        save(root / "images" / f"n{i}.png", img)
        inside = img[..., 0] > 0
        if i % 2:
            save(root / "masks" / "0" / f"n{i}.png", np.stack([inside * 255] * 3, -1).astype(np.uint8))
        else:
            save(root / "masks" / "0" / f"n{i}.png", (inside * 65535).astype(np.uint16))
    b = build_data(exp(tmp_path, "segmentation", source="seg_folder", root=str(root), image_size=12,
                       normalize="none"))
    assert b.class_names == ["background", "0"]
    for i in range(len(b.train)):
        image, mask = b.train[i]
        assert mask.dtype == torch.int64 and mask.shape == (12, 12)
        assert torch.equal(mask, (image[0] > 0.5).long())
    multi = build_data(exp(tmp_path, "segmentation", source="seg_folder", root=str(root), image_size=12,
                           seg={"target": "multilabel"}))
    _, mask = multi.train[0]
    assert mask.dtype == torch.float32 and mask.shape == (1, 12, 12) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert multi.class_names == ["0"] and multi.class_counts[0] > 0


def test_seg_folder_index_masks_with_value_map_and_suffix(tmp_path):
    root = tmp_path / "idx"
    for i in range(4):
        save(root / "images" / f"a{i}.jpg", _seg_image(i))
        m = np.zeros((12, 12), dtype=np.uint8)
        m[2:8, 3:9] = 128
        m[0, :] = 7
        save(root / "masks" / f"a{i}_mask.png", m)
    b = build_data(exp(tmp_path, "segmentation", source="seg_folder", root=str(root), image_size=12,
                       seg={"mask_suffix": "_mask", "value_map": {0: 0, 128: 1, 7: 255}}))
    _, mask = b.train[0]
    assert set(mask.unique().tolist()) == {0, 1, 255}
    assert b.class_names == ["background", "class1"]
    assert b.class_counts == [len(b.train) * (144 - 36 - 12), len(b.train) * 36]


def test_oxford_pet_trimaps_three_and_two_classes(tmp_path):
    root = tmp_path / "pets"
    lines = []
    for i, breed in enumerate(["Abyssinian_1", "Abyssinian_2", "beagle_1", "beagle_2", "beagle_3"]):
        save(root / "images" / f"{breed}.jpg", rgb(50 * i))
        tri = np.full((8, 8), 2, dtype=np.uint8)
        tri[2:6, 2:6] = 1
        tri[1, 1:7] = 3
        save(root / "annotations" / "trimaps" / f"{breed}.png", tri)
        lines.append(f"{breed} {1 if breed.startswith('A') else 2} 1 1")
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines[:4]) + "\n")
    (root / "annotations" / "test.txt").write_text(lines[4] + "\n")
    three = build_data(exp(tmp_path, "segmentation", source="oxford_pet", root=str(root)))
    assert three.class_names == ["background", "pet", "border"]
    assert set(three.val[0][1].unique().tolist()) == {0, 1, 2}
    assert len(three.test) == 1
    two = build_data(exp(tmp_path, "segmentation", source="oxford_pet", root=str(root), pet_classes=2))
    _, mask = two.train[0]
    assert set(mask.unique().tolist()) == {0, 1, 255}
    assert two.class_counts == [len(two.train) * (64 - 16 - 6), len(two.train) * 16]
    cls = prepare_splits(exp(tmp_path, source="oxford_pet", root=str(root)))
    assert cls.class_names == ["Abyssinian", "beagle"] and len(cls.train) + len(cls.val) == 4


def _cifar_batch(path, labels, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": list(labels), b"batch_label": b"x"}, f)
    return data


def test_cifar10_partial_batches_and_class_subset(tmp_path):
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = _cifar_batch(folder / "data_batch_2", [k % 10 for k in range(40)], 0)
    _cifar_batch(folder / "test_batch", list(range(10)), 1)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"n{k}".encode() for k in range(10)]}, f)
    p = prepare_splits(exp(tmp_path, source="cifar10", root=str(tmp_path / "c"), image_size=32,
                           classes=[3, "n1", 7, 0], val_fraction=0.25))
    assert p.class_names == ["n3", "n1", "n7", "n0"]
    assert p.class_counts == [3, 3, 3, 3] and len(p.val) == 4 and len(p.test) == 4
    image, label = p.train[0]
    original = int(p.train.names[0].split(":")[1])
    assert torch.equal(image, torch.from_numpy(data[original].reshape(3, 32, 32)))
    assert label == {3: 0, 1: 1, 7: 2, 0: 3}[original % 10]


def _idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_gz_gray_to_three_channels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28))
    _idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(30) % 10)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:5])
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    e = exp(tmp_path, source="fashion_mnist", root=str(tmp_path), image_size=28, normalize="none")
    b = build_data(e)
    assert b.class_names[0] == "T-shirt/top" and len(b.test) == 5
    assert len(b.train) + len(b.val) == 30 and all(c == 2 for c in b.class_counts)
    image, label = b.test[1]
    assert image.shape == (3, 28, 28) and label == 1
    assert torch.allclose(image[2], torch.from_numpy(images[1] / 255).float())
    gray = build_data(exp(tmp_path, in_channels=1, source="fashion_mnist", root=str(tmp_path), image_size=16))
    assert gray.train[0][0].shape == (1, 16, 16)


def test_synthetic_still_works_with_subset_and_balanced_weights(tmp_path):
    b = build_data(exp(tmp_path, source="synthetic", num_classes=4, train_per_class=20, imbalance_ratio=4,
                       classes=[1, 3], sampler="balanced", image_size=16))
    assert b.class_names == ["square-stripes", "ring-solid"]
    assert len(b.sample_weights) == len(b.train)
    weights = torch.tensor(b.sample_weights)
    labels = torch.tensor([b.train[i][1] for i in range(len(b.train))])
    per_class = [float(weights[labels == k].sum()) for k in range(2)]
    assert per_class == pytest.approx([1.0, 1.0])


def test_every_source_declares_its_tasks_and_build_data_refuses_the_others(tmp_path, capsys):
    """The task check reads the registry entry before the source opens anything (no data.root needed)."""
    from lossbench.cli import main
    from lossbench.contract import TASKS
    from lossbench.data import SOURCES
    from lossbench.errors import UserError

    refused = 0
    for name, entry in SOURCES.items():
        assert entry.tasks and set(entry.tasks) <= set(TASKS), name
        for task in set(TASKS) - set(entry.tasks):
            with pytest.raises(UserError, match=f"data.source '{name}' gives .* data, but task is '{task}'"):
                prepare_splits(exp(tmp_path, task=task, source=name, root=str(tmp_path / "missing")))
            refused += 1
    assert refused >= 6  # folder, csv, cifar10, fashion_mnist: classification; seg_folder, scenes: segmentation
    assert SOURCES.get("synthetic").tasks == ("classification", "segmentation")
    assert main(["list", "sources"]) == 0
    assert "seg_folder           segmentation " in capsys.readouterr().out
