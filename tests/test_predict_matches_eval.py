"""`predict` sees what training and `eval` saw, for every kind of image file; `export.json` says how to repeat it.

One tiny classifier and one tiny segmenter are trained for one epoch on folders
whose validation images are a large JPEG (decoded in Pillow's draft mode), an
RGB PNG, a gray PNG, an RGBA PNG, a palette PNG and 16-bit gray PNGs (a dark
and a bright one). On every validation image, ``predict`` must give the class
(or mask) and the probabilities the evaluation pipeline gives, and ``eval``
must count exactly those predictions.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lossbench.cli import main
from lossbench.config import load_experiment
from lossbench.data import build_data
from lossbench.engine import train
from lossbench.engine.inference import export_run, load_run, predict_paths

SIZE = 16
KINDS = ["jpeg", "png", "gray", "rgba", "palette", "dark16", "bright16"]


def write_image(path_stem, rgb: np.ndarray, kind: str):
    """``rgb`` (H x W x 3 uint8) saved as one kind of file; returns the path."""
    gray = rgb if rgb.ndim == 2 else rgb.mean(2).astype(np.uint8)
    path = path_stem.with_suffix(".jpg" if kind == "jpeg" else ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    image = {
        "jpeg": lambda: Image.fromarray(rgb),
        "png": lambda: Image.fromarray(rgb),
        "gray": lambda: Image.fromarray(gray),
        "rgba": lambda: Image.fromarray(np.dstack([rgb, 255 - gray])),
        "palette": lambda: Image.fromarray(rgb).quantize(16),
        "dark16": lambda: Image.fromarray(gray.astype(np.uint16)),          # 16-bit values 0..255: nearly black
        "bright16": lambda: Image.fromarray(gray.astype(np.uint16) * 257),
    }[kind]()
    image.save(path, quality=85) if kind == "jpeg" else image.save(path)
    return path


def picture(k: int, seed: int, shape=(48, 64)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of class k (a bright square of channel k on noise) and its 0/1 square mask."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rgb = rng.integers(0, 120, (h, w, 3)).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
    mask[y:y + h // 2, x:x + w // 2] = 1
    rgb[mask == 1, k % 3] = 250
    return rgb, mask


def make_data(root):
    """root/clf/{train,val}/<class>/ and root/seg/{train,val}/{images,masks}/, validation images of every kind."""
    for split, kinds in (("train", ["png", "jpeg"]), ("val", KINDS)):
        for k, name in enumerate(["red", "green"]):
            for i, kind in enumerate(kinds):
                rgb, mask = picture(k, 100 * k + 10 * i + (split == "val"))
                write_image(root / "clf" / split / name / f"{kind}-{i}", rgb, kind)
                image = write_image(root / "seg" / split / "images" / f"{name}-{kind}-{i}", rgb, kind)
                write_image(root / "seg" / split / "masks" / image.stem, mask, "gray")


CONFIGS = {
    "clf": "task: classification\ndata: {source: folder, root: ROOT/clf}\nmodel: {name: resnet20}\n",
    "seg": "task: segmentation\ndata: {source: seg_folder, root: ROOT/seg}\n"
           "model: {name: nested_unet, encoder_depth: 2, base_channels: 4}\n",
}


def train_both(root):
    make_data(root)
    runs = {}
    for name, text in CONFIGS.items():
        path = root / f"{name}.yaml"
        path.write_text(f"name: {name}\noutput_dir: {root / 'runs'}\nepochs: 1\nbatch_size: 8\n"
                        f"optimizer: {{name: sgd, lr: 0.0001}}\n" + text.replace("ROOT", str(root)))
        exp = load_experiment(path, [f"data.image_size={SIZE}", f"data.cache_dir={root / 'cache'}"])
        train(exp, log=lambda *_: None)
        runs[name] = exp.run_dir
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_both(tmp_path_factory.mktemp("formats"))


def evaluation_pipeline(run):
    """The validation split as eval reads it: files, targets, and the network's probabilities on them."""
    bundle = build_data(run.exp)
    root = run.exp.data.root
    files = [root / name if (root / name).is_file() else root / "val" / name for name in bundle.val.samples.names]
    images, targets = zip(*(bundle.val[i] for i in range(len(bundle.val))))
    with torch.no_grad():
        probs = torch.softmax(run.model(torch.stack(images)), 1)
    return files, torch.as_tensor(np.array(targets)), probs


def test_predict_gives_each_classification_image_its_eval_class(runs, capsys):
    run = load_run(runs["clf"])
    files, targets, probs = evaluation_pipeline(run)
    assert sorted({f.stem.split("-")[0] for f in files}) == sorted(KINDS)
    results = predict_paths(run.run_dir, files, device="cpu", log=lambda _: None)
    for f, r, p in zip(files, results, probs):  # log-probabilities: a one-epoch network is sure of itself
        assert r["class"] == run.class_names[int(p.argmax())], f
        assert np.log(list(r["probabilities"].values())) == pytest.approx(p.log().tolist(), abs=1e-3), f
    assert main(["eval", str(run.run_dir), "--device", "cpu"]) == 0
    cm = json.loads((run.run_dir / "eval" / "metrics.json").read_text())["confusion_matrix"]
    counted = np.zeros((2, 2), int)
    for t, r in zip(targets.tolist(), results):
        counted[t, run.class_names.index(r["class"])] += 1
    assert cm == counted.tolist()


def test_predict_gives_each_segmentation_image_its_eval_mask(runs, tmp_path):
    run = load_run(runs["seg"])
    files, targets, probs = evaluation_pipeline(run)
    predict_paths(run.run_dir, files, out_dir=tmp_path, device="cpu", log=lambda _: None)
    assert torch.allclose(run.predict(files).probabilities.log(), probs.log(), atol=1e-3)
    cm = np.zeros((2, 2), int)
    for f, t, p in zip(files, targets, probs):
        labels = p.argmax(0)
        written = np.asarray(Image.open(tmp_path / f"{f.stem}_mask.png"))
        expected = Image.fromarray(labels.numpy().astype(np.uint8)).resize(Image.open(f).size, Image.NEAREST)
        assert np.array_equal(written, np.asarray(expected)), f
        cm += torch.bincount(2 * t.flatten() + labels.flatten(), minlength=4).reshape(2, 2).numpy()
    assert main(["eval", str(run.run_dir), "--device", "cpu"]) == 0
    assert json.loads((run.run_dir / "eval" / "metrics.json").read_text())["confusion_matrix"] == cm.tolist()


def repeat_preprocessing(path, steps: list[dict]) -> np.ndarray:
    """What an ONNX user writes from export.json's steps alone: the network's input for one image file."""
    by_name = {s["step"]: s for s in steps}
    im = Image.open(path)
    size = tuple(by_name["resize"]["size"])
    if im.format == "JPEG":
        im.draft(by_name["jpeg_draft"]["mode"], size)
    im.load()
    deep = by_name["high_bit_depth"]
    if im.mode in deep["modes"]:
        arr = np.asarray(im).astype(np.float64) / deep["divide_by"]
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if im.mode in by_name["palette"]["modes"]:
        im = im.convert(by_name["palette"]["convert_to"])
    im = im.convert(by_name["channels"]["mode"])
    if im.size != size:
        im = im.resize(size, getattr(Image.Resampling, by_name["resize"]["interpolation"].upper()))
    x = np.asarray(im, dtype=np.float32).reshape(size[1], size[0], -1).transpose(2, 0, 1)
    x = x / by_name["scale"]["divide_by"]
    norm = by_name["normalize"]
    return (x - np.array(norm["mean"], np.float32)[:, None, None]) / np.array(norm["std"], np.float32)[:, None, None]


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_export_json_describes_every_step_an_onnx_user_repeats(runs, tmp_path):
    run = load_run(runs["clf"])
    export_run(run.run_dir, "torchscript", out=tmp_path / "model.pt", check=False, log=lambda _: None)
    meta = json.loads((tmp_path / "export.json").read_text())
    steps = meta["input"]["preprocessing"]
    assert [s["step"] for s in steps][-1] == "layout" and all(s.get("how") for s in steps)
    files, _, _ = evaluation_pipeline(run)
    for f in files:
        assert np.abs(repeat_preprocessing(f, steps) - run.preprocess(f).numpy()).max() < 1e-5, f
    assert meta["output"]["activation"] == "softmax" and "argmax" in meta["output"]["how"]
    assert meta["output"]["labels"] == run.class_names
