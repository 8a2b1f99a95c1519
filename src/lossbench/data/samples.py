"""Sample sets: the datasets a source returns, before any transform.

Every set yields ``(image, target)`` with a uint8 C x S x S image and a target
of the ARCHITECTURE.md contract (an ``int`` label, an H x W index mask, or a
C x H x W binary mask stored as uint8). Each set also knows, without decoding
anything, the name of every item (for ``split.json`` and error messages), its
classification labels (``targets``) and, for segmentation, per-item class
pixel counts, so splits, subsets and class counts never touch pixel data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class SampleSet(Dataset):
    """Common interface: ``names``, ``targets`` (labels or None), ``sizes`` and ``pixel_counts``.

    ``skipped`` holds the messages of bad files left out of the set (``data.skip_bad``).
    """

    names: list[str]
    sizes: list[tuple[int, int]]
    skipped: Sequence[str] = ()

    @property
    def targets(self) -> torch.Tensor | None:
        """Classification labels of every item (int64), or None for segmentation."""
        return None

    def pixel_counts(self, num_classes: int) -> np.ndarray | None:
        """N x num_classes pixels of each class per item (segmentation), or None."""
        return None


class TensorSamples(SampleSet):
    """Samples held as one N x C x H x W uint8 array and one target array.

    ``images`` may be a torch tensor or a NumPy array, including a read-only
    ``np.memmap`` of the decode-once cache; a memmap is pickled as its file
    name (DataLoader workers reopen it) rather than copied.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        targets: torch.Tensor | np.ndarray,
        names: Sequence[str] | None = None,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        self.images = images
        self._targets = targets
        self.names = list(names) if names is not None else [str(i) for i in range(len(images))]
        h, w = images.shape[-2:]
        self.sizes = list(sizes) if sizes is not None else [(int(w), int(h))] * len(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        image = self.images[i]
        target = self._targets[i]
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.array(image))
        if isinstance(target, np.ndarray):
            target = torch.from_numpy(np.array(target))
        elif isinstance(target, np.generic):
            target = int(target)
        if isinstance(target, torch.Tensor) and target.ndim == 0:
            target = int(target)
        return image, target

    @property
    def targets(self) -> torch.Tensor | None:
        t = self._targets
        if t.ndim != 1:
            return None
        return torch.as_tensor(np.asarray(t)) if isinstance(t, np.ndarray) else t.long()

    def pixel_counts(self, num_classes: int) -> np.ndarray | None:
        t = self._targets
        if t.ndim == 1:
            return None
        out = np.zeros((len(t), num_classes), dtype=np.int64)
        for i in range(len(t)):
            m = np.asarray(t[i])
            if m.ndim == 3:
                out[i] = (m.reshape(m.shape[0], -1) > 0).sum(1)[:num_classes]
            else:
                out[i] = np.bincount(m.reshape(-1).astype(np.int64), minlength=256)[:num_classes]
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("images", "_targets"):
            arr = state[key]
            if isinstance(arr, np.memmap) and arr.filename:
                state[key] = ("__memmap__", arr.filename, arr.dtype.str, arr.shape)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in ("images", "_targets"):
            value = state[key]
            if isinstance(value, tuple) and value and value[0] == "__memmap__":
                _, filename, dtype, shape = value
                state[key] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape)
        self.__dict__.update(state)


class View(SampleSet):
    """Some items of another set, optionally with labels remapped (class subsets)."""

    def __init__(self, base: SampleSet, indices: Sequence[int], label_map: dict[int, int] | None = None) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.label_map = label_map
        self.names = [base.names[i] for i in self.indices]
        self.sizes = [base.sizes[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        image, target = self.base[self.indices[i]]
        if self.label_map is not None:
            target = self.label_map[int(target)]
        return image, target

    @property
    def targets(self) -> torch.Tensor | None:
        t = self.base.targets
        if t is None:
            return None
        t = t[torch.as_tensor(self.indices, dtype=torch.long)]
        if self.label_map is not None:
            t = torch.tensor([self.label_map[int(v)] for v in t], dtype=torch.long)
        return t

    def pixel_counts(self, num_classes: int) -> np.ndarray | None:
        counts = self.base.pixel_counts(num_classes)
        return None if counts is None else counts[self.indices]
