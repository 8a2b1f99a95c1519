"""Helpers shared by the file formats: required root, decoded channels, converters' folders."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

from lossbench.config import DataConfig
from lossbench.errors import UserError


def channels_of(cfg: DataConfig) -> int:
    """Channels images are decoded to (``auto`` is resolved by build_data from the model)."""
    return 3 if cfg.channels == "auto" else int(cfg.channels)


def require_root(cfg: DataConfig, default: Path | None = None) -> Path:
    """``data.root`` (or ``default``) as an existing folder; UserError otherwise."""
    root = cfg.root if cfg.root is not None else default
    if root is None:
        raise UserError(f"data.root: source {cfg.source!r} reads files; set data.root to the dataset folder")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root: {root} is not a folder; set data.root to the dataset folder")
    return root


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize an N x C x H x W uint8 batch to size x size (antialiased bilinear), in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.cat([F.resize(chunk, [size, size], antialias=True) for chunk in images.split(4096)])


def require_separate_folders(src: Path, dst: Path) -> None:
    """UserError unless a converter's output ``dst`` and its source ``src`` are apart (symlinks resolved).

    A converter never writes into the tree it reads (``dst`` inside ``src``
    would overwrite raw files), into ``src`` itself, or around it (``src``
    inside ``dst``).
    """
    real_src, real_dst = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    if real_dst == real_src:
        raise UserError(f"{dst}: the output folder DEST is the source folder SRC; choose a DEST outside {src}")
    if real_dst.is_relative_to(real_src):
        raise UserError(f"{dst}: the output folder DEST is inside the source folder SRC ({real_dst} is under "
                        f"{real_src}) and would overwrite its files; choose a DEST outside {src}")
    if real_src.is_relative_to(real_dst):
        raise UserError(f"{dst}: the source folder SRC ({src}) is inside the output folder DEST; choose a DEST "
                        f"that does not hold {src}")
