"""Every bad-input case ends in one UserError line naming the file (or CSV line) and the fix, at open time."""

import io

import numpy as np
import pytest
from cli_helper import run_cli
from PIL import Image

from lossbench.config import Experiment
from lossbench.data import build_data
from lossbench.errors import UserError


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def good_folder(root, n=3):
    for name in ("a", "b"):
        for i in range(n):
            save(root / name / f"{i}.png", np.full((8, 8, 3), (30 * i) % 256, np.uint8))


def truncated_jpeg(path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def folder_exp(tmp_path, **data):
    return Experiment(data={"source": "folder", "root": str(tmp_path / "d"), "image_size": 8,
                            "cache_dir": str(tmp_path / "cache"), **data})


def expect_one_line(exp, *fragments):
    with pytest.raises(UserError) as err:
        build_data(exp)
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


@pytest.mark.parametrize("kind, fragment", [
    ("truncated", "truncated"),
    ("empty", "empty (0 bytes)"),
    ("not_image", "not an image"),
])
def test_bad_image_files_named_with_fix(tmp_path, kind, fragment):
    good_folder(tmp_path / "d")
    bad = tmp_path / "d" / "b" / "bad.jpg"
    if kind == "truncated":
        truncated_jpeg(bad)
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_text("<html>this is a web page saved as .jpg</html>")
    msg = expect_one_line(folder_exp(tmp_path), str(bad), fragment, "data.skip_bad")
    assert "delete" in msg or "re-copy" in msg


def test_skip_bad_skips_and_reports_which(tmp_path, capsys):
    good_folder(tmp_path / "d")
    truncated_jpeg(tmp_path / "d" / "a" / "t.jpg")
    (tmp_path / "d" / "b" / "z.png").write_bytes(b"")
    b = build_data(folder_exp(tmp_path, skip_bad=True, val_fraction=0.5))
    assert len(b.train) + len(b.val) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2 bad file(s)" in err[0]
    assert "t.jpg" in err[0] and "z.png" in err[0]
    assert "z.png" in b.run_files["skipped_files.json"]


def test_empty_class_folder(tmp_path):
    good_folder(tmp_path / "d")
    (tmp_path / "d" / "c").mkdir()
    (tmp_path / "d" / "c" / ".DS_Store").write_bytes(b"x")
    expect_one_line(folder_exp(tmp_path), str(tmp_path / "d" / "c"), "empty class folder")


def csv_exp(tmp_path, text, **csv):
    root = tmp_path / "d"
    for i in range(3):
        save(root / "img" / f"{i}.png", np.full((8, 8, 3), i, np.uint8))
    (root / "labels.csv").write_text(text)
    opts = {"train": "labels.csv", "images": "img", **csv}
    return Experiment(data={"source": "csv", "root": str(root), "image_size": 8, "num_classes": 2,
                            "cache_dir": str(tmp_path / "cache"), "csv": opts})


@pytest.mark.parametrize("text, fragments", [
    ("image,label\n0.png,0\n9.png,1\n", ["labels.csv line 3", "9.png does not exist"]),
    ("image,label\n0.png,0\n1.png,-1\n", ["labels.csv line 3", "label -1 is negative"]),
    ("image,label\n0.png,0\n1.png,cat\n", ["labels.csv line 3", "'cat' is not an integer"]),
    ("image,label\n0.png,1.5\n", ["labels.csv line 2", "'1.5' is not an integer"]),
    ("image,label\n0.png,0\n1.png,2\n", ["labels.csv line 3", "label 2 is not below the 2 classes"]),
    ("image,label\n../../etc/passwd,0\n", ["labels.csv line 2", "leaves the image folder"]),
    ("image,label\n/etc/hostname,0\n", ["labels.csv line 2", "leaves the image folder"]),
    ("file,level\n0.png,0\n", ["labels.csv", "no column 'image'", "data.csv.id_column"]),
    ("image,label\n", ["labels.csv", "no data rows"]),
    ("", ["labels.csv", "empty file"]),
])
def test_bad_csv_rows_and_files(tmp_path, text, fragments):
    expect_one_line(csv_exp(tmp_path, text), *fragments)


def test_csv_skip_bad_drops_bad_rows(tmp_path, capsys):
    text = "image,label\n0.png,0\n1.png,1\n2.png,0\n9.png,1\n0.png,x\n1.png,1\n"
    exp = csv_exp(tmp_path, text)
    exp.data.skip_bad = True
    exp.data.val_fraction = 0.25
    b = build_data(exp)
    assert len(b.train) + len(b.val) == 3  # the missing 9.png, the label x and the second 1.png (a duplicate)
    assert "skipped 3 bad file(s)" in capsys.readouterr().err


def seg_exp(tmp_path, **seg):
    return Experiment(task="segmentation", data={"source": "seg_folder", "root": str(tmp_path / "d"),
                                                 "image_size": 8, "cache_dir": str(tmp_path / "cache"),
                                                 "seg": seg})


def seg_fixture(root, n=3, nested=False):
    for i in range(n):
        save(root / "images" / f"{i}.png", np.full((8, 8, 3), 50, np.uint8))
        m = np.zeros((8, 8), np.uint8)
        m[2:5, 2:5] = 1
        save(root / "masks" / ("0" if nested else "") / f"{i}.png", m)


def test_mask_size_differs_from_image(tmp_path):
    seg_fixture(tmp_path / "d")
    save(tmp_path / "d" / "masks" / "1.png", np.zeros((6, 8), np.uint8))
    expect_one_line(seg_exp(tmp_path), "masks/1.png", "mask is 8x6 but its image 1.png is 8x8")


def test_mask_values_outside_class_map(tmp_path):
    seg_fixture(tmp_path / "d")
    expect_one_line(seg_exp(tmp_path, value_map={0: 0, 255: 1}), "masks/0.png", "[1]", "value_map")


def test_mask_values_outside_num_classes(tmp_path):
    seg_fixture(tmp_path / "d")
    m = np.zeros((8, 8), np.uint8)
    m[0, 0] = 5
    save(tmp_path / "d" / "masks" / "2.png", m)
    exp = seg_exp(tmp_path)
    exp.data.num_classes = 2
    expect_one_line(exp, "masks/2.png", "[5]", "classes are 0..1")


@pytest.mark.parametrize("nested", [False, True])
def test_missing_mask(tmp_path, nested):
    seg_fixture(tmp_path / "d", nested=nested)
    (tmp_path / "d" / "masks" / ("0" if nested else "") / "2.png").unlink()
    expect_one_line(seg_exp(tmp_path), "images/2.png", "no mask")


def test_checks_run_at_open_not_mid_epoch(tmp_path):
    good_folder(tmp_path / "d", n=30)
    truncated_jpeg(tmp_path / "d" / "b" / "29.jpg")
    with pytest.raises(UserError):
        build_data(folder_exp(tmp_path))


def test_cli_bad_input_one_line_exit_2(tmp_path):
    good_folder(tmp_path / "d")
    (tmp_path / "d" / "a" / "x.png").write_bytes(b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{source: folder, root: {tmp_path / 'd'}, cache_dir: {tmp_path / 'cache'}}}\n")
    res = run_cli(["data", "stats", str(cfg)], cwd=tmp_path, process="forked")  # a process of its own
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "x.png" in lines[0] and "Traceback" not in res.err


def test_two_file_csv_header_is_a_bad_row_not_silently_dropped(tmp_path):
    root = tmp_path / "d"
    for i in range(2):
        save(root / f"{i}.png", np.full((8, 8, 3), i, np.uint8))
    (root / "ids.csv").write_text("id\n0.png\n1.png\n")
    (root / "labels.csv").write_text("label\n0\n1\n")
    exp = Experiment(data={"source": "csv", "root": str(root), "cache_dir": str(tmp_path / "c"),
                           "csv": {"train": "ids.csv", "train_labels": "labels.csv"}})
    expect_one_line(exp, "ids.csv line 1", "labels.csv line 1", "'label' is not an integer", "no header row")
