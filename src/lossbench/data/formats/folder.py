"""``folder``: one folder per class, as torchvision's ImageFolder reads it.

Layouts: ``root/train/<class>/...`` with optional ``root/val/<class>/`` and
``root/test/<class>/``, or a single ``root/<class>/...`` (validation is then a
stratified split). Class folders are sorted by name; images may sit in
sub-folders. Hidden files and non-images (``.DS_Store``, ``Thumbs.db``) are
ignored; an empty class folder is an error.
"""

from __future__ import annotations

from pathlib import Path

from lossbench.config import DataConfig
from lossbench.data.decode import is_image_file
from lossbench.data.files import Decoder, FileItem, open_files
from lossbench.data.formats.common import channels_of, require_root
from lossbench.data.registry import Splits, register_source
from lossbench.errors import UserError


def _visible_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts))


@register_source("folder", tasks=("classification",), shares_cache=True)
def folder_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """One folder per class: root/train/<class>/, root/val/<class>/ or root/<class>/."""
    root = require_root(cfg)
    if (root / "train").is_dir():
        split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    else:
        split_dirs = {"train": root}
    classes = _visible_dirs(split_dirs["train"])
    if not classes:
        raise UserError(f"{split_dirs['train']}: no class folders; expected <class>/<image> files "
                        f"(root/<class>/ or root/train/<class>/)")
    decoder = Decoder(cfg.image_size, channels_of(cfg))
    sets = {}
    for split, folder in split_dirs.items():
        unknown = sorted(set(_visible_dirs(folder)) - set(classes))
        if unknown:
            raise UserError(f"{folder / unknown[0]}: class folder not in {split_dirs['train']} "
                            f"({', '.join(classes)}); rename or remove it")
        items = []
        for k, name in enumerate(classes):
            if not (folder / name).is_dir():
                continue
            files = _images_under(folder / name)
            if not files:
                raise UserError(f"{folder / name}: empty class folder (no image files); add images or remove it")
            items += [FileItem(p, p.relative_to(root).as_posix(), label=k) for p in files]
        sets[split] = open_files(items, decoder, cfg, str(folder), f"folder-{split}")
    return Splits(sets["train"], sets.get("val"), classes, test=sets.get("test"))
