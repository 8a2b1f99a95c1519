"""How many classes the data has, and what a mask value means: declared classes without data, binary mask values.

The refusals (a class count inferred from a mistyped label, a ``num_classes``
that disagrees with the data, a stray mask value) are in the fault corpus,
tests/faults/test_data_defects.py; here are the inputs that must still work.
"""

import numpy as np
import pytest
from PIL import Image

from lossbench.config import Experiment
from lossbench.data import build_data
from lossbench.errors import UserError


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def exp(tmp_path, task="classification", **data):
    return Experiment(task=task, data={"cache_dir": str(tmp_path / "cache"), "image_size": 8, **data})


def test_a_declared_class_without_training_images_is_named_in_one_warning(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(6):
        save(tmp_path / "d" / "img" / f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    (tmp_path / "d" / "labels.csv").write_text("image,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(6)))
    csv = {"train": "labels.csv", "images": "img", "class_names": ["cat", "dog", "fox"]}
    bundle = build_data(exp(tmp_path, source="csv", root=str(tmp_path / "d"), csv=csv))
    assert bundle.class_names == ["cat", "dog", "fox"] and bundle.class_counts[2] == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lossbench: warning:") and "'fox'" in err[0]
    assert "'cat'" not in err[0]
    build_data(exp(tmp_path, source="csv", root=str(tmp_path / "d"), csv={**csv, "class_names": ["cat", "dog"]}))
    assert capsys.readouterr().err == ""


def binary_folders(root, values):
    """root/images/<i>.png and one mask folder per entry of ``values``: masks/<k>/<i>.png inside = values[k][i]."""
    for i in range(4):
        save(root / "images" / f"{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
        for k, inside in enumerate(values):
            mask = np.zeros((8, 8), np.uint16 if max(inside) > 255 else np.uint8)
            mask[1:4 + i, 2:6] = inside[i]
            save(root / "masks" / str(k) / f"{i}.png", mask)
    return root


def test_a_mask_folder_without_foreground_is_named_in_one_warning(tmp_path, capsys):
    root = binary_folders(tmp_path / "d", [[255] * 4, [0] * 4])
    bundle = build_data(exp(tmp_path, "segmentation", source="seg_folder", root=str(root)))
    assert bundle.class_names == ["background", "0", "1"] and bundle.class_counts[2] == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "pixels of class '1'" in err[0]


def test_each_masks_own_foreground_value_counts_as_inside(tmp_path, capsys):
    """Masks of two tools in one folder (1 and 255, 16-bit 65535): each value is a mask's only one, so it is inside."""
    root = binary_folders(tmp_path / "d", [[1, 255, 65535, 255]])
    bundle = build_data(exp(tmp_path, "segmentation", source="seg_folder", root=str(root), normalize="none",
                            val_fraction=0.25))
    for split in (bundle.train, bundle.val):
        for i in range(len(split)):
            image, mask = split[i]
            assert int(mask.sum()) == 4 * (3 + round(float(image[0, 0, 0]) * 255) // 40)
    assert capsys.readouterr().err == ""


def test_stray_mask_values_are_bad_files_that_skip_bad_skips(tmp_path, capsys):
    """An anti-aliased edge (128 among 0 / 255) has no meaning: refused, or skipped and listed with skip_bad."""
    root = binary_folders(tmp_path / "d", [[255] * 4])
    edge = np.asarray(Image.open(root / "masks" / "0" / "3.png")).copy()
    edge[0, 2:6] = 128
    save(root / "masks" / "0" / "3.png", edge)
    with pytest.raises(UserError, match=r"masks/0/3\.png: value 128 in a binary mask.* inside with 255"):
        build_data(exp(tmp_path, "segmentation", source="seg_folder", root=str(root)))
    bundle = build_data(exp(tmp_path, "segmentation", source="seg_folder", root=str(root), skip_bad=True))
    assert len(bundle.train) + len(bundle.val) == 3
    assert "skipped 1 bad file" in capsys.readouterr().err
