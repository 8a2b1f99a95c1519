"""eval / predict / export of finished runs: tiny real runs trained once per module."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared import once_per_session
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from lossbench.cli import main
from lossbench.config import load_experiment
from lossbench.data import build_data
from lossbench.engine import train
from lossbench.engine.inference import export_run, load_run, predict_paths
from lossbench.errors import UserError

CLASSIFIER = """
name: clf
task: classification
output_dir: OUT
data: {source: synthetic, num_classes: 4, image_size: 32, train_per_class: 48, val_per_class: 12, imbalance_ratio: 4}
model: {name: resnet20}
loss: ce
optimizer: {name: adam, lr: 0.003}
epochs: 1
batch_size: 32
"""

SEGMENTER = """
name: seg
task: segmentation
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 32, train_per_class: 12, val_per_class: 6}
model: {name: nested_unet, encoder_depth: 2, base_channels: 4}
loss: ce
optimizer: {name: adam, lr: 0.01}
epochs: 1
batch_size: 8
"""


def train_runs(root):
    """One trained classifier run and one segmenter run, as `lossbench train` leaves them: task -> run folder."""
    out = {}
    for text in (CLASSIFIER, SEGMENTER):
        path = root / "config.yaml"
        path.write_text(text.replace("OUT", str(root / "runs")))
        exp = load_experiment(path)
        train(exp, log=lambda *_: None)
        out[exp.task] = str(exp.run_dir)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs of :func:`train_runs`, trained once for the whole test session (tests write only eval/ and
    export/ subfolders into them, each test its own)."""
    _, found = once_per_session(tmp_path_factory, "inference-runs", train_runs)
    return {task: Path(folder) for task, folder in found.items()}


def predictions(run_dir, split="val"):
    """(true, predicted) of the run's best checkpoint over a split, computed here without the eval code."""
    run = load_run(run_dir, device="cpu")
    dataset = getattr(build_data(run.exp), split)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    targets = torch.as_tensor(np.array([dataset[i][1] for i in range(len(dataset))]))
    with torch.no_grad():
        pred = run.model(images).argmax(1)
    return targets, pred, images


def test_eval_reproduces_training_validation_and_sklearn(runs):
    run_dir = runs["classification"]
    assert main(["eval", str(run_dir), "--device", "cpu"]) == 0
    out = run_dir / "eval"
    for name in ["metrics.json", "metrics.csv", "per_class.csv", "confusion_matrix.png",
                 "confusion_matrix_normalized.csv"]:
        assert (out / name).is_file(), name
    result = json.loads((out / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["confusion_matrix"] == summary["best_confusion_matrix"]
    assert result["epoch"] == summary["best"]["epoch"] and result["checkpoint"] == "best.pt"
    main_metric = summary["main_metric"]
    assert result["metrics"][main_metric] == pytest.approx(summary["best"].get(main_metric,
                                                           summary["best"].get(f"val_{main_metric}")))

    true, pred, _ = predictions(run_dir)
    labels = list(range(4))
    assert np.allclose(result["normalized_confusion_matrix"],
                       np.nan_to_num(confusion_matrix(true, pred, labels=labels, normalize="true")))
    precision, recall, f1, support = precision_recall_fscore_support(true, pred, labels=labels, zero_division=np.nan)
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert [r["class"] for r in rows] == result["class_names"]
    assert [int(r["support"]) for r in rows] == support.tolist()
    assert np.allclose([float(r["recall"]) for r in rows], recall, equal_nan=True)
    assert np.allclose([float(r["precision"]) for r in rows], precision, equal_nan=True)
    assert np.allclose([float(r["f1"]) for r in rows], f1, equal_nan=True)
    metrics_row = next(csv.DictReader((out / "metrics.csv").open()))
    assert float(metrics_row["accuracy"]) == pytest.approx(float((true == pred).double().mean()))
    assert Image.open(out / "confusion_matrix.png").size[0] > 100


def test_eval_on_other_data_by_overrides_or_config_file(runs, tmp_path, capsys):
    run_dir = runs["classification"]
    assert main(["eval", str(run_dir), "--data", "val_per_class=5", "--name", "small", "--device", "cpu"]) == 0
    small = json.loads((run_dir / "eval" / "small" / "metrics.json").read_text())
    assert small["num_images"] == 20 and small["data"]["val_per_class"] == 5
    assert sum(map(sum, small["confusion_matrix"])) == 20
    other = tmp_path / "other.yaml"
    other.write_text("data: {source: synthetic, num_classes: 4, image_size: 32, val_per_class: 3}\n")
    assert main(["eval", str(run_dir), "--data", str(other), "--name", "other", "--device", "cpu"]) == 0
    assert json.loads((run_dir / "eval" / "other" / "metrics.json").read_text())["num_images"] == 12
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data", "num_classes=5", "--name", "bad"]) == 2
    err = capsys.readouterr().err
    assert "5 classes" in err and "4" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", str(run_dir), "--split", "test"]) == 2
    assert "no test split" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    broken = tmp_path / "broken-run"
    broken.mkdir()
    for name in ["config.yaml", "summary.json"]:
        (broken / name).write_bytes((run_dir / name).read_bytes())
    (broken / "best.pt").write_bytes((run_dir / "best.pt").read_bytes()[:3000])
    assert main(["eval", str(broken)]) == 2
    err = capsys.readouterr().err
    assert str(broken / "best.pt") in err and "not a loadable state dict" in err and len(err.splitlines()) == 1


def test_eval_on_other_data_matches_classes_by_name(runs, tmp_path, capsys):
    """The run's validation images as a class folder: sorted folder names put the classes in another order."""
    run_dir = runs["classification"]
    run = load_run(run_dir, device="cpu")
    raw = build_data(run.exp).val.samples
    for i in range(len(raw)):
        image, label = raw[i]
        for split in ("train", "val"):
            folder = tmp_path / "d" / split / run.class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            _save_png(image, folder / f"{i}.png")
    assert sorted(run.class_names) != run.class_names
    data = [arg for item in ("source=folder", f"root={tmp_path / 'd'}", f"cache_dir={tmp_path / 'cache'}")
            for arg in ("--data", item)]
    assert main(["eval", str(run_dir), "--device", "cpu", "--name", "folder", *data]) == 0
    result = json.loads((run_dir / "eval" / "folder" / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["data_class_names"] == sorted(run.class_names)
    assert result["confusion_matrix"] == summary["best_confusion_matrix"]
    assert "matched to the run's by name" in capsys.readouterr().out
    for split in ("train", "val"):
        shutil.rmtree(tmp_path / "d" / split / run.class_names[0])
    assert main(["eval", str(run_dir), "--device", "cpu", "--name", "three", *data, "--data", "num_classes=null"]) == 0
    three = json.loads((run_dir / "eval" / "three" / "metrics.json").read_text())
    expected = summary["best_confusion_matrix"]
    assert three["confusion_matrix"] == [[0] * 4] + expected[1:]
    assert f"no '{run.class_names[0]}' (support 0)" in capsys.readouterr().out


def test_segmentation_eval_writes_iou_table(runs):
    run_dir = runs["segmentation"]
    assert main(["eval", str(run_dir), "--device", "cpu"]) == 0
    result = json.loads((run_dir / "eval" / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["confusion_matrix"] == summary["best_confusion_matrix"]
    rows = list(csv.DictReader((run_dir / "eval" / "per_class.csv").open()))
    assert [r["class"] for r in rows] == summary["class_names"]
    assert np.allclose([float(r["iou"]) for r in rows], result["metrics"]["iou"], equal_nan=True)


def _save_png(tensor, path):
    Image.fromarray(tensor.permute(1, 2, 0).numpy()).save(path)


def test_predict_classifier_prints_class_and_probabilities(runs, tmp_path, capsys):
    run_dir = runs["classification"]
    run = load_run(run_dir, device="cpu")
    raw = build_data(run.exp).val.samples  # uint8 images before the transform
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        _save_png(raw[i * 9][0], folder / f"img{i}.png")
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(folder), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all(run.class_names[0] in line for line in lines)
    results = predict_paths(run_dir, [folder], device="cpu", log=lambda _: None)
    _, pred, _ = predictions(run_dir)
    for i, r in enumerate(results):
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert r["class"] == run.class_names[int(pred[i * 9])]  # same as the data pipeline's prediction
        assert f"{r['class']} ({r['probability']:.3f})" in lines[i]


def test_predict_segmenter_writes_masks_and_overlays(runs, tmp_path):
    run_dir = runs["segmentation"]
    run = load_run(run_dir, device="cpu")
    raw = build_data(run.exp).val.samples
    _save_png(raw[0][0], tmp_path / "same.png")
    Image.fromarray(raw[1][0].permute(1, 2, 0).numpy()).resize((48, 40)).save(tmp_path / "bigger.jpg")
    out = tmp_path / "masks"
    results = predict_paths(run_dir, [tmp_path / "same.png", tmp_path / "bigger.jpg"], out_dir=out,
                            device="cpu", log=lambda _: None)
    _, pred, _ = predictions(run_dir)
    mask = np.asarray(Image.open(out / "same_mask.png"))
    assert mask.shape == (32, 32) and np.array_equal(mask, pred[0].numpy())
    big = Image.open(out / "bigger_mask.png")
    assert big.size == (48, 40) and big.mode == "P" and np.asarray(big).max() < 3
    assert Image.open(out / "bigger_overlay.png").size == (48, 40)
    assert sum(results[1]["class_fractions"].values()) == pytest.approx(1)


def test_predict_bad_inputs_are_user_errors(runs, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="broken.png: cannot read this image"):
        predict_paths(runs["classification"], [bad], device="cpu")
    with pytest.raises(UserError, match="no such image file or folder"):
        predict_paths(runs["classification"], [tmp_path / "missing.png"], device="cpu")


def test_onnx_export_matches_pytorch_under_onnxruntime(runs, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    run_dir = runs["classification"]
    result = export_run(run_dir, "onnx", log=lambda _: None)
    assert result.path == run_dir / "export" / "model.onnx" and result.max_abs_diff < 1e-4
    meta = json.loads((run_dir / "export" / "export.json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, 32, 32] and len(meta["class_names"]) == 4
    _, _, images = predictions(run_dir)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images[:7].numpy()})[0]
    with torch.no_grad():
        expected = load_run(run_dir, device="cpu").model(images[:7]).numpy()
    assert got.shape == (7, 4) and np.abs(got - expected).max() < 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_export_of_a_segmenter_runs_without_lossbench(runs, tmp_path):
    run_dir = runs["segmentation"]
    path = tmp_path / "seg.pt"
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(path)]) == 0
    module = torch.jit.load(str(path))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(module(x), load_run(run_dir, device="cpu").model(x), atol=1e-5)
