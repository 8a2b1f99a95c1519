"""``fashion_mnist``: the four IDX ``.gz`` files of Fashion-MNIST (or MNIST, same format).

``data.root`` defaults to ``/usr/share/datasets/fashion-mnist/`` (Debian's
``dataset-fashion-mnist`` package). Reads ``train-images-idx3-ubyte[.gz]``,
``train-labels-idx1-ubyte[.gz]`` and, when present, the ``t10k-`` pair as the
test split. Validation is a stratified split of the training set. Images are
1-channel; they become 3 channels when the model takes 3.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from lossbench.config import DataConfig
from lossbench.data.formats.common import require_root, resize_images
from lossbench.data.samples import TensorSamples
from lossbench.data.registry import Splits, register_source
from lossbench.errors import UserError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def find_idx_file(root: Path, stem: str) -> Path | None:
    """``root/<stem>.gz`` or ``root/<stem>``, whichever exists; None if neither."""
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (optionally gzipped) as an array of its declared shape."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read ({exc}); re-download or re-install the dataset") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path}: not a uint8 IDX file (bad magic number); re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise UserError(f"{path}: holds {len(raw) - header} bytes of data, its header promises "
                        f"{int(np.prod(dims))}; the file is truncated, re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_split(root: Path, prefix: str, size: int) -> TensorSamples | None:
    """The ``<prefix>-images`` / ``<prefix>-labels`` IDX pair as samples resized to ``size``; None without the pair."""
    images_path = find_idx_file(root, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx_file(root, f"{prefix}-labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        return None
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{images_path} and {labels_path} do not match (shapes {images.shape}, {labels.shape}); "
                        f"re-download them")
    if labels.max(initial=0) >= len(NAMES):
        raise UserError(f"{labels_path}: labels above 9; re-download it")
    h, w = images.shape[1:]
    tensor = resize_images(torch.from_numpy(images.copy()).unsqueeze(1), size)
    names = [f"{prefix}:{i}" for i in range(len(labels))]
    return TensorSamples(tensor, torch.from_numpy(labels.astype(np.int64)), names, sizes=[(w, h)] * len(labels))


@register_source("fashion_mnist", tasks=("classification",))
def fashion_mnist_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """Fashion-MNIST IDX .gz files (default /usr/share/datasets/fashion-mnist, Debian's package)."""
    root = require_root(cfg, DEFAULT_ROOT)
    train = read_idx_split(root, "train", cfg.image_size)
    if train is None:
        raise UserError(f"{root}: no train-images-idx3-ubyte.gz / train-labels-idx1-ubyte.gz; set data.root, "
                        f"or install Debian's dataset-fashion-mnist package")
    return Splits(train, None, list(NAMES), test=read_idx_split(root, "t10k", cfg.image_size))
