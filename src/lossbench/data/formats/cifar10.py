"""``cifar10``: the CIFAR-10 python batches (``cifar-10-batches-py/``), read directly.

``data.root`` is the ``cifar-10-batches-py`` folder or its parent. Whatever
``data_batch_*`` files are present form the training split (no checksums,
so a partial or re-packed copy works); ``test_batch`` becomes the test split;
``batches.meta`` gives class names when present. Validation is a stratified
split of the training batches. The pickles are read with an unpickler that
only admits NumPy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.config import DataConfig
from lossbench.data.formats.common import require_root, resize_images
from lossbench.data.samples import TensorSamples
from lossbench.data.registry import Splits, register_source
from lossbench.errors import UserError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnly(f, encoding="bytes").load()
    except Exception as exc:  # any failure of a foreign pickle is the file's fault
        raise UserError(f"{path}: not a readable CIFAR-10 batch ({exc.__class__.__name__}: {exc}); "
                        f"re-download or remove it") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a CIFAR-10 batch (a {type(obj).__name__}); re-download or remove it")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    d = _load(path)
    try:
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64).reshape(-1)
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: CIFAR-10 batch without the expected 'data' (N x 3072) and 'labels' "
                        f"({exc}); re-download it") from None
    if len(labels) != len(data) or labels.min(initial=0) < 0 or labels.max(initial=0) >= 10:
        raise UserError(f"{path}: labels do not match the images or fall outside 0..9; re-download it")
    return torch.from_numpy(data.copy()), torch.from_numpy(labels)


@register_source("cifar10", tasks=("classification",))
def cifar10_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """CIFAR-10 python batches (cifar-10-batches-py/), any subset of batches, read without checksums."""
    root = require_root(cfg)
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    train_files = sorted(folder.glob("data_batch_*"))
    if not train_files:
        raise UserError(f"{folder}: no data_batch_* files; set data.root to cifar-10-batches-py or its parent")
    names = list(NAMES)
    if (folder / "batches.meta").is_file():
        meta = _load(folder / "batches.meta")
        found = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
        names = found if len(found) == 10 else names

    def split(files: list[Path]) -> TensorSamples:
        parts = [_batch(f) for f in files]
        images = resize_images(torch.cat([p[0] for p in parts]), cfg.image_size)
        labels = torch.cat([p[1] for p in parts])
        item_names = [f"{f.name}:{i}" for f, p in zip(files, parts) for i in range(len(p[1]))]
        return TensorSamples(images, labels, item_names, sizes=[(32, 32)] * len(labels))

    test = split([folder / "test_batch"]) if (folder / "test_batch").is_file() else None
    return Splits(split(train_files), None, names, test=test)
