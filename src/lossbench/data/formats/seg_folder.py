"""``seg_folder``: ``images/`` plus masks, in either of two layouts.

- ``masks/<k>/<stem>.png``: one binary mask per class and image (the
  pytorch-nested-unet layout; non-zero = inside). With ``data.seg.target:
  index`` (default) the masks merge into one index mask, background 0 and the
  k-th mask folder class k + 1; with ``multilabel`` they stay C binary channels.
- ``masks/<stem>.png``: index masks, pixel value = class (255 = ignore), or
  mapped through ``data.seg.value_map`` (e.g. ``{0: 0, 255: 1}`` for 0/255
  binary masks). Palette, 8-/16-bit gray and gray-valued RGB masks all work.

A mask is found by the image's stem plus ``data.seg.mask_suffix`` with any
image extension. ``root/train/images`` (+ optional ``root/val/images``)
instead of ``root/images`` gives explicit splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lossbench.config import DataConfig
from lossbench.contract import IGNORE_INDEX
from lossbench.data.decode import MaskSpec, is_image_file
from lossbench.data.files import Decoder, FileItem, open_files
from lossbench.data.formats.common import channels_of, require_root, require_task
from lossbench.data.registry import Splits, register_source
from lossbench.errors import UserError


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if is_image_file(p)}


def _mask_dirs(masks: Path) -> list[str]:
    dirs = [d.name for d in masks.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return sorted(dirs, key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0, d))


def _items(base: Path, cfg: DataConfig, nested: list[str]) -> list[FileItem]:
    opts = cfg.seg
    images, masks = base / opts.images, base / opts.masks
    if not images.is_dir():
        raise UserError(f"{images}: no images folder; expected {opts.images}/ and {opts.masks}/ under data.root "
                        f"(or set data.seg.images)")
    if not masks.is_dir():
        raise UserError(f"{masks}: no masks folder; expected {opts.masks}/ next to {opts.images}/ "
                        f"(or set data.seg.masks)")
    lookups = [_by_stem(masks / d) for d in nested] if nested else [_by_stem(masks)]
    items = []
    for path in sorted(images.iterdir()):
        if not is_image_file(path):
            continue
        key = path.stem + opts.mask_suffix
        items.append(FileItem(path, path.relative_to(base).as_posix(),
                              masks=tuple(lookup.get(key) for lookup in lookups)))
    return items


@register_source("seg_folder", shares_cache=True)
def seg_folder_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """images/ + masks/<class>/ binary masks (pytorch-nested-unet) or masks/ index PNGs."""
    require_task("seg_folder", task, "segmentation")
    root = require_root(cfg)
    opts = cfg.seg
    split_bases = {"train": root}
    if (root / "train" / opts.images).is_dir():
        split_bases = {s: root / s for s in ("train", "val", "test") if (root / s / opts.images).is_dir()}
    masks_dir = split_bases["train"] / opts.masks
    nested = _mask_dirs(masks_dir) if masks_dir.is_dir() else []
    if nested:
        kind = "multilabel" if opts.target == "multilabel" else "nested_index"
        names = nested if kind == "multilabel" else ["background"] + nested
        spec = MaskSpec(kind)
    else:
        vmap = tuple(sorted(opts.value_map.items())) if opts.value_map else None
        known = None
        if vmap:
            known = max((c for _, c in vmap if c != IGNORE_INDEX), default=0) + 1
        known = cfg.num_classes or (len(opts.class_names) if opts.class_names else None) or known
        spec = MaskSpec("index", vmap, known)
        names = None
    decoder = Decoder(cfg.image_size, channels_of(cfg), spec)
    sets = {s: open_files(_items(base, cfg, nested), decoder, cfg, str(base / opts.images), f"seg-{s}")
            for s, base in split_bases.items()}
    if names is None:
        num = spec.num_classes
        if num is None:
            counts = sets["train"].pixel_counts(256).sum(0)
            counts[IGNORE_INDEX] = 0
            num = max(2, int(np.nonzero(counts)[0].max()) + 1 if counts.any() else 2)
        names = [f"class{k}" for k in range(num)]
        if num > 0:
            names[0] = "background"
    if opts.class_names:
        if len(opts.class_names) != len(names):
            raise UserError(f"data.seg.class_names has {len(opts.class_names)} names but the masks give "
                            f"{len(names)} classes ({', '.join(names)}); list one name per class")
        names = list(opts.class_names)
    target = "multilabel" if spec.kind == "multilabel" else "index"
    return Splits(sets["train"], sets.get("val"), names, test=sets.get("test"), target=target)
