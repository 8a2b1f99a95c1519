"""``lossbench data prepare-dsb2018``: Kaggle Data Science Bowl 2018 -> the ``seg_folder`` layout.

Reads ``SRC/stage1_train/<id>/images/<id>.png`` (RGBA; alpha is dropped) and
``SRC/stage1_train/<id>/masks/*.png`` (one binary PNG per nucleus), merges the
instance masks into one foreground mask, resizes both to ``size`` x ``size``
(bilinear image, nearest mask) and writes ``DST/images/<id>.png`` and
``DST/masks/0/<id>.png`` (0 / 255), the layout pytorch-nested-unet trains on.
``DST`` may not be, lie inside or hold ``SRC``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from lossbench.data.decode import BadFile, is_image_file, read_image, read_mask_values, resize_mask
from lossbench.data.formats.common import require_separate_folders
from lossbench.errors import UserError


def _convert(sample: Path, dst: Path, size: int) -> None:
    images = sorted(p for p in (sample / "images").iterdir() if is_image_file(p)) if (sample / "images").is_dir() else []
    if len(images) != 1:
        raise BadFile(f"{sample / 'images'}: expected exactly one image, found {len(images)}; fix the sample folder")
    image, (w, h) = read_image(images[0], 3, size)
    merged = np.zeros((h, w), dtype=bool)
    masks_dir = sample / "masks"
    if masks_dir.is_dir():
        for path in sorted(p for p in masks_dir.iterdir() if is_image_file(p)):
            values, msize = read_mask_values(path)
            if msize != (w, h):
                raise BadFile(f"{path}: mask is {msize[0]}x{msize[1]} but its image is {w}x{h}; "
                              f"remove or fix the mask")
            merged |= values > 0
    Image.fromarray(image.transpose(1, 2, 0)).save(dst / "images" / f"{sample.name}.png")
    mask = resize_mask(merged.astype(np.uint8) * 255, size)
    Image.fromarray(mask).save(dst / "masks" / "0" / f"{sample.name}.png")


def prepare_dsb2018(src: Path, dst: Path, size: int = 96) -> int:
    """Convert every sample of ``src`` (or ``src/stage1_train``) into ``dst``; returns how many.

    ``dst`` must lie outside ``src`` (and not around it): nothing of the dataset is ever overwritten.
    """
    src, dst = Path(src), Path(dst)
    require_separate_folders(src, dst)
    stage = src / "stage1_train" if (src / "stage1_train").is_dir() else src
    if not stage.is_dir():
        raise UserError(f"{src}: not a folder; give the DSB 2018 folder holding stage1_train/")
    samples = sorted(d for d in stage.iterdir() if d.is_dir() and (d / "images").is_dir())
    if not samples:
        raise UserError(f"{stage}: no <id>/images/ sample folders; give the folder holding stage1_train/")
    if size <= 0:
        raise UserError(f"--size {size}: must be a positive number of pixels")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks" / "0").mkdir(parents=True, exist_ok=True)

    def work(sample: Path) -> str | None:
        try:
            _convert(sample, dst, size)
        except BadFile as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(4) as pool:
        errors = [e for e in pool.map(work, samples) if e]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{errors[0]}{more}")
    return len(samples)
