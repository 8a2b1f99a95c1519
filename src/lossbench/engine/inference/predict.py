"""``lossbench predict``: run images or folders through a finished run's network.

A classifier gives the class and the probability of every class per image; a
segmenter writes a class-index mask PNG (palette mode, the image's own size)
and an overlay PNG per image. Images are decoded and transformed by the data
layer (:meth:`LoadedRun.preprocess`), so a prediction is the one
``lossbench eval`` would count.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lossbench.data.decode import IMAGE_EXTENSIONS, BadFile, is_image_file, read_image
from lossbench.engine import runfolder
from lossbench.engine.inference.run import LoadedRun, load_run
from lossbench.errors import UserError


def image_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in the folders named."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_file(p))
            if not found:
                raise UserError(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such image file or folder")
    return files


def palette(num_classes: int) -> np.ndarray:
    """Distinct RGB colours per class (class 0, usually background, is black)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if num_classes > 10 else "tab10"]
    colours = [(0, 0, 0)] + [tuple(int(255 * c) for c in cmap(i % cmap.N)[:3]) for i in range(num_classes - 1)]
    return np.asarray(colours, dtype=np.uint8)


def _unique_stem(path: Path, used: set[str]) -> str:
    """``path``'s stem, numbered (``-2``, ``-3``...) when an earlier image of this call had it."""
    stem, i = path.stem, 1
    while stem in used:
        i += 1
        stem = f"{path.stem}-{i}"
    used.add(stem)
    return stem


def _classified(path: Path, probs: torch.Tensor, names: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    k = int(probs.argmax())
    shown = ", ".join(f"{n} {v:.3f}" for n, v in zip(names, probs.tolist()))
    log(f"{path}: {names[k]} ({float(probs[k]):.3f}) | {shown}")
    return {"path": str(path), "class": names[k], "probability": float(probs[k]),
            "probabilities": {n: float(v) for n, v in zip(names, probs)}}


def _segmented(path: Path, labels: torch.Tensor, names: list[str], out: Path, stem: str,
               log: Callable[[str], None]) -> dict[str, Any]:
    """Write the mask (at the image's own size) and the overlay of one image; its result row."""
    try:
        rgb, (width, height) = read_image(path, 3, None)
    except BadFile as exc:  # the file changed since it was predicted
        raise UserError(str(exc)) from None
    mask = Image.fromarray(labels.numpy().astype(np.uint8), mode="P").resize((width, height), Image.NEAREST)
    colours = palette(len(names))
    mask.putpalette(colours.flatten().tolist())
    index = np.asarray(mask)
    rgb = rgb.transpose(1, 2, 0).astype(np.float32)
    overlay = np.where(index[..., None] > 0, 0.5 * rgb + 0.5 * colours[index], rgb).astype(np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
    mask.save(mask_path)
    Image.fromarray(overlay).save(overlay_path)
    fractions = np.bincount(index.ravel(), minlength=len(names)) / index.size
    shown = ", ".join(f"{n} {f:.3f}" for n, f in zip(names, fractions) if f > 0)
    log(f"{path}: mask {mask_path}, overlay {overlay_path} | {shown}")
    return {"path": str(path), "mask": str(mask_path), "overlay": str(overlay_path),
            "class_fractions": {n: float(f) for n, f in zip(names, fractions)}}


def predict_paths(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    checkpoint: str = "auto",
    batch_size: int = 32,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Predict every image of ``inputs``; one dict per image (also printed as one line each).

    Classifier: predicted class and the probability of every class.
    Segmenter: a class-index mask PNG (palette mode, the original size) and
    an overlay PNG per image in ``out_dir`` (default ``RUN/predict``). ``checkpoint`` ``auto``: best.pt
    unless it was chosen on the test split, else last.pt; a last line on stderr says which.
    """
    run: LoadedRun = load_run(run_dir, checkpoint, device)
    files = image_files(inputs)
    out = Path(out_dir) if out_dir else run.run_dir / "predict"
    if run.exp.task == "segmentation":  # a segmenter writes masks: a folder it cannot write fails before the work
        runfolder.check_writable_folder(out, "choose another --out")
    used: set[str] = set()
    results = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        predicted = run.predict(chunk, batch_size)
        for i, path in enumerate(chunk):
            if run.exp.task == "classification":
                results.append(_classified(path, predicted.probabilities[i], predicted.label_names, log))
            else:
                results.append(_segmented(path, predicted.labels[i], predicted.label_names, out,
                                          _unique_stem(path, used), log))
    # on stderr, once every image is done: stdout holds one line an image, a refusal one stderr line
    print(f"{run.exp.name}: predicted with {run.checkpoint_note}", file=sys.stderr)
    return results
