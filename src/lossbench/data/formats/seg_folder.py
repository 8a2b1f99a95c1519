"""``seg_folder``: ``images/`` plus masks, in either of two layouts.

- ``masks/<k>/<stem>.png``: one binary mask per class and image (the
  pytorch-nested-unet layout; non-zero = inside). With ``data.seg.target:
  index`` (default) the masks merge into one index mask, background 0 and the
  k-th mask folder class k + 1; with ``multilabel`` they stay C binary channels.
- ``masks/<stem>.png``: index masks, pixel value = class (255 = ignore), or
  mapped through ``data.seg.value_map`` (e.g. ``{0: 0, 255: 1}`` for 0/255
  binary masks). Palette, 8-/16-bit gray and gray-valued RGB masks all work.
  Without ``data.num_classes``, ``seg.class_names`` or a value map the classes
  are 0 to the largest training mask value, each of which must occur.

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
from lossbench.data.samples import SampleSet
from lossbench.data.formats.common import channels_of, require_root
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


def _inferred_class_count(train: SampleSet, items: list[FileItem], masks_dir: Path) -> int:
    """Classes 0..the largest training mask value (at least 2); UserError naming a mask holding that value when a
    class below it has no pixel in any training mask (a stray value would otherwise add empty classes)."""
    per_item = train.pixel_counts(256)
    per_item[:, IGNORE_INDEX] = 0
    counts = per_item.sum(0)
    if not counts[1:].any():
        raise UserError(f"{masks_dir}: every training mask is background (0) only; mark the objects "
                        f"with class values 1, 2, ... or map the values with data.seg.value_map")
    top = int(np.nonzero(counts)[0].max())
    empty = [k for k in range(top) if counts[k] == 0]
    if empty:
        masks = {it.name: it.masks[0] for it in items}
        holder = masks[train.names[int(np.nonzero(per_item[:, top])[0][0])]]
        listed = ", ".join(map(str, empty))
        raise UserError(f"{holder}: mask value {top} makes {top + 1} classes, but class{'es' * (len(empty) > 1)} "
                        f"{listed} {'have' if len(empty) > 1 else 'has'} no pixel in any training mask; fix the "
                        f"mask, map its values with data.seg.value_map, or declare the classes (data.num_classes "
                        f"or data.seg.class_names) if {listed} {'are' if len(empty) > 1 else 'is'} really absent")
    return max(2, top + 1)


@register_source("seg_folder", tasks=("segmentation",), shares_cache=True)
def seg_folder_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """images/ + masks/<class>/ binary masks (pytorch-nested-unet) or masks/ index PNGs."""
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
    if nested and cfg.num_classes is not None and cfg.num_classes != len(names):
        raise UserError(f"data.num_classes is {cfg.num_classes} but {masks_dir} has {len(nested)} class folder"
                        f"{'s' * (len(nested) > 1)} ({', '.join(nested)}), which give {len(names)} classes "
                        f"({', '.join(names)}) with data.seg.target: {opts.target}; set data.num_classes: "
                        f"{len(names)} or remove it")
    decoder = Decoder(cfg.image_size, channels_of(cfg), spec)
    items = {s: _items(base, cfg, nested) for s, base in split_bases.items()}
    sets = {s: open_files(items[s], decoder, cfg, str(split_bases[s] / opts.images), f"seg-{s}")
            for s in split_bases}
    if names is None:
        num = spec.num_classes or _inferred_class_count(sets["train"], items["train"], masks_dir)
        names = ["background"] + [f"class{k}" for k in range(1, num)]
    if opts.class_names:
        if len(opts.class_names) != len(names):
            raise UserError(f"data.seg.class_names has {len(opts.class_names)} names but the masks give "
                            f"{len(names)} classes ({', '.join(names)}); list one name per class")
        names = list(opts.class_names)
    target = "multilabel" if spec.kind == "multilabel" else "index"
    return Splits(sets["train"], sets.get("val"), names, test=sets.get("test"), target=target,
                  named_classes=bool(nested or opts.class_names))
