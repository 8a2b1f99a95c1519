"""Using a finished run: re-evaluate its checkpoint, predict images, export the network.

A run folder is enough (DESIGN.md): ``config.yaml`` rebuilds the model and the
data, ``summary.json`` names the classes, ``best.pt`` (or ``last.pt``) holds
the weights under ``"model"``, read with ``torch.load(weights_only=True)``.

- :func:`evaluate_run` measures the checkpoint on the run's validation split,
  its test split, or another dataset (a config file or ``KEY=VALUE`` overrides
  of the data section), writing ``metrics.json`` / ``metrics.csv``, a
  per-class table and the confusion matrix normalised over the true class
  (sklearn's ``normalize='true'``: rows = true class) into ``RUN/eval/``.
- :func:`predict_paths` runs images or folders through the network: class
  and probabilities per image, or mask PNGs and overlays for a segmenter.
- :func:`export_run` writes ONNX (checked against PyTorch under onnxruntime)
  or TorchScript, plus ``export.json`` with what a deployment needs
  (input shape, normalisation, class names).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lossbench.config import DataConfig, Experiment, apply_overrides, describe_validation_error, load_experiment
from lossbench.contract import IGNORE_INDEX
from lossbench.data import build_data
from lossbench.data.transforms import SampleTransform, normalization
from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.metrics import TaskMetrics, metrics_from_confusion, normalized_confusion
from lossbench.engine.distributed import resolve_device
from lossbench.models import build_model
from lossbench.models.weights import read_checkpoint
from lossbench.plots import plot_confusion

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


@dataclass
class LoadedRun:
    """A run's experiment, class names and network with the checkpoint's weights, in eval mode."""

    run_dir: Path
    exp: Experiment
    class_names: list[str]
    model: nn.Module
    checkpoint: Path
    epoch: int | None
    mean: list[float] | None = None
    std: list[float] | None = None


def _device(name: str) -> torch.device:
    return resolve_device(name, "--device")


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> LoadedRun:
    """Rebuild a run's network from its ``config.yaml`` and load ``best.pt`` / ``last.pt`` (``checkpoint``).

    The model is built without its ``pretrained`` source (the checkpoint
    replaces it, and the source need not exist here) and loaded strictly.
    """
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml); give runs/<name> of a finished run")
    exp = load_experiment(config)
    ckpt = run_dir / f"{checkpoint}.pt"
    if not ckpt.is_file():
        raise UserError(f"{ckpt}: no such checkpoint; the run has not finished an epoch (try --checkpoint last)")
    summary_path = run_dir / "summary.json"
    names = None
    if summary_path.is_file():
        try:
            names = json.loads(summary_path.read_text(encoding="utf-8")).get("class_names")
        except (ValueError, AttributeError):
            raise UserError(f"{summary_path}: not valid JSON (a cut-off write?); delete it to take the class names "
                            "from the data, or train the run again") from None
    if not names:
        names = build_data(exp).class_names
    model = build_model(exp.model.model_copy(update={"pretrained": None}), exp.task, len(names), log=lambda _: None)
    state, meta = read_checkpoint(ckpt)
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{ckpt}: does not fit the model of {config} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    epoch = meta.get("epoch") if isinstance(meta.get("epoch"), int) else None
    mean, std = run_normalization(run_dir, exp)
    return LoadedRun(run_dir, exp, list(names), model.to(_device(device)).eval(), ckpt, epoch, mean, std)


def run_normalization(run_dir: Path, exp: Experiment) -> tuple[list[float] | None, list[float] | None]:
    """The per-channel ``(mean, std)`` the run trained with: its ``normalization.json``, else the config's."""
    path = run_dir / "normalization.json"
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
            return found.get("mean"), found.get("std")
        except (ValueError, AttributeError):
            raise UserError(f"{path}: not valid JSON; delete it to fall back to the config's data.normalize") \
                from None
    if exp.data.normalize == "auto":
        bundle = build_data(exp)
        return bundle.mean, bundle.std
    return normalization(exp.data.normalize, exp.model.in_channels)


# --- evaluation ----------------------------------------------------------------------------------


def _data_section(spec: str) -> dict[str, Any] | None:
    """The ``data`` mapping of a YAML file given as ``--data``, or None when ``spec`` is not a file."""
    path = Path(spec)
    if "=" in spec and not path.is_file():
        return None
    if not path.is_file():
        raise UserError(f"--data {spec!r}: neither a config file nor KEY=VALUE (e.g. --data root=/data/other)")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: YAML syntax error ({str(exc).splitlines()[0]})") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise UserError(f"{path}: --data takes a file with one experiment or one data section")
    doc = docs[0]
    section = doc.get("data", doc)
    if not isinstance(section, dict):
        raise UserError(f"{path}: its data section is not a mapping")
    return section


def eval_experiment(exp: Experiment, data: Sequence[str] = ()) -> Experiment:
    """``exp`` with its data section replaced by config files and/or changed by ``KEY=VALUE`` items of ``data``.

    ``KEY`` is relative to the data section (``root=/data/other``) or
    written in full (``data.root=/data/other``). Later items win.
    """
    raw = exp.model_dump(mode="json")
    raw.pop("versions", None)
    for item in data:
        section = _data_section(item)
        if section is not None:
            raw["data"] = dict(section)
        else:
            key = item if item.startswith("data.") else f"data.{item}"
            apply_overrides(raw, [key])
    try:
        DataConfig.model_validate(raw["data"])
    except Exception as err:  # pydantic ValidationError: one line naming the key
        from pydantic import ValidationError

        if isinstance(err, ValidationError):
            raise UserError(describe_validation_error(err, "--data", DataConfig)) from None
        raise
    return Experiment.model_validate(raw)


def _split(bundle, split: str) -> Dataset:
    dataset = getattr(bundle, split, None)
    if dataset is None:
        raise UserError(f"--split {split}: the data source has no {split} split; use val")
    return dataset


def per_class_rows(cm: torch.Tensor, task: str, class_names: list[str]) -> list[dict[str, Any]]:
    """One row per class from a confusion matrix (rows = true): support, precision, recall, F1 / IoU, Dice."""
    cm = cm.double()
    tp, true, pred = cm.diag(), cm.sum(1), cm.sum(0)
    fp, fn = pred - tp, true - tp

    def ratio(a, b):
        return [float(x / y) if y > 0 else float("nan") for x, y in zip(a, b)]

    precision, recall = ratio(tp, pred), ratio(tp, true)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    rows = []
    for k, name in enumerate(class_names):
        row: dict[str, Any] = {"class": name, "support": int(true[k]), "predicted": int(pred[k]),
                               "precision": precision[k], "recall": recall[k]}
        if task == "classification":
            row["f1"] = f1[k]
        else:
            row["iou"] = ratio(tp, tp + fp + fn)[k]
            row["dice"] = f1[k]
        rows.append(row)
    return rows


def per_channel_rows(stats: torch.Tensor, class_names: list[str]) -> list[dict[str, Any]]:
    """One row per sigmoid channel from its (tp, fp, tn, fn, support) counts: the foreground's figures."""
    stats = stats.double().reshape(-1, 5)
    rows = []
    for name, (tp, fp, _, fn, _) in zip(class_names, stats.tolist()):
        def ratio(a: float, b: float) -> float:
            return a / b if b > 0 else float("nan")

        rows.append({"class": name, "support": int(tp + fn), "predicted": int(tp + fp),
                     "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
                     "iou": ratio(tp, tp + fp + fn), "dice": ratio(2 * tp, 2 * tp + fp + fn)})
    return rows


def evaluate_run(
    run_dir: str | Path,
    data: Sequence[str] = (),
    split: str = "val",
    name: str | None = None,
    checkpoint: str = "best",
    batch_size: int | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint on a split of its data (or of ``data``) and write ``RUN/eval[/name]/``.

    Returns what ``metrics.json`` holds: the metrics of :mod:`lossbench.metrics`,
    the raw and row-normalised confusion matrices, and the per-class table.
    """
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be a positive number of images")
    run = load_run(run_dir, checkpoint, device)
    exp = eval_experiment(run.exp, data)
    bundle = build_data(exp)
    if bundle.num_classes != len(run.class_names):
        raise UserError(f"--data: the data has {bundle.num_classes} classes but {run.run_dir} was trained on "
                        f"{len(run.class_names)} ({', '.join(run.class_names)})")
    if bundle.class_names != run.class_names:
        log(f"note: class names differ from the run's; reporting the run's ({', '.join(run.class_names)})")
    dataset = _split(bundle, split)
    dev = next(run.model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size or exp.batch_size, shuffle=False,
                        num_workers=exp.data.num_workers)
    metrics = TaskMetrics(exp.task, len(run.class_names), IGNORE_INDEX).to(dev)
    with torch.inference_mode():
        for images, target in loader:
            metrics.update(run.model(images.to(dev)), target.to(dev))
    sigmoid = metrics.sigmoid_outputs
    if sigmoid:  # binary / multi-label channels: per-channel counts, no K x K confusion matrix
        values = metrics.compute()
        rows = per_channel_rows(metrics.channels.compute().cpu(), run.class_names)
    else:
        cm = metrics.confusion.compute().cpu()
        values = metrics_from_confusion(cm, exp.task)
        rows = per_class_rows(cm, exp.task, run.class_names)
    result = {
        "run": str(run.run_dir),
        "checkpoint": run.checkpoint.name,
        "epoch": run.epoch,
        "split": split,
        "data": exp.data.model_dump(mode="json"),
        "num_images": len(dataset),
        "class_names": run.class_names,
        "metrics": values,
        "per_class": rows,
    }
    if not sigmoid:
        result["confusion_matrix"] = cm.tolist()
        result["normalized_confusion_matrix"] = normalized_confusion(cm).tolist()
    out = run.run_dir / "eval" / name if name else run.run_dir / "eval"
    runfolder.write_json(out / "metrics.json", result)
    scalars = {k: v for k, v in values.items() if not isinstance(v, list)}
    runfolder.write_csv(out / "metrics.csv", [{"checkpoint": run.checkpoint.name, "epoch": run.epoch,
                                               "split": split, "num_images": len(dataset), **scalars}])
    runfolder.write_csv(out / "per_class.csv", rows)
    if not sigmoid:
        norm = normalized_confusion(cm)
        runfolder.write_csv(out / "confusion_matrix_normalized.csv",
                            [{"true": n, **{p: float(v) for p, v in zip(run.class_names, r)}}
                             for n, r in zip(run.class_names, norm.tolist())])
        title = (f"{exp.name}: {split}, {run.checkpoint.stem} checkpoint"
                 + (f" (epoch {run.epoch})" if run.epoch else ""))
        runfolder.atomic_write_bytes(out / "confusion_matrix.png", plot_confusion(cm, run.class_names, title))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in scalars.items())
    log(f"{exp.name}: {split} ({len(dataset)} images): {shown} -> {out}")
    return result


# --- prediction ----------------------------------------------------------------------------------


def image_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in the folders named."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such image file or folder")
    return files


def preprocess(image, exp: Experiment, mean: list[float] | None, std: list[float] | None) -> torch.Tensor:
    """A PIL image as the run's network saw its data: channels, square ``image_size``, normalised.

    Mirrors the data layer's evaluation path (resize at decode, then
    :class:`lossbench.data.transforms.SampleTransform` without augmentation).
    """
    channels = exp.model.in_channels
    if channels not in (1, 3):
        raise UserError(f"predict reads 1- or 3-channel images; this run's model takes {channels}")
    image = image.convert("L" if channels == 1 else "RGB")
    size = exp.data.image_size
    if image.size != (size, size):
        from PIL import Image

        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).unsqueeze(0) if array.ndim == 2 else torch.from_numpy(
        array.copy()).permute(2, 0, 1)
    return SampleTransform(size, channels, mean, std, None)(tensor, None)[0]


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{path}: cannot read this image ({exc.__class__.__name__}); is it a valid image file?") \
            from None


def palette(num_classes: int) -> np.ndarray:
    """Distinct RGB colours per class (class 0, usually background, is black)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if num_classes > 10 else "tab10"]
    colours = [(0, 0, 0)] + [tuple(int(255 * c) for c in cmap(i % cmap.N)[:3]) for i in range(num_classes - 1)]
    return np.asarray(colours, dtype=np.uint8)


def predict_paths(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    checkpoint: str = "best",
    batch_size: int = 32,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Predict every image of ``inputs``; one dict per image (also printed as one line each).

    Classifier: predicted class and the probability of every class.
    Segmenter: a class-index mask PNG (palette mode, the original size) and
    an overlay PNG per image in ``out_dir`` (default ``RUN/predict``).
    """
    from PIL import Image

    run = load_run(run_dir, checkpoint, device)
    files = image_files(inputs)
    dev = next(run.model.parameters()).device
    names = run.class_names
    segment = run.exp.task == "segmentation"
    out = Path(out_dir) if out_dir else run.run_dir / "predict"
    used: set[str] = set()
    results = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        originals = [_open_image(p) for p in chunk]
        batch = torch.stack([preprocess(im, run.exp, run.mean, run.std) for im in originals]).to(dev)
        with torch.inference_mode():
            logits = run.model(batch).float()
        # sigmoid channels (binary / multi-label masks): a pixel is channel k's when its probability is the
        # highest and above 0.5, index k + 1, else background 0
        sigmoid = segment and (logits.shape[1] == 1 or run.exp.data.seg.target == "multilabel")
        probs = (torch.sigmoid(logits) if sigmoid else torch.softmax(logits, 1)).cpu()
        mask_names = ["background", *names] if sigmoid else names
        for path, original, p in zip(chunk, originals, probs):
            if not segment:
                k = int(p.argmax())
                result = {"path": str(path), "class": names[k], "probability": float(p[k]),
                          "probabilities": {n: float(v) for n, v in zip(names, p)}}
                shown = ", ".join(f"{n} {v:.3f}" for n, v in zip(names, p.tolist()))
                log(f"{path}: {names[k]} ({float(p[k]):.3f}) | {shown}")
            else:
                stem = path.stem
                i = 1
                while stem in used:
                    i += 1
                    stem = f"{path.stem}-{i}"
                used.add(stem)
                labels = (p.argmax(0) + 1) * (p.amax(0) > 0.5) if sigmoid else p.argmax(0)
                mask = Image.fromarray(labels.numpy().astype(np.uint8), mode="P")
                mask = mask.resize(original.size, Image.NEAREST)
                colours = palette(len(mask_names))
                mask.putpalette(colours.flatten().tolist())
                index = np.asarray(mask)
                rgb = np.asarray(original.convert("RGB"), dtype=np.float32)
                overlay = np.where(index[..., None] > 0, 0.5 * rgb + 0.5 * colours[index], rgb).astype(np.uint8)
                out.mkdir(parents=True, exist_ok=True)
                mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
                mask.save(mask_path)
                Image.fromarray(overlay).save(overlay_path)
                fractions = np.bincount(index.ravel(), minlength=len(mask_names)) / index.size
                result = {"path": str(path), "mask": str(mask_path), "overlay": str(overlay_path),
                          "class_fractions": {n: float(f) for n, f in zip(mask_names, fractions)}}
                shown = ", ".join(f"{n} {f:.3f}" for n, f in zip(mask_names, fractions) if f > 0)
                log(f"{path}: mask {mask_path}, overlay {overlay_path} | {shown}")
            results.append(result)
    return results


# --- export --------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    """Where the exported network went and how far its outputs are from PyTorch's (None if not checked)."""

    path: Path
    max_abs_diff: float | None


def export_run(
    run_dir: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    checkpoint: str = "best",
    check: bool = True,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export a run's network (eval mode, CPU, dynamic batch) as ONNX or TorchScript.

    With ``check`` the exported file is run (onnxruntime / ``torch.jit.load``)
    on a random batch of another size than the export example and compared
    with PyTorch; a difference above 1e-4 (times the largest output, when
    that exceeds 1) is an error.
    """
    if fmt not in ("onnx", "torchscript"):
        raise UserError(f"--format {fmt!r}: use onnx or torchscript")
    run = load_run(run_dir, checkpoint, "cpu")
    model, exp = run.model, run.exp
    size, channels = exp.data.image_size, exp.model.in_channels
    path = Path(out) if out else run.run_dir / "export" / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:  # checked before the (slow) export, like a run's output folder
        raise UserError(f"{path.parent}: cannot write the export ({getattr(exc, 'strerror', None) or exc}); "
                        "choose another --out") from None
    example = torch.randn(2, channels, size, size)
    probe = torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(probe)
    if fmt == "onnx":
        try:
            import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
        except ImportError:
            raise UserError("ONNX export needs onnx and onnxscript: pip install 'lossbench[export]'") from None
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True,
                              external_data=False, verbose=False)
        tmp.replace(path)
        diff = None
        if check:
            try:
                import onnxruntime as ort
            except ImportError:
                log("onnxruntime not installed: the export was not checked (pip install 'lossbench[export]')")
            else:
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = session.run(None, {"images": probe.numpy()})[0]
                diff = float(np.abs(got - expected.numpy()).max())
    else:
        # torch.jit is deprecated in favour of torch.export, but TorchScript is still what C++ / mobile
        # runtimes load; the warnings say nothing the user can act on here.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example)
            buf = io.BytesIO()
            torch.jit.save(traced, buf)
            runfolder.atomic_write_bytes(path, buf.getvalue())
            diff = float((torch.jit.load(str(path))(probe) - expected).abs().max()) if check else None
    scale = max(1.0, float(expected.abs().max()))  # logits in the hundreds carry float32 rounding of ~1e-5
    if diff is not None and diff > 1e-4 * scale:
        raise UserError(f"{path}: exported outputs differ from PyTorch by {diff:.2e} (> 1e-4 x output scale "
                        f"{scale:.3g}); the export is not trustworthy, please report this")
    mean, std = run.mean, run.std
    runfolder.write_json(path.parent / "export.json", {
        "file": path.name, "format": fmt, "task": exp.task, "model": exp.model.name, "checkpoint": run.checkpoint.name,
        "epoch": run.epoch, "input": {"name": "images", "shape": ["batch", channels, size, size],
                                      "scale": "pixel / 255", "mean": mean, "std": std},
        "output": {"name": "logits", "shape": ["batch", len(run.class_names)] + ([size, size] if exp.task ==
                                                                                 "segmentation" else [])},
        "class_names": run.class_names,
    })
    checked = f"max |exported - PyTorch| = {diff:.2e}" if diff is not None else "not checked"
    log(f"{exp.name}: {fmt} -> {path} ({checked})")
    return ExportResult(path, diff)
